"""Logits only where they are used: a causal LM's head run on the hidden states of chosen positions.

    with logits_at(model, rows, width):
        logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits   # (N, V), not (B, T, V)
    logits = rows_of(logits, rows, width)   # the same (N, V) whether or not the head ran on the rows only

Training reads the next-token distribution only at target positions (a response's tokens; with padding
and prompts, often a fraction of B·T), yet a forward computes the head, a (H × V) matmul, at every
position: in a small model with a 4k-50k vocabulary that is a quarter or more of the step, and its
(B, T, V) float32 logits are the step's largest tensor. A forward pre-hook on the model's output
embedding (`get_output_embeddings()`, the module every Hugging Face causal LM calls on its final hidden
states) hands the head only the N chosen rows; what follows the head (soft-capping, scaling) is
elementwise and works on (N, V) as well.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch


def shifted_rows(rows: torch.Tensor, width: int, length: int) -> torch.Tensor:
    """`rows` (flat positions b·width + t of a (B, width) batch) as positions of a (B, length) sequence.

    length > width under prompt tuning, whose virtual tokens come before the text: position t is
    t + length − width there.
    """
    if length == width:
        return rows
    return rows // width * length + (length - width) + rows % width


@contextmanager
def logits_at(model: torch.nn.Module, rows: torch.Tensor, width: int) -> Iterator[None]:
    """Within the block, `model`'s forwards compute logits only at `rows` (N,) of their (B, width) input.

    A model without an output-embedding module (or one whose forward bypasses it) is left as it is:
    rows_of() then picks the rows from its full logits.
    """
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is None:
        yield
        return

    def keep_rows(module, args):
        hidden = args[0]  # (B, T', H) final hidden states
        picked = hidden.reshape(-1, hidden.shape[-1]).index_select(0, shifted_rows(rows, width, hidden.shape[1]))
        return (picked, *args[1:])  # (N, H)

    handle = head.register_forward_pre_hook(keep_rows)
    try:
        yield
    finally:
        handle.remove()


def rows_of(logits: torch.Tensor, rows: torch.Tensor, width: int) -> torch.Tensor:
    """(N, V): `logits` as they are if the head ran on the rows only, else their rows `rows` of (B, T', V)."""
    if logits.dim() == 2:
        return logits
    flat = logits.reshape(-1, logits.shape[-1])
    return flat.index_select(0, shifted_rows(rows, width, logits.shape[1]))
