"""How much a capability changed between two results of the same items: the one home of "how much did it drop",
read by the report, the retention budget, sweeps, tuning and continual learning.

    task_change(before, afters, metric) -> Change      the paired change of one task (or pooled items), with a CI
    verdict(change, lower_is_better) -> str            'better' / 'worse' / NO_CHANGE: shown at 95%, seeds agreeing
    worse_by(delta, lower_is_better) -> float          a change in the direction that matters (positive: worse)
    task_drops(before, after) -> {task: drop}          each task's drop in a budget's unit (points / relative rise)
    sure_drops(before, after, confidence)              the drop the items show at a one-sided confidence
    margin_kept(before, after, chance) -> share        what is left of the base's margin over chance (severity)
    retained_change(before, after, task) -> Change     the pooled change of every score-type task but `task`

A change is `after - before` (fractions: 0.05 = 5 points) for scores and `after / before - 1` for perplexities
(retain.evaluation.results.relative); which way is worse follows the task's `lower_is_better`.

Two tests of "is a drop real", for two uses:
- the report and the studies judge a change by its paired bootstrap 95% CI (`verdict`): it is shown when the
  interval excludes 0 and, with several training seeds, every seed moved the same way (`not_shown`);
- the retention budget, deciding during training on a small dev split, takes the measured drop less z paired
  standard errors at a one-sided `confidence` (`sure_drops`: a normal approximation, cheap at every check).
"""

from __future__ import annotations

import math
from statistics import NormalDist, stdev

import numpy as np

from retain.evaluation.results import PERPLEXITY_DENOMINATOR, Item, Results, TaskResults, primary_value, relative
from retain.evaluation.stats import Change, change, seed_paired_bootstrap, seeded_bootstrap

NO_CHANGE = "no significant change"


def worse_by(delta: float, lower_is_better: bool) -> float:
    """How much worse a change left the capability (negative: it improved), in the change's unit."""
    return delta if lower_is_better else -delta


def task_change(before: TaskResults, afters: list[TaskResults], metric: str | None = None, seed: int = 0,
                resamples: int = 2000) -> Change:
    """The paired change of `metric` (default: the primary one) from `before` to a recipe's seeds `afters` (one
    results entry per training seed), with its two-level bootstrap 95% CI (retain.evaluation.stats)."""
    return seeded_bootstrap(before["items"], [a["items"] for a in afters], metric or before["primary_metric"],
                            resamples, seed)


# --- is it shown, and which way ---

def not_shown(change: Change) -> str | None:
    """Why `change` is not a shown effect ('the 95% CI includes 0', 'the seeds disagree in sign: ...'), or None
    when it is: its CI excludes 0 and every training seed moved the same way."""
    if change.ci_low <= 0 <= change.ci_high:
        return "the 95% CI includes 0"
    if len(change.per_seed) > 1 and (len({np.sign(x) for x in change.per_seed}) > 1 or 0 in change.per_seed):
        unit = "%" if change.relative else " pts"
        return "the seeds disagree in sign: " + ", ".join(f"{100 * x:+.1f}{unit}" for x in change.per_seed)
    return None


def verdict(change: Change, lower_is_better: bool) -> str:
    """'better' / 'worse' for the capability, in the direction that matters, or NO_CHANGE.

    A perplexity (lower is better) that rose is "worse"; one that fell is "better". NO_CHANGE when the
    95% CI includes 0 or the training seeds disagree in sign (see not_shown).
    """
    if not_shown(change):
        return NO_CHANGE
    return "better" if worse_by(change.delta, lower_is_better) < 0 else "worse"


def claim_verdict(change: Change, sign: int) -> str:
    """A claim's verdict from a change it predicts to be positive (`sign` +1) or negative (-1): 'supported' when
    the change is shown (not_shown) in that direction, 'contradicted' when shown in the other, else
    'not shown (<why>)'."""
    why = not_shown(change)
    if why:
        return f"not shown ({why})"
    return "supported" if (change.delta > 0) == (sign > 0) else "contradicted"


def margin_kept(before: float, after: float, chance: float, lower_is_better: bool = False,
                log: bool = False) -> float | None:
    """The share of the base's margin over chance that `after` keeps (1: all of it, 0: at chance, < 0: below),
    measured on a log scale for perplexities (`log`); None when the base itself was not better than chance."""
    if log:
        before, after, chance = math.log(before), math.log(after), math.log(chance)
    margin = (chance - before) if lower_is_better else (before - chance)
    if margin <= 1e-12:
        return None
    return ((chance - after) if lower_is_better else (after - chance)) / margin


# --- drops in a budget's unit ---

def drop(before: TaskResults, after: TaskResults) -> float:
    """How much the task's primary metric got worse (positive = worse), in a budget's unit: points for scores
    (1.0 = one point), the relative rise after / before − 1 for perplexities (0.05 = +5%)."""
    metric = before["primary_metric"]
    worse = worse_by(change(primary_value(before), after["metrics"][metric], metric), before["lower_is_better"])
    return worse if relative(metric) else 100 * worse


def task_drops(before: Results, after: Results) -> dict[str, float]:
    """Per task of `before`, its drop (see drop) in `after`."""
    return {name: drop(task, after["tasks"][name]) for name, task in before["tasks"].items()}


def sure_drops(before: Results, after: Results, confidence: float | None) -> dict[str, float]:
    """Per task, the drop the items show at `confidence`: the measured drop less z standard errors of the paired
    per-item change (one-sided, normal approximation), in the budget's unit; None: the measured drop.

    On 20 items one answer is 5 points, and a few answers near a tie flip with any change to the weights:
    the measured drop alone would call that noise a breach. For a perplexity, the standard error is that of
    the per-document change in log-likelihood, per word (or byte, token) of the whole split."""
    measured = task_drops(before, after)
    if not confidence:
        return measured
    z = NormalDist().inv_cdf(confidence)
    sure = dict(measured)
    for name, b in before["tasks"].items():
        x, y, metric = b.get("items") or [], after["tasks"][name].get("items") or [], b["primary_metric"]
        if len(x) < 2 or len(x) != len(y):
            continue
        if relative(metric):
            unit = PERPLEXITY_DENOMINATOR[metric]
            if not all("loglikelihood" in i and unit in i for i in x + y):
                continue
            lost = [i["loglikelihood"] - j["loglikelihood"] for i, j in zip(x, y)]  # nats, per document
            se = stdev(lost) * math.sqrt(len(lost)) / sum(i[unit] for i in x)  # of log(after / before)
            sure[name] = math.exp(math.log1p(measured[name]) - z * se) - 1
        elif all(isinstance(i.get(metric), (int, float)) for i in x + y):
            se = 100 * stdev([i[metric] - j[metric] for i, j in zip(x, y)]) / math.sqrt(len(x))
            sure[name] = measured[name] - z * se
    return sure


# --- items pooled over tasks ---

def pooled_items(results: Results, names: list[str]) -> list[Item]:
    """The items of tasks `names` as one list: ids made unique as (task, id), each item's primary metric also
    under the key "score" (tasks with different metrics pool by it)."""
    return [{**i, "id": (n, i["id"]), "score": i[results["tasks"][n]["primary_metric"]]} for n in names
            for i in results["tasks"][n]["items"]]


def pooled_chance(tasks: list[TaskResults]) -> float | None:
    """Chance of items pooled over tasks: the item-weighted mean of the tasks' chance (None if one lacks it)."""
    if any(t.get("chance") is None for t in tasks):
        return None
    return sum(t["chance"] * len(t["items"]) for t in tasks) / sum(len(t["items"]) for t in tasks)


def retained_tasks(results: Results, task: str) -> list[str]:
    """The score-type capability tasks other than the fine-tuning `task`: what a fine-tune should keep."""
    return [n for n, t in results["tasks"].items()
            if n != task and not t["lower_is_better"] and t["kind"] in ("multiple_choice", "generation")]


def retained_change(before: Results | list[Results], after: Results | list[Results], task: str
                    ) -> tuple[Change, list[str]]:
    """(paired change over the pooled items of every score-type capability task except `task`, those tasks).

    Either side may be a list of results, one per training seed: a base against a recipe's seeds, or recipe A's
    seeds against recipe B's (seed s against seed s), with the two-level bootstrap of retain.evaluation.stats."""
    befores, afters = (x if isinstance(x, list) else [x] for x in (before, after))
    names = retained_tasks(befores[0], task)
    if len(befores) == 1:
        befores = befores * len(afters)  # one base for every seed
    return seed_paired_bootstrap([pooled_items(r, names) for r in befores], [pooled_items(r, names) for r in afters],
                                 "score"), names
