"""Loading causal LMs and tokenizers by Hugging Face id, local path, or retain's own names."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from retain.config import MODEL_ALIASES, ModelConfig

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_model_name(name: str) -> str:
    """`retain-tiny` -> the bundled model's directory; other names pass through to HF.

    A name that looks like a path (absolute, or starting with ./ or ~) must exist: otherwise
    transformers would take it for a hub id and fail with a confusing message.
    """
    if name in MODEL_ALIASES:
        return str(MODEL_ALIASES[name])
    if name.startswith(("/", "./", "../", "~")) and not Path(name).expanduser().exists():
        raise FileNotFoundError(f"model {name}: no such directory")
    return str(Path(name).expanduser()) if name.startswith("~") else name


def is_adapter_dir(path: str | Path) -> bool:
    return (Path(path) / "adapter_config.json").is_file()


def load_tokenizer(cfg: ModelConfig, name: str | None = None):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(
        resolve_model_name(name or cfg.name), revision=cfg.revision, trust_remote_code=cfg.trust_remote_code)
    if tok.pad_token is None:  # batching needs a pad id; padded positions never carry loss
        tok.pad_token = tok.eos_token
    return tok


def load_model(cfg: ModelConfig):
    """The causal LM of `cfg`, on CPU, in `cfg.dtype`; safetensors weights only."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(
        resolve_model_name(cfg.name), revision=cfg.revision, trust_remote_code=cfg.trust_remote_code,
        dtype=DTYPES[cfg.dtype], use_safetensors=True)


def load_for_eval(path: str, dtype: str = "float32", trust_remote_code: bool = False):
    """(model, tokenizer) from a full model directory/id, or from a peft adapter directory.

    An adapter directory is loaded on top of the base model its adapter_config.json names,
    and merged where the method allows, so that scoring sees exactly what the run produced.
    """
    from peft import PeftModel

    if is_adapter_dir(path):
        base_name = json.loads((Path(path) / "adapter_config.json").read_text())["base_model_name_or_path"]
        base_cfg = ModelConfig(name=base_name, dtype=dtype, trust_remote_code=trust_remote_code)
        model = PeftModel.from_pretrained(load_model(base_cfg), path)
        if not model.peft_config["default"].is_prompt_learning:  # soft prompts and prefixes can't be folded in
            model = model.merge_and_unload()
        tok_source = path if (Path(path) / "tokenizer_config.json").is_file() else base_name
        tokenizer = load_tokenizer(base_cfg, tok_source)
    else:
        cfg = ModelConfig(name=path, dtype=dtype, trust_remote_code=trust_remote_code)
        model, tokenizer = load_model(cfg), load_tokenizer(cfg)
    model.eval()
    return model, tokenizer
