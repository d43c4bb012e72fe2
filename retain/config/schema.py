"""The run config: one frozen dataclass per YAML section, loaded strictly.

    model:        which causal LM to start from
    data:         the task data (a file, folder, hub dataset or dataset_info.json entry) and how it becomes tokens
    training:     optimiser, schedule, batch, logging and checkpoint cadence
    mitigations:  name -> options, e.g. {lora: {r: 8}, freeze: {embeddings: true}};
                  the names are the keys of retain.mitigations.MITIGATIONS
    output:       where the run writes

`load_config(path, overrides)` reads YAML, applies `a.b.c=value` overrides, and checks every
key, type and value before anything heavy happens.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from retain.config.overrides import apply_overrides
from retain.data.sources import source_problem  # what a data.train string may name
from retain.core.schema import ConfigError, build, field_help, read_yaml, to_dict
from retain.mitigations import PEFT_METHODS, parse_mitigations  # the table parses its own section
from retain.model.loading import ModelConfig  # the `model:` section lives beside the code it configures
from retain.core.paths import resolve_path
from retain.lab.defaults import lab_fills, uses_lab_model
from retain.preference.options import DPOOptions, GRPOOptions  # the objectives' options live beside their code


@dataclass(frozen=True)
class DataConfig:
    # The forms a source may take are retain.data.sources'. From Python, retain.train(..., train_data=dataset)
    # fills `train` in.
    train: str = field(metadata={
        "help": "the task data: a file (.jsonl .json .parquet .csv .tsv .arrow .txt), a save_to_disk folder, "
                "DIR/dataset_info.json#NAME, hub:ORG/NAME:SPLIT, or lab:PATH for a bundled file"})
    dev: str | None = field(default=None, metadata={
        "help": "held-out data whose loss is logged every training.eval_every steps; the same forms as train"})
    format: Literal["auto", "prompt_response", "alpaca", "chat", "sharegpt", "text"] = field(
        default="auto", metadata={"help": "the records' shape; auto picks one per record by its keys"})
    max_length: int = field(default=512, metadata={
        "help": "tokens per example; longer examples are truncated, and counted"})
    loss_on: Literal["response", "all"] = field(default="response", metadata={
        "help": "which tokens carry the loss: the response (assistant turns) only, or all of them"})
    # what an instruct model sees when it is used, so the fine-tune trains on the same rendering
    chat: bool = field(default=False, metadata={
        "help": "render prompt/response and Alpaca records as a user/assistant exchange via the chat template"})
    chat_template: str | None = field(default=None, metadata={
        "help": "a Jinja file that renders conversations, instead of the tokenizer's own chat template"})
    packing: bool = field(default=False, metadata={
        "help": "several short examples per row of max_length tokens, each attending only to itself, positions "
                "restarting; training.batch_size then counts rows"})

    def validate(self):
        for key in ("train", "dev"):
            value = getattr(self, key)
            problem = source_problem(value) if value is not None else None
            if problem:
                yield key, problem
        if self.chat_template is not None and not resolve_path(self.chat_template).is_file():
            yield "chat_template", f"file not found: {resolve_path(self.chat_template)}"
        if self.max_length < 2:
            yield "max_length", f"must be >= 2, got {self.max_length}"


TRACKERS = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}  # name -> the module it needs


def tracker_problems(report_to: list[str]):
    """Unknown tracker names, and trackers whose package is not installed (before any model loads)."""

    for name in report_to:
        if name not in TRACKERS:
            yield "report_to", f"unknown tracker {name!r}: choose from {', '.join(TRACKERS)}"
        elif importlib.util.find_spec(TRACKERS[name]) is None:
            package = {"mlflow": "mlflow (or mlflow-skinny)"}.get(name, name)
            yield "report_to", f"{name} is not installed — pip install {package}, or drop it from training.report_to"
    if len(set(report_to)) != len(report_to):
        yield "report_to", f"a tracker is named twice: {report_to}"


@dataclass(frozen=True)
class TrainingConfig:
    lr: float = field(default=2e-5, metadata={"help": "peak learning rate (AdamW), after warmup"})
    epochs: float = field(default=1.0, metadata={
        "help": "passes over the training data (fractions allowed); max_steps overrides it"})
    max_steps: int | None = field(default=None, metadata={
        "help": "optimizer steps to run; overrides epochs when set"})
    batch_size: int = field(default=8, metadata={"help": "examples per micro-batch, per process"})
    grad_accum: int = field(default=1, metadata={
        "help": "micro-batches per optimizer step (an optimizer step sees batch_size × grad_accum × processes)"})
    weight_decay: float = field(default=0.0, metadata={
        "help": "AdamW's decay toward 0 of matrices (not biases or norms), in [0, 1); toward the base: l2sp"})
    warmup_steps: int = field(default=0, metadata={"help": "optimizer steps of linear warmup from 0 to lr"})
    scheduler: Literal["cosine", "linear", "constant"] = field(default="cosine", metadata={
        "help": "the learning rate after warmup: cosine or linear decay to 0, or constant"})
    max_grad_norm: float | None = field(default=1.0, metadata={
        "help": "clip the gradient's global norm to this before each step; null: no clipping"})
    log_every: int = field(default=10, metadata={
        "help": "log the loss (and each mitigation's term) every N optimizer steps"})
    eval_every: int = field(default=0, metadata={
        "help": "loss on data.dev every N optimizer steps; 0: only at the end (when data.dev is set)"})
    save_every: int = field(default=0, metadata={
        "help": "checkpoint every N optimizer steps, for --resume; 0: no intermediate checkpoints"})
    keep_last: int = field(default=2, metadata={"help": "checkpoints kept on disk; older ones are deleted"})
    seed: int = field(default=0, metadata={"help": "seeds the data order, dropout and the initialisation of adapters"})
    bf16: bool | Literal["auto"] = field(default="auto", metadata={
        "help": "bfloat16 autocast (the weights stay in model.dtype); auto: only where the hardware does bf16 "
                "natively (a CUDA GPU that supports it, a CPU with AVX512_BF16 or AMX), else float32"})
    report_to: list[str] = field(default_factory=lambda: ["tensorboard"], metadata={
        "help": "experiment trackers, through accelerate: any of tensorboard, mlflow, wandb ([] for none); "
                "metrics.jsonl is always written"})
    project: str = field(default="retain", metadata={
        "help": "the tracker's project (W&B project, MLflow experiment); the run is named after output.dir"})
    # what the step optimises (retain.objectives.OBJECTIVES): data.train holds {prompt, response} records for sft,
    # {prompt, chosen, rejected} pairs for dpo, {prompt} records for grpo
    objective: Literal["sft", "dpo", "grpo"] = field(default="sft", metadata={
        "help": "sft: next-token loss on the responses; dpo: preference pairs; grpo: rewards of sampled completions"})
    dpo: DPOOptions = field(default=DPOOptions(), metadata={
        "help": "DPO's options (objective: dpo): beta, loss_type, precompute_reference"})
    grpo: GRPOOptions = field(default=GRPOOptions(), metadata={
        "help": "GRPO's options (objective: grpo): group_size, max_new_tokens, temperature, kl_coef, target_kl, rewards"})

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
        yield from tracker_problems(self.report_to)
        if self.objective == "grpo" and not self.grpo.rewards:
            yield "grpo.rewards", "objective grpo needs a reward: NAME: {kind, weight, ...} (see retain.preference.rewards)"


@dataclass(frozen=True)
class OutputConfig:
    dir: str = field(metadata={
        "help": "the run's directory: config.yaml, metrics.jsonl, checkpoints/, final/ (the model or adapter)"})
    merged_export: bool = field(default=False, metadata={
        "help": "with a PEFT method: also write final/merged/, the adapter folded into the weights"})

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
    # The help of each section is what `retain train --help` and `retain config --explain` say about it.
    model: ModelConfig = field(metadata={"help": "which causal LM to start from"})
    data: DataConfig = field(metadata={"help": "the task data and how it becomes tokens"})
    output: OutputConfig = field(metadata={"help": "where the run writes"})
    training: TrainingConfig = field(default=TrainingConfig(), metadata={
        "help": "optimiser, schedule, batch, logging and checkpoint cadence"})
    mitigations: dict[str, Any] = field(default_factory=dict, metadata={  # name -> options dataclass
        "help": "what protects old capabilities: name -> options, e.g. lora: {r: 8}"})


def total_steps_for(config: RunConfig, n_examples: int, world_size: int) -> int:
    """The optimizer steps a run makes: training.max_steps, or its epochs over `n_examples` items at the global
    batch."""
    t = config.training
    if t.max_steps is not None:
        return t.max_steps
    per_step = t.batch_size * t.grad_accum * world_size
    return max(1, math.ceil(t.epochs * n_examples / per_step))


def fill_lab_defaults(model: ModelConfig, mitigations: dict[str, Any]) -> dict[str, Any]:
    """Mitigation options left unset that the lab can supply (general data, a retention suite).

    retain.lab.defaults lists them. They fill in for retain-tiny only: the lab's data says nothing about another
    model, so for any other model an unset one is a ConfigError naming the option and what it takes.
    """
    filled = {}
    for name, options in mitigations.items():
        unset = {key: value for key, value in lab_fills(name, options).items() if getattr(options, key) is None}
        if unset and not uses_lab_model(model):
            key = next(iter(unset))
            what = field_help(options, key).split("; required unless")[0]  # the help says when it is required
            raise ConfigError(f"mitigations.{name}.{key}: required for model {model.name} — give {what} (only "
                              f"retain-tiny's runs default to the lab's {unset[key]!r})")
        filled[name] = dataclasses.replace(options, **unset) if unset else options
    return filled


# virtual tokens before the input: the base's weights stay as they are
SOFT_PROMPTS = ("prompt_tuning", "prefix_tuning")

# Packed rows hold several examples: what runs its own forward on the batch, or puts tokens before it, would see
# them as one sequence. name -> why
UNPACKABLE = {"kl": "its base-model forward reads the batch as padded rows",
              "asft": "its KL to the base (kl's) reads the batch as padded rows",
              "prompt_tuning": "its virtual tokens come before the whole row",
              "prefix_tuning": "its virtual keys come before the whole row"}


def combination_problems(config: RunConfig, mitigations: dict[str, Any]):
    """(key, message) for settings of different sections that cannot go together."""
    if config.data.packing:
        if config.training.objective != "sft":
            yield "data.packing", (f"packs supervised examples; training.objective {config.training.objective} "
                                   "collates its own pairs or prompts — set data.packing: false")
        for name in mitigations:
            if name in UNPACKABLE:
                yield "data.packing", (f"does not combine with mitigations.{name} ({UNPACKABLE[name]}) — set "
                                       f"data.packing: false, or drop {name}")
    soft = [name for name in mitigations if name in SOFT_PROMPTS]
    if soft and "interpolate" in mitigations:
        yield "mitigations.interpolate", (f"moves the weights toward the base, and {soft[0]} changes none of them "
                                          "(its virtual tokens are added before the input) — drop interpolate, or "
                                          "use a method that changes weights (lora)")
    if config.model.load_in_4bit:
        if not any(name in PEFT_METHODS for name in mitigations):
            yield "model.load_in_4bit", ("4-bit weights cannot be trained directly — add a PEFT method "
                                         "(mitigations.lora: {r: 16}), as QLoRA does, or set model.load_in_4bit: false")
        if config.output.merged_export:
            yield "output.merged_export", ("an adapter folded into 4-bit weights loses precision — set it to false "
                                           "and fold the adapter into the full-precision base afterwards "
                                           "(retain merge BASE final/ --method interpolate --alpha 1 --out DIR)")


def config_from_dict(data: dict) -> RunConfig:
    data = dict(data)
    mitigations = parse_mitigations(data.pop("mitigations", None))
    config = build(RunConfig, data)
    for key, message in combination_problems(config, mitigations):
        raise ConfigError(f"{key}: {message}")
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
