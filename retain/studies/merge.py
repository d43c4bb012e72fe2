"""`retain merge`: WiSE-FT interpolation, task arithmetic or TIES over fine-tunes of one base model."""

from __future__ import annotations

from pathlib import Path

from retain.core.files import atomic_directory
from retain.model.loading import load_for_eval
from retain.model.weights import interpolate, merged_state, task_arithmetic, ties_merge


def merge_models(base_name: str, model_paths: list[str], method: str, out: Path, density: float = 0.2,
                 scale: float = 1.0, alpha: float = 0.5) -> Path:
    base_model, tokenizer = load_for_eval(base_name)
    _, base = merged_state(base_model)
    tuned = [merged_state(load_for_eval(p)[0])[1] for p in model_paths]
    if method == "interpolate":
        if len(tuned) != 1:
            raise ValueError("interpolate takes exactly one fine-tuned model")
        state = interpolate(base, tuned[0], alpha)
    elif method == "task_arithmetic":
        state = task_arithmetic(base, tuned, scale)
    else:
        state = ties_merge(base, tuned, density, scale)
    base_model.load_state_dict(state)
    with atomic_directory(out) as tmp:
        base_model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    return out
