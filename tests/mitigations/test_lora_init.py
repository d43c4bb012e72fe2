"""LoRA's starts (PiSSA, OLoRA, CorDA, EVA, MiCA) and OSF: each adapter starts as its method says."""

import pytest
import torch
from conftest import write_jsonl
from batches import loaded

import retain
from retain.config import config_from_dict
from retain.mitigations.lora_init import init_batches, lora_layers
from retain.mitigations.peft_methods import OSF, Lora, LoraOptions, OSFOptions
from retain.mitigations.roles import Context

IDS = torch.tensor([[2, 5, 7, 9, 11, 13], [3, 4, 6, 8, 10, 12]])


def context(tokenizer, tmp_path):
    return Context(tokenizer=tokenizer, total_steps=1, max_length=32, load_base_model=None, output_dir=tmp_path)


@pytest.fixture
def general(tmp_path):
    words = "the capital of france is paris . one plus two is three . what city river mountain red green blue"
    return write_jsonl(tmp_path / "general.jsonl",
                       [{"text": " ".join(words.split()[i:] + words.split()[:i])} for i in range(16)])


def logits(model):
    with torch.no_grad():
        return model(input_ids=IDS).logits


def weights(model) -> dict:
    """The base linear weights by name, without peft's wrapping in the names."""
    return {name.replace("base_model.model.", "").replace(".base_layer", ""): p.detach().clone()
            for name, p in model.named_parameters() if name.endswith("proj.weight") or ".base_layer." in name}


@pytest.mark.parametrize("init", ["pissa", "olora", "corda"])
def test_a_start_that_moves_weights_into_the_adapter_keeps_the_model_and_final_is_a_plain_lora(
        tiny_model, tmp_path, general, init):
    model, tokenizer = loaded(tiny_model)
    model.eval()
    original, before = weights(model), logits(model)
    lora = Lora(LoraOptions(r=4, init=init, init_data=str(general) if init == "corda" else None))
    wrapped = lora.transform_model(model, context(tokenizer, tmp_path)).eval()
    torch.testing.assert_close(logits(wrapped), before, rtol=0, atol=1e-4)  # base + adapter = the original
    residual = weights(wrapped)
    assert max((residual[k] - original[k]).abs().max().item() for k in original) > 1e-3  # the base holds a residual
    with torch.no_grad():  # as if trained: the adapter moved
        for _, m in lora_layers(wrapped):
            m.lora_A["default"].weight.add_(0.05 * torch.randn_like(m.lora_A["default"].weight))
            m.lora_B["default"].weight.add_(0.05 * torch.randn_like(m.lora_B["default"].weight))
    trained = logits(wrapped)
    plain = lora.transform_weights(wrapped, None)
    torch.testing.assert_close(logits(plain), trained, rtol=0, atol=1e-4)  # the same model
    for key, tensor in weights(plain).items():  # on the original weights again
        torch.testing.assert_close(tensor, original[key], rtol=0, atol=1e-5, msg=key)
    assert plain.peft_config["default"].r == 8 and plain.peft_config["default"].init_lora_weights is True
    plain.save_pretrained(tmp_path / "adapter")
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    reloaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), tmp_path / "adapter")
    torch.testing.assert_close(logits(reloaded.eval()), trained, rtol=0, atol=1e-4)  # on the base final/ names


def first_query_start(tiny_model, tmp_path, options: LoraOptions):
    """(layer 0's q_proj weight before, the wrapped q_proj, its B, its A) as `options` start the adapter."""
    model, tokenizer = loaded(tiny_model)
    w = model.model.layers[0].self_attn.q_proj.weight.detach().float().clone()
    wrapped = Lora(options).transform_model(model, context(tokenizer, tmp_path))
    layer = wrapped.base_model.model.model.layers[0].self_attn.q_proj
    return w, layer, layer.lora_B["default"].weight, layer.lora_A["default"].weight


def test_pissas_adapter_holds_the_top_singular_directions(tiny_model, tmp_path):
    w, layer, b, a = first_query_start(tiny_model, tmp_path, LoraOptions(r=4, alpha=4, init="pissa"))
    u, s, vh = torch.linalg.svd(w, full_matrices=False)
    torch.testing.assert_close(b @ a, u[:, :4] @ torch.diag(s[:4]) @ vh[:4], rtol=0, atol=1e-5)  # scaling 1
    torch.testing.assert_close(layer.base_layer.weight, u[:, 4:] @ torch.diag(s[4:]) @ vh[4:], rtol=0, atol=1e-5)


def test_oloras_adapter_is_the_weights_qr_factors_not_its_singular_directions(tiny_model, tmp_path):
    w, layer, b, a = first_query_start(tiny_model, tmp_path, LoraOptions(r=4, alpha=8, init="olora"))
    q, r = torch.linalg.qr(w)
    torch.testing.assert_close(b, q[:, :4], rtol=0, atol=1e-5)  # orthonormal columns (PiSSA's are U·√S)
    torch.testing.assert_close(a, r[:4], rtol=0, atol=1e-5)  # upper trapezoidal
    assert not a.tril(-1).any()
    torch.testing.assert_close(layer.base_layer.weight + 2 * b @ a, w, rtol=0, atol=1e-5)  # scaling alpha/r = 2


def test_cordas_knowledge_preserving_start_barely_acts_on_the_general_datas_inputs(tiny_model, tmp_path, general):
    """CorDA's knowledge-preserved mode gives the adapter the directions of W·C (C: the covariance of a layer's
    inputs on the general data) that matter least to those inputs; its instruction-previewed mode, and PiSSA,
    the ones that matter most. Measured on one layer: |B·A·x| / |W·x| over the general data's inputs x."""
    model, tokenizer = loaded(tiny_model)  # the inputs are the base's: the same for either start
    q_proj, inputs = model.model.layers[0].self_attn.q_proj, []
    hook = q_proj.register_forward_hook(lambda m, i, o: inputs.append(i[0].detach().flatten(0, -2)))
    with torch.no_grad():
        for batch in init_batches(str(general), tokenizer, 32, 16, 4):
            model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    hook.remove()
    x = torch.cat(inputs).float()

    def on_general_inputs(init):
        options = LoraOptions(r=4, init=init, init_data=str(general) if init == "corda" else None)
        w, layer, b, a = first_query_start(tiny_model, tmp_path, options)
        update = layer.scaling["default"] * b @ a
        return ((x @ update.T).norm() / (x @ w.T).norm()).item()

    corda, pissa = on_general_inputs("corda"), on_general_inputs("pissa")
    assert corda < 0.1 * pissa, (corda, pissa)  # measured here: 0.022 against 0.63


def test_mica_trains_a_from_zero_against_the_least_singular_directions_and_leaves_the_base(tiny_model, tmp_path):
    model, tokenizer = loaded(tiny_model)
    original, before = weights(model), logits(model.eval())
    wrapped = Lora(LoraOptions(r=4, init="mica")).transform_model(model, context(tokenizer, tmp_path)).eval()
    torch.testing.assert_close(logits(wrapped), before, rtol=0, atol=1e-6)
    for key, tensor in weights(wrapped).items():
        assert torch.equal(tensor, original[key]), key
    layer = wrapped.base_model.model.model.layers[0].self_attn.q_proj
    u, _, _ = torch.linalg.svd(original["model.layers.0.self_attn.q_proj.weight"].float(), full_matrices=False)
    b, a = layer.lora_B["default"].weight, layer.lora_A["default"].weight
    torch.testing.assert_close(b.abs(), u[:, -4:].abs(), rtol=0, atol=1e-5)  # up to each vector's sign
    assert not a.any() and a.requires_grad and not b.requires_grad


def test_eva_starts_a_from_the_inputs_top_directions_and_b_at_zero(tiny_model, tmp_path, general):
    model, tokenizer = loaded(tiny_model)
    original, before = weights(model), logits(model.eval())
    lora = Lora(LoraOptions(r=4, init="eva", init_data=str(general), init_examples=16))
    wrapped = lora.transform_model(model, context(tokenizer, tmp_path)).eval()
    torch.testing.assert_close(logits(wrapped), before, rtol=0, atol=1e-6)
    for key, tensor in weights(wrapped).items():
        assert torch.equal(tensor, original[key]), key
    for _, m in lora_layers(wrapped):
        a = m.lora_A["default"].weight
        assert not m.lora_B["default"].weight.any()
        torch.testing.assert_close(a @ a.T, torch.eye(a.shape[0]), rtol=0, atol=1e-4)  # singular vectors: orthonormal


def test_corda_and_eva_need_their_data_by_name(make_config):
    from retain.core.errors import ConfigError

    for init in ("corda", "eva"):
        with pytest.raises(ConfigError, match=rf"mitigations\.lora\.init_data: init {init} reads activations"):
            config_from_dict(make_config(mitigations={"lora": {"init": init}}))


def test_osf_starts_as_the_model_and_its_gradients_leave_the_top_subspace_alone(tiny_model, tmp_path):
    model, tokenizer = loaded(tiny_model)
    before = logits(model.eval())
    w = model.model.layers[0].self_attn.q_proj.weight.detach().float().clone()
    wrapped = OSF(OSFOptions(effective_rank=0.5)).transform_model(model, context(tokenizer, tmp_path)).eval()
    torch.testing.assert_close(logits(wrapped), before, rtol=0, atol=1e-5)
    trainable = sum(p.numel() for p in wrapped.parameters() if p.requires_grad)
    assert 0 < trainable < sum(p.numel() for p in wrapped.parameters()) / 2
    # a gradient step moves the weight only outside its top half of singular directions (u_top, v_top): peft
    # projects the gradients. (AdamW's per-element scaling then leaks some of the step back in: about 12% of it
    # after three steps at lr 1e-2 on this model; a plain gradient step, as here, keeps it out.)
    params = [p for p in wrapped.parameters() if p.requires_grad]
    wrapped(input_ids=IDS, labels=IDS).loss.backward()
    with torch.no_grad():
        for p in params:
            p -= 0.1 * p.grad
    q = wrapped.base_model.model.model.layers[0].self_attn.q_proj
    delta = q.get_delta_weight("default").detach().float()
    u, _, vh = torch.linalg.svd(w, full_matrices=False)
    top = u.shape[1] - len(q._osf_S_low_init["default"])
    assert delta.norm() > 0 and top == 16
    assert (u[:, :top].T @ delta).norm() < 1e-3 * delta.norm()
    assert (delta @ vh[:top].T).norm() < 1e-3 * delta.norm()


def test_a_pissa_run_writes_a_final_adapter_that_equals_its_merged_model(make_config, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    config = make_config(mitigations={"lora": {"r": 4, "init": "pissa"}}, output={"merged_export": True},
                         training={"max_steps": 3, "bf16": False})
    result = retain.train(config_from_dict(config), progress=False)
    merged = AutoModelForCausalLM.from_pretrained(result.final_dir / "merged").eval()
    base = AutoModelForCausalLM.from_pretrained(config["model"]["name"])
    adapter = PeftModel.from_pretrained(base, result.final_dir).eval()
    torch.testing.assert_close(logits(adapter), logits(merged), rtol=0, atol=1e-4)
    assert not torch.allclose(logits(merged), logits(AutoModelForCausalLM.from_pretrained(config["model"]["name"])))


def test_plain_lora_trains_without_attrs(make_config, tmp_path):
    """peft's CorDA module imports `attrs`, which a plain install of retain may not have (a newcomer's `retain train`
    on the LoRA config `retain init` writes crashed on it): only a CorDA start may import it."""
    import subprocess
    import sys

    import yaml

    path = tmp_path / "lora.yaml"
    path.write_text(yaml.safe_dump(make_config(mitigations={"lora": {"r": 4}}, training={"max_steps": 1})))
    blocked = ("import sys; sys.modules['attr'] = sys.modules['attrs'] = None; "  # `import attr` now fails
               "from retain.cli import main; raise SystemExit(main(['train', sys.argv[1]]))")
    proc = subprocess.run([sys.executable, "-c", blocked, str(path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
