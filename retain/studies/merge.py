"""`retain merge`: WiSE-FT interpolation, task arithmetic or TIES over fine-tunes of one base model."""

from __future__ import annotations

from pathlib import Path

import torch

from retain.core.files import atomic_directory
from retain.mitigations.interpolation import interpolate, merged_state
from retain.model.loading import load_for_eval


def task_arithmetic(base: dict, tuned: list[dict], scale: float = 1.0) -> dict:
    """base + scale · Σ_i (tuned_i − base)."""
    return {k: base[k] + scale * sum(t[k] - base[k] for t in tuned) for k in base}


def ties_merge(base: dict, tuned: list[dict], density: float = 0.2, scale: float = 1.0) -> dict:
    """TIES (Yadav et al. 2023): trim each task vector to its top-`density` magnitudes, elect a sign per
    weight by the summed trimmed vectors, average the entries that agree with it."""
    merged = {}
    for k in base:
        deltas = torch.stack([t[k].float() - base[k].float() for t in tuned])  # (n, ...)
        flat = deltas.reshape(len(tuned), -1)
        keep = max(1, int(round(density * flat.shape[1])))
        threshold = flat.abs().kthvalue(flat.shape[1] - keep + 1, dim=1, keepdim=True).values
        trimmed = torch.where(flat.abs() >= threshold, flat, torch.zeros_like(flat))
        sign = torch.sign(trimmed.sum(0))
        agree = (torch.sign(trimmed) == sign) & (trimmed != 0)
        mean = (trimmed * agree).sum(0) / agree.sum(0).clamp(min=1)
        merged[k] = (base[k].float() + scale * mean.reshape(base[k].shape)).to(base[k].dtype)
    return merged


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
