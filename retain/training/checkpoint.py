"""Checkpoints: accelerate's state (weights, optimizer, scheduler, RNG) plus retain's position.

A checkpoint is the directory `checkpoints/step-N/`, written as `.step-N.*.tmp` and renamed
when complete, so a run killed mid-write leaves nothing that `--resume` would mistake for a
checkpoint.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path


STEP_DIR = re.compile(r"^step-(\d+)$")
STATE_FILE = "trainer_state.json"


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


def save_checkpoint(accelerator, output_dir: Path, step: int, state: dict, keep_last: int) -> Path:
    """Write checkpoints/step-<step>/ atomically, then keep only the newest `keep_last`.

    Every process writes its part (accelerate decides who writes what, e.g. one RNG file per
    rank) into the same temp directory; the main process renames it once all are done.
    """
    root = output_dir / "checkpoints"
    target, tmp = root / f"step-{step}", root / f".step-{step}.tmp"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp), safe_serialization=True)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / STATE_FILE).write_text(json.dumps(dict(state, step=step), indent=2) + "\n")
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
        for _, old in list_checkpoints(output_dir)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return target


def load_checkpoint(accelerator, path: Path) -> dict:
    """Restore accelerate's state from `path`; returns retain's trainer state (step, ...)."""
    accelerator.load_state(str(path))
    return json.loads((path / STATE_FILE).read_text())
