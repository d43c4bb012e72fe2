"""What each mitigation promises about which weights move."""

import pytest
import torch
from safetensors.torch import load_file

import retain
from retain.config import config_from_dict
from retain.mitigations.freezing import block_index, freeze_params


def base_weights(tiny_model):
    return load_file(str(tiny_model / "model.safetensors"))


def test_lora_moves_only_adapter_weights(make_config, tiny_model, tmp_path):
    result = retain.train(config_from_dict(make_config(
        mitigations={"lora": {"r": 4}}, output={"dir": str(tmp_path / "run"), "merged_export": True})),
        progress=False)
    adapter = load_file(str(result.final_dir / "adapter_model.safetensors"))
    assert adapter and all("lora_" in k for k in adapter)
    assert any(v.abs().sum() > 0 for k, v in adapter.items() if "lora_B" in k)  # B starts at 0: it trained
    merged = load_file(str(result.final_dir / "merged" / "model.safetensors"))
    base = base_weights(tiny_model)
    # The merged export differs from the base exactly where LoRA attached (linear weights).
    changed = {k for k in base if not torch.equal(base[k], merged[k])}
    assert changed and all(k.endswith("proj.weight") for k in changed)
    assert all(torch.equal(base[k], merged[k]) for k in base if "norm" in k or "embed" in k)


def test_freezing_keeps_frozen_weights_bit_identical(make_config, tiny_model, tmp_path):
    result = retain.train(config_from_dict(make_config(
        mitigations={"freeze": {"embeddings": True, "first_n_blocks": 1, "patterns": [r"\.mlp\.down_proj"]}})),
        progress=False)
    base, tuned = base_weights(tiny_model), load_file(str(result.final_dir / "model.safetensors"))

    def frozen(name):
        return "embed_tokens" in name or block_index(name) == 0 or ".mlp.down_proj" in name

    assert all(torch.equal(base[k], tuned[k]) for k in base if frozen(k))
    moved = [k for k in base if not frozen(k) and not torch.equal(base[k], tuned[k])]
    assert any(block_index(k) == 1 for k in moved) and "lm_head.weight" in moved


def test_freeze_params_selects_by_block_and_pattern(tiny_model):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    names = freeze_params(model, embeddings=False, first_n_blocks=1, patterns=("norm",))
    assert "model.layers.0.self_attn.q_proj.weight" in names
    assert "model.norm.weight" in names and "model.layers.1.input_layernorm.weight" in names
    assert "model.layers.1.self_attn.q_proj.weight" not in names
    assert all(not p.requires_grad for n, p in model.named_parameters() if n in names)


def test_freeze_that_selects_nothing_is_an_error(make_config):
    with pytest.raises(ValueError, match="select no parameter"):
        retain.train(config_from_dict(make_config(mitigations={"freeze": {"patterns": ["no_such_param"]}})),
                     progress=False)
