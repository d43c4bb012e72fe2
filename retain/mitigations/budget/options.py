"""The retention budget's options: a budget per capability in its own unit, per-task overrides, the action.

See retain.mitigations.budget.monitor for what the budget does with them and why the defaults are what they are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from retain.core.errors import ConfigError
from retain.core.schema import build

DEFAULT_POINTS, DEFAULT_PERPLEXITY = 1.0, 0.10  # the budget: one point for scores, +10% for perplexities
# The lab's capabilities: retain-tiny's default suite (any other model must name its own)


@dataclass(frozen=True)
class TaskBudget:
    max_drop_points: float | None = field(default=None, metadata={
        "help": "this task's budget in points, if it is a score (default: the budget's max_drop_points)"})
    max_perplexity_increase: float | None = field(default=None, metadata={
        "help": "this task's budget as a relative rise, if it is a perplexity (default: the budget's)"})
    weight: float = field(default=1.0, metadata={
        "help": "its drop counts this many times against its budget (0.5: it may go twice as far; 0: ignored)"})

    def validate(self):
        for key in ("max_drop_points", "max_perplexity_increase", "weight"):
            value = getattr(self, key)
            if value is not None and not (math.isfinite(value) and value >= 0):
                yield key, f"must be a number >= 0, got {value}"


def parse_task_budget(value: Any, where: str) -> TaskBudget:
    """A `tasks:` entry: `ignore`, or a mapping of TaskBudget keys."""
    if value == "ignore":
        return TaskBudget(weight=0.0)
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected `ignore` or a mapping (max_drop_points, max_perplexity_increase, "
                          f"weight), got {value!r}")
    return build(TaskBudget, value, where)


@dataclass(frozen=True)
class RetentionOptions:
    max_drop_points: float = field(default=DEFAULT_POINTS, metadata={
        "help": "scores: the most any task may fall, in points (1.0 = one point)"})
    max_perplexity_increase: float = field(default=DEFAULT_PERPLEXITY, metadata={
        "help": "perplexities: the most any may rise, relative (0.10 = +10%)"})
    max_drop: float | None = field(default=None, metadata={
        "help": "deprecated: one number for both, 100x as points and as the relative rise"})
    tasks: dict[str, Any] = field(default_factory=dict, metadata={
        "help": "per task of the suite: `ignore`, or {max_drop_points, max_perplexity_increase, weight}"})
    task: str | None = field(default=None, metadata={
        "help": "the run's own task (task YAML or bundled name), scored on its dev split to rank points; "
                "unset: the loss on data.dev"})
    confidence: float | None = field(default=0.8, metadata={
        "help": "a drop breaches only if the dev items show it at this one-sided confidence; null: as measured"})
    every: int = field(default=50, metadata={"help": "check every this many optimizer steps (and at the last)"})
    action: Literal["stop", "rollback", "repair", "early_stop"] = field(default="stop", metadata={
        "help": "what the run ends with: the weights as they are (stop), the best check within budget (rollback, "
                "early_stop) or the best point on the lines toward kept checks (repair)"})
    patience: int | None = field(default=None, metadata={
        "help": "act after this many checks in a row without a better point, not at the first breach "
                "(early_stop: default 2)"})
    keep: int = field(default=3, metadata={
        "help": "checks whose weights are kept in memory (and in checkpoints) to return to or repair from"})
    suite: str | None = field(default=None, metadata={
        "help": "the capabilities to keep, scored on their dev split; required unless retain-tiny"})
    limit: int | None = field(default=None, metadata={"help": "items per task (and of `task`), for speed"})
    batch_size: int = field(default=64, metadata={"help": "evaluation requests per forward pass"})
    repair_iterations: int = field(default=6, metadata={"help": "bisection steps per line for `repair`"})

    def validate(self):
        if self.max_drop is not None and (self.max_drop_points != DEFAULT_POINTS
                                          or self.max_perplexity_increase != DEFAULT_PERPLEXITY):
            yield "max_drop", ("deprecated alias of max_drop_points and max_perplexity_increase; "
                               "give those two instead, not both")
        for key in ("max_drop_points", "max_perplexity_increase", "max_drop"):
            if getattr(self, key) is not None and getattr(self, key) < 0:
                yield key, f"must be >= 0, got {getattr(self, key)}"
        for name, value in self.tasks.items():
            try:
                parse_task_budget(value, f"tasks.{name}")
            except ConfigError as e:  # "tasks.english.weight: must be ..." -> the key and its message
                key, _, message = str(e).partition(": ")
                yield key, message
        for key in ("every", "keep", "batch_size", "repair_iterations"):
            if getattr(self, key) < 1:
                yield key, f"must be >= 1, got {getattr(self, key)}"
        if self.confidence is not None and not 0.5 <= self.confidence < 1:
            yield "confidence", f"must be in [0.5, 1) or null, got {self.confidence}"
        if self.patience is not None and self.patience < 1:
            yield "patience", f"must be >= 1, got {self.patience}"
        if self.patience is not None and self.action == "stop":
            yield "patience", "has no effect with action stop (which stops at the first breach); use early_stop"

    def limits(self) -> tuple[float, float]:
        """(points a score may fall, relative rise a perplexity may take), the deprecated max_drop resolved."""
        if self.max_drop is not None:
            return 100 * self.max_drop, self.max_drop
        return self.max_drop_points, self.max_perplexity_increase

    def budget_for(self, name: str, perplexity: bool) -> tuple[float, float]:
        """(limit in the task's unit, weight) for one task of the suite."""
        points, rise = self.limits()
        own = parse_task_budget(self.tasks[name], f"tasks.{name}") if name in self.tasks else TaskBudget()
        limit = own.max_perplexity_increase if perplexity else own.max_drop_points
        return (limit if limit is not None else rise if perplexity else points), own.weight

    def patience_checks(self) -> int | None:
        return self.patience if self.patience is not None or self.action != "early_stop" else 2
