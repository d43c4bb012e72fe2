"""data.packing against padded batches on the real-model city task (configs/real/smollm2-city.yaml).

    python bench/packing_throughput.py [--steps 12] [--log-every 4] [--rounds 1] [--bf16] [--pack-length N]

SmolLM2-135M-Instruct (`make real-model`) fine-tuned on city -> country in its chat format, the study's own
config (batch 8, max_length 96), once with padded batches of 8 examples and once with data.packing: 8 rows of
up to 96 tokens, each holding the examples that fit. Each side runs in its own process, in the same precision
(float32 unless --bf16), and the two alternate for --rounds rounds. Tokens are the non-pad tokens the model
reads (metrics.jsonl's tokens_per_s); the first logged window (the first steps' warm-up) is left out, the
rest summed: tokens / seconds of training steps. Also printed: the share of each padded batch that is padding.
--pack-length N packs rows of N tokens instead (data.max_length of the packed side; no example is longer than 51).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
CONFIG = Path(__file__).resolve().parents[1] / "configs" / "real" / "smollm2-city.yaml"


def side_run(packing: bool, steps: int, log_every: int, out: Path, bf16: bool, length: int) -> dict:
    from retain.config import load_config
    from retain.training.loop import train

    config = load_config(CONFIG, [f"data.packing={str(packing).lower()}", f"training.max_steps={steps}",
                                  f"training.log_every={log_every}", f"training.bf16={str(bf16).lower()}",
                                  "training.report_to=[]", f"output.dir={out}", f"data.max_length={length}"])
    rows = [r for r in train(config, overwrite=True, progress=False).metrics if "tokens_per_s" in r]
    timed = rows[1:]  # the first window holds the warm-up
    seconds = [r["step_time_s"] * log_every for r in timed]
    tokens = sum(r["tokens_per_s"] * s for r, s in zip(timed, seconds))
    return {"tokens_per_s": tokens / sum(seconds), "tokens_per_step": tokens / (len(timed) * log_every),
            "step_s": sum(seconds) / (len(timed) * log_every), "loss": rows[-1]["loss"]}


def padding_share() -> float:
    """The share of a padded batch of 8 (to its longest example) that is padding, over the task in data order."""
    from retain.config import load_config
    from retain.data import load_dataset
    from retain.model.loading import load_tokenizer

    c = load_config(CONFIG, ["output.dir=unused"])
    d = c.data
    lengths = [len(e.input_ids) for e in load_dataset(d.train, load_tokenizer(c.model), d.format, d.max_length,
                                                       d.loss_on, d.chat, d.chat_template).examples]
    batches = [lengths[i:i + 8] for i in range(0, len(lengths), 8)]
    return 1 - sum(lengths) / sum(max(b) * len(b) for b in batches)


def one_side(packing: bool, args, out: Path) -> dict:
    length = args.pack_length if packing else 96
    argv = [sys.executable, __file__, "--child",
            json.dumps([packing, args.steps, args.log_every, str(out), args.bf16, length])]
    proc = subprocess.run(argv, capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--log-every", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--bf16", action="store_true", help="both sides in bf16 autocast (default: float32)")
    parser.add_argument("--pack-length", type=int, default=96, help="tokens per packed row (the config's: 96)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        packing, steps, log_every, out, bf16, length = json.loads(args.child)
        print(json.dumps(side_run(packing, steps, log_every, Path(out), bf16, length)))
        return
    import torch

    tmp = Path(tempfile.mkdtemp())
    runs: dict[bool, list[dict]] = {False: [], True: []}
    for k in range(args.rounds):
        for packing in runs:
            runs[packing].append(one_side(packing, args, tmp / f"{'packed' if packing else 'padded'}-{k}"))
    best = {packing: max(rs, key=lambda r: r["tokens_per_s"]) for packing, rs in runs.items()}
    precision = "bf16 autocast" if args.bf16 else "float32"
    print(f"SmolLM2-135M-Instruct, city task, batch 8, max_length 96 (packed rows: {args.pack_length}), "
          f"{precision} both sides, {args.steps} steps "
          f"(first {args.log_every} not timed), torch threads {torch.get_num_threads()}")
    print(f"padded batches of 8: {padding_share():.0%} padding")
    for packing, label in ((False, "padded (8 examples)     "), (True, f"packed (8 rows of {args.pack_length:3d})")):
        r = best[packing]
        print(f"{label}: {r['tokens_per_s']:7.0f} tokens/s, {r['tokens_per_step']:5.0f} tokens/step, "
              f"{r['step_s']:.2f} s/step, last loss {r['loss']:.3f}")
    print(f"packed / padded: {best[True]['tokens_per_s'] / best[False]['tokens_per_s']:.2f}x tokens/s")


if __name__ == "__main__":
    main()
