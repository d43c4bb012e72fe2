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
    split: test, limit: null, batch_size: 64, device: null, resamples: 2000, seed: 0

What the runner changes in a stage's config, and nothing else (each stage's final config is written
to <output>/configs/<k>-<name>.yaml and can be trained alone with `retain train`):
    output.dir                  <output>/stages/<k>-<name>
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
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from retain.config import RunConfig, apply_overrides, config_from_dict, config_to_yaml, set_dotted
from retain.errors import ConfigError
from retain.strict import build, read_yaml

PEFT_NAMES = ("lora", "loha", "lokr", "ia3", "oft", "prompt_tuning", "prefix_tuning")
SAFE_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass(frozen=True)
class StageConfig:
    name: str  # names the stage's directory and its adapter (letters, digits, _ . -)
    task: str  # the task scored after every stage: a bundled task name or a task YAML (as --suite takes it)
    config: str | None = None  # this stage's run config file; default: the sequence's `base`
    overrides: dict[str, Any] = field(default_factory=dict)  # dotted keys, applied after `common`

    def validate(self):
        if not SAFE_NAME.match(self.name) or self.name == "base":
            yield "name", f"{self.name!r}: use letters, digits, _ . - (and not 'base')"


@dataclass(frozen=True)
class ReplayBufferConfig:
    size: int = 200  # examples kept, over all earlier stages (a reservoir: each with the same chance)
    ratio: float = 0.2  # share of a stage's training examples drawn from the buffer
    seed: int = 0

    def validate(self):
        if self.size < 1:
            yield "size", f"must be >= 1, got {self.size}"
        if not 0 < self.ratio < 1:
            yield "ratio", f"must be in (0, 1), got {self.ratio}"


@dataclass(frozen=True)
class IsolationConfig:
    lora: dict[str, Any] = field(default_factory=lambda: {"r": 8, "alpha": 16})  # each task's adapter


@dataclass(frozen=True)
class SequenceConfig:
    output: str
    stages: tuple[StageConfig, ...]
    base: str | None = None
    common: dict[str, Any] = field(default_factory=dict)
    suite: str | None = None  # the capability suite, as `retain eval --suite` takes it; None: tasks only
    split: Literal["dev", "test"] = "test"
    limit: int | None = None  # items per task
    batch_size: int = 64
    device: str | None = None
    optimizer: Literal["reset", "reuse"] = "reset"
    replay_buffer: ReplayBufferConfig | None = None
    isolation: IsolationConfig | None = None
    multitask: bool = False
    # Online EWC/SI from stage 2 on: measure the importance on the previous stage's training data (the
    # task just learned), or on the configured `file` (general data) at every stage.
    importance_on: Literal["previous_task", "file"] = "previous_task"
    resamples: int = 2000  # bootstrap resamples for the CIs
    seed: int = 0  # of the bootstrap

    def validate(self):
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
        if self.limit is not None and self.limit < 1:
            yield "limit", f"must be >= 1, got {self.limit}"
        if self.resamples < 100:
            yield "resamples", f"must be >= 100, got {self.resamples}"


def load_sequence(path: Path, overrides: list[str] | tuple[str, ...] = ()) -> SequenceConfig:
    """SEQ.yaml, strictly: an unknown key or a wrong type is a ConfigError naming the file and key.

    `overrides`: `key=value` strings for the sequence file itself (e.g. "optimizer=reuse"), applied first.
    """
    data = read_yaml(path, "sequence file")  # its errors name the file and line already
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping (output, stages, ...) at the top level")
    apply_overrides(data, list(overrides))
    try:
        return build(SequenceConfig, data)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def stage_dir(seq: SequenceConfig, k: int) -> Path:
    """Stage k's run directory (k counts from 1)."""
    return Path(seq.output) / "stages" / f"{k}-{seq.stages[k - 1].name}"


def raw_stage_config(seq: SequenceConfig, k: int, where: Path) -> dict:
    """Stage k's run config as a dict: its file (or `base`), then `common`, then its overrides."""
    stage = seq.stages[k - 1]
    source = stage.config or seq.base
    try:
        data = read_yaml(source, "run config")
    except ConfigError as e:
        raise ConfigError(f"{where}: stages[{k - 1}] ({stage.name}): {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: stages[{k - 1}] ({stage.name}): {source} is not a run config (expected a "
                          "mapping of sections)")
    data = copy.deepcopy(data)
    for dotted, value in {**seq.common, **stage.overrides}.items():
        set_dotted(data, dotted, value, f"{where}: stages[{k - 1}] ({stage.name})")
    set_dotted(data, "output.dir", str(stage_dir(seq, k)))
    return data


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
    import yaml

    return yaml.safe_load(config_to_yaml(config))


def uses_peft(data: dict) -> bool:
    return any(name in (data.get("mitigations") or {}) for name in PEFT_NAMES)
