"""The roles a mitigation can play. A mitigation class implements one or more of them.

The training loop (retain.training.loop) calls the roles in one fixed order:

    1. ModelTransform.transform_model   once, on the loaded model (PEFT, freezing)
    2. DataTransform.transform_data     once, on the tokenized task examples (replay)
    3. LossTerm.setup                   once, after 1-2 and before the first step (anchors, Fisher)
    4. per optimizer step:
         StepHook.on_step               before the forward (progressive unfreezing)
         LossTerm.loss_term             each adds a named term to the task loss
    5. WeightTransform.transform_weights once, on the trained model (interpolation, merging)

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
class LossTerm(Protocol):
    name: str  # logged as loss/<name>

    def setup(self, model: torch.nn.Module, ctx: Context) -> None: ...

    def loss_term(self, model: torch.nn.Module, batch: dict, outputs: Any) -> torch.Tensor: ...


@runtime_checkable
class StepHook(Protocol):
    def on_step(self, model: torch.nn.Module, step: int) -> None: ...


@runtime_checkable
class WeightTransform(Protocol):
    def transform_weights(self, model: torch.nn.Module, ctx: Context) -> torch.nn.Module: ...
