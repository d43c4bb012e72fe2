"""Paired statistics over the same items scored before and after a fine-tune.

Every comparison is paired: item i of the base is compared with item i of the fine-tune, so the
confidence interval reflects the change, not the spread of item difficulty.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

BINARY_METRICS = {"acc", "acc_norm", "exact_match", "contains", "regex_match"}
PERPLEXITY_DENOMINATOR = {"word_perplexity": "words", "byte_perplexity": "bytes", "token_perplexity": "tokens"}


def statistic(items: list[dict], metric: str, index: np.ndarray | None = None) -> float:
    """The task-level value of `metric` over `items` (optionally a resample given by `index`)."""
    if index is not None:
        items = [items[i] for i in index]
    if metric in PERPLEXITY_DENOMINATOR:
        ll = sum(i["loglikelihood"] for i in items)
        return math.exp(-ll / sum(i[PERPLEXITY_DENOMINATOR[metric]] for i in items))
    return float(np.mean([i[metric] for i in items]))


@dataclass(frozen=True)
class Change:
    before: float
    after: float
    delta: float  # after - before; for perplexities the relative change (after / before - 1)
    ci_low: float
    ci_high: float
    p_value: float | None  # exact McNemar for binary metrics
    n: int
    relative: bool


def paired_bootstrap(before: list[dict], after: list[dict], metric: str, resamples: int = 2000,
                     seed: int = 0) -> Change:
    """Bootstrap CI (95%, percentile) of the change in `metric`, resampling items jointly."""
    if [i["id"] for i in before] != [i["id"] for i in after]:
        raise ValueError(f"{metric}: before and after were scored on different items; compare the same split")
    relative = metric in PERPLEXITY_DENOMINATOR
    b, a = statistic(before, metric), statistic(after, metric)

    def change(x: float, y: float) -> float:
        return y / x - 1 if relative else y - x

    rng = np.random.default_rng(seed)
    n = len(before)
    if relative:
        deltas = [change(statistic(before, metric, idx), statistic(after, metric, idx))
                  for idx in rng.integers(0, n, size=(resamples, n))]
    else:  # vectorised: mean-type metrics
        x = np.array([i[metric] for i in before], dtype=float)
        y = np.array([i[metric] for i in after], dtype=float)
        idx = rng.integers(0, n, size=(resamples, n))
        deltas = (y[idx] - x[idx]).mean(axis=1)
    low, high = np.percentile(deltas, [2.5, 97.5])
    # lm-eval names a filtered metric "exact_match,strict-match": binary all the same
    binary = metric.split(",")[0] in BINARY_METRICS
    p = mcnemar_exact([i[metric] for i in before], [i[metric] for i in after]) if binary else None
    return Change(b, a, change(b, a), float(low), float(high), p, n, relative)


def mcnemar_exact(before: list[float], after: list[float]) -> float:
    """Two-sided exact McNemar test: a binomial test on the items that changed outcome."""
    lost = sum(1 for x, y in zip(before, after) if x and not y)
    gained = sum(1 for x, y in zip(before, after) if y and not x)
    n = lost + gained
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(lost, gained) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


NO_CHANGE = "no significant change"


def verdict(change: Change, lower_is_better: bool) -> str:
    """'better' / 'worse' for the capability, in the direction that matters, or NO_CHANGE.

    A perplexity (lower is better) that rose is "worse"; one that fell is "better". NO_CHANGE when the
    95% CI includes 0.
    """
    if change.ci_low <= 0 <= change.ci_high:
        return NO_CHANGE
    improved = (change.delta < 0) if lower_is_better else (change.delta > 0)
    return "better" if improved else "worse"
