"""Checkpoints: everything a resumed run needs to continue exactly where this one stopped.

    checkpoints/step-N/
        model.safetensors, optimizer.bin, scheduler, random_states_*.pkl    accelerate's state
        config.yaml          the config it was trained with (rundir refuses a resume under another)
        mitigations.pt       each stateful mitigation's state_dict, by config name (retention history, anchors)
        trainer_state.json   retain's position (step, examples seen); written last: it marks the checkpoint complete

A checkpoint is written as `.step-N.tmp` and renamed when complete, so a run killed, or a disk
filled, mid-write leaves nothing that `--resume` would mistake for a checkpoint; a write that fails
(whatever error torch or safetensors raise) removes its temp folder, so a full disk gets its space
back. Nothing non-finite is ever saved: the loop calls `check_finite` first, so the newest checkpoint
is always a good one.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
from pathlib import Path

import torch

from retain.core.paths import CONFIG_FILE
from retain.core.errors import UserError
from retain.core.files import atomic_directory, is_disk_full
from retain.model.loading import model_source

STEP_DIR = re.compile(r"^step-(\d+)$")
STATE_FILE = "trainer_state.json"
ROLES_FILE = "mitigations.pt"


class NonFiniteError(UserError, RuntimeError):
    """The loss, the gradients or the weights hold nan/inf (a learning rate too high for the model,
    float16 overflow). Raised before the optimizer steps on them and before anything is saved: the
    checkpoint the message names is the newest good one."""


class DiskFullError(OSError):
    """No space left while writing a checkpoint or final/; the partial write is removed."""

    def __str__(self) -> str:  # the message alone, without "[Errno 28]"
        return self.strerror or super().__str__()


def list_checkpoints(output_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints, oldest first."""
    root = output_dir / "checkpoints"
    found = []
    if root.is_dir():
        for child in root.iterdir():
            match = STEP_DIR.match(child.name)
            if match and (child / STATE_FILE).is_file():
                found.append((int(match.group(1)), child))
    return sorted(found)


def latest_checkpoint(output_dir: Path) -> tuple[int, Path] | None:
    found = list_checkpoints(output_dir)
    return found[-1] if found else None


def last_good(output_dir: Path) -> str:
    newest = latest_checkpoint(output_dir)
    return f"Last good checkpoint: {newest[1] if newest else 'none'}."


def non_finite_tensors(model: torch.nn.Module, optimizer=None) -> list[str]:
    """Names of the parameters (and optimizer state tensors) that hold nan or inf."""
    named = [(n, p) for n, p in model.named_parameters()]
    if optimizer is not None:
        param_names = {id(p): n for n, p in named}
        named += [(f"optimizer {key} of {param_names.get(id(p), '?')}", v)
                  for p, state in optimizer.state.items() for key, v in state.items() if torch.is_tensor(v)]
    named = [(n, t) for n, t in named if t.is_floating_point()]
    if not named:
        return []
    finite = torch.stack([torch.isfinite(t).all().to(named[0][1].device) for _, t in named]).tolist()  # one sync
    return [n for (n, _), ok in zip(named, finite) if not ok]


def check_finite(accelerator, model, optimizer, output_dir: Path, when: str) -> None:
    """Raise NonFiniteError, on every process, if any process's weights or optimizer state are not finite."""
    bad = non_finite_tensors(model, optimizer)
    count = len(bad)
    if accelerator.num_processes > 1:  # sharded states: each process checks its own part
        count = int(accelerator.reduce(torch.tensor(count, device=accelerator.device), "sum").item())
    if count:
        shown = ", ".join(bad[:3]) + (", ..." if len(bad) > 3 else "")
        raise NonFiniteError(f"{when}: {count} weight or optimizer tensors are not finite ({shown}); nothing was "
                             f"saved. {last_good(output_dir)} Try a lower training.lr, or train in float32 or "
                             "bfloat16 (float16 overflows at 65504).")


def any_failed(accelerator, error: BaseException | None, what: str) -> None:
    """Raise on every process if any process failed at `what` (none may wait at a barrier for a dead partner)."""
    if accelerator.num_processes > 1:
        failed = accelerator.reduce(torch.tensor(int(error is not None), device=accelerator.device), "sum").item()
        if failed and error is None:
            raise RuntimeError(f"{what}: another process failed (its error is above)")
    if error is not None:
        raise error


def disk_full(error: Exception, what: str, output_dir: Path) -> Exception:
    """`error` as a DiskFullError that says what is kept, if it is a full disk in any library's words
    (retain.core.files.is_disk_full); else unchanged."""
    if not is_disk_full(error):
        return error
    newest = latest_checkpoint(output_dir)
    kept = (f"earlier checkpoints are intact (newest: {newest[1]}); free space on that disk, then rerun with "
            "--resume" if newest else "no checkpoint had been saved, so this run's training is lost "
            "(training.save_every keeps some)")
    said = "" if isinstance(error, OSError) else f" ({type(error).__name__}: {str(error).strip().splitlines()[-1]})"
    code = error.errno if isinstance(error, OSError) else errno.ENOSPC
    return DiskFullError(code, f"disk full while writing {what}{said}: the partial write was removed; {kept}")


def _attempt(write) -> Exception | None:
    """The error `write()` raised, if any: torch and safetensors raise their own types (RuntimeError,
    SafetensorError), not only OSError, and every one must leave no temp folder behind."""
    try:
        write()
    except Exception as e:  # noqa: BLE001 (raised again by any_failed, after the temp folder is removed)
        return e
    return None


def save_checkpoint(accelerator, output_dir: Path, step: int, keep_last: int, trainer_state: dict,
                    config_yaml: str, role_states: dict) -> Path:
    """Write checkpoints/step-<step>/ atomically, then keep only the newest `keep_last`.

    Every process writes its part (accelerate decides who writes what, e.g. one RNG file per
    rank) into the same temp directory; the main process writes retain's files and renames it.
    """
    root = output_dir / "checkpoints"
    target, tmp = root / f"step-{step}", root / f".step-{step}.tmp"
    error = None
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        error = _attempt(lambda: tmp.mkdir(parents=True))
    accelerator.wait_for_everyone()
    if error is None:
        error = _attempt(lambda: accelerator.save_state(str(tmp), safe_serialization=True))
    if error is None and accelerator.is_main_process:
        def write_retain_files():
            torch.save(role_states, tmp / ROLES_FILE)
            (tmp / CONFIG_FILE).write_text(config_yaml)
            (tmp / STATE_FILE).write_text(json.dumps(dict(trainer_state, step=step), indent=2) + "\n")

        error = _attempt(write_retain_files)
    if error is not None and accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    any_failed(accelerator, error and disk_full(error, f"checkpoint {target}", output_dir), "saving a checkpoint")
    if accelerator.is_main_process:
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
        for _, old in list_checkpoints(output_dir)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return target


def load_checkpoint(accelerator, path: Path) -> tuple[dict, dict]:
    """Restore accelerate's state from `path`; returns (retain's trainer state, mitigation states by name)."""
    accelerator.load_state(str(path))
    roles = path / ROLES_FILE
    states = torch.load(roles, map_location="cpu", weights_only=True) if roles.is_file() else {}
    return json.loads((path / STATE_FILE).read_text()), states


def save_final(model, tokenizer, config, final_dir: Path) -> None:
    """final/: the full model, or the adapter (whose base is the directory or hub id the run loaded)."""
    from peft import PeftModel

    with atomic_directory(final_dir) as tmp:
        if isinstance(model, PeftModel):
            # peft reloads the base from this name: it cannot resolve retain's aliases or GGUF files,
            # and a relative directory would only be found from the same working directory
            base = model_source(config.model)
            base = str(Path(base).resolve()) if Path(base).is_dir() else base
            for peft_config in model.peft_config.values():
                peft_config.base_model_name_or_path = base
            model.save_pretrained(tmp, safe_serialization=True)
            if config.output.merged_export:
                merged = model.merge_and_unload()
                merged.save_pretrained(tmp / "merged", safe_serialization=True)
                tokenizer.save_pretrained(tmp / "merged")
        else:
            model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
