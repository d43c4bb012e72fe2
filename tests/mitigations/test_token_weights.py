"""Token-reweighted SFT (DFT, EAFT, ASFT): each loss against its paper's formula written out by hand."""

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import write_jsonl
from safetensors.torch import load_file
from batches import indexed, loaded

import retain
from retain.config import config_from_dict
from retain.core.errors import ConfigError
from retain.mitigations import parse_mitigations
from retain.mitigations.token_weights import (ASFT, DFT, EAFT, ASFTOptions, DFTOptions, EAFTOptions, dft_weights,
                                              eaft_weights)
from retain.objectives import make_objective
from retain.objectives.sft import task_forward

# two target positions over a 4-token vocabulary
LOGITS = torch.tensor([[2.0, 1.0, 0.0, -1.0], [0.0, 0.0, 3.0, 0.0]])
TARGETS = torch.tensor([0, 1])


def softmax_by_hand(row):
    z = sum(math.exp(x) for x in row)
    return [math.exp(x) / z for x in row]


def test_dft_loss_is_the_targets_probability_times_its_cross_entropy_and_the_weight_carries_no_gradient():
    p0 = softmax_by_hand([2.0, 1.0, 0.0, -1.0])[0]
    p1 = softmax_by_hand([0.0, 0.0, 3.0, 0.0])[1]
    assert dft_weights(LOGITS, TARGETS).tolist() == pytest.approx([p0, p1], rel=1e-6)
    logits = LOGITS.clone().requires_grad_(True)
    weights = DFT(DFTOptions()).token_weights(logits, TARGETS)
    loss = (F.cross_entropy(logits, TARGETS, reduction="none") * weights).mean()
    assert loss.item() == pytest.approx((p0 * -math.log(p0) + p1 * -math.log(p1)) / 2, rel=1e-6)
    loss.backward()
    # sg(p): d/dz [p · (−log p)] = p · (softmax(z) − onehot(y)) / N; with p not detached it would differ
    for i, (row, y, p) in enumerate([([2.0, 1.0, 0.0, -1.0], 0, p0), ([0.0, 0.0, 3.0, 0.0], 1, p1)]):
        want = [p * (q - (j == y)) / 2 for j, q in enumerate(softmax_by_hand(row))]
        assert logits.grad[i].tolist() == pytest.approx(want, rel=1e-5, abs=1e-7)


def test_eaft_weight_is_the_normalised_entropy_of_the_top_k():
    # top 2 of row 0 are logits 2 and 1: probabilities a, 1 − a with a = 1 / (1 + e^-1)
    a = 1 / (1 + math.exp(-1))
    h0 = -(a * math.log(a) + (1 - a) * math.log(1 - a)) / math.log(2)
    b = 1 / (1 + math.exp(-3))  # row 1: 3 against one of the zeros
    h1 = -(b * math.log(b) + (1 - b) * math.log(1 - b)) / math.log(2)
    assert eaft_weights(LOGITS, top_k=2).tolist() == pytest.approx([h0, h1], rel=1e-6)
    assert eaft_weights(LOGITS, top_k=2, alpha=2.0).tolist() == pytest.approx([h0 ** 2, h1 ** 2], rel=1e-6)
    q = softmax_by_hand([2.0, 1.0, 0.0, -1.0])  # top_k 0: the whole vocabulary, over ln V
    assert eaft_weights(LOGITS[:1], top_k=0).item() == pytest.approx(-sum(x * math.log(x) for x in q) / math.log(4))
    assert eaft_weights(torch.zeros(3, 50)).tolist() == pytest.approx([1.0] * 3)  # a uniform guess: full weight
    sure = torch.tensor([[30.0] + [0.0] * 49])
    assert eaft_weights(sure).item() < 1e-9  # a confident prediction barely moves: the confident conflict spared
    logits = LOGITS.clone().requires_grad_(True)
    loss = (F.cross_entropy(logits, TARGETS, reduction="none")
            * EAFT(EAFTOptions(top_k=2)).token_weights(logits, TARGETS)).mean()
    pa, pb = softmax_by_hand([2.0, 1.0, 0.0, -1.0])[0], softmax_by_hand([0.0, 0.0, 3.0, 0.0])[1]
    assert loss.item() == pytest.approx((h0 * -math.log(pa) + h1 * -math.log(pb)) / 2, rel=1e-6)


def full_logits(model, batch):
    """(B·T, V) logits and the mask (B·T,) of positions whose next token is a target, from a plain forward."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    mask = torch.zeros_like(batch["labels"], dtype=torch.bool)
    mask[:, :-1] = batch["labels"][:, 1:] != -100
    targets = torch.full_like(batch["labels"], -100)
    targets[:, :-1] = batch["labels"][:, 1:]
    return logits.reshape(-1, logits.shape[-1]), mask.flatten(), targets.flatten()


@pytest.mark.parametrize("which", ["dft", "eaft"])
def test_the_steps_task_loss_is_the_weighted_mean_over_the_targets(tiny_model, which):
    model, tokenizer = loaded(tiny_model)
    batch = indexed(tokenizer)
    mitigation = DFT(DFTOptions()) if which == "dft" else EAFT(EAFTOptions(top_k=5))
    fast = task_forward(model, model, batch, [mitigation])
    with torch.no_grad():
        logits, mask, targets = full_logits(model, batch)
        log_p = F.log_softmax(logits[mask], -1)
        ce = -log_p.gather(-1, targets[mask][:, None]).squeeze(-1)
        if which == "dft":
            weight = (-ce).exp()
        else:
            top = F.log_softmax(logits[mask].topk(5, -1).values, -1)
            weight = -(top.exp() * top).sum(-1) / math.log(5)
    assert fast.loss.item() == pytest.approx((weight * ce).sum().item() / mask.sum().item(), rel=1e-5)
    assert fast.loss.item() < task_forward(model, model, batch).loss.item()  # weights < 1 on this model


def test_asft_is_dft_plus_its_weight_times_the_forward_kl_to_the_base(tiny_model):
    model, tokenizer = loaded(tiny_model)
    base, _ = loaded(tiny_model)
    batch = indexed(tokenizer)
    asft = ASFT(ASFTOptions(weight=0.3))
    asft.setup(model, None)  # the frozen copy of the base, before the model moves
    fast = task_forward(model, model, batch, [asft])
    assert asft.loss_term(model, batch, fast).item() == pytest.approx(0.0, abs=1e-6)  # KL(base‖base)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    fast = task_forward(model, model, batch, [asft])
    total = fast.loss + asft.loss_term(model, batch, fast)
    with torch.no_grad():
        logits, mask, targets = full_logits(model, batch)
        base_logits, _, _ = full_logits(base.eval(), batch)
        log_q = F.log_softmax(logits[mask], -1)
        ce = -log_q.gather(-1, targets[mask][:, None]).squeeze(-1)
        log_p = F.log_softmax(base_logits[mask], -1)
        kl = (log_p.exp() * (log_p - log_q)).sum(-1)  # KL(base‖model) per target
        want = ((-ce).exp() * ce).mean() + 0.3 * kl.mean()
    assert kl.mean() > 1e-4
    assert total.item() == pytest.approx(want.item(), rel=1e-5)


@pytest.mark.parametrize("mitigations", [{"dft": {}}, {"eaft": {"top_k": 5}}, {"asft": {"weight": 0.5}}],
                         ids=["dft", "eaft", "asft"])
def test_gradient_accumulation_stays_exact_with_token_weights(make_config, tmp_path, mitigations):
    rows = [{"prompt": f"what is {a} plus {b} ?", "response": " " + " ".join(["1"] * (1 + (a * b) % 7))}
            for a in range(6) for b in range(6)]  # uneven target counts per micro-batch
    data = write_jsonl(tmp_path / "uneven.jsonl", rows)
    runs = {}
    for name, batch, accum in (("8x1", 8, 1), ("2x4", 2, 4)):
        config = make_config(data={"train": str(data)}, mitigations=mitigations,
                             training={"batch_size": batch, "grad_accum": accum, "max_steps": 2, "lr": 1e-3,
                                       "bf16": False}, output={"dir": str(tmp_path / name)})
        runs[name] = retain.train(config_from_dict(config), progress=False)
    losses = {k: [r["loss"] for r in v.metrics if "loss" in r] for k, v in runs.items()}
    assert losses["2x4"] == pytest.approx(losses["8x1"], rel=1e-5, abs=1e-7)
    one, four = (load_file(str(runs[k].final_dir / "model.safetensors")) for k in ("8x1", "2x4"))
    for key, tensor in one.items():
        torch.testing.assert_close(four[key], tensor, rtol=0, atol=1e-6, msg=key)


def test_two_token_reweightings_or_one_with_dpo_are_refused_by_name(make_config):
    with pytest.raises(ConfigError, match=r"mitigations\.eaft: only one token reweighting.*also given: dft"):
        parse_mitigations({"dft": {}, "eaft": {}})
    for name in ("dft", "eaft", "asft"):
        for objective in ("dpo", "grpo"):
            training = {"objective": objective}
            if objective == "grpo":
                training["grpo"] = {"rewards": {"format": {"pattern": "x"}}}
            config = config_from_dict(make_config(training=training, mitigations={name: {}}))
            with pytest.raises(ConfigError, match=rf"mitigations\.{name}: weights the next-token loss.*"
                                                  rf"training\.objective {objective}"):
                make_objective(config)


def test_packed_rows_take_dft_and_eaft_but_not_asfts_padded_row_kl(make_config, tmp_path):
    for name in ("dft", "eaft"):
        config = make_config(data={"packing": True}, mitigations={name: {}}, training={"max_steps": 2},
                             output={"dir": str(tmp_path / name)})
        rows = [r for r in retain.train(config_from_dict(config), progress=False).metrics if "loss" in r]
        assert len(rows) == 2 and all(math.isfinite(r["loss"]) for r in rows)
    with pytest.raises(ConfigError, match=r"data\.packing.*mitigations\.asft"):
        config_from_dict(make_config(data={"packing": True}, mitigations={"asft": {}}))
