"""Loading causal LMs and tokenizers by Hugging Face id, local path, GGUF file, or retain's own names."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from retain.config import MODEL_ALIASES, ModelConfig

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def model_source(cfg: ModelConfig) -> str:
    """The local directory or hub id that transformers loads for `cfg`.

    An alias becomes its directory (and its GGUF file, unless `cfg.gguf_file` names another). A
    GGUF file becomes the directory it was converted into, converting it on first use. A name that
    looks like a path (absolute, or starting with ./ or ~) must exist: otherwise transformers would
    take it for a hub id and fail with a confusing message.
    """
    name, gguf_file = cfg.name, cfg.gguf_file
    if name in MODEL_ALIASES:
        alias = MODEL_ALIASES[name]
        name, gguf_file = str(alias.location(name)), gguf_file or alias.gguf_file
    elif name.startswith(("/", "./", "../", "~")):
        if not Path(name).expanduser().exists():
            raise FileNotFoundError(f"model {name}: no such directory")
        name = str(Path(name).expanduser())
    if gguf_file is None:
        return name
    from retain.gguf import converted_dir, gguf_path

    return str(converted_dir(gguf_path(name, gguf_file, cfg.revision)))


def is_adapter_dir(path: str | Path) -> bool:
    return (Path(path) / "adapter_config.json").is_file()


def load_tokenizer(cfg: ModelConfig):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(
        model_source(cfg), revision=cfg.revision, trust_remote_code=cfg.trust_remote_code)
    if tok.pad_token is None:  # batching needs a pad id; padded positions never carry loss
        tok.pad_token = tok.eos_token
    return tok


def load_model(cfg: ModelConfig):
    """The causal LM of `cfg`, on CPU, in `cfg.dtype`; safetensors weights only."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(
        model_source(cfg), revision=cfg.revision, trust_remote_code=cfg.trust_remote_code,
        dtype=DTYPES[cfg.dtype], use_safetensors=True)


def load_for_eval(path: str, dtype: str = "float32", trust_remote_code: bool = False):
    """(model, tokenizer) from a full model directory/id/alias, or from a peft adapter directory.

    An adapter directory is loaded on top of the base model its adapter_config.json names (a
    directory, or an alias such as "retain-tiny" in adapters older runs wrote), and merged where
    the method allows, so that scoring sees exactly what the run produced.
    """
    from peft import PeftModel

    if is_adapter_dir(path):
        base_name = json.loads((Path(path) / "adapter_config.json").read_text())["base_model_name_or_path"]
        base_cfg = ModelConfig(name=base_name, dtype=dtype, trust_remote_code=trust_remote_code)
        model = PeftModel.from_pretrained(load_model(base_cfg), path)
        if not model.peft_config["default"].is_prompt_learning:  # soft prompts and prefixes can't be folded in
            model = model.merge_and_unload()
        saved_with_adapter = (Path(path) / "tokenizer_config.json").is_file()
        tokenizer = load_tokenizer(dataclasses.replace(base_cfg, name=path) if saved_with_adapter else base_cfg)
    else:
        cfg = ModelConfig(name=path, dtype=dtype, trust_remote_code=trust_remote_code)
        model, tokenizer = load_model(cfg), load_tokenizer(cfg)
    model.eval()
    return model, tokenizer
