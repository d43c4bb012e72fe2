"""What both preference objectives need besides their reference (retain.model.reference): per-token
log-probs of the target tokens, and on-device sums of logged metrics.
"""

from __future__ import annotations

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
