"""The early warnings only watch: a run trains the same with them as without (the lab sweeps log them in every
run and compare runs), and they work under every PEFT method the sweeps use."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

import retain
from retain.config import config_from_dict
from retain.mitigations.early_warnings import EarlyWarnings

GENERAL = [{"text": "the capital of france is paris . one plus two is three"},
           {"text": "the capital of japan is tokyo . red green blue"}] * 4


@pytest.fixture
def dropout_model(tiny_model, tmp_path):
    """The tiny model with attention dropout: its training draws from the global RNG at every step, so a
    warning that drew from it too would shift every later step."""
    path = shutil.copytree(tiny_model, tmp_path / "dropout-model")
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**config, "attention_dropout": 0.3}))
    return path


def train(make_config, model, out, **mitigations):
    config = make_config(model={"name": str(model)}, output={"dir": str(out)},
                         training={"max_steps": 6, "lr": 1e-2, "log_every": 1}, mitigations=mitigations)
    result = retain.train(config_from_dict(config), progress=False)
    return load_file(str(result.final_dir / "model.safetensors")), [r["loss"] for r in result.metrics if "loss" in r]


def test_a_run_trains_identically_with_and_without_early_warnings(make_config, dropout_model, tmp_path, monkeypatch):
    from conftest import write_jsonl

    warnings = {"every": 2, "examples": 4, "general": str(write_jsonl(tmp_path / "general.jsonl", GENERAL))}
    plain_weights, plain_losses = train(make_config, dropout_model, tmp_path / "plain")
    warned_weights, warned_losses = train(make_config, dropout_model, tmp_path / "warned", early_warnings=warnings)
    assert warned_losses == plain_losses
    assert all(torch.equal(plain_weights[k], warned_weights[k]) for k in plain_weights)

    # the control: the same comparison catches a warning that draws from the global RNG
    check = EarlyWarnings.check

    def drawing_check(self, model, step, last_step):
        decision = check(self, model, step, last_step)
        if decision is not None:  # at its checks only, like any draw a warning might make
            torch.rand(1)
        return decision

    monkeypatch.setattr(EarlyWarnings, "check", drawing_check)
    drawn_weights, drawn_losses = train(make_config, dropout_model, tmp_path / "drawn", early_warnings=warnings)
    assert drawn_losses[:2] == plain_losses[:2] and drawn_losses[2:] != plain_losses[2:]  # first check: step 2
    assert not all(torch.equal(plain_weights[k], drawn_weights[k]) for k in plain_weights)


@pytest.mark.parametrize("peft, options, starts_at_the_base", [
    ("lora", {}, True),  # LoRA starts as the identity
    ("prompt_tuning", {"num_virtual_tokens": 4}, False),  # a soft prompt starts random: already off the base
])
def test_under_peft_the_warnings_compare_with_the_base_itself(peft, options, starts_at_the_base, tiny_model, tmp_path):
    """The reference is the base with the adapter off, and prompt tuning's virtual-token positions (prepended to
    the logits) are not read as text."""
    from conftest import write_jsonl
    from retain.mitigations import MITIGATIONS
    from retain.mitigations.early_warnings import EarlyWarningsOptions
    from retain.mitigations.roles import Context
    from retain.model.loading import ModelConfig, load_model, load_tokenizer

    cfg = ModelConfig(name=str(tiny_model))
    ctx = Context(tokenizer=load_tokenizer(cfg), total_steps=1, max_length=64, load_base_model=lambda: load_model(cfg),
                  output_dir=tmp_path)
    option_class, method = MITIGATIONS[peft]
    model = method(option_class(**options)).transform_model(load_model(cfg), ctx)
    general = write_jsonl(tmp_path / "general.jsonl", GENERAL)
    warnings = EarlyWarnings(EarlyWarningsOptions(examples=4, general=str(general), task=False))
    warnings.setup(model, ctx)
    kl = warnings.check(model, step=0, last_step=True).metrics["warn/kl_general"]
    assert kl == pytest.approx(0.0, abs=1e-6) if starts_at_the_base else kl > 1e-4
