"""WiSE-FT: interpolating the fine-tuned weights back toward the base after training.

Merging several fine-tunes (task arithmetic, TIES) is `retain merge`, in retain.studies.merge."""

from __future__ import annotations

from dataclasses import dataclass, field

from retain.mitigations.roles import Context, WeightTransform
from retain.model.weights import interpolate, merged_state


@dataclass(frozen=True)
class InterpolateOptions:
    alpha: float = field(default=0.5, metadata={
        "help": "weight of the fine-tune: (1 − alpha)·base + alpha·tuned; 0 is the base, 1 the fine-tune"})

    def validate(self):
        if not 0 <= self.alpha <= 1:
            yield "alpha", f"must be in [0, 1], got {self.alpha}"


class Interpolate(WeightTransform):
    """WiSE-FT: after training, move back toward the base by (1 − α). An adapter is merged first."""

    def __init__(self, options: InterpolateOptions):
        self.options = options

    def transform_weights(self, model, ctx: Context):
        model, tuned = merged_state(model)
        base = ctx.load_base_model().state_dict()
        model.load_state_dict(interpolate(base, tuned, self.options.alpha))
        return model
