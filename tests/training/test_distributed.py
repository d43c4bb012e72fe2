"""Two processes through `accelerate launch` (gloo on CPU) follow the one-process loss curve."""

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml
from conftest import REPO_ROOT

REPO = REPO_ROOT


def losses(out: Path) -> list[float]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r]


def test_two_process_ddp_matches_one_process_with_same_global_batch(make_config, tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    runs = {}
    for name, per_process_batch, launcher in [
        ("one", 8, [sys.executable, "-m", "retain"]),
        # README's command, with the shipped accelerate config
        ("two", 4, [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                    str(REPO / "configs" / "accelerate" / "ddp_cpu.yaml"), "-m", "retain"]),
    ]:
        cfg = make_config(training={"batch_size": per_process_batch, "max_steps": 8, "lr": 3e-3},
                          output={"dir": str(tmp_path / name)})
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        proc = subprocess.run([*launcher, "train", str(path)], capture_output=True, text=True, env=env, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs[name] = losses(tmp_path / name)
        assert f"{'2 processes' if name == 'two' else '1 process'}, global batch 8" in proc.stdout
        assert proc.stdout.count("trained 8 steps") == 1  # the run summary once, not per rank
    assert len(runs["one"]) == len(runs["two"]) == 8
    # Same examples in every global batch; the curves differ only by how the token-mean is split
    # across processes (each rank averages its own tokens), a few percent at most.
    for a, b in zip(runs["one"], runs["two"]):
        assert abs(a - b) / a < 0.05, (runs["one"], runs["two"])
    assert runs["two"][-1] < runs["two"][0]
