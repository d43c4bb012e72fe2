"""Which point a retention budget ends at: the selection logic, free of models (tested on made-up histories).

A *check* is the record RetentionBudget writes at each check (see retention.py):
    {"step": 20, "drops": {task: drop}, "within_budget": bool, "budget_used": 0.8, "task_score": 0.45}
`budget_used` is the largest share of its budget any task used (1.0 = exactly at its budget); `task_score`
is the run's own task measured on its dev data, oriented so that higher is better (None: not measured).
The start of the run is a check too (step 0, nothing dropped, always within budget).

A *point* is a check's weights, or a point on the straight line between two of them:
    (1 − α)·origin + α·end,    origin = the start (WiSE-FT) or the best check within budget
`repair` looks along such lines from the kept checks that breached, for the highest task score within budget.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable


def merit(check: dict) -> tuple:
    """Sort key, larger is better: the dev task score, then less budget used, then less training (between equal
    points, the one that moved the weights less). `progress` is how far along training a point is (a check's
    step; α of the way along a line); without a task score the furthest along wins, as a proxy for the task."""
    progress = check.get("progress", check["step"])
    score = check.get("task_score")
    if score is None:
        return (-math.inf, 0.0, progress)
    return (score, -check.get("budget_used", 0.0), -progress)


def best_within(checks: list[dict]) -> dict:
    """The best check within budget (the start, step 0, is always one of them)."""
    return max((c for c in checks if c["within_budget"]), key=merit)


def to_keep(checks: list[dict], keep: int) -> set[int]:
    """The steps whose weights are worth keeping: the best within budget, then the best of all by task score
    (a breaching check with a high score is where repair starts from), `keep` in all; the start (step 0) is
    always kept apart and is not counted."""
    later = [c for c in checks if c["step"] > 0]
    if not later or keep < 1:
        return set()
    chosen = []
    within = [c for c in later if c["within_budget"]]
    if within:
        chosen.append(max(within, key=merit)["step"])
    for c in sorted(later, key=merit, reverse=True):
        if len(chosen) >= keep:
            break
        if c["step"] not in chosen:
            chosen.append(c["step"])
    return set(chosen)


@dataclass(frozen=True)
class Point:
    """(1 − alpha)·origin + alpha·end: origin and end are steps of checks (0 = the start)."""

    origin: int
    end: int
    alpha: float

    def describe(self) -> str:
        if self.end == 0 or (self.origin == 0 and self.alpha == 0.0):
            return "the start"
        if self.alpha == 1.0:
            return f"the weights of step {self.end}"
        where = "the start" if self.origin == 0 else f"step {self.origin}"
        return f"{1 - self.alpha:.3f}·({where}) + {self.alpha:.3f}·(step {self.end})"


def repair_lines(checks: list[dict], kept: set[int]) -> list[tuple[int, int]]:
    """The lines (origin, end) worth searching: from the start, and from the best check within budget, to each
    kept check that breached and scored higher than that best. Most promising (highest end score) first."""
    best = best_within(checks)
    by_step = {c["step"]: c for c in checks}
    ends = [by_step[s] for s in kept if s in by_step and not by_step[s]["within_budget"]
            and merit(by_step[s]) > merit(best)]
    lines = []
    for end in sorted(ends, key=merit, reverse=True):
        lines.append((0, end["step"]))
        if best["step"] not in (0, end["step"]):
            lines.append((best["step"], end["step"]))
    return lines


def search_line(origin: int, end: int, measure: Callable[[Point], dict], iterations: int) -> dict | None:
    """The largest α (by bisection) on origin -> end whose point is within budget, measured with `measure`
    (Point -> a check-like dict: within_budget, budget_used, task_score, drops); None if only α = 0 is.

    Bisection assumes that leaving the origin only gets worse for the budget, as the rise of forgetting along
    a fine-tune's line usually is; it finds one boundary, not necessarily the last."""
    low, high, found = 0.0, 1.0, None
    for _ in range(iterations):
        mid = (low + high) / 2
        measured = measure(Point(origin, end, mid))
        if measured["within_budget"]:
            low, found = mid, {**measured, "point": Point(origin, end, mid), "progress": origin + mid * (end - origin)}
        else:
            high = mid
    return found


def repair(checks: list[dict], kept: set[int], measure: Callable[[Point], dict], iterations: int) -> dict:
    """The best point within budget reachable from the kept checks: the best check within budget itself, or a
    point on a line toward a kept check that breached. Returns a check-like dict with its `point`, and
    `candidates`: every point measured, for the record.

    A line is skipped once its end scores no higher than the best point found so far: moving back toward the
    origin trades task score for retention, so no point on it would beat that."""
    best = best_within(checks)
    chosen = {**best, "point": Point(0, best["step"], 1.0)}
    candidates = []
    for origin, end in repair_lines(checks, kept):
        end_check = next(c for c in checks if c["step"] == end)
        if merit(end_check) <= merit(chosen):
            continue
        found = search_line(origin, end, measure, iterations)
        candidates.append({"origin": origin, "end": end, "alpha": found["point"].alpha if found else 0.0,
                           **{k: found.get(k) if found else None for k in ("task_score", "task_value")}})
        if found is not None and merit({**found, "step": end}) > merit(chosen):  # found carries its progress
            chosen = {**found, "step": end}
    return {**chosen, "candidates": candidates}
