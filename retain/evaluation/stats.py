"""Paired statistics over the same items scored twice (before and after a fine-tune, or two recipes): the
bootstrap and the exact McNemar test, for the report, the retention budget, sweeps and continual learning.

    seeded_bootstrap(before, afters, metric) -> Change    one base against a recipe's training seeds
    seed_paired_bootstrap(befores, afters, metric)        recipe A's seeds against recipe B's, seed s with seed s
    paired_bootstrap(before, after, metric) -> Change     one fine-tune (the one-seed case of the first)
    resample(per_cluster, draws, metric) -> (R,)          the statistic of each resample of clusters
    percentile_ci(samples) -> (low, high)                 the 95% percentile interval of the finite samples
    mcnemar_exact(before, after) -> p

Every comparison is paired: item i of the base is compared with item i of the fine-tune, so the
confidence interval reflects the change, not the spread of item difficulty.

Two things widen that interval where the data call for it:
- Clusters. An item may carry a "cluster" (the entity it is about, e.g. its country: a task's `cluster`
  option names the field). Items that share one are not independent evidence, so the bootstrap draws
  whole clusters; an item without one is its own cluster, which is the plain item bootstrap.
- Training seeds. A recipe trained with several seeds gives several fine-tunes of the same base. Their
  change is the mean of the per-seed changes, and its CI comes from a two-level bootstrap: draw the
  seeds with replacement, then, within each drawn seed, the clusters. An item CI alone says how sure we
  are about one trained model; the seed level says how sure we are about the recipe.
What a change means for a capability (better, worse, how sure, how much) is retain.evaluation.compare's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from retain.evaluation.results import PERPLEXITY_DENOMINATOR, Item, relative

BINARY_METRICS = {"acc", "acc_norm", "exact_match", "contains", "regex_match"}


def statistic(items: list[Item], metric: str, index: np.ndarray | None = None) -> float:
    """The task-level value of `metric` over `items` (optionally a resample given by `index`)."""
    if index is not None:
        items = [items[i] for i in index]
    if relative(metric):
        ll = sum(i["loglikelihood"] for i in items)
        return math.exp(-ll / sum(i[PERPLEXITY_DENOMINATOR[metric]] for i in items))
    return float(np.mean([i[metric] for i in items]))


@dataclass(frozen=True)
class Change:
    before: float
    after: float  # with several seeds: the mean of the seeds' values
    delta: float  # after - before; for perplexities the relative change (after / before - 1); seeds: their mean
    ci_low: float
    ci_high: float
    p_value: float | None  # exact McNemar for binary metrics (one seed; None with several)
    n: int
    relative: bool
    per_seed: tuple[float, ...] = ()  # the change of each training seed's fine-tune, in the order given
    clusters: int | None = None  # how many clusters the bootstrap drew (None: every item its own)


def parts(items: list[Item], metric: str) -> np.ndarray:
    """(n, 2) additive parts of the statistic per item: [value, 1] for a mean, [loglikelihood, words] etc. for a
    perplexity, so that the statistic of any resample is a function of the summed parts."""
    if relative(metric):
        return np.array([[i["loglikelihood"], i[PERPLEXITY_DENOMINATOR[metric]]] for i in items], dtype=float)
    return mean_parts(np.array([i[metric] for i in items], dtype=float))


def mean_parts(values: np.ndarray) -> np.ndarray:
    """(n, 2) parts of the mean of n item values: [value, 1] each."""
    return np.stack([values, np.ones_like(values)], axis=-1)


def value_of(summed: np.ndarray, metric: str) -> np.ndarray:
    """The statistic from summed parts (..., 2): a mean, or exp(-loglikelihood / denominator)."""
    if relative(metric):
        return np.exp(-summed[..., 0] / summed[..., 1])
    return summed[..., 0] / summed[..., 1]


def cluster_index(items: list[Item]) -> tuple[np.ndarray, int]:
    """(cluster number of each item, number of clusters), numbered in order of first appearance; an item without
    a "cluster" is its own cluster (so a task without clusters is numbered 0..n-1: the plain item bootstrap)."""
    numbers: dict = {}
    index = [numbers.setdefault(("cluster", item["cluster"]) if item.get("cluster") is not None else ("item", k),
                                len(numbers)) for k, item in enumerate(items)]
    return np.array(index, dtype=int), len(numbers)


def by_cluster(item_parts: np.ndarray, index: np.ndarray, k: int) -> np.ndarray:
    """(k, 2) parts summed within each cluster."""
    out = np.zeros((k, item_parts.shape[1]))
    np.add.at(out, index, item_parts)
    return out


def resample(per_cluster: np.ndarray, draws: np.ndarray, metric: str) -> np.ndarray:
    """The statistic of each resample: per_cluster (K, 2) parts, or (R, K, 2) with a table of its own per resample;
    draws (R, K) the clusters resample r draws. Returns (R,)."""
    if per_cluster.ndim == 2:
        drawn = per_cluster[draws]  # (R, K, 2)
    else:
        drawn = np.take_along_axis(per_cluster, draws[..., None], axis=1)
    return value_of(drawn.sum(axis=1), metric)


def percentile_ci(samples: np.ndarray) -> tuple[float, float]:
    """The 95% percentile interval of the finite `samples` (NaN, NaN when there are none)."""
    samples = samples[np.isfinite(samples)]
    if samples.size == 0:
        return math.nan, math.nan
    low, high = np.percentile(samples, [2.5, 97.5])
    return float(low), float(high)


def two_level_deltas(base: np.ndarray, seeds: np.ndarray, seed_draws: np.ndarray, cluster_draws: np.ndarray,
                     metric: str) -> np.ndarray:
    """The resampled changes of a two-level bootstrap, for given draws.

    base (K, 2) and seeds (S, K, 2): the parts per cluster of the base and of each seed's fine-tune (or base
    (S, K, 2): a reference of its own per seed, e.g. another recipe run with the same seeds);
    seed_draws (R, S): which seeds resample r draws; cluster_draws (R, S, K): which clusters each drawn seed
    resamples. Resample r's change is the mean over its S drawn seeds of that seed's change on its drawn
    clusters (after - before, or after / before - 1 for a perplexity). Returns (R,).
    """
    total = np.zeros(seed_draws.shape[0])
    for m in range(seed_draws.shape[1]):
        draws, drawn_seed = cluster_draws[:, m], seed_draws[:, m]  # (R, K), (R,)
        before = resample(base if base.ndim == 2 else base[drawn_seed], draws, metric)
        total += change(before, resample(seeds[drawn_seed], draws, metric), metric)
    return total / seed_draws.shape[1]


def change(before, after, metric: str):
    """after - before, or after / before - 1 for a perplexity (numbers or arrays)."""
    return after / before - 1 if relative(metric) else after - before


def seeded_bootstrap(before: list[Item], afters: list[list[Item]], metric: str, resamples: int = 2000,
                     seed: int = 0) -> Change:
    """The change in `metric` from the base to a recipe trained with len(afters) seeds, with a 95% percentile CI:
    one seed resamples the clusters (items) jointly; several resample the seeds, then the clusters within each."""
    return _bootstrap([before], afters, metric, resamples, seed)


def seed_paired_bootstrap(befores: list[list[Item]], afters: list[list[Item]], metric: str, resamples: int = 2000,
                          seed: int = 0) -> Change:
    """The change from recipe A to recipe B, both trained with the same seeds: seed s of B against seed s of A
    (same data order), the same two-level bootstrap over the seed pairs. `before` is A's mean."""
    if len(befores) != len(afters):
        raise ValueError(f"{metric}: {len(befores)} seeds against {len(afters)}; compare recipes run with the same seeds")
    return _bootstrap(befores, afters, metric, resamples, seed)


def _bootstrap(befores: list[list[Item]], afters: list[list[Item]], metric: str, resamples: int, seed: int) -> Change:
    before = befores[0]
    ids = [i["id"] for i in before]
    if any([i["id"] for i in other] != ids for other in befores + afters):
        raise ValueError(f"{metric}: before and after were scored on different items; compare the same split")
    index, k = cluster_index(before)
    bases = np.stack([by_cluster(parts(b, metric), index, k) for b in befores])  # (1 or S, K, 2)
    base = bases[0] if len(befores) == 1 else bases
    tuned = np.stack([by_cluster(parts(after, metric), index, k) for after in afters])  # (S, K, 2)
    before_values = [float(value_of(b.sum(axis=0), metric)) for b in bases]
    b = float(np.mean(before_values))
    after_values = [float(value_of(t.sum(axis=0), metric)) for t in tuned]
    references = before_values if len(befores) > 1 else before_values * len(afters)  # what each seed is compared to
    per_seed = tuple(change(r, a, metric) for a, r in zip(after_values, references))
    rng = np.random.default_rng(seed)
    n_seeds = len(afters)
    if n_seeds == 1:  # the item (cluster) bootstrap, draws as they always were
        seed_draws = np.zeros((resamples, 1), dtype=int)
        cluster_draws = rng.integers(0, k, size=(resamples, k))[:, None, :]
    else:
        seed_draws = rng.integers(0, n_seeds, size=(resamples, n_seeds))
        cluster_draws = rng.integers(0, k, size=(resamples, n_seeds, k))
    deltas = two_level_deltas(base, tuned, seed_draws, cluster_draws, metric)
    low, high = percentile_ci(deltas)
    # lm-eval names a filtered metric "exact_match,strict-match": binary all the same
    binary = metric.split(",")[0] in BINARY_METRICS
    p = mcnemar_exact([i[metric] for i in before], [i[metric] for i in afters[0]]) \
        if binary and n_seeds == 1 and len(befores) == 1 else None
    return Change(b, float(np.mean(after_values)), float(np.mean(per_seed)), float(low), float(high), p, len(before),
                  relative(metric), per_seed, k if k < len(before) else None)


def paired_bootstrap(before: list[Item], after: list[Item], metric: str, resamples: int = 2000,
                     seed: int = 0) -> Change:
    """Bootstrap CI (95%, percentile) of the change in `metric` of one fine-tune, resampling items (or their
    clusters) jointly."""
    return seeded_bootstrap(before, [after], metric, resamples, seed)


def mcnemar_exact(before: list[float], after: list[float]) -> float:
    """Two-sided exact McNemar test: a binomial test on the items that changed outcome."""
    lost = sum(1 for x, y in zip(before, after) if x and not y)
    gained = sum(1 for x, y in zip(before, after) if y and not x)
    n = lost + gained
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(lost, gained) + 1)) / 2 ** n
    return min(1.0, 2 * tail)

