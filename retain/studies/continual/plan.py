"""The sequence file (SEQ.yaml), read strictly, and the ordinary run config of each stage.

    output: runs/sequences/lab
    base: configs/full.yaml               # the run config every stage starts from (or a stage's own `config:`)
    common: {training.lr: 3.0e-4}         # dotted overrides for every stage
    suite: lab                            # capabilities scored after every stage (null: none)
    stages:                               # in order; stage k starts from stage k-1's final weights
      - {name: cities, task: city_country, overrides: {data.train: lab:tasks/city_country/train.jsonl}}
      - {name: currency, task: country_currency, config: configs/currency.yaml}
    optimizer: reset                      # or reuse: stage k starts from stage k-1's AdamW state
    replay_buffer: {size: 200, ratio: 0.2, seed: 0}   # replay a reservoir of earlier stages' examples
    isolation: {lora: {r: 8, alpha: 16}}  # one adapter per task, each trained from the base; routed
    multitask: true                       # also train once on the union of the stages' data (reference)
    importance_on: previous_task          # online EWC/SI: importance of the task just learned (or: file)
    split: test, limit: null, batch_size: 64, device: null, resamples: 2000, seed: 0  # seed: the bootstrap's
    seeds: [0, 1, 2]                      # training seeds: one whole sequence each, in <output>/seed<S>/
                                          # (one seed: in <output> itself)

The fields every study file shares (base, suite, output, limit, batch_size, device, common, seeds) are
retain.studies.common's; `retain config --explain sequence` lists every key with its help.

What the runner changes in a stage's config, and nothing else (each stage's final config is written
to <output>/configs/<k>-<name>.yaml and can be trained alone with `retain train`):
    output.dir                  <output>/stages/<k>-<name>
    training.seed               the sequence's seed (`seeds`)
    model.name                  the previous stage's final/ (final/merged/ after a PEFT stage, which then
                                sets output.merged_export); with isolation: always the base model
    mitigations.ewc.fisher_in   the previous stage's fisher.pt / si_importance.pt (online EWC and SI), and
    mitigations.si.importance_in    their .file the previous stage's training data (importance_on:
                                previous_task): the importance of the task just learned is added (with
                                `decay`) to what earlier stages accumulated
    mitigations.replay          the replay buffer's file and ratio (replay_buffer set)
    mitigations.lora            isolation's options, unless the stage already names a PEFT method
"""

from __future__ import annotations

import copy
import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from retain.config import RunConfig, apply_overrides, config_from_dict, config_to_yaml
from retain.core.errors import ConfigError
from retain.studies.common import StudyConfig, load_study, plan_run, read_base

PEFT_NAMES = ("lora", "loha", "lokr", "ia3", "oft", "prompt_tuning", "prefix_tuning")
SAFE_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass(frozen=True)
class StageConfig:
    """One stage of a sequence: a task learned after the stages before it."""

    name: str = field(metadata={"help": "names the stage's directory and its adapter (letters, digits, _ . -)"})
    task: str = field(metadata={
        "help": "the task scored after every stage: a bundled task name or a task YAML (as --suite takes it)"})
    config: str | None = field(default=None, metadata={
        "help": "this stage's run config file (null: the sequence's `base`)"})
    overrides: dict[str, Any] = field(default_factory=dict, metadata={
        "help": "dotted overrides of this stage's run config, applied after `common`"})

    def validate(self):
        if not SAFE_NAME.match(self.name) or self.name == "base":
            yield "name", f"{self.name!r}: use letters, digits, _ . - (and not 'base')"


@dataclass(frozen=True)
class ReplayBufferConfig:
    """A reservoir of earlier stages' training examples, replayed in each later stage."""

    size: int = field(default=200, metadata={
        "help": "examples kept over all earlier stages (a reservoir: each with the same chance)"})
    ratio: float = field(default=0.2, metadata={"help": "share of a stage's training examples drawn from the buffer"})
    seed: int = field(default=0, metadata={"help": "the reservoir's sampling seed"})

    def validate(self):
        if self.size < 1:
            yield "size", f"must be >= 1, got {self.size}"
        if not 0 < self.ratio < 1:
            yield "ratio", f"must be in (0, 1), got {self.ratio}"


@dataclass(frozen=True)
class IsolationConfig:
    """One adapter per task, each trained from the base model, routed by the prompt at scoring time."""

    lora: dict[str, Any] = field(default_factory=lambda: {"r": 8, "alpha": 16}, metadata={
        "help": "each task's adapter: mitigations.lora's options"})


@dataclass(frozen=True, kw_only=True)
class SequenceConfig(StudyConfig):
    """A sequence file: tasks learned one after another, every task scored after every stage."""

    stages: tuple[StageConfig, ...] = field(metadata={
        "help": "in order; stage k starts from stage k-1's final weights"})
    base: str | None = field(default=None, metadata={
        "help": "the run config every stage starts from (null: each stage gives its own `config:`)"})
    suite: str | None = field(default=None, metadata={
        "help": "the capabilities scored after every stage, as `retain eval --suite` takes it (null: the stages' "
                "tasks only)"})
    split: Literal["dev", "test"] = field(default="test", metadata={"help": "the split every row is scored on"})
    optimizer: Literal["reset", "reuse"] = field(default="reset", metadata={
        "help": "reset: a fresh AdamW each stage; reuse: stage k starts from stage k-1's AdamW state"})
    replay_buffer: ReplayBufferConfig | None = field(default=None, metadata={
        "help": "replay a reservoir of earlier stages' examples (null: none)"})
    isolation: IsolationConfig | None = field(default=None, metadata={
        "help": "one adapter per task, each trained from the base, routed by the prompt (null: shared weights)"})
    multitask: bool = field(default=False, metadata={
        "help": "also train once on the union of the stages' data (the multi-task reference)"})
    # Online EWC/SI from stage 2 on: measure the importance on the previous stage's training data (the
    # task just learned), or on the configured `file` (general data) at every stage.
    importance_on: Literal["previous_task", "file"] = field(default="previous_task", metadata={
        "help": "online EWC/SI: the importance of the task just learned (previous_task) or of the configured file"})
    resamples: int = field(default=2000, metadata={"help": "bootstrap resamples for the CIs"})
    seed: int = field(default=0, metadata={"help": "the bootstrap's seed (the training seeds are `seeds`)"})

    def validate(self):
        yield from super().validate()
        if not self.stages:
            yield "stages", "give at least one stage"
        names = [s.name for s in self.stages]
        for i, name in enumerate(names):
            if name in names[:i]:
                yield f"stages[{i}].name", f"{name!r} is used by an earlier stage: stage names must differ"
        tasks = [s.task for s in self.stages]
        for i, task in enumerate(tasks):
            if task in tasks[:i]:
                yield f"stages[{i}].task", f"{task!r} is scored for an earlier stage: one task per stage"
        for i, stage in enumerate(self.stages):
            if stage.config is None and self.base is None:
                yield f"stages[{i}].config", "no run config: give the stage a `config:`, or the sequence a `base:`"
        if self.isolation is not None and self.optimizer == "reuse":
            yield "optimizer", "reuse carries AdamW state from stage to stage; isolated adapters share none"
        if self.isolation is not None and self.replay_buffer is not None:
            yield "replay_buffer", "isolated adapters train each task alone: drop replay_buffer or isolation"
        if self.resamples < 100:
            yield "resamples", f"must be >= 100, got {self.resamples}"


def load_sequence(path: Path, overrides: list[str] | tuple[str, ...] = ()) -> SequenceConfig:
    """SEQ.yaml, strictly: an unknown key or a wrong type is a ConfigError naming the file and key.

    `overrides`: `key=value` strings for the sequence file itself (e.g. "optimizer=reuse"), applied first.
    """
    return load_study(SequenceConfig, path, "sequence file", lambda data: apply_overrides(data, list(overrides)))


def seed_sequences(seq: SequenceConfig) -> dict[int, SequenceConfig]:
    """Training seed -> the sequence run with it: the file's own output with one seed, <output>/seed<S> with
    several (each a whole sequence: its stages, scores and summary)."""
    if len(seq.seeds) == 1:
        return {seq.seeds[0]: seq}
    return {s: dataclasses.replace(seq, output=str(Path(seq.output) / f"seed{s}"), seeds=[s]) for s in seq.seeds}


def stage_dir(seq: SequenceConfig, k: int) -> Path:
    """Stage k's run directory (k counts from 1)."""
    return Path(seq.output) / "stages" / f"{k}-{seq.stages[k - 1].name}"


def raw_stage_config(seq: SequenceConfig, k: int, where: Path) -> dict:
    """Stage k's run config as a dict: its file (or `base`), then `common`, then its overrides, then the
    sequence's training seed (one sequence runs one seed: seed_sequences)."""
    stage = seq.stages[k - 1]
    here = f"{where}: stages[{k - 1}] ({stage.name})"
    return plan_run(read_base(stage.config or seq.base, here), {**seq.common, **stage.overrides}, stage_dir(seq, k),
                    here, seq.seeds[0])


def check_stage(data: dict, seq: SequenceConfig, k: int, where: Path) -> RunConfig:
    """The stage's RunConfig, checked (ConfigError naming the sequence file and stage)."""
    stage = seq.stages[k - 1]
    try:
        config = config_from_dict(copy.deepcopy(data))
    except ConfigError as e:
        raise ConfigError(f"{where}: stages[{k - 1}] ({stage.name}): {e}") from None
    mitigations = config.mitigations
    if seq.replay_buffer is not None and "replay" in mitigations:
        raise ConfigError(f"{where}: stages[{k - 1}] ({stage.name}): mitigations.replay and the sequence's "
                          "replay_buffer both replay data — keep one")
    if seq.isolation is not None and any(m in mitigations for m in ("ewc", "si", "l2sp")):
        raise ConfigError(f"{where}: stages[{k - 1}] ({stage.name}): isolated adapters share no weights to "
                          "protect — drop ewc/si/l2sp or isolation")
    return config


def explicit_lab_defaults(config: RunConfig) -> dict:
    """The config as plain data, with the defaults the lab filled in written out.

    A later stage starts from a directory, not from retain-tiny, and the lab's defaults (general
    data for replay or EWC) are only filled in for retain-tiny: written out, they carry over.
    """

    return yaml.safe_load(config_to_yaml(config))


def uses_peft(data: dict) -> bool:
    return any(name in (data.get("mitigations") or {}) for name in PEFT_NAMES)
