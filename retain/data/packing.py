"""Several short examples per row (`data.packing`): fewer, fuller rows, and no compute spent on padding.

    pack(examples, length) -> [Example]      rows of at most `length` tokens, each an Example with `positions`

A packed row is the examples' tokens one after another, and its `positions` restart at 0 with each
example. Nothing else marks the boundaries: given `position_ids` and no attention mask, transformers
(masking_utils.find_packed_sequence_indices; the flash-attention kernels read the same position ids
as their sequence lengths) keeps every token's attention inside its own example, and the restarted
positions give each example the rotary or learned position embeddings it has alone. So a token sees
what it would see in a padded batch, and its logits are the same (tests/training/test_scale_switches.py).

The loss is the same too: the first token of each example is never a target (in a padded batch nothing
predicts it; in a row the previous example's last token would), so the row's targets are exactly its
examples' targets, and the step's token-weighted mean (retain.training.step) is unchanged. Task and
replay examples go in rows of their own, so a row is one or the other (`Example.replay`).

Rows are filled best-fit decreasing (the longest example first, into the row it fills most tightly),
a fixed function of the examples: a resumed run packs the same rows and skips the same ones.
"""

from __future__ import annotations

from retain.data.tokens import IGNORE_INDEX, Example


def pack(examples: list[Example], length: int) -> list[Example]:
    """Rows of at most `length` tokens holding `examples` (none longer than `length`), task and replay apart."""
    rows = []
    for replay in (False, True):
        group = [e for e in examples if e.replay == replay]
        rows += [join(members, replay) for members in best_fit_decreasing(group, length)]
    return rows


def best_fit_decreasing(examples: list[Example], length: int) -> list[list[Example]]:
    """The examples in bins of at most `length` tokens: longest first, each into the fullest bin it fits."""
    bins: list[list[Example]] = []
    free: list[list[int]] = [[] for _ in range(length + 1)]  # room left -> the bins (indices) with that much room
    for e in sorted(examples, key=lambda e: len(e.input_ids), reverse=True):  # stable: ties keep data order
        n = len(e.input_ids)
        room = next((r for r in range(n, length + 1) if free[r]), None)
        if room is None:
            bins.append([])
            index, room = len(bins) - 1, length
        else:
            index = free[room].pop()
        bins[index].append(e)
        free[room - n].append(index)
    return bins


def join(members: list[Example], replay: bool) -> Example:
    """One row: the members' ids one after another, positions from 0 for each, no target at a member's first
    token (its label would be what the previous member's last token predicts)."""
    ids, labels, positions = [], [], []
    for e in members:
        ids += e.input_ids
        labels += [IGNORE_INDEX, *e.labels[1:]]
        positions += range(len(e.input_ids))
    return Example(ids, labels, replay, positions)
