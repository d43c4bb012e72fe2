"""A run never loses or corrupts data, and never names a broken state as good (issue 8, section 1).

Each test reproduces one way today's runs went wrong on the tiny model: a non-finite state saved
as the "last good checkpoint", `--overwrite` deleting the old run before the new one was checked,
`--resume` retraining a finished run or ignoring a changed config, two runs sharing one directory,
a full disk, mitigation state lost on resume, and inexact gradient accumulation.
"""

import errno
import json
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

import retain
from retain.config import config_from_dict
from retain.core.schema import ConfigError
from retain.training.loop import NonFiniteLossError
from conftest import write_jsonl


def run(make_config, **sections):
    return retain.train(config_from_dict(make_config(**sections)), progress=False)


def snapshot_dir(path):
    """{relative path: bytes} of every file under `path`: what must stay unchanged."""
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def all_finite(path):
    return all(torch.isfinite(t).all() for t in load_file(str(path / "model.safetensors")).values())


class Killed(Exception):
    """Stands in for kill -9 in the middle of a run."""


# --- 1. never save or name as good a non-finite state ------------------------------------------

@pytest.mark.parametrize("key,value", [("lr", ".inf"), ("lr", ".nan"), ("lr", "-.inf"), ("max_grad_norm", ".nan"),
                                       ("epochs", ".inf"), ("weight_decay", ".nan")])
def test_non_finite_training_numbers_are_config_errors(make_config, key, value):
    import yaml

    with pytest.raises(ConfigError, match=f"training.{key}: must be a finite number"):
        config_from_dict(make_config(training={key: yaml.safe_load(value)}))


def test_float16_overflow_saves_no_non_finite_checkpoint(make_config, tmp_path):
    # The issue's case: step 1's update overflows float16; the old loop saved it as step-1 and then
    # called it the "last good checkpoint".
    with pytest.raises(NonFiniteLossError) as error:
        run(make_config, model={"dtype": "float16"}, training={"lr": 1e5, "save_every": 1, "max_steps": 5})
    out = tmp_path / "run"
    saved = list((out / "checkpoints").glob("step-*")) if (out / "checkpoints").exists() else []
    assert all(all_finite(p) for p in saved)
    newest = max(saved, key=lambda p: int(p.name[5:]), default=None)
    assert f"Last good checkpoint: {newest if newest else 'none'}" in str(error.value)
    assert not (out / "final").exists()
    assert not list((out / "checkpoints").glob(".*")) if (out / "checkpoints").exists() else True


def test_non_finite_weights_are_never_written_as_final(make_config, tmp_path):
    with pytest.raises(NonFiniteLossError, match="not finite"):
        run(make_config, model={"dtype": "float16"}, training={"lr": 1e5, "max_steps": 1})
    assert not (tmp_path / "run" / "final").exists()
    assert not list((tmp_path / "run").glob(".final*"))


# --- 2. --overwrite validates everything before it deletes anything ----------------------------

@pytest.mark.parametrize("broken", ["data", "model", "mitigation"])
def test_overwrite_keeps_the_previous_run_when_the_new_one_is_invalid(make_config, tmp_path, broken):
    run(make_config, training={"save_every": 3})
    out = tmp_path / "run"
    before = snapshot_dir(out)
    assert {"final/model.safetensors", "metrics.jsonl", "config.yaml"} <= set(before)
    bad_data = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "a", "response": " b"}, {"prompt": "a"}])
    bad_general = write_jsonl(tmp_path / "general.jsonl", [{"text": "fine"}, "{not json"])
    changes = {"data": {"data": {"train": str(bad_data)}},
               "model": {"model": {"name": str(tmp_path / "no-such-model")}},
               "mitigation": {"mitigations": {"ewc": {"file": str(bad_general), "batches": 1}}}}[broken]
    with pytest.raises((ValueError, OSError)):
        retain.train(config_from_dict(make_config(**changes)), overwrite=True, progress=False)
    assert snapshot_dir(out) == before


def test_overwrite_replaces_every_output_of_the_previous_run(make_config, tmp_path):
    run(make_config, mitigations={"retention": {"suite": "english", "limit": 2, "every": 3, "max_drop": 1000.0}})
    out = tmp_path / "run"
    assert (out / "retention.json").is_file()
    retain.train(config_from_dict(make_config(training={"max_steps": 2})), overwrite=True, progress=False)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    assert not (out / "retention.json").exists()  # the report would have shown the old run's budget


# --- 3. --resume: a finished run is refused; no checkpoint means a clean restart ----------------

def test_resume_of_a_finished_run_is_refused(make_config, tmp_path):
    run(make_config, training={"save_every": 2})
    out = tmp_path / "run"
    before = snapshot_dir(out)
    with pytest.raises(FileExistsError, match="finished"):
        retain.train(config_from_dict(make_config(training={"save_every": 2})), resume=True, progress=False)
    assert snapshot_dir(out) == before


def test_cli_refuses_resuming_a_finished_run_with_exit_2(make_config, tmp_path):
    import os

    import yaml

    run(make_config)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(make_config()))
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run([sys.executable, "-m", "retain", "train", str(path), "--resume"], capture_output=True,
                          text=True, env=env)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"retain: error: {tmp_path / 'run'} holds a finished run" in proc.stderr


def test_resume_without_a_checkpoint_restarts_without_appending(make_config, tmp_path):
    run(make_config)
    out = tmp_path / "run"
    shutil.rmtree(out / "final")  # as if killed before the end, with no checkpoint saved
    retain.train(config_from_dict(make_config()), resume=True, progress=False)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 7))


# --- 4. --resume after the config changed ------------------------------------------------------

def test_resume_with_a_changed_config_is_refused_showing_the_diff(make_config, tmp_path):
    training = {"max_steps": 8, "save_every": 4, "keep_last": 5, "lr": 1e-2}
    run(make_config, training=training, output={"dir": str(tmp_path / "a")})
    resumed = tmp_path / "b"
    shutil.copytree(tmp_path / "a" / "checkpoints" / "step-4", resumed / "checkpoints" / "step-4")
    changed = make_config(training={**training, "lr": 1e-4, "seed": 3}, output={"dir": str(resumed)})
    with pytest.raises(ConfigError) as error:
        retain.train(config_from_dict(changed), resume=True, progress=False)
    message = str(error.value)
    assert "training.lr: 0.01 -> 0.0001" in message and "training.seed: 0 -> 3" in message
    assert "allow_config_change" in message or "--allow-config-change" in message
    assert not (resumed / "final").exists()

    # Allowed, the new values apply from the resumed step: the schedule is the new lr's.
    result = retain.train(config_from_dict(changed), resume=True, allow_config_change=True, progress=False)
    fresh = run(make_config, training={**training, "lr": 1e-4, "seed": 3}, output={"dir": str(tmp_path / "c")})
    lr = {r["step"]: r["lr"] for r in result.metrics if "lr" in r}
    fresh_lr = {r["step"]: r["lr"] for r in fresh.metrics if "lr" in r}
    assert [lr[s] for s in (5, 6, 7, 8)] == pytest.approx([fresh_lr[s] for s in (5, 6, 7, 8)], rel=1e-9)


# --- 5. one run at a time per output directory ---------------------------------------------------

HOLD_LOCK = """
import sys, time
from pathlib import Path
from retain.training.rundir import locked_output_dir
with locked_output_dir(Path(sys.argv[1])):
    print("locked", flush=True)
    time.sleep(120)
"""


def test_a_second_run_into_a_busy_directory_fails_at_once(make_config, tmp_path):
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = snapshot_dir(out)
        with pytest.raises(FileExistsError, match=f"pid {holder.pid}"):
            run(make_config)
        with pytest.raises(FileExistsError, match=f"pid {holder.pid}"):
            retain.train(config_from_dict(make_config()), overwrite=True, progress=False)
        assert snapshot_dir(out) == before
    finally:
        holder.kill()
        holder.wait()
    run(make_config)  # the holder is gone (its lock file stays behind): no longer busy


def test_a_stale_lock_file_does_not_block(make_config, tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    out = tmp_path / "run"
    out.mkdir()
    (out / "run.lock").write_text(f"{dead.pid}\n")
    result = run(make_config)
    assert result.steps == 6


# --- 6. a full disk ------------------------------------------------------------------------------

def disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def torch_disk_full(*args, **kwargs):  # what torch.save raised on a full tmpfs (torch 2.13)
    raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 5312 vs 5204")


def safetensors_disk_full(*args, **kwargs):  # what safetensors' save_file raised there (safetensors 0.8)
    from safetensors import SafetensorError

    raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")


@pytest.mark.parametrize("fail", [disk_full, torch_disk_full, safetensors_disk_full])
def test_disk_full_while_checkpointing_keeps_earlier_checkpoints(make_config, tmp_path, monkeypatch, fail):
    from accelerate import Accelerator

    real_save = Accelerator.save_state

    def save_state(self, output_dir=None, **kwargs):
        if "step-4" in str(output_dir):
            (tmp_path / "run" / "checkpoints").mkdir(parents=True, exist_ok=True)
            open(f"{output_dir}/model.safetensors", "wb").write(b"half a file")
            fail()
        return real_save(self, output_dir, **kwargs)

    monkeypatch.setattr(Accelerator, "save_state", save_state)
    config = make_config(training={"save_every": 2, "keep_last": 1})
    with pytest.raises(OSError, match="disk full") as error:
        retain.train(config_from_dict(config), progress=False)
    checkpoints = tmp_path / "run" / "checkpoints"
    assert error.value.errno == errno.ENOSPC
    assert str(checkpoints / "step-2") in str(error.value) and "intact" in str(error.value)
    assert sorted(p.name for p in checkpoints.iterdir()) == ["step-2"]  # no temp dir left behind
    monkeypatch.setattr(Accelerator, "save_state", real_save)
    assert retain.train(config_from_dict(config), resume=True, progress=False).steps == 6


def test_disk_full_while_writing_final_leaves_no_temp_dir(make_config, tmp_path, monkeypatch):
    from transformers import PreTrainedModel

    def save_pretrained(self, directory, *args, **kwargs):
        open(f"{directory}/model.safetensors", "wb").write(b"half a file")
        disk_full()

    monkeypatch.setattr(PreTrainedModel, "save_pretrained", save_pretrained)
    with pytest.raises(OSError, match="disk full") as error:
        run(make_config, training={"save_every": 4})
    out = tmp_path / "run"
    assert str(out / "checkpoints" / "step-4") in str(error.value)
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []
    assert not (out / "final").exists() and (out / "checkpoints" / "step-4" / "model.safetensors").is_file()


def test_a_full_disk_in_any_library_words_is_an_oserror_naming_the_file(tmp_path, monkeypatch):
    from retain.core.files import as_disk_full, atomic_torch_save

    monkeypatch.setattr(torch, "save", lambda obj, f: (open(f, "wb").write(b"half"), torch_disk_full()))
    with pytest.raises(OSError) as error:
        atomic_torch_save(tmp_path / "fisher.pt", {"w": torch.zeros(3)})
    assert (error.value.errno, error.value.filename) == (errno.ENOSPC, str(tmp_path / "fisher.pt"))
    assert list(tmp_path.iterdir()) == []  # the temp file went with the error
    assert as_disk_full(RuntimeError("shapes (2, 3) and (4,) differ"), tmp_path) is None  # a bug stays a bug
    assert as_disk_full(OSError(errno.ENOSPC, "No space left on device", "named.txt"), tmp_path) is None


# --- 6b. a collapsed model is not saved as if fine --------------------------------------------------

def test_a_dead_step_is_a_uniform_loss_with_no_gradient():
    from retain.training.collapse import dead_step

    vocab = 300
    logits, targets = torch.zeros(5, vocab), torch.arange(5)  # equal logits: a uniform guess
    uniform = torch.nn.functional.cross_entropy(logits, targets)
    assert dead_step(uniform, torch.tensor(0.0), vocab)
    assert not dead_step(uniform, torch.tensor(0.5), vocab)  # a fresh model: about ln V, but it can still learn
    assert not dead_step(uniform - 0.01, torch.tensor(0.0), vocab)  # converged somewhere else


def test_a_collapse_is_a_streak_of_dead_steps_or_a_dead_last_step(tmp_path):
    from retain.training.collapse import DEAD_STEPS, CollapseError, CollapseWatch

    watch = CollapseWatch(300, lr=1.0)
    for step, dead in enumerate([True] * (DEAD_STEPS - 1) + [False] + [True] * (DEAD_STEPS - 1), start=1):
        watch.after_step(dead, step, 100, tmp_path, True)  # a streak that ends is not a collapse
    with pytest.raises(CollapseError, match=f"collapsed at step {DEAD_STEPS + 1}:"):
        watch.after_step(True, 2 * DEAD_STEPS, 100, tmp_path, True)
    with pytest.raises(CollapseError, match="collapsed at step 5:"):
        CollapseWatch(300, lr=1.0).after_step(True, 5, 5, tmp_path, True)


def test_a_model_dead_from_the_start_stops_the_run_with_no_checkpoint_and_no_final(make_config, tiny_model,
                                                                                    tmp_path):
    """Zero final norm and output layer: every logit is 0 (loss ln V) and every gradient is 0, at every step."""
    from retain.training.collapse import DEAD_STEPS, CollapseError
    from safetensors.torch import save_file

    dead = shutil.copytree(tiny_model, tmp_path / "dead")
    weights = load_file(str(dead / "model.safetensors"))
    for name in ("model.norm.weight", "lm_head.weight"):
        weights[name] = torch.zeros_like(weights[name])
    save_file(weights, str(dead / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(CollapseError, match=fr"collapsed at step 1: .*\(checked through step {DEAD_STEPS}\)"):
        run(make_config, model={"name": str(dead)}, training={"save_every": 1})
    out = tmp_path / "run"
    assert not (out / "final").exists() and not list(out.glob("checkpoints/*"))  # a dead step is never saved


# --- 7. mitigation state belongs to the checkpoint ------------------------------------------------

RETENTION = {"suite": "english", "limit": 2, "every": 2, "max_drop": 1000.0, "action": "rollback"}


def kill_at_step(monkeypatch, step):
    from retain.mitigations.budget import RetentionBudget

    real_check = RetentionBudget.check

    def check(self, model, at, last_step):
        if at == step:
            raise Killed(f"killed at step {at}")
        return real_check(self, model, at, last_step)

    monkeypatch.setattr(RetentionBudget, "check", check)
    return lambda: monkeypatch.setattr(RetentionBudget, "check", real_check)


def test_retention_history_survives_a_resume(make_config, tmp_path, monkeypatch):
    sections = dict(training={"max_steps": 8, "save_every": 2, "keep_last": 10}, mitigations={"retention": RETENTION})
    run(make_config, output={"dir": str(tmp_path / "straight")}, **sections)
    straight = json.loads((tmp_path / "straight" / "retention.json").read_text())
    assert [c["step"] for c in straight["checks"]] == [2, 4, 6, 8]

    revive = kill_at_step(monkeypatch, 5)
    config = config_from_dict(make_config(output={"dir": str(tmp_path / "killed")}, **sections))
    with pytest.raises(Killed):
        retain.train(config, progress=False)
    revive()
    retain.train(config, resume=True, progress=False)
    resumed = json.loads((tmp_path / "killed" / "retention.json").read_text())
    assert [c["step"] for c in resumed["checks"]] == [2, 4, 6, 8]


def test_rollback_after_a_resume_restores_the_true_last_good_weights(make_config, tiny_model, tmp_path, monkeypatch):
    from retain.mitigations.budget import RetentionBudget

    # The third check (step 6) breaches: roll back to the weights of the check at step 4.
    monkeypatch.setattr(RetentionBudget, "_within", lambda self, model: (len(self.history) != 2, {"english": 0.0}))
    sections = dict(training={"max_steps": 8, "save_every": 2, "keep_last": 10}, mitigations={"retention": RETENTION})
    straight = run(make_config, output={"dir": str(tmp_path / "straight")}, **sections)
    assert straight.steps == 6

    revive = kill_at_step(monkeypatch, 5)
    config = config_from_dict(make_config(output={"dir": str(tmp_path / "killed")}, **sections))
    with pytest.raises(Killed):
        retain.train(config, progress=False)
    revive()
    resumed = retain.train(config, resume=True, progress=False)
    a, b = (load_file(str(r.final_dir / "model.safetensors")) for r in (straight, resumed))
    base = load_file(str(tiny_model / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], base[k]) for k in a)  # step 4's weights, not the base's
    record = json.loads((tmp_path / "killed" / "retention.json").read_text())
    assert {k: record["outcome"][k] for k in ("action", "step", "restored_step")} == {
        "action": "rollback", "step": 6, "restored_step": 4}


def test_penalty_state_round_trips():
    from retain.mitigations.penalties import EWC, EWCOptions

    saved, resumed = EWC(EWCOptions(file="unused")), EWC(EWCOptions(file="unused"))
    saved.anchor, saved.raw_importance = {"w": torch.ones(2)}, {"w": torch.tensor([1.0, 3.0])}
    resumed.anchor = {"w": torch.zeros(2)}  # what its own setup measured
    resumed.load_state_dict(saved.state_dict())
    assert torch.equal(resumed.anchor["w"], torch.ones(2))
    assert torch.equal(resumed.importance["w"], torch.tensor([0.5, 1.5]))  # normalised by its mean, as at setup
    with pytest.raises(ValueError, match="anchor"):
        resumed.load_state_dict({"anchor": {"v": torch.ones(2)}, "importance": None})


# --- 8. exact gradient accumulation ----------------------------------------------------------------

@pytest.mark.parametrize("mitigations", [{}, {"kl": {"weight": 1.0}, "l2sp": {"weight": 1.0}}],
                         ids=["plain", "kl-l2sp"])
def test_gradient_accumulation_is_exact(make_config, tmp_path, mitigations):
    # Uneven target counts per micro-batch are what a mean-per-micro-batch gets wrong.
    rows = [{"prompt": f"what is {a} plus {b} ?", "response": " " + " ".join(["1"] * (1 + (a * b) % 7))}
            for a in range(6) for b in range(6)]
    data = write_jsonl(tmp_path / "uneven.jsonl", rows)
    runs = {}
    for name, batch, accum in (("8x1", 8, 1), ("4x2", 4, 2), ("2x4", 2, 4)):
        runs[name] = run(make_config, data={"train": str(data)}, mitigations=mitigations,
                         training={"batch_size": batch, "grad_accum": accum, "max_steps": 2, "lr": 1e-3,
                                   "bf16": False},  # exact numbers: float32 on every machine
                         output={"dir": str(tmp_path / name)})
    losses = {k: [r["loss"] for r in v.metrics if "loss" in r] for k, v in runs.items()}
    weights = {k: load_file(str(v.final_dir / "model.safetensors")) for k, v in runs.items()}
    for name in ("4x2", "2x4"):
        assert losses[name] == pytest.approx(losses["8x1"], rel=1e-5, abs=1e-7)
        for key, tensor in weights["8x1"].items():
            torch.testing.assert_close(weights[name][key], tensor, rtol=0, atol=1e-6, msg=f"{name} {key}")


def test_two_processes_equal_one_with_the_same_global_batch(make_config, tmp_path):
    import os

    import yaml

    rows = [{"prompt": f"what is {a} plus {b} ?", "response": " " + " ".join(["1"] * (1 + (a * b) % 7))}
            for a in range(6) for b in range(6)]
    data = write_jsonl(tmp_path / "uneven.jsonl", rows)
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    for name, batch, launcher in [
        ("one", 8, [sys.executable, "-m", "retain"]),
        ("two", 4, [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                    "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "retain"]),
    ]:
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(make_config(data={"train": str(data)}, output={"dir": str(tmp_path / name)},
                                                   training={"batch_size": batch, "max_steps": 2, "lr": 1e-3,
                                                             "bf16": False})))  # float32 everywhere
        proc = subprocess.run([*launcher, "train", str(path)], capture_output=True, text=True, env=env, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
    losses = {name: [json.loads(line)["loss"] for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
              for name in ("one", "two")}
    assert losses["two"] == pytest.approx(losses["one"], rel=1e-5)
    one, two = (load_file(str(tmp_path / name / "final" / "model.safetensors")) for name in ("one", "two"))
    for key, tensor in one.items():
        torch.testing.assert_close(two[key], tensor, rtol=0, atol=1e-6, msg=key)
