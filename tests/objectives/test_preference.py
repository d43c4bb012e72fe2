"""Preference objectives (retain.objectives.dpo and .grpo, their data, options and rewards in retain.preference):
DPO and GRPO against TRL, their pieces by hand, the CLI end to end, and bad preference data as a user meets it."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch
import yaml

from conftest import write_jsonl
from retain import cli
from retain.config import config_from_dict
from retain.core.errors import ConfigError

PAIRS = [{"prompt": f"what is {a} plus {b} ?", "chosen": f" {a + b}", "rejected": f" {a + b + 1} ."}
         for a in range(4) for b in range(4)]


def load(path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)


def perturb(model, seed: int = 0, scale: float = 0.05) -> None:
    """Move every weight a little: a policy that differs from its reference, so the log-ratios are not 0."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)


# --- DPO ---

def test_dpo_loss_by_hand():
    from retain.objectives.dpo import dpo_loss

    chosen, rejected, ref_c, ref_r = (torch.tensor([x]) for x in (-3.0, -5.0, -4.0, -4.5))
    # margin of log-ratios: (−3 + 4) − (−5 + 4.5) = 1.5
    assert dpo_loss(chosen, rejected, ref_c, ref_r, 0.2).item() == pytest.approx(-math.log(1 / (1 + math.exp(-0.3))))
    ipo = dpo_loss(chosen, rejected, ref_c, ref_r, 0.25, "ipo", torch.tensor([2]), torch.tensor([4]))
    assert ipo.item() == pytest.approx((1 / 2 - (-0.5) / 4 - 1 / (2 * 0.25)) ** 2)
    same = dpo_loss(chosen, rejected, chosen, rejected, 0.1)  # policy = reference: log 2 whatever the answers
    assert same.item() == pytest.approx(math.log(2))


@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo"])
def test_dpo_loss_equals_trls_dpo_trainer(loss_type, tiny_model, tmp_path):
    """The same pair, the same policy and reference: retain's loss is TRL DPOTrainer's, and its tokens are TRL's."""
    from datasets import Dataset as HFDataset
    from trl import DPOConfig, DPOTrainer

    from retain.objectives.dpo import DPO
    from retain.preference.options import DPOOptions
    from retain.preference.data import collate_pairs, load_pairs

    rows = PAIRS[5:7]
    write_jsonl(tmp_path / "pairs.jsonl", rows)
    policy, tokenizer = load(tiny_model)
    perturb(policy)
    args = DPOConfig(output_dir=str(tmp_path / "trl"), beta=0.3, loss_type=[loss_type], report_to=[], use_cpu=True,
                     bf16=False, per_device_train_batch_size=2, max_length=64)
    trainer = DPOTrainer(model=str(tiny_model), args=args, train_dataset=HFDataset.from_list(rows),
                         processing_class=tokenizer)  # its reference: the model loaded again from the path
    trainer.model.load_state_dict(policy.state_dict())
    theirs_batch = next(iter(trainer.get_train_dataloader()))
    theirs = trainer.compute_loss(trainer.model, theirs_batch).item()

    data = load_pairs(tmp_path / "pairs.jsonl", tokenizer, 64)
    ours_batch = collate_pairs(data.examples, tokenizer.pad_token_id)
    assert torch.equal(ours_batch["input_ids"], theirs_batch["input_ids"])  # the same tokens, the same targets
    assert torch.equal((ours_batch["labels"] != -100).long(), theirs_batch["completion_mask"])
    objective = DPO(DPOOptions(beta=0.3, loss_type=loss_type), replay=False, batch_size=2)
    objective.setup(load(tiny_model)[0], None, [], None)  # the reference: a frozen copy of the base
    policy.train()
    terms, _ = objective.loss(policy, policy, ours_batch)
    assert terms["dpo"].item() == pytest.approx(theirs, abs=1e-5)
    assert abs(theirs - (math.log(2) if loss_type == "sigmoid" else 0)) > 1e-3  # the policy did differ


# --- GRPO ---

def test_group_advantages_by_hand():
    from retain.objectives.grpo import group_advantages

    rewards = torch.tensor([1.0, 0.0, 0.0, 2.0, 2.0, 2.0])  # two prompts, G = 3
    std = math.sqrt(((2 / 3) ** 2 + 2 * (1 / 3) ** 2) / 2)  # unbiased, as TRL's nanstd
    expected = [(2 / 3) / (std + 1e-4), (-1 / 3) / (std + 1e-4), (-1 / 3) / (std + 1e-4), 0.0, 0.0, 0.0]
    assert group_advantages(rewards, 3).tolist() == pytest.approx(expected, abs=1e-6)
    assert group_advantages(rewards, 3, scale=False).tolist() == pytest.approx([2 / 3, -1 / 3, -1 / 3, 0, 0, 0])


def test_grpo_token_terms_by_hand():
    from retain.objectives.grpo import grpo_token_terms

    logps = torch.tensor([[-1.0, -2.0], [-0.5, 0.0]], requires_grad=True)
    ref = torch.tensor([[-1.5, -2.0], [-0.5, 0.0]])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    policy, kl = grpo_token_terms(logps, ref, torch.tensor([2.0, -1.0]), mask)
    assert policy.tolist() == [[-2.0, -2.0], [1.0, 0.0]]  # −A per target token (the ratio is 1 in value)
    assert kl.flatten().tolist() == pytest.approx([math.exp(-0.5) + 0.5 - 1, 0.0, 0.0, 0.0])
    policy.sum().backward(retain_graph=True)
    assert logps.grad.tolist() == [[-2.0, -2.0], [1.0, 0.0]]  # −A ∇log π: up for the better completion
    logps.grad = None
    kl.sum().backward()  # the KL's gradient is (log π − log π_ref) ∇log π: the unbiased reverse-KL gradient
    assert logps.grad.flatten().tolist() == pytest.approx([0.5, 0.0, 0.0, 0.0])


def test_grpo_loss_equals_trls_grpo_trainer(tiny_model, tmp_path):
    """The same prompt, completions, advantages and reference log-probs: retain's GRPO step loss and gradient
    are TRL GRPOTrainer's (loss_type dapo, its default; β 0.2; temperature 0.7)."""
    from datasets import Dataset as HFDataset
    from trl import GRPOConfig, GRPOTrainer

    from retain.data import Example, collate
    from retain.model.reference import Reference
    from retain.objectives.grpo import GRPO
    from retain.preference.logprobs import token_logps
    from retain.preference.options import GRPOOptions

    policy, tokenizer = load(tiny_model)
    perturb(policy)
    prompt = tokenizer("what is 2 plus 3 ?")["input_ids"]
    completions = [[12, 40, 0], [7, 0], [33, 34, 35, 36]]  # the EOS (0) ends two of them, as sampling does
    advantages = torch.tensor([1.2, -0.3, -0.9])
    args = GRPOConfig(output_dir=str(tmp_path / "trl"), beta=0.2, temperature=0.7, num_generations=3,
                      per_device_train_batch_size=3, max_completion_length=4, report_to=[], use_cpu=True, bf16=False)
    trainer = GRPOTrainer(model=str(tiny_model), reward_funcs=lambda completions, **_: [0.0] * len(completions),
                          args=args, train_dataset=HFDataset.from_list([{"prompt": "x"}] * 3), processing_class=tokenizer)
    trainer.model.load_state_dict(policy.state_dict())
    trainer.current_gradient_accumulation_steps = 1

    ours = GRPO(GRPOOptions(kl_coef=0.2, temperature=0.7, group_size=3, rewards={"f": {"kind": "length"}}), False)
    ours.reference = Reference(load(tiny_model)[0])  # a frozen copy of the base
    rows = [Example(prompt + c, [-100] * len(prompt) + c) for c in completions]
    batch = collate(rows, tokenizer.pad_token_id)
    batch.update(n_sampled=3, advantages=advantages,
                 ref_logps=token_logps(ours.reference.logits(policy, batch), batch["labels"], 0.7))
    terms, _ = ours.loss(policy, policy, batch)
    (terms["grpo"] + terms["grpo_kl"]).backward()

    width = max(map(len, completions))
    completion_ids = torch.tensor([c + [tokenizer.pad_token_id] * (width - len(c)) for c in completions])
    completion_mask = torch.tensor([[1] * len(c) + [0] * (width - len(c)) for c in completions])
    ref_per_token = batch["ref_logps"][:, len(prompt) - 1:][:, :width]  # (3, width): the completion positions
    inputs = {"prompt_ids": torch.tensor([prompt] * 3), "prompt_mask": torch.ones(3, len(prompt), dtype=torch.long),
              "completion_ids": completion_ids, "completion_mask": completion_mask, "advantages": advantages,
              "ref_per_token_logps": ref_per_token, "num_items_in_batch": completion_mask.sum()}
    trainer.model.train()
    theirs = trainer._compute_loss(trainer.model, inputs)
    theirs.backward()
    assert (terms["grpo"] + terms["grpo_kl"]).item() == pytest.approx(theirs.item(), abs=1e-6)
    assert terms["grpo_kl"].item() > 1e-4  # the policy did differ from the reference
    ours_grad = dict(policy.named_parameters())["lm_head.weight"].grad
    theirs_grad = dict(trainer.model.named_parameters())["lm_head.weight"].grad
    assert torch.allclose(ours_grad, theirs_grad, atol=1e-6), (ours_grad - theirs_grad).abs().max()


# --- rewards ---

def test_reward_terms_and_their_weighted_sum(tmp_path):
    from retain.preference.rewards import CompositeReward, RewardInput, word_f1

    write_jsonl(tmp_path / "facts.jsonl", [{"subject": "Niger", "answer": "Niamey"},
                                           {"subject": "Nigeria", "answer": "Abuja"}])
    (tmp_path / "mine.py").write_text("def shout(prompts, completions, **kw):\n"
                                      "    return [float(c.isupper()) for c in completions]\n")
    reward = CompositeReward({
        "template": {"kind": "format", "weight": 0.5, "pattern": r"ANSWER\(.+\)"},
        "keyword": {"keywords": ["abuja", "capital"]},
        "length": {"target_chars": 10, "weight": 0.1},
        "facts": {"kind": "knowledge", "facts": str(tmp_path / "facts.jsonl"), "weight": 2.0},
        "base": {"kind": "similarity_to_base", "weight": 0.3},
        "mine": {"kind": "function", "function": f"{tmp_path / 'mine.py'}:shout"},
    })
    inputs = [RewardInput("What is the capital of Nigeria?", " ANSWER(Abuja)", base_answer="ANSWER(Abuja)"),
              RewardInput("What is the capital of Nigeria?", "NIAMEY", base_answer="ANSWER(Abuja)")]
    total, terms = reward(inputs)
    assert terms == {"template": [1.0, 0.0], "keyword": [0.5, 0.0], "length": [1 - 3 / 10, 1 - 4 / 10],
                     "facts": [1.0, 0.0],  # "Nigeria", the longest subject named, not "Niger"
                     "base": [1.0, 0.0], "mine": [0.0, 1.0]}
    assert total == pytest.approx([0.5 + 0.5 + 0.07 + 2.0 + 0.3, 0.06 + 1.0])
    assert word_f1("the capital is Paris", "Paris") == pytest.approx(2 * 0.25 * 1 / 1.25)


@pytest.mark.parametrize("rewards, fragment", [
    ({}, "training.grpo.rewards: objective grpo needs a reward"),
    ({"vibes": {"weight": 1}}, "training.grpo.rewards.vibes: unknown reward kind 'vibes'"),
    ({"format": {"pattern": "("}}, "training.grpo.rewards.format.pattern: not a valid regular expression"),
    ({"facts": {"kind": "knowledge", "facts": "nowhere.jsonl"}}, "training.grpo.rewards.facts.facts: file not found"),
    ({"format": {"pattern": "x", "wieght": 2}}, "training.grpo.rewards.format.wieght: unknown key"),
])
def test_bad_reward_configs_name_the_key(make_config, rewards, fragment):
    config = make_config(training={"objective": "grpo", "grpo": {"rewards": rewards}})
    with pytest.raises(ConfigError, match=re.escape(fragment)):
        config_from_dict(config)


# --- end to end, as a user runs it ---

def run_train(tmp_path, capsys, config: dict, *overrides: str) -> tuple[int, str]:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    code = cli.main(["train", str(path), *overrides])
    return code, capsys.readouterr().err


def test_dpo_trains_through_the_cli_with_lora_l2sp_and_replay(make_config, tmp_path, capsys):
    write_jsonl(tmp_path / "pairs.jsonl", PAIRS)
    write_jsonl(tmp_path / "general.jsonl", [{"text": "the capital of france is paris ."}] * 4)
    config = make_config(data={"train": str(tmp_path / "pairs.jsonl"), "dev": str(tmp_path / "pairs.jsonl")},
                         training={"objective": "dpo", "dpo": {"beta": 0.5}, "max_steps": 8, "lr": 3e-2,
                                   "log_every": 4, "report_to": []},
                         mitigations={"lora": {"r": 4, "alpha": 8}, "l2sp": {"weight": 0.01},
                                      "replay": {"ratio": 0.2, "file": str(tmp_path / "general.jsonl")}})
    code, err = run_train(tmp_path, capsys, config)
    assert code == 0, err[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if "loss" in r]
    assert [r["step"] for r in train] == [4, 8]
    for row in train:
        assert {"loss/dpo", "loss/l2sp", "loss/replay", "dpo/reward_margin", "dpo/accuracy",
                "dpo/logratio_chosen"} <= set(row)
        assert row["loss"] == pytest.approx(row["loss/dpo"] + row["loss/l2sp"] + row["loss/replay"])
    assert train[-1]["dpo/reward_margin"] > train[0]["dpo/reward_margin"] > 0  # it learns the preference
    assert train[-1]["loss/dpo"] < math.log(2)
    evals = [r for r in rows if "eval/dpo" in r]
    assert evals and evals[-1]["eval/dpo_accuracy"] > 0.5
    assert (tmp_path / "run" / "final" / "adapter_model.safetensors").is_file()


def test_dpo_composes_with_ewc_and_a_retention_budget(make_config, tiny_model, tmp_path):
    """DPO + EWC + a retention budget in one run: the EWC term is logged beside the DPO loss, adds to it, and
    holds the weights nearer the base than the same run without it; the budget checks as it would for SFT."""
    import retain
    from safetensors.torch import load_file

    from retain.mitigations.penalties import weighted_l2

    write_jsonl(tmp_path / "pairs.jsonl", PAIRS)
    write_jsonl(tmp_path / "general.jsonl", [{"text": f"the capital of {c} is {k} ."}  # EWC's Fisher data
                                             for c, k in (("france", "paris"), ("japan", "tokyo"))] * 8)
    budget = {"suite": "english", "limit": 3, "every": 4, "max_drop_points": 100.0, "max_perplexity_increase": 1000.0}
    runs = {}
    for name, penalty in (("ewc", {"ewc": {"weight": 1000.0, "file": str(tmp_path / "general.jsonl"), "batches": 2}}),
                          ("none", {})):
        config = make_config(data={"train": str(tmp_path / "pairs.jsonl")},
                             training={"objective": "dpo", "dpo": {"beta": 0.5}, "max_steps": 8, "lr": 1e-2,
                                       "report_to": []},
                             mitigations={**penalty, "retention": budget}, output={"dir": str(tmp_path / name)})
        result = retain.train(config_from_dict(config), progress=False)
        record = json.loads((tmp_path / name / "retention.json").read_text())
        # checked every 4 steps on the DPO-tuned weights; the generous budget is never breached
        assert [(c["step"], c["within_budget"]) for c in record["checks"]] == [(4, True), (8, True)]
        assert record["checks"][-1]["drops"]["english"] != 0  # it scored the weights DPO moved
        runs[name] = (result.metrics, load_file(str(result.final_dir / "model.safetensors")))

    rows = [r for r in runs["ewc"][0] if "loss" in r]  # training rows (the budget logs its checks apart)
    for row in rows:
        assert row["loss"] == pytest.approx(row["loss/dpo"] + row["loss/ewc"])
    assert rows[0]["loss/ewc"] == pytest.approx(0, abs=1e-8)  # step 1: the weights are the anchor
    assert all(row["loss/ewc"] > 0 for row in rows[1:])
    assert not any("loss/ewc" in r for r in runs["none"][0])

    # what EWC holds down, Σ F (θ − θ0)² with the run's own Fisher, is smaller than without the penalty
    fisher = torch.load(tmp_path / "ewc" / "fisher.pt")
    base = load_file(str(tiny_model / "model.safetensors"))
    moved = {name: weighted_l2({k: w[k] for k in fisher}, base, fisher).item() for name, (_, w) in runs.items()}
    assert moved["ewc"] < 0.5 * moved["none"], moved


def test_precomputed_reference_gives_the_same_run(make_config, tmp_path):
    """Full fine-tuning: a frozen copy as the reference, or its log-probs computed once before the first step."""
    import retain

    write_jsonl(tmp_path / "pairs.jsonl", PAIRS)
    losses = []
    for precompute in (False, True):
        config = make_config(data={"train": str(tmp_path / "pairs.jsonl")},
                             training={"objective": "dpo", "dpo": {"precompute_reference": precompute},
                                       "max_steps": 3, "report_to": []},
                             output={"dir": str(tmp_path / f"run-{precompute}")})
        losses.append([r["loss/dpo"] for r in retain.train(config_from_dict(config), progress=False).metrics])
    assert losses[0] == pytest.approx(losses[1], abs=1e-5)
    assert losses[0][0] == pytest.approx(math.log(2), abs=1e-5)  # the first step: the policy is the reference


def test_grpo_trains_and_logs_reward_and_kl(make_config, tmp_path):
    import retain

    write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": r["prompt"], "response": r["chosen"]} for r in PAIRS])
    config = make_config(data={"train": str(tmp_path / "prompts.jsonl")},
                         training={"objective": "grpo", "max_steps": 3, "batch_size": 2, "report_to": [],
                                   "grpo": {"group_size": 3, "max_new_tokens": 4, "target_kl": 0.01, "kl_coef": 0.1,
                                            "rewards": {"digits": {"kind": "format", "pattern": r".*\d.*"},
                                                        "base": {"kind": "similarity_to_base", "weight": 0.5}}}},
                         mitigations={"replay": {"ratio": 0.3, "file": str(tmp_path / "prompts.jsonl")}})
    rows = retain.train(config_from_dict(config), progress=False).metrics
    assert [r["step"] for r in rows] == [1, 2, 3]
    for row in rows:
        assert {"loss/grpo", "loss/grpo_kl", "loss/replay", "grpo/reward", "reward/digits", "reward/base",
                "grpo/kl", "grpo/kl_coef"} <= set(row)
        assert all(math.isfinite(v) for v in row.values())
    assert rows[0]["grpo/kl"] == pytest.approx(0, abs=1e-6)  # sampled from the reference itself
    assert rows[-1]["grpo/kl"] > 0
    assert rows[-1]["grpo/kl_coef"] != 0.1  # adapted toward target_kl


# --- bad preference data, as a user meets it ---

@pytest.mark.parametrize("objective, rows, fragment", [
    ("dpo", [{"prompt": "a", "response": " b"}], "pairs.jsonl:1: field 'chosen': missing"),  # an SFT file given to DPO
    ("dpo", [PAIRS[0], {"prompt": "a", "chosen": " b"}], "pairs.jsonl:2: field 'rejected': missing"),
    ("dpo", [PAIRS[0], {"prompt": "a", "chosen": " b", "rejected": 3}], "pairs.jsonl:2: field 'chosen': expected"),
    ("sft", [PAIRS[0]], "pairs.jsonl:1: a preference pair"),  # a preference file given to SFT
    ("grpo", [{"text": "no prompt"}], "pairs.jsonl:1: field 'prompt': missing"),
])
def test_bad_preference_data_exits_2_naming_file_and_row(make_config, tmp_path, capsys, objective, rows, fragment):
    write_jsonl(tmp_path / "pairs.jsonl", rows)
    config = make_config(data={"train": str(tmp_path / "pairs.jsonl")},
                         training={"objective": objective, "report_to": [],
                                   "grpo": {"rewards": {"format": {"pattern": "x"}}}})
    code, err = run_train(tmp_path, capsys, config)
    assert code == 2, err[-2000:]
    assert fragment in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()  # nothing written: the data fails before the model loads


# --- the report flags a reward that rose while a capability fell ---

def comparison(verdict: str, severity: str) -> dict:
    return {"capabilities": {"country facts": {"verdict": verdict, "severity": severity}}}


@pytest.mark.parametrize("rewards, verdict, severity, flagged", [
    ([0.1, 0.2, 0.5, 0.9, 1.0], "worse", "severe", True),
    ([0.1, 0.2, 0.5, 0.9, 1.0], "worse", "mild", False),  # a small loss is not "fell significantly"
    ([0.1, 0.2, 0.5, 0.9, 1.0], "no significant change", "none", False),
    ([1.0, 0.9, 0.5, 0.2, 0.1], "worse", "severe", False),  # the reward fell: nothing was gamed
])
def test_report_flags_reward_up_capability_down(tmp_path, rewards, verdict, severity, flagged):
    from retain.report.reward_hacking import hacking_lines

    run = tmp_path / "grpo"
    write_jsonl(run / "metrics.jsonl", [{"step": 5 * (i + 1), "loss": 0.1, "grpo/reward": r, "grpo/kl": 0.01 * i}
                                        for i, r in enumerate(rewards)] + [{"step": 25, "eval/reward": 0.3}])
    lines = hacking_lines([run], {"after": comparison(verdict, severity)})
    assert bool(lines) == flagged
    if flagged:
        assert "grpo/reward rose 0.1 → 1" in lines[0] and "country facts fell significantly" in lines[0]
        assert "grpo/kl 0 → 0.04" in lines[0]


def test_the_report_carries_the_flag(tmp_path):
    """`retain report --run` on a reward run: the warning is in report.md (results files made up, same items)."""
    from retain.report.build import write_report

    items = [{"id": i, "correct": 1.0} for i in range(40)]
    task = {"primary_metric": "exact_match", "capability": "country facts", "lower_is_better": False, "chance": 0.0}

    def results(correct: list[float]) -> dict:
        return {"suite": "t", "split": "test", "limit": None,
                "tasks": {"facts": {**task, "metrics": {"exact_match": sum(correct) / len(correct)},
                                    "items": [{**it, "exact_match": c} for it, c in zip(items, correct)]}}}

    (tmp_path / "before.json").write_text(json.dumps(results([1.0] * 40)))
    (tmp_path / "after.json").write_text(json.dumps(results([1.0] * 10 + [0.0] * 30)))
    write_jsonl(tmp_path / "run" / "metrics.jsonl", [{"step": s, "grpo/reward": s / 10} for s in range(1, 6)])
    out = write_report([tmp_path / "before.json", tmp_path / "after.json"], tmp_path / "report", [tmp_path / "run"])
    assert "Possible reward hacking in after" in out["md"].read_text()


def test_sft_weight_adds_the_chosen_answers_nll(tiny_model, tmp_path):
    from retain.objectives.dpo import DPO
    from retain.preference.options import DPOOptions
    from retain.preference.data import collate_pairs, load_pairs
    from retain.preference.logprobs import token_logps

    policy, tokenizer = load(tiny_model)
    write_jsonl(tmp_path / "pairs.jsonl", PAIRS[:3])
    batch = collate_pairs(load_pairs(tmp_path / "pairs.jsonl", tokenizer, 64).examples, tokenizer.pad_token_id)
    objective = DPO(DPOOptions(sft_weight=0.5), replay=False, batch_size=3)
    objective.setup(policy, None, [], None)
    terms, outputs = objective.loss(policy, policy, batch)
    chosen = batch["labels"][:3]
    nll = -token_logps(outputs.logits[:3], chosen).sum(-1) / (chosen[:, 1:] != -100).sum(-1)  # (3,) per token
    assert terms["dpo_sft"].item() == pytest.approx(0.5 * nll.mean().item(), rel=1e-5)
    assert terms["dpo"].item() == pytest.approx(math.log(2), abs=1e-5)  # policy = reference


def test_the_lab_preference_data_is_what_its_builder_writes(tmp_path):
    """The committed pairs, prompts and facts come from `python -m tools.lab.preference_task` (seeded)."""
    from retain.data import load_preferences
    from retain.core.paths import LAB_DATA_DIR
    from tools.lab.preference_task import main

    main(["--out", str(tmp_path)])
    shipped = LAB_DATA_DIR / "tasks" / "qa_preference"
    for name in ("train", "prompts", "dev", "test", "facts", "heldout_pairs", "capital_prompts"):
        assert (tmp_path / f"{name}.jsonl").read_text() == (shipped / f"{name}.jsonl").read_text(), name
    pairs = load_preferences(shipped / "train.jsonl")
    assert len(pairs) == 160 and all(p.chosen.startswith(" ANSWER(") and p.chosen != p.rejected for p in pairs)


def test_dpo_accumulation_is_exact(make_config, tmp_path):
    """Batch 4 × accumulation 1 and 2 × 2 take the same optimizer steps: the objective's terms are scaled to a mean
    over the step's pairs, whatever accumulate() and the step's weights do to each micro-batch."""
    import retain
    from safetensors.torch import load_file

    write_jsonl(tmp_path / "pairs.jsonl", PAIRS)
    finals = []
    for batch_size, accumulation in ((4, 1), (2, 2)):
        config = make_config(data={"train": str(tmp_path / "pairs.jsonl")},
                             training={"objective": "dpo", "max_steps": 2, "batch_size": batch_size,
                                       "grad_accum": accumulation, "report_to": [],
                                       "bf16": False},  # exact numbers: float32 on every machine
                             output={"dir": str(tmp_path / f"run-{batch_size}")})
        retain.train(config_from_dict(config), progress=False)
        finals.append(load_file(str(tmp_path / f"run-{batch_size}" / "final" / "model.safetensors")))
    assert finals[0].keys() == finals[1].keys()
    for name in finals[0]:
        assert torch.allclose(finals[0][name], finals[1][name], atol=1e-5), name


def test_the_preference_claims_block_goes_into_claims_md_once():
    """tools.lab.preference_claims writes its table between the marker lines of docs/claims.md: before 'Strategy
    definitions' the first time, in place of the old block after that; tools.lab.docs keeps it as written."""
    from tools.lab.docs import BEGIN_KEPT, END_KEPT, preserved_block
    from tools.lab.preference_claims import with_block

    sweep_claims = "# claims\n\n| a sweep row |\n\nStrategy definitions: docs/mitigations.md.\n\nPreference: ...\n"
    old, new = [BEGIN_KEPT, "| old row |", END_KEPT], [BEGIN_KEPT, "", "| new row |", "", END_KEPT]
    first = with_block(sweep_claims, old)
    assert first.index(END_KEPT) < first.index("Strategy definitions") and first.count(BEGIN_KEPT) == 1
    second = with_block(first, new)
    assert second == first.replace("| old row |", "\n| new row |\n") and preserved_block(second) == new
    assert with_block("# claims\n", new).splitlines()[1:6] == new  # no 'Strategy definitions': at the end
