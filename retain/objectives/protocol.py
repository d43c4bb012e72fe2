"""What the loop asks of a training objective (SFT, DPO, GRPO): what its data is and what the step's task loss is.

An objective class says so in its header (`class DPO(Objective)`) and implements every method below; a test
checks both for each row of retain.objectives.OBJECTIVES. The loop (retain.training.loop, retain.training.step)
calls them at these points:

    from_config(config, mitigations) -> objective      phase 1, after the mitigations are built, before the data
    load(source, tokenizer, data_config) -> Dataset    phase 1, for data.train and data.dev
    collate(items, pad_id) -> batch                    the loaders' collate; items are (index in the list, example)
    setup(model, ctx, train_examples, dev_examples)    phase 1, after the mitigations' setup (role 3): its reference
    prepare(model, micro_batches) -> micro_batches     each step, before counting: GRPO samples and rewards here
    count(batch) -> () tensor                          what weights a micro-batch in the step (tokens; DPO: pairs)
    loss(model, inner, batch) -> ({name: term}, outputs)   each micro-batch: the task loss, by name ("task", "dpo",
                                                       ...), and the forward's outputs the mitigations' terms read
    log_row(accelerator) -> dict                       at log steps: its own metrics (dpo/..., grpo/..., reward/...)
    evaluate(model, inner, dev_loader, accelerator) -> dict   at eval steps: its dev metrics (eval/loss, eval/dpo, ...)

and reads two facts of it:

    supervised              its examples are next-token Examples (prompt, response): the mitigations that read,
                            rewrite or reweight them apply (ctx.dev_examples, self_distill, DFT, EAFT, ASFT)
    plain_next_token_loss   its task loss is the unweighted mean next-token cross-entropy, whose scale (ln V at
                            a uniform prediction) the collapse watch reads (retain.training.collapse)

State for checkpoints is optional: an objective that keeps some (GRPO's adapted KL coefficient) also plays
retain.mitigations.roles.Stateful, and is saved and restored under the name "objective".
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch

METHODS = ("from_config", "load", "collate", "setup", "prepare", "count", "loss", "log_row", "evaluate")
FACTS = ("name", "supervised", "plain_next_token_loss")


@runtime_checkable
class Objective(Protocol):
    name: str  # its training.objective value, and its key in OBJECTIVES
    supervised: bool
    plain_next_token_loss: bool

    @classmethod
    def from_config(cls, config, mitigations: list) -> "Objective":
        """The objective of a run config (`training.<name>` options), given the run's built mitigations."""
        ...

    def load(self, source, tokenizer, data) -> Any: ...

    def collate(self, items: list[tuple[int, Any]], pad_id: int) -> dict: ...

    def setup(self, model: torch.nn.Module, ctx, train_examples: list, dev_examples: list | None) -> None: ...

    def prepare(self, model: torch.nn.Module, micro_batches: list[dict]) -> list[dict]: ...

    def count(self, batch: dict) -> torch.Tensor: ...

    def loss(self, model, inner: torch.nn.Module, batch: dict) -> tuple[dict[str, torch.Tensor], Any]: ...

    def log_row(self, accelerator) -> dict: ...

    def evaluate(self, model, inner: torch.nn.Module, loader, accelerator) -> dict: ...
