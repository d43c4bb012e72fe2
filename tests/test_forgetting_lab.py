"""Behaviour on the bundled lab: the base model knows things, naive fine-tuning destroys them,
and a mitigation measurably keeps them (seeded; margins far from a coin flip)."""

import pytest

import retain
from retain.config import load_config
from retain.evaluation.runner import evaluate_path
from retain.evaluation.compare import retained_change

SUITE = "capital_recall,addition,city_country"


@pytest.fixture(scope="module")
def base_results():
    return evaluate_path("retain-tiny", SUITE, "test", limit=120, progress=False)


def test_base_model_has_its_capabilities(base_results):
    metrics = {name: t["metrics"]["exact_match"] for name, t in base_results["tasks"].items()}
    assert metrics["capital_recall"] > 0.9 and metrics["addition"] > 0.7  # far above chance (0, 0.5%)
    assert metrics["city_country"] < 0.05  # the task is new to it


def finetune(tmp_path, name, overrides):
    config = load_config("configs/demo/unprotected.yaml",
                         [f"output.dir={tmp_path / name}", "training.max_steps=80", "training.eval_every=0",
                          *overrides])
    run = retain.train(config, progress=False)
    losses = [r["loss/task"] for r in run.metrics if "loss/task" in r]
    return evaluate_path(str(run.final_dir), SUITE, "test", limit=120, progress=False), losses


def test_lora_forgets_less_than_unprotected_full_finetuning(base_results, tmp_path):
    unprotected, _ = finetune(tmp_path, "unprotected", [])
    protected, losses = finetune(tmp_path, "lora", ["mitigations.lora.r=16", "mitigations.lora.alpha=32"])
    lost, _ = retained_change(base_results, unprotected, "city_country")
    assert lost.ci_high < -0.3  # naive fine-tuning wipes out a large share of what the model knew
    kept, _ = retained_change(unprotected, protected, "city_country")
    assert kept.ci_low > 0.2, kept  # LoRA keeps at least 20 points more, with 95% confidence
    assert losses[-1] < 0.7 * losses[0]  # and it is learning the task, not standing still
