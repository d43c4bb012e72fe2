"""A run's output directory: one run at a time, and what a new run may do with an old one.

    locked_output_dir(out)         hold `out/run.lock` (flock, with the holder's pid) for the run's duration
    plan_start(out, config, ...)   read-only: refuse to clobber a run by accident, to resume a finished
                                   run, or to resume under a changed config; say where to start
    clear_outputs(out)             delete a previous run's outputs, once the new run is known to be valid

Nothing here loads a model: these checks run before the expensive part, and a refused run
leaves the directory exactly as it found it.
"""

from __future__ import annotations

import json
import os
import shutil
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import yaml

from retain.config import config_to_yaml
from retain.core.schema import ConfigError
from retain.core.errors import UserError
from retain.core.paths import CONFIG_FILE
from retain.training.checkpoint import STATE_FILE, latest_checkpoint

try:
    import fcntl
except ImportError:  # not POSIX: runs are not locked against each other
    fcntl = None

LOCK_FILE = "run.lock"
# What a run writes (the lock aside). `--overwrite` deletes exactly these, so that no file of the
# old run (a retention.json, a fisher.pt) is later read as the new run's.
RUN_OUTPUTS = ("final", "checkpoints", "metrics.jsonl", "tensorboard", "config.yaml", "retention.json", "fisher.pt",
               "si_importance.pt", "optimizer.pt")
# A directory holding any of these holds a run that a fresh start would destroy.
RUN_MARKERS = ("metrics.jsonl", "checkpoints", "final")
# Keys that change only what is logged or saved, never what is trained: free to change on resume.
FREE_ON_RESUME = ("output.", "training.log_every", "training.save_every", "training.keep_last", "training.eval_every")


class OutputDirBusy(UserError, FileExistsError):
    """Another live process holds the output directory's lock."""


class RunFinished(UserError, FileExistsError):
    """`--resume` of a run that already wrote final/."""


@contextmanager
def locked_output_dir(out: Path) -> Iterator[None]:
    """Hold an exclusive lock on `out` (created if needed) until the block ends.

    The kernel drops an flock when its holder dies, so a lock file left by a killed run never
    blocks. A run that fails before writing anything removes the directory it created.
    """
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    path = out / LOCK_FILE
    fd = _acquire(path, out)
    try:
        yield
    finally:
        # Unlink while still holding the lock: a process waiting on the old file sees it is stale (_acquire).
        path.unlink(missing_ok=True)
        os.close(fd)
        if created:
            try:
                out.rmdir()  # only if empty
            except OSError:
                pass


def _acquire(path: Path, out: Path) -> int:
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        if fcntl is None:
            break
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise OutputDirBusy(f"{out} is in use by another run (pid {holder}, lock {path}): wait for it to end, "
                                "or set output.dir elsewhere") from None
        try:  # the previous holder may have unlinked the file between our open and our flock
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


@contextmanager
def run_lock(out: Path, accelerator) -> Iterator[None]:
    """locked_output_dir on the main process; a busy directory stops every process, not only the main one."""
    with ExitStack() as stack:
        error = None
        if accelerator.is_main_process:
            try:
                stack.enter_context(locked_output_dir(out))
            except OSError as e:  # busy, or not writable: every process must hear of it, or the others wait forever
                error = e
        if accelerator.num_processes > 1:
            from accelerate.utils import broadcast_object_list

            error = broadcast_object_list([error])[0]
        if error is not None:
            raise error
        yield


@dataclass(frozen=True)
class Start:
    checkpoint: Path | None  # resume from here; None: from step 0
    step: int = 0  # the checkpoint's
    examples_seen: int | None = None  # training examples it had consumed (None: not recorded)
    config_changes: tuple[str, ...] = ()  # "key: old -> new" of an allowed change on resume
    note: str = ""  # for the user, printed once


def plan_start(out: Path, config, resume: bool, overwrite: bool, allow_config_change: bool) -> Start:
    """Where the run starts, or why it must not; reads `out`, writes nothing."""
    if resume and overwrite:
        raise ConfigError("--resume continues the run in output.dir and --overwrite replaces it: choose one")
    if not resume:
        previous = [p for p in RUN_MARKERS if (out / p).exists()]
        if previous and not overwrite:
            raise FileExistsError(f"{out} already holds a run ({', '.join(previous)}): pass --resume to continue it, "
                                  "--overwrite to replace it, or set output.dir elsewhere")
        return Start(None)
    if (out / "final").exists():
        raise RunFinished(f"{out} holds a finished run (final/ is written): there is nothing to resume. Pass "
                          f"--overwrite to train it again, or start a new run from its weights (model.name: "
                          f"{out / 'final'}) in another output.dir")
    checkpoint = latest_checkpoint(out)
    if checkpoint is None:
        return Start(None, note=f"--resume: no complete checkpoint in {out / 'checkpoints'}; starting again from "
                                "step 0 (the earlier attempt's outputs are discarded)")
    step, path = checkpoint
    examples_seen = json.loads((path / STATE_FILE).read_text()).get("examples_seen")
    if not (path / CONFIG_FILE).is_file():  # saved by a retain that did not record it
        return Start(path, step, examples_seen,
                     note=f"--resume: {path} does not record its config; cannot check that it is unchanged")
    changes = config_changes(yaml.safe_load((path / CONFIG_FILE).read_text()), config)
    lines = tuple(f"{key}: {change}" for key, change in changes.items())
    if changes and not allow_config_change:
        raise ConfigError(f"--resume: the config differs from the one {path} was trained with:\n  "
                          + "\n  ".join(lines) + "\nRestore those values, or pass --allow-config-change "
                          f"(allow_config_change=True) to continue with the new ones from step {step}")
    note = f"--resume: continuing from step {step} with a changed config:\n  " + "\n  ".join(lines) if lines else ""
    return Start(path, step, examples_seen, lines, note)


def config_changes(saved: dict, config) -> dict[str, str]:
    """{dotted key: "old -> new"} for every value that changes what is trained; a section only one
    side has (a mitigation added or removed) is one entry."""

    absent = object()

    def walk(old, new, key):
        if isinstance(old, dict) and isinstance(new, dict):
            for k in sorted(old.keys() | new.keys()):
                yield from walk(old.get(k, absent), new.get(k, absent), f"{key}.{k}" if key else k)
        elif old != new and not key.startswith(FREE_ON_RESUME):
            yield key, f"{_show(old, absent)} -> {_show(new, absent)}"

    return dict(walk(saved, yaml.safe_load(config_to_yaml(config)), ""))


def _show(value, absent) -> str:
    return "(absent)" if value is absent else value if isinstance(value, str) else json.dumps(value)


def clear_outputs(out: Path) -> None:
    """Delete what an earlier run (or attempt) left in `out`; the caller holds the lock."""
    for name in RUN_OUTPUTS:
        target = out / name
        shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
    for leftover in out.glob(".final.*"):  # a final/ write that was killed
        shutil.rmtree(leftover, ignore_errors=True)
