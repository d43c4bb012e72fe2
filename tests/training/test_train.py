"""The training loop end to end on the tiny model: outputs, resume, failure modes, what moves."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml
from safetensors.torch import load_file

import retain
from retain.config import config_from_dict
from retain.training.loop import NonFiniteLossError
from conftest import write_jsonl


def weights(path):
    return load_file(str(path / "model.safetensors"))


def run_cli(*args, check=True, **kwargs):
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run([sys.executable, "-m", "retain", *args], capture_output=True, text=True, env=env, **kwargs)
    if check and proc.returncode != 0:
        raise AssertionError(f"retain {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return proc


def test_cli_train_writes_every_output(make_config, tmp_path):
    config = make_config(data={"dev": str(tmp_path / "qa.jsonl")}, training={"save_every": 2, "keep_last": 2})
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = run_cli("train", str(path), "training.max_steps=7")
    out = tmp_path / "run"
    assert "trained 7 steps" in proc.stdout
    assert (out / "final" / "model.safetensors").is_file() and (out / "final" / "tokenizer.json").is_file()
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-4", "step-6"]  # keep_last=2
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if "loss" in r]
    assert [r["step"] for r in train_rows] == list(range(1, 8))
    assert all({"loss/task", "lr", "tokens_per_s"} <= set(r) for r in train_rows)
    assert train_rows[-1]["loss"] < train_rows[0]["loss"]  # it learns
    assert any("eval/loss" in r for r in rows)
    assert yaml.safe_load((out / "config.yaml").read_text())["training"]["max_steps"] == 7
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))


def test_python_api_mirrors_cli(make_config):
    result = retain.train(config_from_dict(make_config()), progress=False)
    assert result.steps == 6 and result.final_dir.is_dir() and result.metrics_path.is_file()
    assert [r["step"] for r in result.metrics] == list(range(1, 7))


def test_a_log_row_is_the_mean_over_its_window(make_config, tmp_path):
    every_step = retain.train(config_from_dict(make_config()), progress=False).metrics
    every_third = retain.train(config_from_dict(make_config(training={"log_every": 3},
                                                            output={"dir": str(tmp_path / "b")})),
                               progress=False).metrics
    assert [r["step"] for r in every_third] == [3, 6]
    for row in every_third:  # the same seeded run: its window means are the per-step rows averaged
        window = [r for r in every_step if row["step"] - 3 < r["step"] <= row["step"]]
        for key in ("loss", "loss/task", "grad_norm"):
            assert row[key] == pytest.approx(sum(r[key] for r in window) / 3, rel=1e-5), key


GENERAL = [{"text": "the capital of france is paris . one plus two is three"}] * 12


@pytest.mark.parametrize("mitigations", [
    {}, {"lora": {"r": 4, "dropout": 0.1}}, {"replay": {"ratio": 0.3}, "kl": {"weight": 1.0, "cache_top_k": 8}},
    {"ewc": {"batches": 2}, "progressive_unfreeze": {"every": 3}}, {"si": {"steps": 2}, "l2sp": {}},
], ids=["full", "lora-dropout", "replay-kl-cached", "ewc-progressive", "si-l2sp"])
def test_resume_from_checkpoint_equals_uninterrupted_run(make_config, tmp_path, mitigations):
    general = write_jsonl(tmp_path / "general.jsonl", GENERAL)
    mitigations = {k: ({**v, "file": str(general)} if k in ("replay", "ewc", "si") else v)
                   for k, v in mitigations.items()}
    straight = retain.train(config_from_dict(make_config(
        training={"max_steps": 8, "save_every": 4, "keep_last": 5}, mitigations=mitigations,
        output={"dir": str(tmp_path / "a")})), progress=False)
    resumed_dir = tmp_path / "b"
    shutil.copytree(tmp_path / "a" / "checkpoints" / "step-4", resumed_dir / "checkpoints" / "step-4")
    resumed = retain.train(config_from_dict(make_config(
        training={"max_steps": 8, "save_every": 4, "keep_last": 5}, mitigations=mitigations,
        output={"dir": str(resumed_dir)})), resume=True, progress=False)
    name = "adapter_model.safetensors" if "lora" in mitigations else "model.safetensors"
    a, b = load_file(str(straight.final_dir / name)), load_file(str(resumed.final_dir / name))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_after_kill_is_bit_identical(make_config, tmp_path):
    def config_file(name):
        cfg = make_config(training={"max_steps": 150, "save_every": 10, "log_every": 10, "lr": 1e-3},
                          output={"dir": str(tmp_path / name)})
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        return path

    run_cli("train", str(config_file("straight")))
    killed = config_file("killed")
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    proc = subprocess.Popen([sys.executable, "-m", "retain", "train", str(killed)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (tmp_path / "killed" / "checkpoints" / "step-20").exists():
        assert proc.poll() is None and time.time() < deadline, "run ended before it could be killed"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "killed" / "final").exists()  # it really died mid-run
    run_cli("train", str(killed), "--resume")
    a, b = weights(tmp_path / "straight" / "final"), weights(tmp_path / "killed" / "final")
    assert all(torch.equal(a[k], b[k]) for k in a)
    metrics = [json.loads(x) for x in (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in metrics] == list(range(10, 151, 10))  # no duplicated or lost rows


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(make_config, tmp_path):
    config = config_from_dict(make_config(training={"lr": 1e12, "max_grad_norm": None, "save_every": 1,
                                                    "max_steps": 50}))
    with pytest.raises(NonFiniteLossError, match="Last good checkpoint: .*step-"):
        retain.train(config, progress=False)
    out = tmp_path / "run"
    assert not (out / "final").exists()
    last = sorted(out.glob("checkpoints/step-*"), key=lambda p: int(p.name[5:]))[-1]
    state = load_file(str(last / "model.safetensors"))
    assert all(torch.isfinite(t).all() for t in state.values())


def test_existing_run_is_not_overwritten_by_accident(make_config, tmp_path):
    config = config_from_dict(make_config())
    retain.train(config, progress=False)
    before = (tmp_path / "run" / "metrics.jsonl").read_text()
    with pytest.raises(FileExistsError, match="--resume"):
        retain.train(config, progress=False)
    assert (tmp_path / "run" / "metrics.jsonl").read_text() == before
    retain.train(config, overwrite=True, progress=False)


def test_bad_data_line_stops_before_anything_is_written(make_config, tmp_path):
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "a", "response": " b"}, {"prompt": "a"}])
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(make_config(data={"train": str(bad)})))
    proc = run_cli("train", str(path), check=False)
    assert proc.returncode == 2
    assert f"{bad}:2: field 'response': missing" in proc.stderr
    assert not (tmp_path / "run").exists()


def test_bad_config_is_a_clear_error(make_config, tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(make_config(training={"learning_rate": 1})))
    proc = run_cli("train", str(path), check=False)
    assert proc.returncode == 2
    assert f"{path}: training.learning_rate: unknown key" in proc.stderr
