"""WiSE-FT: interpolating the fine-tuned weights back toward the base after training.

Merging several fine-tunes (task arithmetic, TIES) is `retain merge`, in retain.studies.merge."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from retain.mitigations.roles import Context


def interpolate(base: dict[str, torch.Tensor], tuned: dict[str, torch.Tensor], alpha: float) -> dict[str, torch.Tensor]:
    """(1 − α)·base + α·tuned per tensor: α=0 is the base, α=1 the fine-tune."""
    return {k: torch.lerp(base[k].float(), tuned[k].float(), alpha).to(tuned[k].dtype) for k in tuned}


def merged_state(model) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    """(plain model, its state dict): a PEFT model is merged into its base first."""
    from peft import PeftModel

    if isinstance(model, PeftModel):
        model = model.merge_and_unload()
    return model, {k: v.detach() for k, v in model.state_dict().items()}


@dataclass(frozen=True)
class InterpolateOptions:
    alpha: float = field(default=0.5, metadata={
        "help": "weight of the fine-tune: (1 − alpha)·base + alpha·tuned; 0 is the base, 1 the fine-tune"})

    def validate(self):
        if not 0 <= self.alpha <= 1:
            yield "alpha", f"must be in [0, 1], got {self.alpha}"


class Interpolate:
    """WiSE-FT: after training, move back toward the base by (1 − α). An adapter is merged first."""

    def __init__(self, options: InterpolateOptions):
        self.options = options

    def transform_weights(self, model, ctx: Context):
        model, tuned = merged_state(model)
        base = ctx.load_base_model().state_dict()
        model.load_state_dict(interpolate(base, tuned, self.options.alpha))
        return model
