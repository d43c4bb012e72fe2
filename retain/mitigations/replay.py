"""Replay: mix general data back into the task data at an exact ratio: from a file, or written by the base
model itself before training (`source: self`, retain.mitigations.rehearsal)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from typing import Literal

from retain.core.paths import resolve_path
from retain.data import general_examples
from retain.mitigations.distill import KLOptions
from retain.core.errors import DataError
from retain.mitigations.rehearsal import RehearsalSettings, read_prompts, self_rehearsal
from retain.mitigations.roles import Context, DataTransform

GENERAL_DATA_HELP = "a JSONL file of general text the model should keep (any shape retain reads)"


# The default share of replayed examples: 0.15 of general data from a file (the 10-20% practitioners use); 0.5 of
# the base's own records, which held SmolLM2's chat answers and plain text on one seed where 0.3 did not
# (docs/self-rehearsal.md; over three seeds, plain text and most chat answers: docs/real-model.md)
FILE_RATIO, SELF_RATIO = 0.15, 0.5


def implied_kl(replay: ReplayOptions, given: dict) -> dict:
    """What `replay.source: self` adds to the mitigations: KL to the base on the rehearsal tokens (on-policy
    distillation, `kl_weight`), unless the config gives its own `kl` or sets kl_weight 0."""
    if replay.source != "self" or replay.kl_weight == 0 or "kl" in given:
        return {}
    return {"kl": KLOptions(weight=replay.kl_weight, apply_to="replay")}


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
    ratio: float | None = field(default=None, metadata={
        "help": "share of the mixed training examples that are general data, in (0, 1); null: 0.15 from a file, "
                "0.5 when the base writes them (source self; measured on SmolLM2: docs/self-rehearsal.md)"})
    file: str | None = field(default=None, metadata={
        "help": "JSONL of general data, any shape retain reads; required unless the model is retain-tiny"})
    seed: int = field(default=0, metadata={"help": "seed for drawing the replay examples (and, source self, "
                                                   "for the base's sampling)"})
    source: Literal["file", "self"] = field(default="file", metadata={
        "help": "file: replay `file`; self: the base model writes its own replay data before training (chat "
                "exchanges in its chat template and plain text), cached per model and settings"})
    samples: int = field(default=200, metadata={"help": "source self: how many records the base writes"})
    chat_share: float = field(default=0.7, metadata={
        "help": "source self: share of chat exchanges among them (the rest plain text); a model without a chat "
                "template writes plain text only"})
    prompts: str | None = field(default=None, metadata={
        "help": "source self: a file of user prompts (JSONL with a prompt field, or one per line) for the base to "
                "answer, instead of prompts it writes from its template's user-turn opening"})
    openings: str | None = field(default=None, metadata={
        "help": "source self: a file of text openings (one per line, or JSONL with a text field) the base continues "
                "for its plain-text records, each in turn, instead of its first token: to hold the languages or "
                "kinds of text it rarely writes unprompted; each record is the opening and its continuation"})
    max_new_tokens: int = field(default=128, metadata={
        "help": "source self: the longest answer or text, in tokens (an answer it cuts is dropped)"})
    answer_temperature: float = field(default=0.0, metadata={
        "help": "source self: sampling temperature of the base's answers; 0: greedy"})
    kl_weight: float = field(default=1.0, metadata={
        "help": "source self: weight of a KL to the base on the rehearsal tokens (mitigations.kl with apply_to: "
                "replay), added unless mitigations.kl is given; 0: none"})
    cache_dir: str | None = field(default=None, metadata={
        "help": "source self: where the written records are kept; null: $RETAIN_CACHE/rehearsal, else "
                "~/.cache/retain/rehearsal"})

    def __post_init__(self):
        if self.ratio is None:  # frozen: the default that depends on the source, set once
            object.__setattr__(self, "ratio", SELF_RATIO if self.source == "self" else FILE_RATIO)

    def validate(self):
        if not 0 < self.ratio < 1:
            yield "ratio", f"must be in (0, 1), got {self.ratio}"
        if self.file is not None and not resolve_path(self.file).is_file():
            yield "file", f"file not found: {resolve_path(self.file)}"
        if self.source == "self":
            if self.file is not None:
                yield "file", "source is self (the base writes the replay data): drop file, or set source: file"
            if self.samples < 1:
                yield "samples", f"must be at least 1, got {self.samples}"
            if not 0 <= self.chat_share <= 1:
                yield "chat_share", f"must be in [0, 1], got {self.chat_share}"
            if self.max_new_tokens < 1:
                yield "max_new_tokens", f"must be at least 1, got {self.max_new_tokens}"
            if self.kl_weight < 0:
                yield "kl_weight", f"must be 0 (no KL) or more, got {self.kl_weight}"
            if self.answer_temperature < 0:
                yield "answer_temperature", f"must be 0 (greedy) or more, got {self.answer_temperature}"
            for key, what in (("prompts", "prompt"), ("openings", "opening")):  # read before anything is written
                path = getattr(self, key)
                if path is None:
                    continue
                if not resolve_path(path).is_file():
                    yield key, f"file not found: {resolve_path(path)}"
                    continue
                try:
                    if not read_prompts(path):
                        yield key, f"{path}: no {what} in the file"
                except DataError as e:
                    yield key, str(e)
        else:
            if self.prompts is not None:
                yield "prompts", "only for source: self (the base answers them)"
            if self.openings is not None:
                yield "openings", "only for source: self (the base continues them)"

    def rehearsal(self) -> RehearsalSettings:
        return RehearsalSettings(samples=self.samples, chat_share=self.chat_share, max_new_tokens=self.max_new_tokens,
                                 answer_temperature=self.answer_temperature, seed=self.seed, prompts=self.prompts,
                                 openings=self.openings)


class Replay(DataTransform):
    """General data mixed back into the task data, at an exact share of the examples."""

    def __init__(self, options: ReplayOptions):
        self.options = options

    def transform_data(self, examples: list, ctx: Context) -> list:
        o = self.options
        if o.source == "self":
            source = ctx.model_source() if ctx.model_source else None
            path = self_rehearsal(o.rehearsal(), source, ctx.tokenizer, ctx.load_base_model, o.cache_dir)
        else:
            path = o.file
        pool = [replace(e, replay=True) for e in general_examples(path, ctx.tokenizer, ctx.max_length)]
        return mix_replay(examples, pool, self.options.ratio, self.options.seed)
