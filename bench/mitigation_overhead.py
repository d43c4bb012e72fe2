"""Step time and peak memory of each mitigation relative to a plain step, in one run.

    python bench/mitigation_overhead.py [--steps 40] [--batch-size 8] [--seq-len 256] [--rounds 1] [--bf16]

Every configuration computes in the same precision, set explicitly: float32, or bf16 autocast with --bf16
(printed with the figures, with whether this machine does bf16 natively).

Each configuration trains retain-tiny for --steps optimizer steps on fixed-length batches of lab
text (batch x seq-len tokens, so every step costs the same; 8 batches an epoch) in its own
subprocess; the time per step, wall-clock and the CPU time the process spent, is the median over the
steps after the first 10 (warm-up, set-up such as the Fisher, and the first epoch in which the cached
teacher fills its cache), from a clock read after each optimizer step: a median, so that a moment of
load from another job does not move it. With --rounds N every configuration runs N times,
interleaved, and its fastest round counts. On a machine shared with other jobs, run it with
OMP_NUM_THREADS=1: the CPU time is then the work a step does, which the load moves little, where
wall-clock steps vary by a third. Peak RSS is the child's maximum resident set. Ratios are against the
plain full fine-tuning step (and LoRA + KL against LoRA alone).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

CONFIGS = {
    "plain": {},
    "kl": {"kl": {"weight": 1.0}},
    "kl_cached_top16": {"kl": {"weight": 1.0, "cache_top_k": 16}},
    "ewc": {"ewc": {"weight": 0.01}},
    "l2sp": {"l2sp": {"weight": 0.01}},
    "si": {"si": {"weight": 0.01}},
    "replay_15": {"replay": {"ratio": 0.15}},
    "lora": {"lora": {"r": 8}},
    "lora_kl": {"lora": {"r": 8}, "kl": {"weight": 1.0}},
}

CHILD = r"""
import json, sys, time, resource
from retain.config import config_from_dict
from retain.training.loop import train

class Clock:  # a Monitor (role 6) that decides nothing: it notes the wall and CPU clocks after each step
    marks = []

    def check(self, model, step, last_step):
        self.marks.append((time.perf_counter(), time.process_time()))

spec = json.loads(sys.argv[1])
config = config_from_dict(spec["config"])
train(config, overwrite=True, progress=False, monitors=(Clock(),))
steps = [(b[0] - a[0], b[1] - a[1]) for a, b in zip(Clock.marks, Clock.marks[1:])]
print(json.dumps({"steps": steps, "peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def fixed_length_data(path: Path, n: int, seq_len: int) -> Path:
    """Lab text concatenated into documents long enough to fill seq_len tokens each."""
    from retain.core.paths import LAB_DATA_DIR

    texts = [json.loads(line)["text"] for line in (LAB_DATA_DIR / "pretrain.jsonl").read_text().splitlines()]
    docs, k = [], 0
    for _ in range(n):
        doc = []
        while len(" ".join(doc)) < seq_len * 6:  # comfortably over seq_len tokens; truncated to seq_len
            doc.append(texts[k % len(texts)])
            k += 1
        docs.append({"text": " ".join(doc)})
    path.write_text("".join(json.dumps(d) + "\n" for d in docs))
    return path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast for every configuration (default float32)")
    args = parser.parse_args()
    from retain.model.precision import choose_bf16, this_machine

    print(f"precision: {'bf16 autocast' if args.bf16 else 'float32'} for every configuration "
          f"(this machine does bf16 natively: {'yes' if choose_bf16('auto', this_machine()) else 'no'})")
    tmp = Path(tempfile.mkdtemp())
    load_before = os.getloadavg()
    # 8 batches per epoch: the run sees each example several times, as the cached teacher assumes
    data = fixed_length_data(tmp / "text.jsonl", 8 * args.batch_size, args.seq_len)
    results = {}
    for name, mitigations in [item for _ in range(args.rounds) for item in CONFIGS.items()]:
        config = {"model": {"name": "retain-tiny"}, "data": {"train": str(data), "max_length": args.seq_len},
                  "training": {"lr": 1e-4, "max_steps": args.steps, "batch_size": args.batch_size, "log_every": 1,
                               "scheduler": "constant", "bf16": args.bf16},
                  "mitigations": mitigations, "output": {"dir": str(tmp / name)}}
        env = dict(os.environ, HF_HUB_OFFLINE="1")
        proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps({"config": config})], capture_output=True,
                              text=True, env=env, check=True)
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        wall, cpu = (sorted(step[k] for step in out["steps"][9:]) for k in (0, 1))  # steps 11 on
        best = results.get(name, {"step_s": math.inf, "cpu_s": math.inf, "peak_rss_mb": math.inf})
        results[name] = {"step_s": min(wall[len(wall) // 2], best["step_s"]),
                         "cpu_s": min(cpu[len(cpu) // 2], best["cpu_s"]),
                         "peak_rss_mb": min(out["peak_rss_kb"] / 1024, best["peak_rss_mb"])}
    plain, lora = results["plain"], results["lora"]
    print(f"{'mitigation':18s} {'s/step':>8s} {'x plain':>8s} {'CPU s/step':>10s} {'x plain':>8s} "
          f"{'peak RSS MB':>12s} {'x plain':>8s}")
    for name, r in results.items():
        print(f"{name:18s} {r['step_s']:8.3f} {r['step_s'] / plain['step_s']:8.2f} {r['cpu_s']:10.3f} "
              f"{r['cpu_s'] / plain['cpu_s']:8.2f} {r['peak_rss_mb']:12.0f} {r['peak_rss_mb'] / plain['peak_rss_mb']:8.2f}")
    lora_kl = results["lora_kl"]
    print(f"lora_kl vs lora: step x{lora_kl['step_s'] / lora['step_s']:.2f}, CPU x{lora_kl['cpu_s'] / lora['cpu_s']:.2f}, "
          f"peak RSS x{lora_kl['peak_rss_mb'] / lora['peak_rss_mb']:.2f}")
    print(f"load average before {load_before[0]:.1f}, after {os.getloadavg()[0]:.1f} (1 min); "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")


if __name__ == "__main__":
    main()
