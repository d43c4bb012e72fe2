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

Beside the order, two duties:
    Stateful.state_dict / load_state_dict   runtime state (retention history and last-good weights,
                                            penalty anchors) saved in every checkpoint, restored on resume
    WritesFiles.files                       the files a role leaves in the output dir (retention.json,
                                            fisher.pt); the loop writes them, on the main process only

Roles return values; they never reach into the loop's state, and never write files themselves.
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
    """A term added to the task loss. It is taken to be a mean over the micro-batch's target positions
    and is weighted like the task loss (retain.training.step); a class whose term depends on the weights
    alone sets `per_step = True` and the term counts once per optimizer step."""

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


@runtime_checkable
class Stateful(Protocol):
    """State that changes while training and must survive a resume (tensors, numbers, lists, dicts)."""

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None:
        """Restore exactly what state_dict returned; raise ValueError if it does not fit this run."""


@runtime_checkable
class WritesFiles(Protocol):
    def files(self) -> dict[str, Any]:
        """name -> content of files for the output dir: a `.json` name is written as JSON, any other with
        torch.save. Asked after setup (and resume) and after each check of a Monitor that decided."""
