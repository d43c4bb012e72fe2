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


# The methods through which the loop calls a role, in the order above (plus the two duties).
ROLES = (ModelTransform, DataTransform, Setup, LossTerm, GradientFilter, Monitor, WeightTransform, Stateful,
         WritesFiles)
ROLE_METHODS = ("transform_model", "transform_data", "setup", "loss_term", "filter_gradients", "check",
                "transform_weights", "state_dict", "load_state_dict", "files")


def check_roles(cls: type) -> None:
    """A mitigation class plays at least one role, and no method of it is a near-miss of a role method.

    Roles are matched by method name (the protocols above), so a typo — `transfrom_model` — would
    otherwise skip the role without a word. TypeError names the class and the likely intended name.
    """
    import difflib

    own = [name for name in dir(cls) if not name.startswith("_") and callable(getattr(cls, name))]
    for name in own:
        if name in ROLE_METHODS:
            continue
        close = difflib.get_close_matches(name, ROLE_METHODS, n=1, cutoff=0.8)
        if close:
            raise TypeError(f"{cls.__name__}.{name}: not a role method — did you mean {close[0]}? "
                            "(roles are matched by name; see retain.mitigations.roles)")
    if not any(name in own for name in ROLE_METHODS[:7]):
        raise TypeError(f"{cls.__name__} plays no role: implement one of {', '.join(ROLE_METHODS[:7])}")
