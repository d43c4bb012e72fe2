"""retain's measurement inside a Hugging Face `Trainer` or TRL's `SFTTrainer`: a TrainerCallback.

    trainer = SFTTrainer(..., callbacks=[RetainCallback("lab", budget={"max_drop_points": 2, "every": 50})])

What it does, at the trainer's events:
    train begin   score the model as it starts (the base) on the suite's test split -> before.json;
                  with a budget, score the dev split too (retain.mitigations.budget.RetentionBudget)
    step end      with a budget: check it every `every` steps, at the trainer's evaluation steps and at
                  the last step; on a breach `stop`, `rollback` (the last weights within budget) or
                  `repair`, and stop the trainer (control.should_training_stop); retention.json
    train end     score the final weights -> after.json, and write retain's forgetting report from
                  before.json and after.json, the report `retain report` writes (report/report.html)

Everything goes to <args.output_dir>/retain/ (or `output_dir`): before.json and after.json are
`retain eval` results files, so `retain report` can compare them with any other run. The trainer's
training logs go to metrics.jsonl there as retain names them (loss/<term>, eval/loss), for the
report's training curves. Files are written by the main process only; the budget is scored on every
process (the same weights give the same scores), so that all of them stop at the same step.

Resuming (`trainer.train(resume_from_checkpoint=...)`) keeps the first start's before.json, but the
budget starts again from the resumed weights (its baseline and last-good weights are not in the
trainer's checkpoints, as they are in retain's own). The budget's checks are in retention.json, not
in the trainer's logs.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from transformers import TrainerCallback

from retain.core.errors import ConfigError
from retain.evaluation.runner import DEFAULT_BATCH_SIZE, evaluate
from retain.evaluation.tasks import check_suite, load_suite
from retain.core.files import atomic_write_json, atomic_write_text
from retain.mitigations.budget import RetentionBudget, RetentionOptions
from retain.mitigations.roles import Context
from retain.model.weights import restore
from retain.core.schema import build
from retain.report.build import write_report


def role_context(tokenizer, **known) -> Context:
    """A Context for a role used outside retain's loop: what is known here, None for the rest of a run."""
    values = {"tokenizer": tokenizer, **known}
    return Context(**{f.name: values.get(f.name) for f in dataclasses.fields(Context)})


def parse_budget(budget, suite: str) -> RetentionOptions | None:
    """RetentionOptions from a dict (checked as a config's `mitigations.retention`) or as given; suite defaults
    to the callback's."""
    if budget is None:
        return None
    options = budget if isinstance(budget, RetentionOptions) else build(RetentionOptions, budget, "budget")
    return options if options.suite is not None else dataclasses.replace(options, suite=suite)


def dtype_name(model) -> str:
    return str(next(model.parameters()).dtype).removeprefix("torch.")


def trainer_metrics(log_history: list[dict]) -> list[dict]:
    """The trainer's log rows as retain's metrics.jsonl names them: loss, loss/<term>, eval/loss, lr."""
    rows = []
    for entry in log_history:
        row = {"step": entry["step"]}
        if "loss" in entry:
            terms = {k: v for k, v in entry.items() if k.startswith("loss/")}
            row.update({"loss": entry["loss"], **(terms or {"loss/task": entry["loss"]})})
            if "learning_rate" in entry:
                row["lr"] = entry["learning_rate"]
        if "eval_loss" in entry:
            row["eval/loss"] = entry["eval_loss"]
        if len(row) > 1:
            rows.append(row)
    return rows


class RetainCallback(TrainerCallback):
    """Before/after capability scores, a retention budget, and retain's forgetting report, for any Trainer.

    suite: what `retain eval --suite` takes (bundled names, task YAMLs, mmlu, lm-eval:NAME);
    split, limit, batch_size: as `retain eval`; budget: a dict of `mitigations.retention` options
    (max_drop_points, max_perplexity_increase, every, action, suite, limit, ...) or None for no budget;
    output_dir: where to write (default <args.output_dir>/retain); tokenizer: when the trainer's
    processing_class is not the tokenizer to score with.
    """

    def __init__(self, suite: str, *, split: str = "test", limit: int | None = None,
                 batch_size: int = DEFAULT_BATCH_SIZE, budget: dict | RetentionOptions | None = None,
                 output_dir: str | Path | None = None, tokenizer=None):
        self.suite, self.split, self.limit, self.batch_size = suite, split, limit, batch_size
        self.tasks = load_suite(suite)
        check_suite(self.tasks, split)  # a bad task fails now, not after training
        self.budget_options = parse_budget(budget, suite)
        if self.budget_options is not None:
            check_suite(load_suite(self.budget_options.suite), "dev")
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.tokenizer = tokenizer
        self.budget: RetentionBudget | None = None
        self.decisions: list[tuple[int, object]] = []  # (step, Decision) of every check that ran
        self._checked_step = -1

    # --- where and how ---

    def directory(self, args) -> Path:
        return self.output_dir if self.output_dir is not None else Path(args.output_dir) / "retain"

    def _tokenizer(self, processing_class):
        tokenizer = self.tokenizer if self.tokenizer is not None else processing_class
        tokenizer = getattr(tokenizer, "tokenizer", tokenizer)  # a multimodal processor holds its tokenizer
        if tokenizer is None:
            raise ConfigError("RetainCallback: the trainer has no processing_class to score with — pass tokenizer=")
        return tokenizer

    def score(self, model, tokenizer, label: str) -> dict:
        """A `retain eval` results file of the model as it is now (its train/eval mode kept)."""
        was_training = model.training
        results = evaluate(model, tokenizer, self.tasks, self.split, limit=self.limit, batch_size=self.batch_size,
                           progress=False)
        model.train(was_training)
        return {"model": label, "suite": self.suite, "limit": self.limit, "dtype": dtype_name(model), **results}

    # --- the trainer's events ---

    def on_train_begin(self, args, state, control, model=None, processing_class=None, **kwargs):
        out = self.directory(args)
        tokenizer = self._tokenizer(processing_class)
        before = out / "before.json"
        # A resumed trainer starts from a checkpoint, not the base: keep the base's scores of the first start.
        resumed = state.global_step > 0 and before.is_file()
        if state.is_world_process_zero and not resumed:
            for stale in ("retention.json", "metrics.jsonl", "after.json"):  # an earlier run's, not this one's
                (out / stale).unlink(missing_ok=True)
            atomic_write_json(before, self.score(model, tokenizer, "before training"))
        if self.budget_options is not None:
            self.budget = RetentionBudget(self.budget_options)
            self.budget.setup(model, role_context(tokenizer))

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self._check(args, state, control, model, at_evaluation=control.should_evaluate)

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        if control.should_evaluate:  # eval_strategy="epoch" decides here, after the epoch's last step
            self._check(args, state, control, model, at_evaluation=True)

    def _check(self, args, state, control, model, at_evaluation: bool) -> None:
        step = state.global_step
        if self.budget is None or step == self._checked_step:
            return
        # RetentionBudget checks every `every` steps; `last_step` makes it check now (evaluation, last step).
        decision = self.budget.check(model, step, last_step=at_evaluation or step >= state.max_steps)
        if decision is None:
            return
        self._checked_step = step
        self.decisions.append((step, decision))
        if state.is_world_process_zero:
            for name, content in self.budget.files().items():
                atomic_write_json(self.directory(args) / name, content)
        if decision.stop:
            if decision.weights is not None:
                restore(model, decision.weights)  # the trainable weights, as retain's loop restores them
            control.should_training_stop = True
            print(f"retain: {decision.reason}")

    def on_train_end(self, args, state, control, model=None, processing_class=None, **kwargs):
        if not state.is_world_process_zero:
            return

        out = self.directory(args)
        atomic_write_json(out / "after.json", self.score(model, self._tokenizer(processing_class), "after training"))
        rows = trainer_metrics(state.log_history)
        if rows:  # none when the run ended before its first log step: then no curves, not an empty plot
            atomic_write_text(out / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
        paths = write_report([out / "before.json", out / "after.json"], out / "report", run_dirs=[out])
        print(f"retain: {paths['headline']}\nretain: report: {paths['html']}")
