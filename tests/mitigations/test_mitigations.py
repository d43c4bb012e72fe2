"""What each mitigation promises about which weights move."""

import json
import math

from pathlib import Path

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


GENERAL = [{"text": "the capital of france is paris . one plus two is three"}] * 24

# name -> (options, which weights may move: "adapter" | "all" | "none-frozen-check")
SMOKE = {
    "freeze": {"embeddings": True},
    "lora": {"r": 4, "use_dora": True},
    "loha": {"r": 4},
    "lokr": {"r": 4},
    "ia3": {},
    "oft": {"block_size": 16},
    "osf": {"effective_rank": 0.5},
    "prompt_tuning": {"num_virtual_tokens": 4},
    "prefix_tuning": {"num_virtual_tokens": 4},
    "replay": {"ratio": 0.2},
    "self_distill": {"max_new_tokens": 4, "keep_if": "always"},
    "dft": {},
    "eaft": {},
    "asft": {"weight": 1.0},
    "kl": {"weight": 1.0},
    "l2sp": {"weight": 1.0},
    "ewc": {"batches": 2},
    "si": {"steps": 2},
    "progressive_unfreeze": {"every": 100, "train_head": False},
    "retention": {"suite": "english", "limit": 3, "every": 2, "max_drop_points": 100.0,
                  "max_perplexity_increase": 1000.0},
    "interpolate": {"alpha": 0.5},
    "early_warnings": {"every": 2, "examples": 4},
}
PEFT = {"lora", "loha", "lokr", "ia3", "oft", "osf", "prompt_tuning", "prefix_tuning"}


def test_smoke_table_covers_every_mitigation():
    from retain.mitigations import MITIGATIONS

    assert set(SMOKE) == set(MITIGATIONS)


@pytest.mark.parametrize("name", sorted(SMOKE))
def test_every_mitigation_trains_a_few_steps(name, make_config, tiny_model, tmp_path):
    from conftest import write_jsonl

    general = write_jsonl(tmp_path / "general.jsonl", GENERAL)
    options = dict(SMOKE[name])
    if name in ("replay", "ewc", "si"):
        options["file"] = str(general)
    if name == "early_warnings":
        options["general"] = str(general)
    result = retain.train(config_from_dict(make_config(mitigations={name: options},
                                                       training={"max_steps": 4, "lr": 1e-2})), progress=False)
    rows = [r for r in result.metrics if "loss" in r]
    assert len(rows) == 4 and all(math.isfinite(r["loss"]) for r in rows)
    term = {"kl": "loss/kl", "asft": "loss/asft_kl", "l2sp": "loss/l2sp", "ewc": "loss/ewc", "si": "loss/si"}.get(name)
    if term:
        assert all(term in r for r in rows) and rows[0][term] == pytest.approx(0.0, abs=1e-6)  # 0 at the anchor
        assert rows[-1][term] > 0
    base = base_weights(tiny_model)
    if name in PEFT:
        assert (result.final_dir / "adapter_config.json").is_file()
        return
    tuned = load_file(str(result.final_dir / "model.safetensors"))
    moved = {k for k in base if not torch.equal(base[k], tuned[k])}
    if name == "progressive_unfreeze":  # only the top block trains before step 100
        assert moved and all(block_index(k) == 1 for k in moved)
    elif name == "freeze":
        assert moved and not any("embed_tokens" in k for k in moved)
    elif name == "interpolate":
        # halfway between base and the fine-tune: every moved tensor moved, none equals a pure fine-tune
        assert moved
    else:
        assert len(moved) == len(base)  # full fine-tuning underneath: everything moves


def test_interpolate_halfway_is_the_midpoint_of_base_and_finetune(make_config, tiny_model, tmp_path):
    plain = retain.train(config_from_dict(make_config(output={"dir": str(tmp_path / "plain")})), progress=False)
    half = retain.train(config_from_dict(make_config(output={"dir": str(tmp_path / "half")},
                                                     mitigations={"interpolate": {"alpha": 0.5}})), progress=False)
    base, tuned = base_weights(tiny_model), load_file(str(plain.final_dir / "model.safetensors"))
    mid = load_file(str(half.final_dir / "model.safetensors"))
    for k in base:
        assert torch.allclose(mid[k], (base[k] + tuned[k]) / 2, atol=1e-6), k


@pytest.mark.parametrize("action", ["stop", "rollback", "repair"])
def test_retention_budget_acts_on_a_breach(action, make_config, tiny_model, tmp_path):
    # lr 0.3 wrecks the model at once, so English perplexity breaches a 0% budget at the first check
    config = make_config(training={"lr": 0.3, "max_steps": 8}, mitigations={
        "retention": {"suite": "english", "limit": 8, "every": 2, "max_perplexity_increase": 0.0, "action": action}})
    result = retain.train(config_from_dict(config), progress=False)
    record = json.loads((tmp_path / "run" / "retention.json").read_text())
    assert record["outcome"]["action"] == action and record["outcome"]["step"] == 2
    assert record["max_perplexity_increase"] == 0.0 and record["max_drop_points"] == 1.0
    assert record["outcome"]["reason"].startswith("english word_perplexity rose +")  # a relative rise, in %
    assert record["outcome"]["reason"].endswith("% (budget +0%)") and record["checks"][0]["units"] == {
        "english": "relative"}
    assert result.steps == 2  # stopped at the breach
    final = load_file(str(result.final_dir / "model.safetensors"))
    base = base_weights(tiny_model)
    if action == "rollback":  # no check was within budget: back to the start
        assert all(torch.equal(final[k], base[k]) for k in base)
    elif action == "repair":
        assert 0 <= record["outcome"]["alpha"] < 1
    else:
        assert any(not torch.equal(final[k], base[k]) for k in base)


def test_retention_budget_units_points_for_scores_relative_for_perplexity():
    from retain.core.schema import ConfigError
    from retain.evaluation.compare import task_drops
    from retain.mitigations.budget import RetentionOptions
    from retain.mitigations.budget.judge import budget_shares, over_budget

    def res(acc, ppl):
        return {"tasks": {
            "facts": {"primary_metric": "acc", "lower_is_better": False, "metrics": {"acc": acc}},
            "english": {"primary_metric": "word_perplexity", "lower_is_better": True,
                        "metrics": {"word_perplexity": ppl}}}}

    before, after = res(0.80, 20.0), res(0.77, 39.82)  # 3 points lost; perplexity +99.1%
    assert task_drops(before, after) == pytest.approx({"facts": 3.0, "english": 0.991})
    tight = RetentionOptions(max_drop_points=2.0, max_perplexity_increase=0.05)
    assert over_budget(tight, before, task_drops(before, after)) == [
        "facts acc dropped 3.0 points (budget 2 points)", "english word_perplexity rose +99.1% (budget +5%)"]
    assert budget_shares(tight, before, task_drops(before, after)) == pytest.approx({"facts": 1.5, "english": 19.82})
    assert over_budget(RetentionOptions(max_drop_points=5.0, max_perplexity_increase=1.0), before,
                       task_drops(before, after)) == []
    # the deprecated max_drop still reads, as before: 100x as points, as is for perplexity
    config = config_from_dict({"model": {"name": "retain-tiny"}, "data": {"train": "lab:general.jsonl"},
                               "output": {"dir": "x"}, "mitigations": {"retention": {"max_drop": 0.05}}})
    assert config.mitigations["retention"].limits() == (5.0, 0.05)
    with pytest.raises(ConfigError, match="max_drop: deprecated alias"):
        config_from_dict({"model": {"name": "retain-tiny"}, "data": {"train": "lab:general.jsonl"},
                          "output": {"dir": "x"},
                          "mitigations": {"retention": {"max_drop": 0.05, "max_drop_points": 3.0}}})


def test_self_distill_trains_on_the_base_models_own_words(make_config, tiny_model):
    from transformers import AutoTokenizer

    from retain.data import IGNORE_INDEX, load_dataset
    from retain.mitigations.roles import Context
    from retain.mitigations.self_distill import SelfDistill, SelfDistillOptions

    config = config_from_dict(make_config())
    tok = AutoTokenizer.from_pretrained(tiny_model)
    examples = load_dataset(config.data.train, tok, max_length=64).examples[:4]
    from retain.model.loading import load_model

    ctx = Context(tokenizer=tok, total_steps=1, max_length=config.data.max_length,
                  load_base_model=lambda: load_model(config.model), output_dir=Path(config.output.dir))
    always = SelfDistill(SelfDistillOptions(max_new_tokens=3, keep_if="always")).transform_data(examples, ctx)
    assert len(always) == 4 and any(a.input_ids != e.input_ids for a, e in zip(always, examples))
    for a, e in zip(always, examples):  # the prompt, and where the loss starts, are unchanged
        start = next(i for i, label in enumerate(e.labels) if label != IGNORE_INDEX)
        assert a.input_ids[:start] == e.input_ids[:start] and all(x == IGNORE_INDEX for x in a.labels[:start])
    # a random model never repeats the sums, so the answer filter keeps every original
    strict = SelfDistill(SelfDistillOptions(max_new_tokens=3)).transform_data(examples, ctx)
    assert [s.input_ids for s in strict] == [e.input_ids for e in examples]


def test_every_mitigation_plays_a_role_and_a_misspelled_role_method_is_an_error():
    from retain.mitigations import MITIGATIONS
    from retain.mitigations.roles import check_roles

    for _, cls in MITIGATIONS.values():
        check_roles(cls)  # the shipped table is clean

    class Typo:
        def transfrom_model(self, model, ctx):
            return model

    with pytest.raises(TypeError, match="did you mean transform_model"):
        check_roles(Typo)

    class Nothing:
        def helper(self):
            pass

    with pytest.raises(TypeError, match="plays no role"):
        check_roles(Nothing)


def test_a_run_lets_go_of_the_frozen_base_copy_before_it_saves(make_config, monkeypatch):
    # KL to the base holds a frozen copy of the model (as large as the model); phase 4 drops it before the
    # weight transforms and final/, and the copy is gone for good (the reference refuses to be used after)
    from retain.model.reference import Reference
    from retain.training import loop

    released = []
    real_release = Reference.release
    monkeypatch.setattr(Reference, "release", lambda self: (released.append(self.copy is not None),
                                                            real_release(self)))
    retain.train(config_from_dict(make_config(mitigations={"kl": {"weight": 1.0}})), progress=False)
    assert released == [True]  # the kl mitigation's one reference, a frozen copy until then

    class Holder:
        def __init__(self, reference):
            self.reference = reference

    model = torch.nn.Linear(2, 2)
    held, other = Holder(Reference(model)), Holder("not a reference")
    loop.release_references(held, other, object())
    assert held.reference.copy is None and held.reference.released and other.reference == "not a reference"
