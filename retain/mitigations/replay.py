"""Replay: mix general data back into the task data at an exact ratio."""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from typing import ClassVar

from retain.paths import resolve_path
from retain.mitigations.roles import Context

GENERAL_DATA_HELP = "a JSONL file of general text the model should keep (any shape retain reads)"


def replay_count(n_task: int, ratio: float) -> int:
    """How many replay examples make them `ratio` of the mixed set: r / (1 - r) per task example."""
    return round(ratio * n_task / (1 - ratio))


def mix_replay(task: list, pool: list, ratio: float, seed: int) -> list:
    """Task examples plus replay examples drawn from `pool` (without replacement while it lasts)."""
    n = replay_count(len(task), ratio)
    rng = random.Random(seed)
    drawn = []
    while len(drawn) < n:
        drawn += rng.sample(pool, min(len(pool), n - len(drawn)))
    return list(task) + drawn


@dataclass(frozen=True)
class ReplayOptions:
    ratio: float = field(default=0.15, metadata={
        "help": "share of the mixed training examples that are general data, in (0, 1)"})
    file: str | None = field(default=None, metadata={
        "help": "JSONL of general data, any shape retain reads; required unless the model is retain-tiny"})
    seed: int = field(default=0, metadata={"help": "seed for drawing the replay examples from the file"})

    # what retain.config.fill_lab_defaults fills in for retain-tiny (and asks any other model for)
    LAB_DEFAULTS: ClassVar[dict] = {"file": ("lab:general.jsonl", GENERAL_DATA_HELP)}

    def validate(self):
        if not 0 < self.ratio < 1:
            yield "ratio", f"must be in (0, 1), got {self.ratio}"
        if self.file is not None and not resolve_path(self.file).is_file():
            yield "file", f"file not found: {resolve_path(self.file)}"


class Replay:
    """General data mixed back into the task data, at an exact share of the examples."""

    def __init__(self, options: ReplayOptions):
        self.options = options

    def transform_data(self, examples: list, ctx: Context) -> list:
        from retain.data import load_dataset

        pool = load_dataset(resolve_path(self.options.file), ctx.tokenizer, "auto", ctx.max_length, "all")
        pool = [replace(e, replay=True) for e in pool.examples]
        return mix_replay(examples, pool, self.options.ratio, self.options.seed)
