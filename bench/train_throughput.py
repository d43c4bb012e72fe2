"""retain's training loop against a plain Hugging Face Trainer: same model, data, batch, steps, one run.

    python bench/train_throughput.py [--steps 300] [--batch-size 16] [--rounds 3] [--precision float32|bf16|native]

Prints tokens/s for both and the ratio (retain / Trainer), each side in its own process and in the same
precision: float32 against float32 always, and bf16 autocast against bf16 autocast as well where the machine
does bf16 natively (--precision native, the default; printed with the figures). Both use the bundled retain-tiny and the
city_country task; each side is timed from loading the model and tokenizing the data to the end of
training and writing the final model, after a short warm-up run of each. The two alternate for
--rounds rounds. Two measures: wall-clock time (each side's fastest round: load only ever slows a run
down) and the CPU time the process spent (each side's median round). On a machine shared with other
jobs the wall-clock rounds of one side differ by a third; with OMP_NUM_THREADS=1 (which also keeps
torch's threads from spinning against other processes') the CPU time is the work each side does and
moves by a few percent. The load average and torch's thread count are printed with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def retain_run(steps: int, batch_size: int, out: Path, bf16: bool) -> tuple[float, float]:
    from retain.config import config_from_dict
    from retain.training.loop import train

    config = config_from_dict({
        "model": {"name": "retain-tiny"}, "data": {"train": "lab:tasks/city_country/train.jsonl", "max_length": 64},
        "training": {"lr": 1e-4, "max_steps": steps, "batch_size": batch_size, "log_every": 10 ** 6,
                     "scheduler": "constant", "bf16": bf16},
        "output": {"dir": str(out)}})
    start, cpu = time.perf_counter(), time.process_time()
    train(config, overwrite=True, progress=False)
    return time.perf_counter() - start, time.process_time() - cpu


def trainer_run(steps: int, batch_size: int, out: Path, bf16: bool) -> tuple[float, float]:
    from transformers import Trainer, TrainingArguments

    from retain.model.loading import ModelConfig
    from retain.core.paths import resolve_path
    from retain.data import collate, load_dataset
    from retain.model.loading import load_model, load_tokenizer

    start, cpu = time.perf_counter(), time.process_time()
    cfg = ModelConfig(name="retain-tiny")
    tokenizer, model = load_tokenizer(cfg), load_model(cfg)
    examples = load_dataset(resolve_path("lab:tasks/city_country/train.jsonl"), tokenizer, max_length=64).examples
    args = TrainingArguments(output_dir=str(out), per_device_train_batch_size=batch_size, max_steps=steps,
                             learning_rate=1e-4, lr_scheduler_type="constant", use_cpu=True, report_to=[],
                             logging_steps=10 ** 6, save_strategy="no", dataloader_num_workers=0,
                             remove_unused_columns=False, disable_tqdm=True, bf16=bf16)
    trainer = Trainer(model=model, args=args, train_dataset=examples,
                      data_collator=lambda b: {k: v for k, v in collate(b, tokenizer.pad_token_id).items()
                                               if k != "replay"})
    trainer.train()
    trainer.save_model(str(out / "final"))  # retain's time includes writing final/ too
    return time.perf_counter() - start, time.process_time() - cpu


def tokens_per_step(batch_size: int, steps: int) -> float:
    """Mean non-pad tokens per batch of the same data (both sides see the same lengths on average)."""
    from retain.model.loading import ModelConfig
    from retain.core.paths import resolve_path
    from retain.data import load_dataset
    from retain.model.loading import load_tokenizer

    tok = load_tokenizer(ModelConfig(name="retain-tiny"))
    examples = load_dataset(resolve_path("lab:tasks/city_country/train.jsonl"), tok, max_length=64).examples
    return batch_size * sum(len(e.input_ids) for e in examples) / len(examples)


def one_side(side: str, steps: int, batch_size: int, out: Path, bf16: bool) -> tuple[float, float]:
    """(wall s, CPU s) of one side's run, in a fresh process: each process holds one precision and one loop."""
    argv = [sys.executable, __file__, "--child", json.dumps([side, steps, batch_size, str(out), bf16])]
    proc = subprocess.run(argv, capture_output=True, text=True, check=True)
    return tuple(json.loads(proc.stdout.strip().splitlines()[-1]))


def bench(args, bf16: bool, tmp: Path) -> None:
    name = "bf16 autocast" if bf16 else "float32"
    for side in ("retain", "trainer"):  # warm the file caches
        one_side(side, 5, args.batch_size, tmp / f"warm-{side}-{name}", bf16)
    runs: dict[str, list[tuple[float, float]]] = {"retain": [], "trainer": []}  # (wall s, cpu s) per round
    for k in range(args.rounds):
        for side in runs:
            runs[side].append(one_side(side, args.steps, args.batch_size, tmp / f"{side}-{name}-{k}", bf16))
    tokens = tokens_per_step(args.batch_size, args.steps) * args.steps
    wall = {side: min(w for w, _ in rs) for side, rs in runs.items()}
    cpu = {side: sorted(c for _, c in rs)[len(rs) // 2] for side, rs in runs.items()}
    print(f"-- both sides {name}")
    for side, label in (("retain", "retain loop"), ("trainer", "HF Trainer ")):
        rounds = ", ".join(f"{w:.1f}/{c:.1f}" for w, c in runs[side])
        print(f"{label} : {tokens / wall[side]:8.0f} tokens/s wall-clock, {tokens / cpu[side]:8.0f} per CPU second "
              f"({args.steps} steps; rounds wall/CPU s: {rounds})")
    print(f"ratio retain / Trainer ({name}): {wall['trainer'] / wall['retain']:.2f}x wall-clock (best rounds), "
          f"{cpu['trainer'] / cpu['retain']:.2f}x CPU time (median rounds)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--precision", choices=["float32", "bf16", "native"], default="native",
                        help="native: float32, then bf16 too where this machine does bf16 natively")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        side, steps, batch_size, out, bf16 = json.loads(args.child)
        print(json.dumps((retain_run if side == "retain" else trainer_run)(steps, batch_size, Path(out), bf16)))
        return
    import torch

    from retain.model.precision import choose_bf16, this_machine

    native = choose_bf16("auto", this_machine())
    print(f"this machine does bf16 natively: {'yes' if native else 'no'}")
    precisions = {"float32": [False], "bf16": [True], "native": [False, True] if native else [False]}[args.precision]
    tmp = Path(tempfile.mkdtemp())
    load_before = os.getloadavg()
    for bf16 in precisions:
        bench(args, bf16, tmp)
    print(f"load average before {load_before[0]:.1f}, after {os.getloadavg()[0]:.1f} (1 min); "
          f"torch threads {torch.get_num_threads()}")


if __name__ == "__main__":
    main()
