"""SFT: the next-token loss on supervised examples' targets (`training.objective: sft`, the default).

The task loss of a micro-batch is the mean cross-entropy over its target tokens, and a micro-batch is
weighted in the step by its target tokens (retain.training.step makes the step's loss the mean over all of
them). Token weights (DFT, EAFT, ASFT: mitigations playing TokenWeights) multiply each target's
cross-entropy inside that mean, so the step stays exact with them.

The logits are computed only where a target is: the loop's batches say where (`target_rows`, found on the
host by `collate_indexed`), the LM head runs on those hidden states alone (retain.model.head), and the
cross-entropy is their mean, the same value as the model's own loss without the (B, T, V) logits.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from retain.data import IGNORE_INDEX, MODEL_INPUTS, collate, load_dataset, model_inputs
from retain.model.head import logits_at, rows_of
from retain.mitigations.roles import TokenWeights, playing
from retain.objectives.protocol import Objective


def target_tokens(batch: dict) -> torch.Tensor:
    """() long: positions whose next token is a training target (labels (B, T), shifted as the model does)."""
    return (batch["labels"][:, 1:] != IGNORE_INDEX).sum()


def target_rows(labels: torch.Tensor) -> torch.Tensor:
    """(N,) long: the flat positions b·T + t of labels (B, T) whose next token is a target."""
    b, t = (labels[:, 1:] != IGNORE_INDEX).nonzero(as_tuple=True)
    return b * labels.shape[1] + t


def collate_indexed(pairs: list, pad_id: int) -> dict:
    """collate() of (index, example) pairs, plus two keys that spare the step work and host syncs:

    target_rows  (N,) long: the flat positions b·T + t whose next token is a target, found here on the
                 host, so the step's head and loss run on N rows without asking the device for N
    index        the examples' positions in the training list, a tuple of ints (accelerate moves
                 tensors to the device, not tuples): what KL counts and caches its teacher by
    """
    batch = collate([example for _, example in pairs], pad_id)
    batch["target_rows"] = target_rows(batch["labels"])
    batch["index"] = tuple(i for i, _ in pairs)
    return batch


@dataclass
class TargetOutputs:
    """A forward's result at the target positions only (what loss terms read: `.logits`, `.rows`)."""

    loss: torch.Tensor  # () mean cross-entropy over the N targets
    logits: torch.Tensor  # (N, V) next-token logits at `rows`
    rows: torch.Tensor  # (N,) flat positions b·T + t whose next token is a target


def task_forward(model, inner, batch: dict, reweighting: list | tuple = ()):
    """The next-token forward and loss: at the targets only when the batch has `target_rows`, else the
    model's own (logits everywhere; a batch from outside retain's loop).

    `reweighting`: mitigations playing TokenWeights (DFT, EAFT); the loss is then the mean over the
    targets of the product of their weights times each token's cross-entropy.
    """
    rows = batch.get("target_rows")
    if rows is None and not reweighting:
        return model(**{k: batch[k] for k in MODEL_INPUTS})
    if rows is None:  # the targets, as collate_indexed finds them
        rows = target_rows(batch["labels"])
    width = batch["input_ids"].shape[1]
    with logits_at(inner, rows, width):  # the hook sits on the unwrapped model's head; DDP calls the same module
        out = model(**model_inputs(batch))  # packed rows: position ids, no mask
    logits = rows_of(out.logits, rows, width)  # (N, V)
    targets = batch["labels"].flatten().index_select(0, rows + 1)  # position t of a row predicts token t + 1
    if not reweighting:
        return TargetOutputs(F.cross_entropy(logits.float(), targets), logits, rows)
    per_token = F.cross_entropy(logits.float(), targets, reduction="none")  # (N,)
    for m in reweighting:
        per_token = per_token * m.token_weights(logits, targets)
    return TargetOutputs(per_token.mean(), logits, rows)


@torch.no_grad()
def dev_loss(model, dataloader, accelerator) -> float:
    """Token-weighted mean loss over the whole dev set, summed across processes."""
    model.eval()
    total = torch.zeros(2)
    for batch in dataloader:
        out = model(**{k: batch[k] for k in MODEL_INPUTS})
        n_tokens = target_tokens(batch)
        total += torch.stack([out.loss.float().cpu() * n_tokens.cpu(), n_tokens.cpu().float()])
    model.train()
    total = accelerator.reduce(total.to(accelerator.device), "sum").cpu()
    return (total[0] / total[1].clamp(min=1)).item()


class SFT(Objective):
    """The next-token objective: the step's task loss ("task") is the cross-entropy of its examples' targets."""

    name = "sft"
    supervised = True

    def __init__(self, token_weights: list | tuple = ()):
        self.token_weights = list(token_weights)  # mitigations playing TokenWeights (DFT, EAFT, ASFT), if any

    @classmethod
    def from_config(cls, config, mitigations: list) -> SFT:
        return cls(playing(mitigations, TokenWeights))

    @property
    def plain_next_token_loss(self) -> bool:
        return not self.token_weights  # token weights change the loss's scale: the collapse watch stands down

    def load(self, source, tokenizer, data):
        return load_dataset(source, tokenizer, data.format, data.max_length, data.loss_on, data.chat,
                            data.chat_template)

    collate = staticmethod(collate_indexed)

    def setup(self, model, ctx, train_examples: list, dev_examples: list | None) -> None:
        pass  # the next-token loss needs no reference model

    def prepare(self, model, micro_batches: list[dict]) -> list[dict]:
        return micro_batches  # the examples are complete as loaded

    count = staticmethod(target_tokens)

    def loss(self, model, inner, batch: dict):
        outputs = task_forward(model, inner, batch, self.token_weights)
        return {"task": outputs.loss}, outputs

    def log_row(self, accelerator) -> dict:
        return {}  # its loss is the loop's loss/task

    def evaluate(self, model, inner, loader, accelerator) -> dict:
        return {"eval/loss": dev_loss(model, loader, accelerator)}
