"""retain inside transformers' Trainer and TRL's SFTTrainer: the callback's report, its budget, the loss terms."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from conftest import REPO_ROOT

SUITE, LIMIT = "currency_choice,english", 8
ROWS = [{"prompt": f"what is {a} plus {b} ?", "response": f" {a + b}"} for a in range(6) for b in range(6)]
REPO = REPO_ROOT


def load(tiny_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(tiny_model), AutoTokenizer.from_pretrained(tiny_model)


def make_trainer(kind: str, model, tokenizer, out: Path, rows=ROWS, callbacks=(), retain_losses=None,
                 trainer_class=None, **args):
    """A real Trainer ("trainer": retain's tokenization and collate; `trainer_class` in place of RetainLossMixin +
    Trainer) or TRL SFTTrainer ("sft": its own) on `rows`."""
    from retain.training.integrations import RetainLossMixin

    settings = {**dict(output_dir=str(out), max_steps=3, per_device_train_batch_size=4, learning_rate=1e-2,
                       logging_steps=1, report_to="none", use_cpu=True, save_strategy="no", seed=0), **args}
    if kind == "sft":
        from datasets import Dataset
        from trl import SFTConfig, SFTTrainer

        class Sft(RetainLossMixin, SFTTrainer):
            pass

        data = Dataset.from_list([{"prompt": r["prompt"], "completion": r["response"]} for r in rows])
        return Sft(model=model, args=SFTConfig(max_length=64, bf16=False, **settings), train_dataset=data,
                   eval_dataset=data if "eval_strategy" in args else None, processing_class=tokenizer,
                   callbacks=list(callbacks), retain_losses=retain_losses)
    from transformers import Trainer, TrainingArguments

    from retain.data import collate, tokenize

    class Plain(RetainLossMixin, Trainer):
        pass

    examples = [tokenize(r["prompt"] + r["response"] + tokenizer.eos_token,
                         [(len(r["prompt"]), len(r["prompt"]) + len(r["response"]) + len(tokenizer.eos_token))],
                         tokenizer, "response") for r in rows]
    return (trainer_class or Plain)(model=model, args=TrainingArguments(**settings), train_dataset=examples,
                 eval_dataset=examples if "eval_strategy" in args else None, processing_class=tokenizer,
                 data_collator=lambda b: collate(b, tokenizer.pad_token_id), callbacks=list(callbacks),
                 retain_losses=retain_losses)


@pytest.mark.parametrize("kind", ["trainer", "sft"])
def test_callback_report_equals_retain_eval_and_report_on_the_final_weights(kind, tiny_model, tmp_path):
    from retain.cli import main
    from retain.training.integrations import RetainCallback

    model, tokenizer = load(tiny_model)
    general = {"file": "lab:general.jsonl", "batch_size": 2}
    penalties = {"l2sp": {"weight": 0.1}, "ewc": {**general, "batches": 2}, "si": {**general, "steps": 2}}
    trainer = make_trainer(kind, model, tokenizer, tmp_path / "out", callbacks=[RetainCallback(SUITE, limit=LIMIT)],
                           retain_losses=penalties)
    trainer.train()
    trainer.save_model(str(tmp_path / "final"))
    ours = tmp_path / "out" / "retain"
    report = json.loads((ours / "report" / "report.json").read_text())

    cli = tmp_path / "cli"  # the same file names, so the report's labels (before, after) match
    for model_dir, name in ((tiny_model, "before"), (tmp_path / "final", "after")):
        # float32, as the callback scores the float32 model it trains (auto is bf16 on a bf16 machine)
        assert main(["eval", str(model_dir), "--suite", SUITE, "--limit", str(LIMIT), "--dtype", "float32",
                     "--out", str(cli / f"{name}.json")]) == 0
    assert main(["report", str(cli / "before.json"), str(cli / "after.json"), "--out", str(cli / "report")]) == 0
    theirs = json.loads((cli / "report" / "report.json").read_text())

    assert report["scores"] == theirs["scores"] and report["comparisons"] == theirs["comparisons"]
    assert report["headlines"] == theirs["headlines"]
    assert report["scores"]["before"] != report["scores"]["after"]  # it trained: a comparison that could fail
    for name in ("before", "after"):  # per item too: the callback's files are `retain eval` results files
        a, b = (json.loads((d / f"{name}.json").read_text()) for d in (ours, cli))
        assert {t: r["items"] for t, r in a["tasks"].items()} == {t: r["items"] for t, r in b["tasks"].items()}
    # the trainer's logs, as retain's metrics.jsonl names them: the task loss and each term per step
    rows = [json.loads(line) for line in (ours / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    for row in rows:
        assert row["loss"] == pytest.approx(row["loss/task"] + sum(row[f"loss/{n}"] for n in penalties), rel=1e-5)
    assert all(rows[0][f"loss/{n}"] == 0 < rows[-1][f"loss/{n}"] for n in penalties)  # 0 at the anchor, then not
    assert (tmp_path / "out" / "fisher.pt").is_file()  # EWC's Fisher, for an online-EWC next stage


@pytest.mark.parametrize("action", ["stop", "rollback"])
def test_a_budget_breach_stops_the_trainer(action, tiny_model, tmp_path):
    from retain.training.integrations import RetainCallback

    model, tokenizer = load(tiny_model)
    base = {n: p.detach().clone() for n, p in model.named_parameters()}
    # lr 0.3 wrecks the model at once: English perplexity breaches a 0% budget at the first check. `rollback`
    # is checked at the trainer's evaluation step (eval_steps=2; its own cadence, every=100, would not check).
    every, evaluation = (2, {}) if action == "stop" else (100, {"eval_strategy": "steps", "eval_steps": 2})
    callback = RetainCallback("english", limit=LIMIT, budget={
        "limit": LIMIT, "every": every, "max_perplexity_increase": 0.0, "action": action})
    trainer = make_trainer("trainer", model, tokenizer, tmp_path / "out", callbacks=[callback], learning_rate=0.3,
                           **{**evaluation, "max_steps": 8})
    trainer.train()

    assert trainer.control.should_training_stop and trainer.state.global_step == 2  # stopped at the breach
    record = json.loads((tmp_path / "out" / "retain" / "retention.json").read_text())
    assert record["outcome"]["action"] == action and record["outcome"]["step"] == 2
    assert record["outcome"]["reason"].startswith("english word_perplexity rose +")
    moved = any(not torch.equal(p, base[n]) for n, p in model.named_parameters())
    assert moved == (action == "stop")  # rollback: no check was within budget, so back to the start
    report = json.loads((tmp_path / "out" / "retain" / "report" / "report.json").read_text())
    assert list(report["retention_budgets"].values())[0]["outcome"]["action"] == action


@pytest.mark.parametrize("kind", ["trainer", "sft"])
def test_kl_under_the_trainer_equals_retains_own_loop_term(kind, tiny_model, tmp_path):
    from accelerate import Accelerator
    from peft import LoraConfig, get_peft_model

    from retain.mitigations.distill import KLOptions, KLToBase
    from retain.objectives import SFT
    from retain.training.step import accumulate_gradients

    torch.manual_seed(0)
    model, tokenizer = load(tiny_model)
    # Adapters that are not zero at the start: the student differs from the base (adapters disabled) at step 1,
    # so the first step's KL is not trivially 0.
    model = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False))
    rows = ROWS[:4]  # one batch of exactly these: the trainer's shuffling cannot change what it holds
    trainer = make_trainer(kind, model, tokenizer, tmp_path / "out", rows=rows, max_steps=1,
                           retain_losses={"kl": {"weight": 0.5}})
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(rows))])

    kl_role = KLToBase(KLOptions(weight=0.5))
    kl_role.setup(model, None)  # the reference under peft is the same model, adapters disabled
    shares = accumulate_gradients(model=model, inner=model, micro_batches=[batch], loss_terms=[kl_role],
                                  accelerator=Accelerator(cpu=True), objective=SFT())  # the loop's step, one micro-batch
    model.zero_grad(set_to_none=True)
    trainer.train()

    logged = trainer.state.log_history[0]
    assert shares["kl"].item() > 1e-4  # a term that could differ
    assert logged["loss/kl"] == pytest.approx(shares["kl"].item(), rel=1e-4)
    assert logged["loss/task"] == pytest.approx(shares["task"].item(), rel=1e-4)
    assert logged["loss"] == pytest.approx(logged["loss/task"] + logged["loss/kl"], rel=1e-5)


def test_loss_terms_are_checked_like_a_config():
    from retain.core.errors import ConfigError
    from retain.training.integrations.losses import parse_loss_terms

    from retain.mitigations.distill import KLOptions

    assert parse_loss_terms({"kl": {"weight": 0.3}, "l2sp": True})["kl"].weight == 0.3
    assert parse_loss_terms({"kl": KLOptions(weight=0.2)})["kl"].weight == 0.2
    with pytest.raises(ConfigError, match="kl.weight: must be > 0"):
        parse_loss_terms({"kl": KLOptions(weight=-1.0)})
    with pytest.raises(ConfigError, match="lora"):
        parse_loss_terms({"lora": {}})
    with pytest.raises(ConfigError, match="wieght"):
        parse_loss_terms({"kl": {"wieght": 0.3}})
    with pytest.raises(ConfigError, match="ewc.file"):
        parse_loss_terms({"ewc": {}})


def test_the_trl_example_and_its_retain_config_are_the_same_run():
    from retain.config import load_config
    from retain.mitigations.distill import KLOptions
    from retain.mitigations.budget import RetentionOptions

    spec = importlib.util.spec_from_file_location("trl_example", REPO / "examples" / "trl_sft_with_retain.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    config = load_config(REPO / "examples" / "trl_sft_with_retain.yaml")

    assert (config.model.name, config.data.train, config.data.max_length) == (example.MODEL, example.TRAIN,
                                                                             example.MAX_LENGTH)
    t = config.training
    assert (t.lr, t.max_steps, t.batch_size, t.warmup_steps, t.scheduler, t.log_every) == (
        example.LR, example.MAX_STEPS, example.BATCH_SIZE, example.WARMUP_STEPS, example.SCHEDULER, example.LOG_EVERY)
    assert set(config.mitigations) == {*example.RETAIN_LOSSES, "retention"}
    assert config.mitigations["kl"] == KLOptions(**example.RETAIN_LOSSES["kl"])
    assert config.mitigations["retention"] == RetentionOptions(**example.BUDGET)
    assert len(example.city_country(example.TRAIN)) == 561
