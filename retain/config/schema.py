"""The run config: one frozen dataclass per YAML section, loaded strictly.

    model:        which causal LM to start from
    data:         the task data (JSONL) and how it becomes tokens
    training:     optimiser, schedule, batch, logging and checkpoint cadence
    mitigations:  name -> options, e.g. {lora: {r: 8}, freeze: {embeddings: true}};
                  the names are the keys of retain.mitigations.MITIGATIONS
    output:       where the run writes

`load_config(path, overrides)` reads YAML, applies `a.b.c=value` overrides, and checks every
key, type and value before anything heavy happens.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from retain.config.overrides import apply_overrides
from retain.strict import ConfigError, build, read_yaml, to_dict
from retain.mitigations import parse_mitigations  # the table parses its own section
from retain.modeling import ModelConfig  # the `model:` section lives beside the code it configures
from retain.paths import LAB_MODEL_DIR, resolve_path


@dataclass(frozen=True)
class DataConfig:
    train: str  # JSONL file; "lab:tasks/city_country/train.jsonl" names a bundled one
    dev: str | None = None  # eval loss every training.eval_every steps
    format: Literal["auto", "prompt_response", "alpaca", "chat", "text"] = "auto"
    max_length: int = 512  # longer examples are truncated, and counted
    loss_on: Literal["response", "all"] = "response"  # which tokens carry the loss
    # Render prompt/response and Alpaca records as one user/assistant exchange through the
    # tokenizer's chat template (what an instruct model sees when it is used).
    chat: bool = False

    def validate(self):
        for key in ("train", "dev"):
            value = getattr(self, key)
            if value is not None and not resolve_path(value).is_file():
                yield key, f"file not found: {resolve_path(value)}"
        if self.max_length < 2:
            yield "max_length", f"must be >= 2, got {self.max_length}"


@dataclass(frozen=True)
class TrainingConfig:
    lr: float = 2e-5
    epochs: float = 1.0
    max_steps: int | None = None  # optimizer steps; overrides epochs when set
    batch_size: int = 8  # per process, per micro-batch
    grad_accum: int = 1
    weight_decay: float = 0.0
    warmup_steps: int = 0
    scheduler: Literal["cosine", "linear", "constant"] = "cosine"
    max_grad_norm: float | None = 1.0
    log_every: int = 10
    eval_every: int = 0  # 0: only at the end (when data.dev is set)
    save_every: int = 0  # 0: no intermediate checkpoints
    keep_last: int = 2  # checkpoints kept on disk
    seed: int = 0
    bf16: bool = False  # autocast; weights stay in model.dtype

    def validate(self):
        # nan passes every comparison below and inf "works" until the first step: reject both here
        for key in ("lr", "epochs", "weight_decay", "max_grad_norm"):
            value = getattr(self, key)
            if value is not None and not math.isfinite(value):
                yield key, f"must be a finite number, got {value}"
                return
        if self.lr <= 0:
            yield "lr", f"must be > 0, got {self.lr}"
        if self.epochs <= 0:
            yield "epochs", f"must be > 0, got {self.epochs}"
        for key in ("batch_size", "grad_accum", "log_every", "keep_last"):
            if getattr(self, key) < 1:
                yield key, f"must be >= 1, got {getattr(self, key)}"
        for key in ("warmup_steps", "eval_every", "save_every"):
            if getattr(self, key) < 0:
                yield key, f"must be >= 0, got {getattr(self, key)}"
        if self.max_steps is not None and self.max_steps < 1:
            yield "max_steps", f"must be >= 1, got {self.max_steps}"
        if not 0 <= self.weight_decay < 1:
            yield "weight_decay", f"must be in [0, 1), got {self.weight_decay}"
        if self.max_grad_norm is not None and self.max_grad_norm <= 0:
            yield "max_grad_norm", f"must be > 0 or null, got {self.max_grad_norm}"


@dataclass(frozen=True)
class OutputConfig:
    dir: str
    merged_export: bool = False  # also write final/merged/ (adapter folded into the weights)

    def validate(self):
        path = Path(self.dir).expanduser()
        for existing in (path, *path.parents):  # the nearest part of the path that exists must be a directory
            if not existing.exists():
                continue
            if not existing.is_dir():
                yield "dir", (f"{existing} is a file, not a directory — set output.dir to a new directory "
                              "(or one of an earlier run, with --resume or --overwrite)")
            elif not os.access(existing, os.W_OK | os.X_OK):
                yield "dir", f"{existing} is not writable — set output.dir to a directory you can write to"
            break


@dataclass(frozen=True)
class RunConfig:
    model: ModelConfig
    data: DataConfig
    output: OutputConfig
    training: TrainingConfig = TrainingConfig()
    mitigations: dict[str, Any] = field(default_factory=dict)  # name -> options dataclass


LAB_MODEL = "retain-tiny"


def uses_lab_model(model: ModelConfig) -> bool:
    """Whether the run starts from retain-tiny (by its alias or its directory)."""
    if model.name == LAB_MODEL:
        return True
    path = Path(model.name).expanduser()
    return path.is_dir() and path.resolve() == LAB_MODEL_DIR.resolve()


def fill_lab_defaults(model: ModelConfig, mitigations: dict[str, Any]) -> dict[str, Any]:
    """Mitigation options left unset that the lab can supply (general data, a retention suite).

    Each options class lists them in LAB_DEFAULTS, key -> (the lab's value, what another model needs).
    They fill in for retain-tiny only: the lab's data says nothing about another model, so for any
    other model an unset one is a ConfigError.
    """
    filled = {}
    for name, options in mitigations.items():
        lab = getattr(options, "LAB_DEFAULTS", {})
        unset = {key: value for key, (value, _) in lab.items() if getattr(options, key) is None}
        if unset and not uses_lab_model(model):
            key = next(iter(unset))
            raise ConfigError(f"mitigations.{name}.{key}: required for model {model.name} — give {lab[key][1]} "
                              f"(only retain-tiny's runs default to the lab's {unset[key]!r})")
        filled[name] = dataclasses.replace(options, **unset) if unset else options
    return filled


def config_from_dict(data: dict) -> RunConfig:
    data = dict(data)
    mitigations = parse_mitigations(data.pop("mitigations", None))
    config = build(RunConfig, data)
    return dataclasses.replace(config, mitigations=fill_lab_defaults(config.model, mitigations))


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Read a YAML run config; every problem is a ConfigError that names the file and key."""
    path = Path(path)
    data = read_yaml(path, "config file") or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    try:
        return config_from_dict(apply_overrides(data, list(overrides)))
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def config_to_yaml(config: RunConfig) -> str:
    return yaml.safe_dump(to_dict(config), sort_keys=False)
