"""Optimizer state carried from one run to the next (the stages of a sequence), instead of reset.

    save_optimizer_state(optimizer, out)        <out>/optimizer.pt, after the run's last step
    load_optimizer_moments(optimizer, path)     a fresh optimizer takes the saved per-weight state

What carries over is the per-weight state only (AdamW's moments and step count); the new run's
hyperparameters (lr, weight decay, schedule) stay its own. Resetting is retain's default between
stages, as practitioners' accounts of forgetting after fine-tuning recommend (optimizer state carried
across stages is one of the causes they name); carrying over exists so that recommendation can be measured.
The two runs must train the same weights in the same order (full fine-tuning of the previous
stage's model does). Written for one process or DDP, where the optimizer holds whole tensors.
"""

from __future__ import annotations

from pathlib import Path

import torch

from retain.core.errors import ConfigError
from retain.core.files import atomic_torch_save

OPTIMIZER_STATE_FILE = "optimizer.pt"


def save_optimizer_state(optimizer, out: Path) -> Path:
    return atomic_torch_save(Path(out) / OPTIMIZER_STATE_FILE, optimizer.state_dict())


def load_optimizer_moments(optimizer, path: Path) -> None:
    """Give `optimizer` the per-weight state saved at `path`; ConfigError if it belongs to other weights."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: optimizer state not found — the previous run did not save it "
                          "(train it with save_optimizer_state=True)")
    saved = torch.load(path, map_location="cpu", weights_only=True)
    current = optimizer.state_dict()
    params = [p for group in optimizer.param_groups for p in group["params"]]
    sizes = [len(g["params"]) for g in saved["param_groups"]]
    if sizes != [len(g["params"]) for g in current["param_groups"]]:
        raise ConfigError(f"{path}: optimizer state for other trainable weights (groups of {sizes} tensors, this "
                          f"run has {[len(g['params']) for g in current['param_groups']]})")
    for index, state in saved["state"].items():
        for key, value in state.items():
            if torch.is_tensor(value) and value.dim() > 0 and value.shape != params[index].shape:
                raise ConfigError(f"{path}: optimizer state '{key}' of weight {index} has shape "
                                  f"{tuple(value.shape)}, the weight {tuple(params[index].shape)}")
    # Keep this run's hyperparameters: only the per-weight state is taken from the file.
    optimizer.load_state_dict({"state": saved["state"], "param_groups": current["param_groups"]})
