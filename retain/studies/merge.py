"""`retain merge`: WiSE-FT interpolation, task arithmetic or TIES over fine-tunes of one base model."""

from __future__ import annotations

from pathlib import Path

import torch

from retain.core.files import atomic_directory
from retain.model.loading import load_for_eval
from retain.model.weights import interpolate, merged_state, task_arithmetic, ties_merge


class BaseWeights:
    """A base model loaded once to write many merges of its fine-tunes (a sweep's WiSE-FT lines: every run, every α).
    `state` is a copy of the base's weights: writing a merge loads new weights into `model`, never into `state`."""

    def __init__(self, name: str):
        self.model, self.tokenizer = load_for_eval(name)
        self.model, state = merged_state(self.model)
        self.state = {k: v.clone() for k, v in state.items()}

    @staticmethod
    def tuned(path: str) -> dict[str, torch.Tensor]:
        """A fine-tune's weights (a PEFT adapter merged into its base first)."""
        return merged_state(load_for_eval(path)[0])[1]

    def write(self, state: dict[str, torch.Tensor], out: Path) -> Path:
        """The base model with weights `state`, saved with its tokenizer to `out` (atomically)."""
        self.model.load_state_dict(state)
        with atomic_directory(out) as tmp:
            self.model.save_pretrained(tmp, safe_serialization=True)
            self.tokenizer.save_pretrained(tmp)
        return out


def merge_models(base_name: str, model_paths: list[str], method: str, out: Path, density: float = 0.2,
                 scale: float = 1.0, alpha: float = 0.5) -> Path:
    base = BaseWeights(base_name)
    tuned = [base.tuned(p) for p in model_paths]
    if method == "interpolate":
        if len(tuned) != 1:
            raise ValueError("interpolate takes exactly one fine-tuned model")
        state = interpolate(base.state, tuned[0], alpha)
    elif method == "task_arithmetic":
        state = task_arithmetic(base.state, tuned, scale)
    else:
        state = ties_merge(base.state, tuned, density, scale)
    return base.write(state, out)
