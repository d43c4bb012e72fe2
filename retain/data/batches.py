"""Tokenized examples -> padded batches, in a seeded order that a resume can replay exactly."""

from __future__ import annotations

import torch

from retain.data.tokens import IGNORE_INDEX, Example

MODEL_INPUTS = ("input_ids", "attention_mask", "labels")


def collate(examples: list[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest example: input_ids, attention_mask, labels (B, T); replay (B,) bool.
    Packed rows (retain.data.packing) add position_ids (B, T): each example's from 0, the padding's too
    (a segment of its own that nothing attends to).

    Only model_inputs(batch) go to the model; the rest is for loss terms that treat examples differently.
    """
    width = max(len(e.input_ids) for e in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    packed = any(e.positions is not None for e in examples)
    positions = torch.zeros((len(examples), width), dtype=torch.long) if packed else None
    for i, e in enumerate(examples):
        n = len(e.input_ids)
        input_ids[i, :n] = torch.tensor(e.input_ids)
        labels[i, :n] = torch.tensor(e.labels)
        mask[i, :n] = 1
        if packed:
            positions[i, :n] = torch.tensor(e.positions if e.positions is not None else range(n))
            positions[i, n:] = torch.arange(width - n)
    replay = torch.tensor([e.replay for e in examples], dtype=torch.bool)
    batch = {"input_ids": input_ids, "attention_mask": mask, "labels": labels, "replay": replay}
    return {**batch, "position_ids": positions} if packed else batch


def model_inputs(batch: dict) -> dict:
    """What a training forward gets of a collated batch: the ids, how its tokens see each other — the padding
    mask, or for packed rows their position ids alone (with no attention mask and no cache, transformers keeps
    attention inside each run of positions counting up from 0: one example) — and no KV cache."""
    if batch.get("position_ids") is not None:
        return {"input_ids": batch["input_ids"], "position_ids": batch["position_ids"], "use_cache": False}
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"], "use_cache": False}


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
