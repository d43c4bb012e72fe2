"""Judging a point against the budget: how much of its budget each capability used, and which went past it.

Pure functions of the options, the base model's dev results and the drops measured at a point
(retain.evaluation.compare's task_drops and, at a confidence, sure_drops); the monitor (monitor.py) measures the
points and decides with them, points.py chooses among them.
"""

from __future__ import annotations

import math

from retain.evaluation.results import relative
from retain.mitigations.budget.options import RetentionOptions


def is_perplexity(task: dict) -> bool:
    """Whether a task's budget is a relative rise (a perplexity) rather than points."""
    return relative(task["primary_metric"])


def budget_shares(options: RetentionOptions, base: dict, drops: dict[str, float],
                  sure: dict[str, float] | None = None) -> dict[str, float]:
    """How much of its budget each task used (1.0 = all of it), judged on the sure drops when given (see
    retain.evaluation.compare.sure_drops): units differ, shares compare. `base`: the base model's dev results."""
    shares = {}
    for name, drop in drops.items():
        limit, weight = options.budget_for(name, is_perplexity(base["tasks"][name]))
        used = weight * (sure[name] if sure is not None else drop)
        shares[name] = used / limit if limit > 0 else (math.inf if used > 0 else 0.0)
    return shares


def over_budget(options: RetentionOptions, base: dict, drops: dict[str, float],
                sure: dict[str, float] | None = None) -> list[str]:
    """What exceeded its budget, each in its unit: 'english word_perplexity rose +99.1% (budget +5%)', or with
    sure drops 'facts acc dropped 25.0 points, at 80% confidence at least 16.9 points (budget 5 points)'."""
    out = []
    for name, share in budget_shares(options, base, drops, sure).items():
        if share <= 1 + 1e-9:  # a drop of exactly the budget is within it: 100·(0.85 − 0.8) is 5.000000000000004
            continue
        task, drop = base["tasks"][name], drops[name]
        limit, weight = options.budget_for(name, is_perplexity(task))
        at = "" if weight == 1 else f" at weight {weight:g}"
        ppl = is_perplexity(task)
        shown = (lambda x: f"{100 * x:+.1f}%") if ppl else (lambda x: f"{x:.1f} points")
        surely = f", at {100 * options.confidence:g}% confidence at least {shown(sure[name])}" \
            if sure is not None and sure[name] != drop else ""
        budget = f"+{100 * limit:g}%" if ppl else f"{limit:g} points"
        moved = "rose" if ppl else "dropped"
        out.append(f"{name} {task['primary_metric']} {moved} {shown(drop)}{surely} (budget {budget}{at})")
    return out
