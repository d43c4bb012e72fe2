"""Weights as tensors by name: the trainable ones snapshotted and restored (anchors, the budget's kept checks,
rollback), a fine-tune interpolated toward its base (WiSE-FT, the budget's repair lines), fine-tunes of one base
merged (task arithmetic, TIES).

    trainable(model) -> {name: parameter}        snapshot(model) -> detached copies      restore(model, weights)
    interpolate(base, tuned, alpha)              merged_state(model) -> (plain model, state dict)
    task_arithmetic(base, tuned, scale)          ties_merge(base, tuned, density, scale)
"""

from __future__ import annotations

import torch

from retain.core.errors import ModelError


def trainable(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Detached copies of the trainable weights: an anchor, or a state to restore later."""
    return {n: p.detach().clone() for n, p in trainable(model).items()}


@torch.no_grad()
def restore(model: torch.nn.Module, weights: dict[str, torch.Tensor]) -> None:
    """Copy a snapshot back into the trainable weights; strict: it must name exactly those tensors."""
    params = trainable(model)
    if weights.keys() != params.keys():
        missing, unexpected = sorted(params.keys() - weights.keys()), sorted(weights.keys() - params.keys())
        raise ValueError(f"weights to restore do not fit the model's trainable weights (missing: {missing[:3]}, "
                         f"unexpected: {unexpected[:3]})")
    for name, p in params.items():
        p.copy_(weights[name])


def interpolate(base: dict[str, torch.Tensor], tuned: dict[str, torch.Tensor], alpha: float) -> dict[str, torch.Tensor]:
    """(1 − α)·base + α·tuned per tensor: α=0 is the base, α=1 the fine-tune."""
    return {k: torch.lerp(base[k].float(), tuned[k].float(), alpha).to(tuned[k].dtype) for k in tuned}


def merged_state(model) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    """(plain model, its state dict): a PEFT model is merged into its base first. Soft prompts and prefixes
    (prompt tuning, prefix tuning) change none of the base's weights: there is nothing to merge (ModelError)."""
    from peft import PeftModel

    if isinstance(model, PeftModel):
        if model.peft_config[model.active_adapter].is_prompt_learning:
            method = model.peft_config[model.active_adapter].peft_type.value.lower()
            raise ModelError(f"a {method} adapter adds virtual tokens and changes none of the base's weights: there "
                             "is nothing to merge or interpolate — score the adapter itself (retain eval ADAPTER_DIR)")
        model = model.merge_and_unload()
    return model, {k: v.detach() for k, v in model.state_dict().items()}


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
