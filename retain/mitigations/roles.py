"""The roles a mitigation can play. A mitigation class implements one or more of them.

The training loop calls the roles in one fixed order, ORDER below; `describe_order()` renders it for the
loop's docstring and docs/contributing.md's Layout section (a test keeps it equal). Every role method gets
the unwrapped model (never a DDP/FSDP wrapper) and, where it needs more, a `Context`: the few facts of
the run a mitigation may read — not the whole config.

Roles return values; they never reach into the loop's state, and never write files themselves.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol, runtime_checkable

import torch


@dataclass(frozen=True)
class Context:
    """What a mitigation may read about the run (read-only)."""

    tokenizer: Any
    total_steps: int  # optimizer steps of the whole run
    max_length: int  # data.max_length: the longest example, in tokens
    load_base_model: Callable[[], torch.nn.Module]  # a fresh copy of the run's starting model
    output_dir: Path
    dev_examples: list | None = None  # the tokenized data.dev examples, if the run has a dev set
    # the starting model's local directory or hub id (what its weights are known by); a call, because resolving a
    # GGUF file hashes it, which only self-rehearsal needs
    model_source: Callable[[], str] | None = None


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
class TokenWeights(Protocol):
    """Weights of the task loss's target tokens: a micro-batch's task loss becomes the mean over its N targets
    of weight · cross-entropy, weighted across micro-batches like the plain loss (retain.training.step)."""

    def token_weights(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """logits (N, V) at the targets, targets (N,) token ids -> (N,) float32 weights, carrying no gradient."""


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
    """A class whose transform keeps every output as it was (it only re-expresses the weights: LoRA's
    PiSSA start turned back into a plain LoRA) sets `keeps_outputs = True`; what scores or watches the
    model during training may then skip it."""

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


@dataclass(frozen=True)
class Role:
    protocol: type
    methods: tuple[str, ...]  # the methods through which the loop calls it
    when: str


# The order the loop calls the roles in (retain.training.loop), then the two duties beside the order.
ORDER = (
    Role(ModelTransform, ("transform_model",), "once, on the loaded model (PEFT, freezing)"),
    Role(DataTransform, ("transform_data",), "once, on the tokenized task examples (replay)"),
    Role(Setup, ("setup",), "once, after the two above and before the first step (anchors, Fisher, the base "
         "model's retention scores)"),
    Role(TokenWeights, ("token_weights",), "every micro-batch: weights of the task loss's target tokens from the "
         "model's own prediction there (DFT, EAFT, ASFT)"),
    Role(LossTerm, ("loss_term",), "every micro-batch: a named term added to the task loss (KL, L2-SP, EWC, SI)"),
    Role(GradientFilter, ("filter_gradients",), "every step, after backward and before clipping (progressive "
         "unfreezing)"),
    Role(Monitor, ("check",), "every step, after the optimizer step, at its own cadence: continue, stop, or stop "
         "with other weights (retention budget)"),
    Role(WeightTransform, ("transform_weights",), "once, on the trained model (WiSE-FT interpolation)"),
)
DUTIES = (
    Role(Stateful, ("state_dict", "load_state_dict"), "runtime state saved in every checkpoint and restored on "
         "resume (retention history, penalty anchors)"),
    Role(WritesFiles, ("files",), "files for the output dir (retention.json, fisher.pt), written by the loop on "
         "the main process after setup, resume and each deciding check"),
)
ROLES = tuple(r.protocol for r in ORDER + DUTIES)
ROLE_METHODS = tuple(m for r in ORDER + DUTIES for m in r.methods)


def describe_order() -> str:
    """ORDER and DUTIES as text, one line a role (for docstrings and docs/contributing.md)."""
    lines = [f"{k}. {r.protocol.__name__}.{r.methods[0]}: {r.when}" for k, r in enumerate(ORDER, 1)]
    lines += [f"   {r.protocol.__name__}.{' / '.join(r.methods)}: {r.when}" for r in DUTIES]
    return "\n".join(lines)


def playing(mitigations: list, role: type) -> list:
    """The mitigations that play `role`, in table order."""
    return [m for m in mitigations if isinstance(m, role)]


def check_roles(cls: type) -> None:
    """A mitigation class plays at least one role, declares in its header exactly the roles it implements
    (`class Replay(DataTransform):`), and no method of it is a near-miss of a role method.

    Roles are matched by method name (the protocols above), so a typo — `transfrom_model` — would
    otherwise skip the role without a word. TypeError names the class and the likely intended name.
    """

    own = [name for name in dir(cls) if not name.startswith("_") and callable(getattr(cls, name))]
    for name in own:
        if name in ROLE_METHODS:
            continue
        close = difflib.get_close_matches(name, ROLE_METHODS, n=1, cutoff=0.8)
        if close:
            raise TypeError(f"{cls.__name__}.{name}: not a role method — did you mean {close[0]}? "
                            "(roles are matched by name; see retain.mitigations.roles)")
    ordered = [m for r in ORDER for m in r.methods]
    if not any(name in own for name in ordered):
        raise TypeError(f"{cls.__name__} plays no role: implement one of {', '.join(ordered)}")
    declared = {r.protocol.__name__ for r in ORDER + DUTIES if r.protocol in cls.__mro__}
    implemented = {r.protocol.__name__ for r in ORDER + DUTIES if implements(cls, r)}
    if declared != implemented:
        raise TypeError(f"{cls.__name__} declares the roles {sorted(declared)} in its header but implements "
                        f"{sorted(implemented)}: name each role it plays as a base class, and implement each one named "
                        "(a declared role's method left out would be the protocol's empty stub)")


def implements(cls: type, role: Role) -> bool:
    """Whether `cls` itself (or a base that is not the role's protocol) defines every method of `role`."""
    return all(getattr(cls, m, None) is not None and getattr(cls, m) is not getattr(role.protocol, m, None)
               for m in role.methods)
