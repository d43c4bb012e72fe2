"""Loading causal LMs and tokenizers by Hugging Face id, local path, GGUF file, or retain's own names.

What the user named is checked before transformers sees it (its messages rarely say which file is
wrong): a path that does not exist, an empty directory, a missing or truncated model.safetensors,
a config.json that is not JSON, a hub id that is not cached while offline, a tokenizer that cannot
pad. Each is a ModelError naming the directory (or id), what is wrong, and what to do.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from safetensors import SafetensorError

from retain.core.paths import MODEL_ALIASES
from retain.core.errors import ConfigError, ModelError
from retain.model.gguf import assembled_gguf, converted_dir, gguf_path


@dataclass(frozen=True)
class ModelConfig:
    """The `model:` section of a run config: which causal LM to start from."""

    name: str = field(metadata={
        "help": "Hugging Face id, local directory, a .gguf file, or an alias: retain-tiny, smollm2-135m-instruct, "
                "gemma3-270m"})
    # Dequantized once into retain's cache ($RETAIN_CACHE, else ~/.cache/retain) and loaded from there.
    gguf_file: str | None = field(default=None, metadata={
        "help": "a GGUF file in `name` (a directory or hub repo), e.g. model.Q4_1.gguf; an alias may name its own"})
    revision: str | None = field(default=None, metadata={
        "help": "hub branch, tag or commit to load; null: the default branch"})
    # opt-in: it executes code from the model's repository
    trust_remote_code: bool = field(default=False, metadata={"help": "run the model repo's own Python code"})
    dtype: Literal["float32", "bfloat16", "float16"] = field(default="float32", metadata={
        "help": "dtype the weights are loaded and trained in (training.bf16 autocasts on top)"})
    attn_implementation: Literal["eager", "sdpa", "flash_attention_2", "flash_attention_3", "flex_attention"] | None = \
        field(default=None, metadata={
            "help": "attention kernel passed to from_pretrained; null: transformers' choice (sdpa where the model has it)"})
    gradient_checkpointing: bool = field(default=False, metadata={
        "help": "recompute activations in the backward pass instead of keeping them: less memory, about a third "
                "more compute per step"})
    load_in_4bit: bool = field(default=False, metadata={
        "help": "QLoRA: load the base weights in 4-bit NF4 through bitsandbytes (a CUDA GPU; train a PEFT adapter)"})

    def validate(self):
        # What this machine lacks is said now, before the data, the tokenizer or any weights load.
        package = ATTENTION_PACKAGES.get(self.attn_implementation or "")
        if package is not None and importlib.util.find_spec(package) is None:
            yield "attn_implementation", (f"{self.attn_implementation} needs the {package} package, which is not "
                                          f"installed — pip install {package.replace('_', '-')} (on a CUDA machine), "
                                          "or use sdpa (or eager)")
        elif package is not None and not torch.cuda.is_available():
            yield "attn_implementation", (f"{self.attn_implementation} runs on a CUDA GPU only, and this machine has "
                                          "none — use sdpa (or eager)")
        if self.load_in_4bit:
            problem = four_bit_problem()
            if problem:
                yield "load_in_4bit", problem


# attn_implementation -> the package it needs beyond torch and transformers
ATTENTION_PACKAGES = {"flash_attention_2": "flash_attn", "flash_attention_3": "flash_attn_interface"}


def four_bit_problem() -> str | None:
    """Why 4-bit loading (bitsandbytes) cannot work on this machine; None if it can."""
    if not torch.cuda.is_available():
        return ("4-bit loading (QLoRA, through bitsandbytes) needs a CUDA GPU, and this machine has none — set "
                "model.load_in_4bit: false (train a LoRA adapter on the full-precision weights: mitigations.lora), "
                "or run on a machine with a CUDA GPU")
    if importlib.util.find_spec("bitsandbytes") is None:
        return ("4-bit loading (QLoRA) needs the bitsandbytes package, which is not installed — pip install "
                "bitsandbytes, or set model.load_in_4bit: false")
    return None


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "spiece.model")
SAVED_BY = "a model directory is what save_pretrained writes: config.json, model.safetensors, tokenizer files"


def looks_like_path(name: str) -> bool:
    """A name that can only mean a local path: absolute, ./, ../, ~, a backslash, or more than one /.
    (`org/name` and `name` may be hub ids; when not local, the hub's error says both.)"""
    return name.startswith(("/", "./", "../", "~")) or "\\" in name or name.count("/") > 1


def is_gguf_path(name: str) -> bool:
    """Whether `name` is a GGUF file's path: it ends in .gguf and is not a directory (it may not exist yet:
    check_gguf_file names a missing one)."""
    return name.lower().endswith(".gguf") and not Path(name).expanduser().is_dir()


def model_source(cfg: ModelConfig) -> str:
    """The local directory or hub id that transformers loads for `cfg`.

    An alias becomes its directory (and its GGUF file, unless `cfg.gguf_file` names another). A
    GGUF file, named by its path or by a directory and `cfg.gguf_file`, becomes the directory it was
    converted into, converting it on first use. A name that
    exists locally, or can only be a path (see looks_like_path), must be a directory: otherwise
    transformers would take it for a hub id and fail with a confusing message.
    """
    name, gguf_file = cfg.name, cfg.gguf_file
    if is_gguf_path(name):  # the file itself (retain eval ./m.Q4_K_M.gguf): its directory and its name
        path = Path(name).expanduser()
        if gguf_file is not None:
            raise ModelError(f"model {name}: a GGUF file, and model.gguf_file names another ({gguf_file}) — "
                             "give the file once: either model.name: FILE.gguf, or the directory and gguf_file")
        if not path.is_file():
            where = "" if path.is_absolute() else f" (relative to the working directory {Path.cwd()})"
            raise ModelError(f"model {name}: no such GGUF file{where} — check the path")
        name, gguf_file = str(path.parent), path.name
    elif name in MODEL_ALIASES:
        alias = MODEL_ALIASES[name]
        name, gguf_file = str(alias.location(name)), gguf_file or alias.gguf_file
        if alias.assemble and gguf_file == alias.gguf_file:  # chunk packages: the joined file, under the cache
            path = assembled_gguf(alias.package, alias.assemble, alias.gguf_file)
            name, gguf_file = str(path.parent), path.name
    elif Path(name).expanduser().exists() or looks_like_path(name):
        path = Path(name).expanduser()
        if not path.exists():
            where = "" if path.is_absolute() else f" (relative to the working directory {Path.cwd()})"
            raise ModelError(f"model {name}: no such directory{where} — give a model directory, a hub id "
                             "(org/name) or an alias (retain-tiny)")
        name = str(path)
    if gguf_file is None:
        return name

    try:
        return str(converted_dir(gguf_path(name, gguf_file, cfg.revision)))
    except OSError as e:
        if Path(name).is_dir() or isinstance(e, FileNotFoundError):
            raise
        raise hub_error(name, e, cfg.revision) from None


def hub_error(name: str, error: Exception, revision: str | None = None) -> ModelError:
    """What to say when `name` is not local and the hub did not deliver it."""
    from huggingface_hub import constants

    offline = constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
    if offline:
        return ModelError(f"model {name}: not a local directory, and not in the Hugging Face cache (HF_HUB_OFFLINE "
                          f"is set, so nothing is downloaded) — download it once where there is network "
                          f"(hf download {name}), or give a local model directory instead")
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    at = f" at revision {revision}" if revision else ""
    return ModelError(f"model {name}: not a local directory, and the Hugging Face hub did not deliver it{at} "
                      f"({reason}) — check the id and your network (for a gated model: hf auth login), or give "
                      "a local model directory instead")


def check_directory(path: Path) -> None:
    """ModelError unless `path` is a non-empty directory."""
    if not path.is_dir():  # (a .gguf file never gets here: model_source converts it)
        raise ModelError(f"{path}: a file, not a model directory — {SAVED_BY}, or give a .gguf file")
    if not any(path.iterdir()):
        raise ModelError(f"{path}: empty directory, not a model — {SAVED_BY}")


def check_model_dir(path: Path) -> None:
    """ModelError naming the file unless `path` holds a loadable config.json and complete safetensors weights."""
    check_directory(path)
    config = path / "config.json"
    if not config.is_file():
        if is_adapter_dir(path):
            raise ModelError(f"{path}: a PEFT adapter, not a full model — start from the base model its "
                             "adapter_config.json names, or fold the adapter in first (retain merge BASE ADAPTER "
                             "--method interpolate --alpha 1 --out DIR)")
        found = ", ".join(sorted(p.name for p in path.iterdir())[:6])
        raise ModelError(f"{path}: no config.json (found: {found}) — not a model directory; {SAVED_BY}")
    check_json(config)
    weights = sorted(path.glob("*.safetensors"))
    if not weights:
        pickled = sorted(p.name for p in path.glob("*.bin"))
        if pickled:
            raise ModelError(f"{path}: weights only in {pickled[0]} (a pickle, which can run code; retain loads "
                             "safetensors only) — convert once: AutoModelForCausalLM.from_pretrained(DIR)"
                             ".save_pretrained(DIR)")
        raise ModelError(f"{path}: no model.safetensors — {SAVED_BY}")
    for file in weights:
        check_safetensors(file)


def check_json(path: Path) -> None:
    """ModelError naming `path` unless it is a JSON file (config.json, tokenizer_config.json, ...)."""
    try:
        json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise ModelError(f"{path}: not valid JSON ({e}) — a truncated or edited file? download or save the model "
                         "again") from None


def check_safetensors(path: Path) -> None:
    """ModelError naming `path` unless its header parses and its tensors fit in the file.

    A download or copy that stopped half way has a good header whose offsets run past the end.
    """
    def bad(why: str) -> ModelError:
        return ModelError(f"{path}: not a readable safetensors file ({why}) — a truncated or corrupt download or "
                          "copy? download or save the model again")

    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise bad(f"{size} bytes, shorter than a header")
        n = int.from_bytes(head, "little")
        if n > min(size - 8, 1 << 28):
            raise bad(f"its header claims {n:,} bytes of a {size:,}-byte file")
        try:
            header = json.loads(f.read(n))
            end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
        except (ValueError, UnicodeDecodeError, KeyError, TypeError, IndexError, AttributeError):
            raise bad("its header is not a safetensors header") from None
    if 8 + n + end > size:
        raise bad(f"cut short: its tensors need {8 + n + end:,} bytes, the file has {size:,}")


def _local(source: str) -> Path | None:
    path = Path(source)
    return path if path.exists() else None


def is_adapter_dir(path: str | Path) -> bool:
    return (Path(path) / "adapter_config.json").is_file()


def is_soft_prompt_dir(path: str | Path) -> bool:
    """An adapter of soft prompts or prefixes (prompt tuning, prefix tuning, ...): virtual tokens added before the
    input, no change to the base's weights, so nothing to merge or interpolate (peft's own `is_prompt_learning`)."""
    if not is_adapter_dir(path):
        return False
    from peft import PeftConfig

    return PeftConfig.from_pretrained(str(path)).is_prompt_learning


def load_tokenizer(cfg: ModelConfig, need_pad: bool = True):
    """The tokenizer of `cfg`. With `need_pad` (training batches), one that can pad: its pad token, else its
    EOS as the pad (padded positions never carry loss); a ModelError before any step if it has neither."""
    from transformers import AutoTokenizer

    source = model_source(cfg)
    local = _local(source)
    if local is not None:
        check_directory(local)
        if not any((local / f).is_file() for f in TOKENIZER_FILES):
            if not (local / "config.json").is_file():
                check_model_dir(local)  # not a model directory at all (or an adapter): say that
            raise ModelError(f"{local}: no tokenizer files ({', '.join(TOKENIZER_FILES[:2])}, ...) — save the "
                             "tokenizer beside the model: tokenizer.save_pretrained(DIR)")
        for name in ("config.json", "tokenizer_config.json"):  # transformers reads both, and says little if bad
            if (local / name).is_file():
                check_json(local / name)
    try:
        tok = AutoTokenizer.from_pretrained(source, revision=cfg.revision, trust_remote_code=cfg.trust_remote_code)
    except OSError as e:
        if local is not None:
            raise
        raise hub_error(source, e, cfg.revision) from None
    except ValueError as e:  # transformers: "Couldn't instantiate the backend tokenizer ..."
        refused = remote_code_refused(local or source, e)
        if refused is not None:
            raise refused from None
        if local is None:
            raise
        raise ModelError(f"{local}: its tokenizer could not be loaded ({str(e).splitlines()[0]}) — save the "
                         "tokenizer beside the model again: tokenizer.save_pretrained(DIR)") from None
    if tok.pad_token is None:  # batching needs a pad id; padded positions never carry loss
        if tok.eos_token is None and need_pad:
            raise ModelError(f"{local or source}: the tokenizer has neither a pad token nor an EOS token, and "
                             "training batches need a pad id — add \"pad_token\": \"TOKEN\" (a token of its "
                             f"vocabulary) to {local or source}/tokenizer_config.json, or set tokenizer.pad_token "
                             "and save it there")
        tok.pad_token = tok.eos_token
    return tok


def remote_code_refused(where: Path | str, error: ValueError) -> ModelError | None:
    """The ModelError for transformers refusing to run a model's own Python code (trust_remote_code is off);
    None for any other ValueError."""
    if "trust_remote_code" not in str(error):
        return None
    auto_map = ""
    if isinstance(where, Path):  # the files auto_map names ("module.Class", or [slow, fast] for a tokenizer)
        files, named_in = set(), []
        for config in ("config.json", "tokenizer_config.json"):
            if (where / config).is_file():
                named = json.loads((where / config).read_text(encoding="utf-8")).get("auto_map") or {}
                classes = [c for v in named.values() for c in (v if isinstance(v, list) else [v]) if isinstance(c, str)]
                files |= {f"{c.rsplit('.', 1)[0].split('--')[-1]}.py" for c in classes}
                named_in += [config] if classes else []
        if files:
            auto_map = f" ({', '.join(sorted(files))}, named by auto_map in its {' and '.join(named_in)})"
    return ModelError(f"{where}: loading it runs the model's own Python code{auto_map}, and model.trust_remote_code "
                      "is off — read that code first; if you trust it, set model.trust_remote_code: true in the run "
                      "config (the code runs with your permissions). retain eval and merge never run a model's code")


def loading_options(cfg: ModelConfig) -> dict:
    """from_pretrained's keyword arguments for `cfg`'s attention kernel and 4-bit quantization (left out when
    unset, so transformers' own defaults apply)."""
    options = {}
    if cfg.attn_implementation is not None:
        options["attn_implementation"] = cfg.attn_implementation
    if cfg.load_in_4bit:
        problem = four_bit_problem()  # also checked when the config loads; a ModelConfig built in Python gets here
        if problem:
            raise ConfigError(f"model.load_in_4bit: {problem}")
        from transformers import BitsAndBytesConfig

        # QLoRA's recipe (Dettmers et al. 2023): NF4 with double quantization, matmuls in the compute dtype
        compute = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        options["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute)
        options["device_map"] = {"": torch.cuda.current_device()}  # bitsandbytes quantizes on the GPU as it loads
    return options


def load_model(cfg: ModelConfig):
    """The causal LM of `cfg`, on CPU, in `cfg.dtype` (4-bit on the GPU with `load_in_4bit`); safetensors
    weights only."""
    from transformers import AutoModelForCausalLM

    source = model_source(cfg)
    local = _local(source)
    if local is not None:
        check_model_dir(local)
    try:
        return AutoModelForCausalLM.from_pretrained(
            source, revision=cfg.revision, trust_remote_code=cfg.trust_remote_code,
            dtype=DTYPES[cfg.dtype], use_safetensors=True, **loading_options(cfg))
    except SafetensorError as e:
        raise ModelError(f"{source}: its safetensors weights could not be read ({e}) — a truncated or corrupt "
                         "download? download or save the model again") from None
    except ValueError as e:
        refused = remote_code_refused(local or source, e)
        if refused is None:
            raise
        raise refused from None
    except OSError as e:
        if local is not None:
            raise
        raise hub_error(source, e, cfg.revision) from None


def enable_gradient_checkpointing(model) -> None:
    """Recompute each layer's activations in the backward pass (transformers' activation checkpointing,
    formerly gradient_checkpointing_enable; non-reentrant: torch's recommended form, which also handles inputs that need no gradient). With the
    embeddings frozen (LoRA, freezing) their output is made to require a gradient, as peft does for
    checkpointed adapters, so a checkpointed layer always has a gradient to pass back."""
    enable = getattr(model, "activation_checkpointing_enable", None)  # the name from transformers 5.x on
    try:
        if enable is not None:
            enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    except ValueError as e:  # transformers: "<Class> does not support activation checkpointing."
        raise ConfigError(f"model.gradient_checkpointing: {e} — set it to false for this model") from None
    embeddings = model.get_input_embeddings()
    if embeddings is not None and not any(p.requires_grad for p in embeddings.parameters()):
        model.enable_input_require_grads()


POSITION_KEYS = ("max_position_embeddings", "n_positions", "n_ctx")  # what config.json calls the context length


def context_length(config) -> int | None:
    """How many positions a model was built for, from its config (a transformers PretrainedConfig):
    max_position_embeddings or an equivalent; None if the config does not say."""
    found = [getattr(config, key, None) for key in POSITION_KEYS]
    return next((int(n) for n in found if isinstance(n, int) and n > 0), None)


def check_max_length(max_length: int, model, name: str) -> None:
    """ConfigError naming data.max_length if it is beyond the positions `model` (loaded from `name`) has:
    positions past its context are untrained, or not there at all."""
    limit = context_length(model.config)
    if limit is not None and max_length > limit:
        key = next(k for k in POSITION_KEYS if getattr(model.config, k, None) == limit)
        raise ConfigError(f"data.max_length: {max_length} is beyond the context of model {name}, {limit} positions "
                          f"({key} in its config.json) — set data.max_length to {limit} or less")


def adapter_base(path: Path) -> str:
    """The base model an adapter directory's adapter_config.json names; ModelError naming the file if none."""
    config = path / "adapter_config.json"
    try:
        base = json.loads(config.read_text(encoding="utf-8")).get("base_model_name_or_path")
    except (ValueError, UnicodeDecodeError, AttributeError) as e:
        raise ModelError(f"{config}: not a valid adapter config ({e}) — save the adapter again "
                         "(model.save_pretrained)") from None
    if not isinstance(base, str) or not base:
        raise ModelError(f"{config}: no base_model_name_or_path — set it to the base model's directory or hub id")
    return base


def load_for_eval(path: str, dtype: str = "float32", trust_remote_code: bool = False):
    """(model, tokenizer) from a full model directory/id/alias, or from a peft adapter directory.

    An adapter directory is loaded on top of the base model its adapter_config.json names (a
    directory, or an alias such as "retain-tiny" in adapters older runs wrote), and merged where
    the method allows, so that scoring sees exactly what the run produced.
    """
    from peft import PeftModel

    if is_adapter_dir(path):
        base_name = adapter_base(Path(path))
        base_cfg = ModelConfig(name=base_name, dtype=dtype, trust_remote_code=trust_remote_code)
        try:
            base = load_model(base_cfg)
        except ModelError as e:
            raise ModelError(f"{path}: the base model its adapter_config.json names cannot be loaded: {e}") from None
        for file in Path(path).glob("*.safetensors"):
            check_safetensors(file)
        model = PeftModel.from_pretrained(base, path)
        if not model.peft_config["default"].is_prompt_learning:  # soft prompts and prefixes can't be folded in
            model = model.merge_and_unload()
        saved_with_adapter = (Path(path) / "tokenizer_config.json").is_file()
        tokenizer = load_tokenizer(dataclasses.replace(base_cfg, name=path) if saved_with_adapter else base_cfg,
                                   need_pad=False)
    else:
        cfg = ModelConfig(name=path, dtype=dtype, trust_remote_code=trust_remote_code)
        model, tokenizer = load_model(cfg), load_tokenizer(cfg, need_pad=False)
    model.eval()
    return model, tokenizer
