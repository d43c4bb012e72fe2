"""Interpolating and merging weights after training (WiSE-FT, task arithmetic, TIES)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from retain.mitigations.roles import Context


def interpolate(base: dict[str, torch.Tensor], tuned: dict[str, torch.Tensor], alpha: float) -> dict[str, torch.Tensor]:
    """(1 − α)·base + α·tuned per tensor: α=0 is the base, α=1 the fine-tune."""
    return {k: torch.lerp(base[k].float(), tuned[k].float(), alpha).to(tuned[k].dtype) for k in tuned}


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


def merged_state(model) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    """(plain model, its state dict): a PEFT model is merged into its base first."""
    from peft import PeftModel

    if isinstance(model, PeftModel):
        model = model.merge_and_unload()
    return model, {k: v.detach() for k, v in model.state_dict().items()}


@dataclass(frozen=True)
class InterpolateOptions:
    alpha: float = 0.5  # weight of the fine-tune

    def validate(self):
        if not 0 <= self.alpha <= 1:
            yield "alpha", f"must be in [0, 1], got {self.alpha}"


class Interpolate:
    """WiSE-FT: after training, move back toward the base by (1 − α). An adapter is merged first."""

    def __init__(self, options: InterpolateOptions):
        self.options = options

    def transform_weights(self, model, ctx: Context):
        from retain.modeling import load_model

        model, tuned = merged_state(model)
        base = load_model(ctx.config.model).state_dict()
        model.load_state_dict(interpolate(base, tuned, self.options.alpha))
        return model
