"""Peak memory of a training step with and without model.gradient_checkpointing.

    python bench/memory.py [--model smollm2-135m-instruct] [--batch-size 16] [--length 512] [--steps 1]

Each side is a fresh process running retain's training loop (`retain.train`, float32, full fine-tuning) for
--steps optimizer steps of batch 16 x 512 tokens (synthetic text records, every token a target). Memory is the
process's resident set (RSS, from /proc and getrusage), as CPU training has no allocator statistics of its own:
RSS once the model and data are loaded (before the first step), and the peak over the whole run; the step's
share is the difference. On CPU this counts everything the process holds: weights, optimizer moments,
activations, the allocator's cache. Seconds per step come from metrics.jsonl.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
GIB = 1024 ** 3


def rss_now() -> int:
    """Bytes resident now (/proc/self/statm: pages)."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def side_run(model: str, checkpointing: bool, batch_size: int, length: int, steps: int, out: Path) -> dict:
    import retain.training.loop as loop
    from retain.config import config_from_dict

    words = "the quick brown fox jumps over the lazy dog while the city sleeps under a grey sky".split()
    text = " ".join(words[i % len(words)] for i in range(2 * length))  # longer than `length` tokens: cut to it
    data = out.parent / f"{out.name}-data.jsonl"
    data.write_text("".join(json.dumps({"text": f"{i} {text}"}) + "\n" for i in range(batch_size * steps)))
    config = config_from_dict({
        "model": {"name": model, "gradient_checkpointing": checkpointing},
        "data": {"train": str(data), "max_length": length, "loss_on": "all"},
        "training": {"lr": 1e-5, "max_steps": steps, "batch_size": batch_size, "log_every": 1, "bf16": False,
                     "report_to": []},
        "output": {"dir": str(out)}})
    loaded = {}
    make_optimizer = loop.make_optimizer

    def note_loaded(*args, **kwargs):  # called once the model and data are loaded, before any step
        loaded["rss"] = rss_now()
        return make_optimizer(*args, **kwargs)

    loop.make_optimizer = note_loaded
    rows = loop.train(config, overwrite=True, progress=False).metrics
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    return {"loaded": loaded["rss"], "peak": peak, "step_s": sum(r["step_time_s"] for r in rows) / len(rows)}


def one_side(args, checkpointing: bool, out: Path) -> dict:
    child = [args.model, checkpointing, args.batch_size, args.length, args.steps, str(out)]
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(child)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--length", type=int, default=512)
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(side_run(*json.loads(args.child)[:5], Path(json.loads(args.child)[5]))))
        return
    tmp = Path(tempfile.mkdtemp())
    result = {cp: one_side(args, cp, tmp / ("checkpointed" if cp else "plain")) for cp in (False, True)}
    print(f"{args.model}, batch {args.batch_size} x {args.length} tokens, {args.steps} step(s), float32, "
          "full fine-tuning; memory = resident set (RSS) of the process")
    for cp, label in ((False, "without gradient checkpointing"), (True, "with gradient checkpointing   ")):
        r = result[cp]
        print(f"{label}: peak {r['peak'] / GIB:5.2f} GiB (loaded {r['loaded'] / GIB:4.2f} GiB, the step "
              f"+{(r['peak'] - r['loaded']) / GIB:4.2f} GiB), {r['step_s']:.1f} s/step")
    plain, cp = result[False], result[True]
    print(f"peak: {cp['peak'] / plain['peak']:.2f}x; the step's own memory: "
          f"{(cp['peak'] - cp['loaded']) / (plain['peak'] - plain['loaded']):.2f}x; "
          f"time per step {cp['step_s'] / plain['step_s']:.2f}x")


if __name__ == "__main__":
    main()
