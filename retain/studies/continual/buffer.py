"""A replay buffer for task sequences: a fixed-size, seeded reservoir over every earlier stage's examples.

    buffer = Reservoir(size=200, seed=0)
    buffer.extend(stage_1_rows); buffer.extend(stage_2_rows)
    buffer.items   # at most 200 rows; each row seen so far is in it with probability size / seen

Reservoir sampling (Vitter's algorithm R) keeps a uniform sample of a stream of unknown length in
fixed memory: after n rows, every one of them is in the buffer with the same probability size/n,
whichever stage it came from, so the oldest task is not crowded out by the newest. The RNG is
seeded, and the buffer is a function of (seed, size, the rows in order): the sequence runner
rebuilds it from the stages' data rather than storing it, so a resumed sequence replays exactly
what an uninterrupted one would.
"""

from __future__ import annotations

import random
from typing import Any, Iterable


class Reservoir:
    def __init__(self, size: int, seed: int = 0):
        if size < 1:
            raise ValueError(f"reservoir size must be >= 1, got {size}")
        self.size = size
        self.seen = 0  # rows offered so far
        self.items: list[Any] = []
        self._rng = random.Random(seed)

    def add(self, row: Any) -> None:
        """Offer one row: kept while the buffer has room, then with probability size / seen."""
        self.seen += 1
        if len(self.items) < self.size:
            self.items.append(row)
            return
        slot = self._rng.randrange(self.seen)  # uniform in [0, seen): keep the row iff it lands in the buffer
        if slot < self.size:
            self.items[slot] = row

    def extend(self, rows: Iterable[Any]) -> None:
        for row in rows:
            self.add(row)


def reservoir_sample(streams: Iterable[Iterable[Any]], size: int, seed: int = 0) -> list[Any]:
    """The buffer after offering every row of `streams` in order (one stream per earlier stage)."""
    buffer = Reservoir(size, seed)
    for rows in streams:
        buffer.extend(rows)
    return buffer.items
