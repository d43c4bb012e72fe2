"""The base model a run started from, as a reference to measure the fine-tune against (KL, DPO, GRPO, warnings).

Under PEFT the reference is the model being trained with its adapters disabled (no second copy, as TRL
does); otherwise a frozen copy made when the reference is built, before the first step. A reference
built with `copy=False` keeps no copy: the model itself is the base until it is trained (setup work
before the first step, DPO's precomputed log-probs).

    reference = Reference(model)                       # at setup, from the weights then
    logits = reference.logits(model, batch)            # (B, T', V), no gradient
    logits = reference.logits(model, batch, rows)      # (N, V) at the flat positions rows (retain.model.head)
    with reference.model(model) as base: ...           # the base itself, e.g. to sample from it
    reference.release()                                # drop the frozen copy once nothing needs it

The reference runs in eval mode (no dropout) under no_grad, in the run's compute dtype (accelerate's
autocast wraps the model's forward, and a deepcopy keeps that wrapper bound to the copy).
"""

from __future__ import annotations

import copy as copies
from contextlib import contextmanager, nullcontext
from typing import Iterator

import torch

from retain.model.head import logits_at, rows_of

FORWARD_INPUTS = ("input_ids", "attention_mask", "position_ids")  # what the base's forward reads of a batch


def has_adapters(model: torch.nn.Module) -> bool:
    """Whether `model` is a PEFT model, whose base is itself with its adapters disabled."""
    return hasattr(model, "disable_adapter")


def adapters_disabled(model: torch.nn.Module):
    """A context in which `model` runs as its base: PEFT adapters off; a plain model is its own base."""
    return model.disable_adapter() if has_adapters(model) else nullcontext()


class Reference:
    """The base model's forward: `model` with its adapters disabled under PEFT, else a frozen copy of it.

    model: the (unwrapped) model as it is before the first step; copy: keep a frozen copy when `model` has
    no adapters (False: nothing needs the base after setup, or the caller is done before training).
    """

    def __init__(self, model: torch.nn.Module, copy: bool = True):
        self.copy: torch.nn.Module | None = None
        self.released = False
        if copy and not has_adapters(model):
            self.copy = copies.deepcopy(model).eval().requires_grad_(False)

    @contextmanager
    def model(self, model: torch.nn.Module) -> Iterator[torch.nn.Module]:
        """The base to call, in eval mode and under no_grad, for the duration of the block; `model` is the
        model being trained (its adapters are disabled in the block when it has them and there is no copy)."""
        if self.released:
            raise RuntimeError("the reference was released: its frozen copy is gone")
        base = self.copy if self.copy is not None else model
        was_training = base.training
        base.eval()  # no dropout in the reference
        try:
            with torch.no_grad(), (adapters_disabled(model) if self.copy is None else nullcontext()):
                yield base
        finally:
            base.train(was_training)

    def logits(self, model: torch.nn.Module, batch: dict, rows: torch.Tensor | None = None) -> torch.Tensor:
        """The base's logits on `batch` (input_ids, attention_mask, position_ids where given): (B, T', V), or
        (N, V) at the flat positions `rows` (N,) b·T + t of the (B, T) batch, with the head run there only."""
        inputs = {k: batch[k] for k in FORWARD_INPUTS if batch.get(k) is not None}
        with self.model(model) as base:
            if rows is None:
                return base(**inputs, use_cache=False).logits
            width = batch["input_ids"].shape[1]
            with logits_at(base, rows, width):
                return rows_of(base(**inputs, use_cache=False).logits, rows, width)

    def release(self) -> None:
        """Drop the frozen copy (its memory); under PEFT there is none. The reference is unusable after."""
        self.copy, self.released = None, True
