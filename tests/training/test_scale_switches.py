"""The switches that scale a run: data.packing, model.gradient_checkpointing, model.attn_implementation,
model.load_in_4bit (QLoRA), and torch as a range in pyproject."""

import re
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

import retain
from retain.cli import main
from retain.config import config_from_dict
from retain.data import IGNORE_INDEX, Example, collate, load_dataset, model_inputs, pack
from retain.model.loading import ModelConfig, enable_gradient_checkpointing, load_model, load_tokenizer
from retain.core.schema import ConfigError
from conftest import REPO_ROOT, pyproject
from retain.objectives.sft import collate_indexed, target_tokens, task_forward

ROOT = REPO_ROOT


@pytest.fixture(scope="module")
def tiny(tiny_model):
    cfg = ModelConfig(name=str(tiny_model))
    return load_model(cfg).eval(), load_tokenizer(cfg)


@pytest.fixture
def examples(tiny, qa_data):
    return load_dataset(qa_data, tiny[1], max_length=64).examples  # prompt masked: loss on the response only


# --- data.packing ---------------------------------------------------------------------------------------------

def test_pack_puts_every_example_once_in_rows_that_fit_with_positions_restarting(examples):
    replayed = [Example(e.input_ids, e.labels, replay=True) for e in examples[:5]]
    rows = pack(examples + replayed, 64)  # examples of 16-17 tokens
    assert all(len(r.input_ids) <= 64 for r in rows)
    assert len(rows) == 12  # 36 task examples, 3 to a row (17 + 17 + 17 + 16 > 64), and 5 replayed ones
    assert {r.replay for r in rows} == {False, True}
    # the examples back, each from its row's runs of positions 0, 1, 2, ...
    found = []
    for row in rows:
        starts = [i for i, p in enumerate(row.positions) if p == 0] + [len(row.input_ids)]
        assert row.positions == [p for a, b in zip(starts, starts[1:]) for p in range(b - a)]
        found += [(tuple(row.input_ids[a:b]), row.replay) for a, b in zip(starts, starts[1:])]
        assert all(row.labels[a] == IGNORE_INDEX for a in starts[:-1])  # nothing predicts a member's first token
    assert sorted(found) == sorted([(tuple(e.input_ids), False) for e in examples] +
                                   [(tuple(e.input_ids), True) for e in replayed])


def test_packed_loss_and_gradient_equal_the_padded_batchs_on_the_same_tokens(tiny, examples):
    model, _ = tiny
    chosen = examples[:12]
    padded = collate_indexed(list(enumerate(chosen)), pad_id=1)
    packed = collate_indexed(list(enumerate(pack(chosen, 64))), pad_id=1)
    assert packed["input_ids"].shape[0] == 3 < padded["input_ids"].shape[0]  # 12 examples of 16 tokens, 4 to a row
    assert target_tokens(packed) == target_tokens(padded)  # the prompts are masked in rows as in the batch

    def loss_and_grads(batch):
        model.zero_grad()
        loss = task_forward(model, model, batch).loss
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters()]

    loss_padded, grads_padded = loss_and_grads(padded)
    loss_packed, grads_packed = loss_and_grads(packed)
    model.zero_grad()
    assert loss_packed == pytest.approx(loss_padded.item(), abs=1e-5)
    for a, b in zip(grads_packed, grads_padded):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_attention_stays_inside_each_packed_example(tiny_model, examples, attention):
    model = load_model(ModelConfig(name=str(tiny_model), attn_implementation=attention)).eval()
    first, second = examples[0], examples[7]
    other_first = Example([first.input_ids[0], *reversed(first.input_ids[1:])], first.labels)

    def logits_of_second(before: Example) -> torch.Tensor:
        batch = collate(pack([before, second], 128), pad_id=1)  # one row: the longer of the two first
        ids = batch["input_ids"][0].tolist()
        at = next(i for i in range(len(ids)) if ids[i:i + len(second.input_ids)] == second.input_ids)
        with torch.no_grad():
            return model(**model_inputs(batch)).logits[0, at:at + len(second.input_ids)]

    with torch.no_grad():
        alone = model(input_ids=torch.tensor([second.input_ids])).logits[0]
    torch.testing.assert_close(logits_of_second(first), alone, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(logits_of_second(other_first), alone, rtol=1e-5, atol=1e-5)


def packed_run(make_config, tmp_path, name, batch_size, grad_accum, **data):
    return retain.train(config_from_dict(make_config(
        data={"packing": True, **data}, output={"dir": str(tmp_path / name)},
        training={"batch_size": batch_size, "grad_accum": grad_accum, "max_steps": 2, "lr": 1e-3, "bf16": False})),
        progress=False)


def test_a_packed_run_keeps_gradient_accumulation_exact(make_config, tmp_path):
    # rows hold different numbers of target tokens: 2 rows x 1 equals 1 row x 2 only if tokens weight the loss
    one = packed_run(make_config, tmp_path, "2x1", 2, 1, max_length=48)
    two = packed_run(make_config, tmp_path, "1x2", 1, 2, max_length=48)
    assert [r["loss"] for r in one.metrics] == pytest.approx([r["loss"] for r in two.metrics], rel=1e-5)
    a, b = load_file(str(one.final_dir / "model.safetensors")), load_file(str(two.final_dir / "model.safetensors"))
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("section, values, says", [
    ("mitigations", {"kl": {"weight": 1.0}}, "mitigations.kl"),
    ("mitigations", {"asft": {}}, "mitigations.asft"),
    ("mitigations", {"prompt_tuning": {}}, "mitigations.prompt_tuning"),
    ("training", {"objective": "dpo"}, "objective dpo"),
])
def test_packing_with_what_reads_rows_as_one_sequence_is_a_config_error(make_config, section, values, says):
    with pytest.raises(ConfigError, match=rf"data\.packing: .*{re.escape(says)}"):
        config_from_dict(make_config(data={"packing": True}, **{section: values}))


# --- model.gradient_checkpointing -----------------------------------------------------------------------------

def gradients(model, batch) -> list[torch.Tensor]:
    model.train()
    model.zero_grad()
    task_forward(model, model, batch).loss.backward()
    return [p.grad.clone() for p in model.parameters() if p.requires_grad]


def test_gradient_checkpointing_gives_the_same_gradients(tiny_model, examples):
    batch = collate_indexed(list(enumerate(examples[:8])), pad_id=1)
    plain = load_model(ModelConfig(name=str(tiny_model)))
    checkpointed = load_model(ModelConfig(name=str(tiny_model)))
    enable_gradient_checkpointing(checkpointed)
    assert checkpointed.is_activation_checkpointing and not plain.is_activation_checkpointing
    for a, b in zip(gradients(checkpointed, batch), gradients(plain, batch)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_gradient_checkpointing_with_lora_and_frozen_embeddings_trains_the_adapter(tiny_model, examples):
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(load_model(ModelConfig(name=str(tiny_model))),
                           LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM"))
    for name, p in model.named_parameters():  # LoRA's B starts at 0: move it, or A gets no gradient
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.02)
    plain = gradients(model, collate_indexed(list(enumerate(examples[:8])), pad_id=1))
    enable_gradient_checkpointing(model)
    assert model.base_model.model.is_activation_checkpointing
    checkpointed = gradients(model, collate_indexed(list(enumerate(examples[:8])), pad_id=1))
    assert all(g.abs().sum() > 0 for g in checkpointed)  # every adapter matrix, in every layer, gets a gradient
    for a, b in zip(checkpointed, plain):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("mitigations, packing", [({}, False), ({"lora": {"r": 4}}, False), ({}, True)],
                         ids=["full", "lora", "full-packed"])
def test_a_checkpointed_run_resumes_to_the_uninterrupted_runs_weights(make_config, tmp_path, mitigations, packing):
    def run(name, resume=False, checkpointing=True):
        return retain.train(config_from_dict(make_config(
            model={"gradient_checkpointing": checkpointing}, mitigations=mitigations, data={"packing": packing},
            training={"max_steps": 4, "save_every": 2, "bf16": False}, output={"dir": str(tmp_path / name)})),
            resume=resume, progress=False)

    straight, plain = run("a"), run("plain", checkpointing=False)
    (tmp_path / "b" / "checkpoints").mkdir(parents=True)
    (tmp_path / "a" / "checkpoints" / "step-2").rename(tmp_path / "b" / "checkpoints" / "step-2")
    resumed = run("b", resume=True)  # packed: the same rows, the first two steps' skipped
    name = "adapter_model.safetensors" if mitigations else "model.safetensors"
    a, b, c = (load_file(str(r.final_dir / name)) for r in (straight, resumed, plain))
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(a[key], c[key], rtol=1e-4, atol=1e-6)  # what checkpointing changes: nothing


def test_a_model_without_checkpointing_support_is_a_config_error(tiny, monkeypatch):
    model, _ = tiny
    monkeypatch.setattr(type(model), "supports_gradient_checkpointing", False)
    with pytest.raises(ConfigError, match=r"model\.gradient_checkpointing: .*does not support .* set it to false"):
        enable_gradient_checkpointing(model)


# --- model.attn_implementation --------------------------------------------------------------------------------

def test_attn_implementation_reaches_the_model_and_eager_equals_sdpa(tiny_model, examples):
    ids = collate(examples[:4], pad_id=1)
    logits = {}
    for kernel in ("eager", "sdpa"):
        model = load_model(ModelConfig(name=str(tiny_model), attn_implementation=kernel)).eval()
        assert model.config._attn_implementation == kernel
        with torch.no_grad():
            logits[kernel] = model(**model_inputs(ids)).logits
    mask = ids["attention_mask"].bool()
    torch.testing.assert_close(logits["eager"][mask], logits["sdpa"][mask], rtol=1e-5, atol=1e-5)


def write_config(make_config, tmp_path, **sections) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(make_config(**sections)))
    return path


def cli_train_before_loading(monkeypatch, capsys, path) -> tuple[int, str]:
    """`retain train PATH`'s exit code and stderr, failing the test if any model or tokenizer starts to load."""
    def refuse(*args, **kwargs):
        raise AssertionError("loading started")

    for name in ("load_model", "load_tokenizer"):
        monkeypatch.setattr(f"retain.training.loop.{name}", refuse)
    code = main(["train", str(path)])
    return code, capsys.readouterr().err


@pytest.mark.skipif(__import__("importlib").util.find_spec("flash_attn") is not None, reason="flash-attn installed")
def test_flash_attention_without_its_package_is_exit_2_before_loading(make_config, tmp_path, monkeypatch, capsys):
    path = write_config(make_config, tmp_path, model={"attn_implementation": "flash_attention_2"})
    code, err = cli_train_before_loading(monkeypatch, capsys, path)
    assert code == 2
    assert "model.attn_implementation: flash_attention_2 needs the flash_attn package" in err
    assert "pip install flash-attn" in err and "sdpa" in err and str(path) in err
    assert not (tmp_path / "run").exists()


def test_an_unknown_attention_kernel_names_the_choices(make_config):
    with pytest.raises(ConfigError, match=r"model\.attn_implementation: 'flash' is not one of .*'sdpa'"):
        config_from_dict(make_config(model={"attn_implementation": "flash"}))


# --- model.load_in_4bit (QLoRA) -------------------------------------------------------------------------------

@pytest.mark.skipif(torch.cuda.is_available(), reason="the error is for machines without CUDA")
def test_load_in_4bit_without_cuda_is_exit_2_before_loading(make_config, tmp_path, monkeypatch, capsys):
    path = write_config(make_config, tmp_path, model={"load_in_4bit": True}, mitigations={"lora": {"r": 4}})
    code, err = cli_train_before_loading(monkeypatch, capsys, path)
    assert code == 2
    assert "model.load_in_4bit: 4-bit loading (QLoRA, through bitsandbytes) needs a CUDA GPU" in err
    assert "set model.load_in_4bit: false" in err and str(path) in err
    assert "Traceback" not in err and not (tmp_path / "run").exists()


def test_load_in_4bit_without_bitsandbytes_says_to_install_it(make_config, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a CUDA machine without bitsandbytes
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None if name == "bitsandbytes" else object())
    with pytest.raises(ConfigError, match=r"model\.load_in_4bit: .*pip install bitsandbytes"):
        config_from_dict(make_config(model={"load_in_4bit": True}, mitigations={"lora": {"r": 4}}))


@pytest.mark.parametrize("extra, says", [
    ({}, r"model\.load_in_4bit: 4-bit weights cannot be trained directly — add a PEFT method"),
    ({"mitigations": {"lora": {"r": 4}}, "output": {"merged_export": True}}, r"output\.merged_export: "),
])
def test_load_in_4bit_needs_an_adapter_and_no_merged_export(make_config, monkeypatch, extra, says):
    monkeypatch.setattr("retain.model.loading.four_bit_problem", lambda: None)  # as on a CUDA machine with bitsandbytes
    with pytest.raises(ConfigError, match=says):
        config_from_dict(make_config(model={"load_in_4bit": True}, **extra))


def test_load_in_4bit_asks_transformers_for_nf4_on_the_gpu(monkeypatch):
    from retain.model.loading import loading_options

    monkeypatch.setattr("retain.model.loading.four_bit_problem", lambda: None)  # as on a CUDA machine with bitsandbytes
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    options = loading_options(ModelConfig(name="m", load_in_4bit=True, attn_implementation="sdpa"))
    quantization = options["quantization_config"]
    assert quantization.load_in_4bit and quantization.bnb_4bit_quant_type == "nf4"
    assert quantization.bnb_4bit_use_double_quant and quantization.bnb_4bit_compute_dtype == torch.bfloat16
    assert options["device_map"] == {"": 0} and options["attn_implementation"] == "sdpa"
    assert loading_options(ModelConfig(name="m")) == {}  # unset: transformers' own defaults


def test_flash_attention_installed_but_no_cuda_is_a_config_error(make_config, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: object())  # flash_attn "installed"
    with pytest.raises(ConfigError, match=r"model\.attn_implementation: flash_attention_2 runs on a CUDA GPU only"):
        config_from_dict(make_config(model={"attn_implementation": "flash_attention_2"}))


# --- torch as a range -----------------------------------------------------------------------------------------

def test_torch_is_a_range_the_pinned_build_satisfies():
    from packaging.requirements import Requirement

    project = pyproject()["project"]
    torch_req = next(Requirement(d) for d in project["dependencies"] if Requirement(d).name == "torch")
    assert not any(spec.operator == "==" for spec in torch_req.specifier), "torch is a range, not a pin"
    pinned = re.search(r"torch==([\d.]+)", (ROOT / "Makefile").read_text()).group(1)  # what make demo/test install
    assert torch_req.specifier.contains(pinned)
    assert torch_req.specifier.contains(torch.__version__.split("+")[0])
