"""What both preference objectives need: per-token log-probs of the target tokens, the frozen reference, and
on-device sums of logged metrics.

The reference is the base model the run started from: under PEFT the same model with its adapters disabled
(no second copy, as TRL does); otherwise a frozen copy made before the first step, unless nothing needs it
after setup (DPO with precomputed reference log-probs).
"""

from __future__ import annotations

import copy
from contextlib import contextmanager, nullcontext

import torch
import torch.nn.functional as F

from retain.data import IGNORE_INDEX


def token_logps(logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """(N, T-1) float: log p(label_t+1 | ..t) at each target position, 0 elsewhere.

    logits (N, T', V) with T' >= T (prompt-learning PEFT prepends virtual tokens: the last T are the text's);
    labels (N, T), IGNORE_INDEX where no target. Only target positions are normalised over the vocabulary:
    with completions a fraction of the sequence, that is most of the saving.
    """
    N, T = labels.shape
    logits = logits[:, -T:-1]  # (N, T-1, V): position t predicts token t+1
    targets = labels[:, 1:]  # (N, T-1)
    mask = targets != IGNORE_INDEX
    picked = logits[mask].float() / temperature  # (K, V)
    values = picked.gather(-1, targets[mask].unsqueeze(-1)).squeeze(-1) - picked.logsumexp(-1)  # (K,)
    out = torch.zeros(targets.shape, dtype=values.dtype, device=values.device)
    return out.masked_scatter(mask, values)


def sequence_logps(logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """(N,): the summed log-prob of each row's target tokens (a completion's log-likelihood)."""
    return token_logps(logits, labels, temperature).sum(-1)


class Reference:
    """The base model's forward: adapters disabled under PEFT, else a frozen copy (made by `setup`)."""

    def __init__(self):
        self.copy: torch.nn.Module | None = None

    def setup(self, model: torch.nn.Module, keep_copy: bool = True) -> None:
        from peft import PeftModel

        if keep_copy and not isinstance(model, PeftModel):
            self.copy = copy.deepcopy(model).eval().requires_grad_(False)

    @contextmanager
    def model(self, model: torch.nn.Module):
        """The reference to call, in eval mode (no dropout), for the duration of the block. Before the first
        step (setup) `model` itself is the base, so no copy is needed there."""
        from peft import PeftModel

        ref = self.copy if self.copy is not None else model
        peft = self.copy is None and isinstance(model, PeftModel)
        was_training = ref.training
        ref.eval()
        try:
            with torch.no_grad(), (model.disable_adapter() if peft else nullcontext()):
                yield ref
        finally:
            ref.train(was_training)

    def logits(self, model: torch.nn.Module, batch: dict) -> torch.Tensor:
        with self.model(model) as ref:
            return ref(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


class Tally:
    """Sums of logged values and their counts, kept on the device until a log step reads their means."""

    def __init__(self):
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, torch.Tensor] = {}

    def add(self, name: str, values: torch.Tensor) -> None:
        """Add each element of `values` (any shape) to `name`'s sum and count."""
        values = values.detach().float()
        self.sums[name] = self.sums.get(name, 0) + values.sum()
        self.counts[name] = self.counts.get(name, 0) + values.numel()

    def means(self, accelerator) -> dict[str, float]:
        """The means since the last call, over every process (a collective: call it on all of them); then reset."""
        if not self.sums:
            return {}
        names = sorted(self.sums)
        device = accelerator.device
        sums = torch.stack([torch.as_tensor(self.sums[n], device=device, dtype=torch.float32) for n in names])
        counts = torch.tensor([float(self.counts[n]) for n in names], device=device)
        sums, counts = accelerator.reduce(sums, "sum"), accelerator.reduce(counts, "sum")
        self.sums, self.counts = {}, {}
        return {n: v for n, v in zip(names, (sums / counts.clamp(min=1)).tolist())}


def ce_sum(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """() the summed cross-entropy of every target token of the rows (replay rows' plain LM loss)."""
    if labels.shape[0] == 0:
        return logits.sum() * 0
    return F.cross_entropy(logits[:, -labels.shape[1]:-1].flatten(0, 1).float(), labels[:, 1:].flatten(),
                           ignore_index=IGNORE_INDEX, reduction="sum")
