"""The retention budget: no capability may drop more than `max_drop` on the dev split.

Every `every` steps (and at the last step) the model is scored on the suite's dev split and
compared with the base model's dev scores from before the first step. The drop of a task is
before − after for scores (0.01 = one point) and after / before − 1 for perplexities (0.01 = 1%).
On the first breach:
    stop      end the run there (the weights that breached are kept, and the breach is recorded)
    rollback  restore the trainable weights of the last check that was within budget (or the start)
    repair    bisect α in (1 − α)·start + α·now for the largest step toward the fine-tune within budget
Every check is written to <output>/retention.json.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from retain.io import atomic_write_json
from retain.mitigations.penalties import snapshot
from retain.mitigations.roles import Context, Decision

DEFAULT_SUITE = "capital_recall,capital_reverse,currency_choice,continent_choice,addition,english"


def task_drops(before: dict, after: dict) -> dict[str, float]:
    """Per task, how much the primary metric got worse (positive = worse)."""
    drops = {}
    for name, b in before["tasks"].items():
        metric = b["primary_metric"]
        x, y = b["metrics"][metric], after["tasks"][name]["metrics"][metric]
        drops[name] = (y / x - 1) if b["lower_is_better"] else (x - y)
    return drops


@dataclass(frozen=True)
class RetentionOptions:
    max_drop: float = 0.01
    every: int = 50
    action: Literal["stop", "rollback", "repair"] = "stop"
    suite: str = DEFAULT_SUITE  # scored on its dev split, never test
    limit: int | None = None  # items per task, for speed
    repair_iterations: int = 6  # bisection steps for `repair`

    def validate(self):
        if self.max_drop < 0:
            yield "max_drop", f"must be >= 0, got {self.max_drop}"
        if self.every < 1:
            yield "every", f"must be >= 1, got {self.every}"


class RetentionBudget:
    def __init__(self, options: RetentionOptions):
        self.options = options
        self.history: list[dict] = []

    def setup(self, model, ctx: Context) -> None:
        from retain.evaluation.tasks import load_suite

        self.tasks = load_suite(self.options.suite)
        self.tokenizer = ctx.tokenizer
        self.path = Path(ctx.config.output.dir) / "retention.json"
        inner = getattr(model, "module", model)
        self.start = snapshot(inner)
        self.last_good = (0, self.start)
        self.base = self._score(inner)

    def _score(self, model) -> dict:
        from retain.evaluation.runner import evaluate

        was_training = model.training
        results = evaluate(model, self.tokenizer, self.tasks, split="dev", limit=self.options.limit, progress=False)
        model.train(was_training)
        return results

    def _within(self, model) -> tuple[bool, dict[str, float]]:
        drops = task_drops(self.base, self._score(model))
        return max(drops.values()) <= self.options.max_drop, drops

    def check(self, model, step: int, last_step: bool) -> Decision | None:
        o = self.options
        if step % o.every and not last_step:
            return None
        inner = getattr(model, "module", model)
        ok, drops = self._within(inner)
        record = {"step": step, "max_drop": max(drops.values()), "worst_task": max(drops, key=drops.get),
                  "drops": drops, "within_budget": ok}
        self.history.append(record)
        metrics = {"retention/max_drop": record["max_drop"]}
        if ok:
            self.last_good = (step, snapshot(inner))
            self._write(None)
            return Decision(metrics=metrics)
        reason = (f"retention budget breached at step {step}: {record['worst_task']} dropped "
                  f"{record['max_drop']:.4f} > {o.max_drop}")
        if o.action == "stop":
            outcome = {"action": "stop", "step": step}
            self._write(outcome)
            return Decision(stop=True, reason=reason + "; stopped", metrics=metrics)
        if o.action == "rollback":
            good_step, state = self.last_good
            self._write({"action": "rollback", "step": step, "restored_step": good_step})
            return Decision(stop=True, reason=reason + f"; rolled back to step {good_step}", weights=state,
                            metrics=metrics)
        alpha, state = self._repair(inner)
        self._write({"action": "repair", "step": step, "alpha": alpha})
        return Decision(stop=True, reason=reason + f"; repaired with alpha={alpha:.3f}", weights=state,
                        metrics=metrics)

    def _repair(self, model) -> tuple[float, dict]:
        """Largest α in [0, 1] (by bisection) whose interpolated weights stay within budget."""
        from retain.mitigations.interpolation import interpolate

        now = snapshot(model)
        low, high = 0.0, 1.0
        for _ in range(self.options.repair_iterations):
            mid = (low + high) / 2
            model.load_state_dict(interpolate(self.start, now, mid), strict=False)
            if self._within(model)[0]:
                low = mid
            else:
                high = mid
        return low, interpolate(self.start, now, low)

    def _write(self, outcome: dict | None) -> None:
        o = self.options
        atomic_write_json(self.path, {"max_drop": o.max_drop, "action": o.action, "suite": o.suite,
                                      "every": o.every, "outcome": outcome, "checks": self.history})
