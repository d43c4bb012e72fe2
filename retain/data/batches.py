"""Tokenized examples -> padded batches, in a seeded order that a resume can replay exactly."""

from __future__ import annotations

import torch

from retain.data.tokens import IGNORE_INDEX, Example

MODEL_INPUTS = ("input_ids", "attention_mask", "labels")


def collate(examples: list[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest example: input_ids, attention_mask, labels (B, T); replay (B,) bool.

    Only MODEL_INPUTS go to the model; the rest is for loss terms that treat examples differently.
    """
    width = max(len(e.input_ids) for e in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for i, e in enumerate(examples):
        n = len(e.input_ids)
        input_ids[i, :n] = torch.tensor(e.input_ids)
        labels[i, :n] = torch.tensor(e.labels)
        mask[i, :n] = 1
    replay = torch.tensor([e.replay for e in examples], dtype=torch.bool)
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels, "replay": replay}


class SeededOrder(torch.utils.data.Sampler):
    """Example indices for `epochs` passes, each a fresh permutation from (seed, epoch).

    The whole multi-epoch stream is fixed by the seed, so "where we were" is just the number of
    batches already consumed: resuming skips that many and sees exactly the same data.
    """

    def __init__(self, n: int, seed: int, epochs: int):
        self.n, self.seed, self.epochs = n, seed, epochs

    def __iter__(self):
        for epoch in range(self.epochs):
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            yield from torch.randperm(self.n, generator=g).tolist()

    def __len__(self) -> int:
        return self.n * self.epochs
