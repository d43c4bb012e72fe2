"""The retention budget: no capability may get worse than its budget allows on the dev split.

Every `every` steps (and at the last step) the model is scored on the suite's dev split and
compared with the base model's dev scores from before the first step. Each task has a budget in
its own unit:
    scores       `max_drop_points`: before − after in points (1.0 = one point; 100 × a fraction)
    perplexities `max_perplexity_increase`: after / before − 1, relative (0.05 = +5%)
(`max_drop`, which gave one number for both, is a deprecated alias: max_drop_points = 100 × it,
max_perplexity_increase = it.) On the first breach:
    stop      end the run there (the weights that breached are kept, and the breach is recorded)
    rollback  restore the trainable weights of the last check that was within budget (or the start)
    repair    bisect α in (1 − α)·start + α·now for the largest step toward the fine-tune within budget
Every check is written to <output>/retention.json (by the loop, from files()).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

from retain.mitigations.penalties import snapshot
from retain.mitigations.roles import Context, Decision

DEFAULT_POINTS, DEFAULT_PERPLEXITY = 1.0, 0.01  # the budget: one point for scores, +1% for perplexities
# The lab's capabilities: retain-tiny's default suite (any other model must name its own)
DEFAULT_SUITE = "capital_recall,capital_reverse,currency_choice,continent_choice,addition,english"


def is_perplexity(task: dict) -> bool:
    return "perplexity" in task["primary_metric"]


def task_drops(before: dict, after: dict) -> dict[str, float]:
    """Per task, how much its primary metric got worse (positive = worse), in its budget's unit: points for
    scores (1.0 = one point), the relative rise after / before − 1 for perplexities (0.05 = +5%)."""
    drops = {}
    for name, b in before["tasks"].items():
        metric = b["primary_metric"]
        x, y = b["metrics"][metric], after["tasks"][name]["metrics"][metric]
        if is_perplexity(b):
            drops[name] = y / x - 1
        else:
            drops[name] = 100 * ((y - x) if b["lower_is_better"] else (x - y))
    return drops


@dataclass(frozen=True)
class RetentionOptions:
    max_drop_points: float = DEFAULT_POINTS  # scores: the most any task may fall, in points (1.0 = one point)
    max_perplexity_increase: float = DEFAULT_PERPLEXITY  # perplexities: the most any may rise (0.05 = +5%)
    max_drop: float | None = None  # deprecated: one number for both, 100x as points and as the relative rise
    every: int = 50
    action: Literal["stop", "rollback", "repair"] = "stop"
    suite: str | None = None  # scored on its dev split, never test; required unless retain-tiny
    limit: int | None = None  # items per task, for speed
    batch_size: int = 64  # evaluation requests per forward pass
    repair_iterations: int = 6  # bisection steps for `repair`

    LAB_DEFAULTS: ClassVar[dict] = {  # see retain.config.fill_lab_defaults
        "suite": (DEFAULT_SUITE, "the capabilities to keep: task or suite YAMLs, bundled names, mmlu, lm-eval:NAME")}

    def validate(self):
        if self.max_drop is not None and (self.max_drop_points != DEFAULT_POINTS
                                          or self.max_perplexity_increase != DEFAULT_PERPLEXITY):
            yield "max_drop", ("deprecated alias of max_drop_points and max_perplexity_increase; "
                               "give those two instead, not both")
        for key in ("max_drop_points", "max_perplexity_increase", "max_drop"):
            if getattr(self, key) is not None and getattr(self, key) < 0:
                yield key, f"must be >= 0, got {getattr(self, key)}"
        if self.every < 1:
            yield "every", f"must be >= 1, got {self.every}"
        if self.batch_size < 1:
            yield "batch_size", f"must be >= 1, got {self.batch_size}"

    def limits(self) -> tuple[float, float]:
        """(points a score may fall, relative rise a perplexity may take), the deprecated max_drop resolved."""
        if self.max_drop is not None:
            return 100 * self.max_drop, self.max_drop
        return self.max_drop_points, self.max_perplexity_increase


class RetentionBudget:
    def __init__(self, options: RetentionOptions):
        self.options = options
        self.history: list[dict] = []
        self.outcome: dict | None = None

    def setup(self, model, ctx: Context) -> None:
        from retain.evaluation.tasks import load_suite

        self.tasks = load_suite(self.options.suite)
        self.tokenizer = ctx.tokenizer
        self.start = snapshot(model)
        self.last_good = (0, self.start)
        self.base = self._score(model)

    def _score(self, model) -> dict:
        from retain.evaluation.runner import evaluate

        was_training = model.training
        results = evaluate(model, self.tokenizer, self.tasks, split="dev", limit=self.options.limit, progress=False,
                           batch_size=self.options.batch_size)
        model.train(was_training)
        return results

    def _breaches(self, drops: dict[str, float]) -> list[str]:
        """What exceeded its budget, each in its unit ('english word_perplexity rose +99.1% (budget +5%)')."""
        points, rise = self.options.limits()
        out = []
        for name, drop in drops.items():
            task = self.base["tasks"][name]
            if is_perplexity(task) and drop > rise:
                out.append(f"{name} {task['primary_metric']} rose {100 * drop:+.1f}% (budget +{100 * rise:g}%)")
            elif not is_perplexity(task) and drop > points:
                out.append(f"{name} {task['primary_metric']} dropped {drop:.1f} points (budget {points:g} points)")
        return out

    def _within(self, model) -> tuple[bool, dict[str, float]]:
        drops = task_drops(self.base, self._score(model))
        return not self._breaches(drops), drops

    def check(self, model, step: int, last_step: bool) -> Decision | None:
        o = self.options
        if step % o.every and not last_step:
            return None
        ok, drops = self._within(model)
        units = {t: "relative" if is_perplexity(self.base["tasks"][t]) else "points" for t in drops}
        points, rise = o.limits()

        def share(t: str) -> float:  # how much of its budget the task used (units differ, shares compare)
            limit = rise if units[t] == "relative" else points
            return drops[t] / limit if limit > 0 else math.inf if drops[t] > 0 else 0.0

        worst = max(drops, key=share)
        record = {"step": step, "worst_task": worst, "drops": drops, "units": units, "within_budget": ok}
        self.history.append(record)
        metrics = {f"retention/{key}": max(d for t, d in drops.items() if units[t] == unit)
                   for key, unit in (("max_drop_points", "points"), ("max_perplexity_increase", "relative"))
                   if unit in units.values()}
        if ok:
            self.last_good = (step, snapshot(model))
            self._record(None)
            return Decision(metrics=metrics)
        breaches = "; ".join(self._breaches(drops))
        reason = f"retention budget breached at step {step}: {breaches}"
        if o.action == "stop":
            outcome = {"action": "stop", "step": step, "reason": breaches}
            self._record(outcome)
            return Decision(stop=True, reason=reason + "; stopped", metrics=metrics)
        if o.action == "rollback":
            good_step, state = self.last_good
            self._record({"action": "rollback", "step": step, "restored_step": good_step, "reason": breaches})
            return Decision(stop=True, reason=reason + f"; rolled back to step {good_step}", weights=state,
                            metrics=metrics)
        alpha, state = self._repair(model)
        self._record({"action": "repair", "step": step, "alpha": alpha, "reason": breaches})
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

    def _record(self, outcome: dict | None) -> None:
        self.outcome = outcome  # the loop writes files() after a check

    def state_dict(self) -> dict:
        """The checks so far and the last weights within budget: a resumed run rolls back to those, not the base."""
        step, weights = self.last_good
        return {"history": self.history, "last_good_step": step, "last_good": weights}

    def load_state_dict(self, state: dict) -> None:
        if state["last_good"].keys() != self.start.keys():
            raise ValueError("retention: the checkpoint's last-good weights are not this run's trainable weights")
        self.history = list(state["history"])
        self.last_good = (state["last_good_step"],
                          {n: w.to(self.start[n].device, self.start[n].dtype) for n, w in state["last_good"].items()})

    def files(self) -> dict:
        if not self.history:
            return {}
        o = self.options
        points, rise = o.limits()
        return {"retention.json": {"max_drop_points": points, "max_perplexity_increase": rise, "action": o.action,
                                   "suite": o.suite, "every": o.every, "outcome": self.outcome,
                                   "checks": self.history}}
