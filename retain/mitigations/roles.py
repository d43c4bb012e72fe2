"""The roles a mitigation can play. A mitigation class implements one or more of them.

The training loop (retain.training.loop) calls the roles in one fixed order:

    1. ModelTransform.transform_model   once, on the loaded model (PEFT, freezing)
    2. DataTransform.transform_data     once, on the tokenized task examples (replay)
    3. Setup.setup                      once, after 1-2 and before the first step (anchors, Fisher,
                                        the base model's retention scores)
    4. per optimizer step:
         LossTerm.loss_term             each adds a named term to the task loss (KL, EWC, ...)
         GradientFilter.filter_gradients after backward, before clipping (progressive unfreezing)
         Monitor.check                  after the step, at its own cadence: continue, stop, or
                                        stop with other weights (retention budget)
    5. WeightTransform.transform_weights once, on the trained model (interpolation)

Roles return values; they never reach into the loop's state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch


@dataclass(frozen=True)
class Context:
    """What a mitigation may read about the run (read-only)."""

    config: Any  # retain.config.RunConfig
    tokenizer: Any
    total_steps: int


@runtime_checkable
class ModelTransform(Protocol):
    def transform_model(self, model: torch.nn.Module, ctx: Context) -> torch.nn.Module: ...


@runtime_checkable
class DataTransform(Protocol):
    def transform_data(self, examples: list, ctx: Context) -> list: ...


@runtime_checkable
class Setup(Protocol):
    def setup(self, model: torch.nn.Module, ctx: Context) -> None: ...


@runtime_checkable
class LossTerm(Protocol):
    name: str  # logged as loss/<name>

    def loss_term(self, model: torch.nn.Module, batch: dict, outputs: Any) -> torch.Tensor: ...


@runtime_checkable
class GradientFilter(Protocol):
    def filter_gradients(self, model: torch.nn.Module, step: int) -> None:
        """May set .grad = None on parameters that must not move at this step (AdamW then skips them)."""


@dataclass(frozen=True)
class Decision:
    stop: bool = False
    reason: str = ""
    weights: dict | None = None  # state dict to load before stopping (rollback / repair)
    metrics: dict | None = None  # logged under their names


@runtime_checkable
class Monitor(Protocol):
    def check(self, model: torch.nn.Module, step: int, last_step: bool) -> Decision | None: ...


@runtime_checkable
class WeightTransform(Protocol):
    def transform_weights(self, model: torch.nn.Module, ctx: Context) -> torch.nn.Module: ...
