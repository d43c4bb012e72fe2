"""Fine-tune retain-tiny on city -> country with TRL's SFTTrainer, retain measuring and protecting the run.

    python examples/trl_sft_with_retain.py [--out DIR] [--max-steps N] [--limit N]

retain's part is two lines: the trainer class takes RetainLossMixin (KL to the base model, logged
as loss/kl), and RetainCallback scores the base before training, checks a retention budget on
the dev split (rolling back to the last weights within it on a breach) and writes retain's
forgetting report at the end: DIR/retain/report/report.html.

The same run as a retain config is examples/trl_sft_with_retain.yaml
(`retain train examples/trl_sft_with_retain.yaml`); a test checks that the two agree.
"""

from __future__ import annotations

import argparse
import json

from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import SFTConfig, SFTTrainer

from retain.training.integrations import RetainCallback, RetainLossMixin
from retain.lab.defaults import BUDGET_SUITE
from retain.core.paths import MODEL_ALIASES, resolve_path

MODEL = "retain-tiny"
TRAIN = "lab:tasks/city_country/train.jsonl"
MAX_LENGTH = 64
LR, MAX_STEPS, BATCH_SIZE, WARMUP_STEPS, SCHEDULER, LOG_EVERY = 1e-3, 60, 16, 10, "cosine", 10
RETAIN_LOSSES = {"kl": {"weight": 0.3}}
# Scored on the dev split of the lab's capabilities (retain-tiny's default suite) every 20 steps.
BUDGET = {"max_drop_points": 5.0, "max_perplexity_increase": 0.2, "every": 20, "action": "rollback",
          "suite": BUDGET_SUITE}
REPORT_SUITE = "lab,city_country"  # the report: what was kept (lab) and what was learned (city_country)


class RetainSFTTrainer(RetainLossMixin, SFTTrainer):
    """TRL's SFTTrainer with retain's loss terms added to its loss (the mixin comes first)."""


def city_country(path: str) -> Dataset:
    """retain's {prompt, response} JSONL as TRL's prompt-completion rows (TRL appends the EOS itself)."""
    lines = resolve_path(path).read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines if line.strip()]
    return Dataset.from_list([{"prompt": r["prompt"], "completion": r["response"]} for r in rows])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/trl_sft_with_retain")
    p.add_argument("--max-steps", type=int, default=MAX_STEPS)
    p.add_argument("--limit", type=int, default=None, help="items per task, for a quick look")
    args = p.parse_args(argv)

    model_dir = MODEL_ALIASES[MODEL].location(MODEL)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    budget = {**BUDGET, "limit": args.limit} if args.limit else BUDGET
    trainer = RetainSFTTrainer(
        model=model, processing_class=tokenizer, train_dataset=city_country(TRAIN),
        args=SFTConfig(output_dir=args.out, max_steps=args.max_steps, per_device_train_batch_size=BATCH_SIZE,
                       learning_rate=LR, warmup_steps=WARMUP_STEPS, lr_scheduler_type=SCHEDULER,
                       max_length=MAX_LENGTH, logging_steps=LOG_EVERY, save_strategy="no", report_to="none",
                       bf16=False),  # full precision, as the retain config (training.bf16: false)
        retain_losses=RETAIN_LOSSES,
        callbacks=[RetainCallback(REPORT_SUITE, limit=args.limit, budget=budget)],
    )
    trainer.train()
    trainer.save_model(f"{args.out}/final")


if __name__ == "__main__":
    main()
