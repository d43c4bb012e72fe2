"""Forgetting at matched task gain: how much a recipe forgets at the point of its own path where it has learned
as much of the task as a reference.

A method that learns less also forgets less, so comparing two recipes' end points confounds how far each went
with how well each protects. Read off each recipe's path instead — its checkpoints in order, or its WiSE-FT line
from the base (interpolation α = 0 … 1) — the retained-capability change where the task gain first reaches a
target (by default 95% of the unprotected run's gain), interpolating linearly between the two points around it.

    target_gain(base, reference, task, share=0.95) -> float
    forgetting_at_gain(base, path, task, target) -> MatchedForgetting | None (None: the path never gets there)
    matched_rows(base_path, paths, task, reference, share) -> {strategy: its seeds' values and their mean}
    matched_difference(base_path, paths_a, paths_b, reference, task, share) -> B - A there, seed by seed, with a CI
    crossings(base_path, paths, reference, task, share) -> {name: each seed's MatchedForgetting}: what both read

The CI resamples the items (the task's, and the retained capabilities' pooled, each by cluster where items carry
one) with the same draws at every point of the path, and finds the crossing again in each resample; the target
is held fixed. One trained path is one seed; matched_rows reads a sweep's strategies seed by seed (seed s
against the reference's seed s) and gives each seed's value with its CI, their mean and its CI (seeds, then items:
across_seeds).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from retain.evaluation.compare import pooled_items, retained_tasks
from retain.evaluation.results import Results, load_results
from retain.evaluation.stats import by_cluster, cluster_index, parts, percentile_ci, resample, value_of


@dataclass(frozen=True)
class MatchedForgetting:
    target: float  # the task gain matched (a fraction: 0.4 = 40 points)
    position: float  # where along the path it is reached: index of the point before it + the share of the step
    retained_change: float  # the retained capabilities' change (after - before) at that position
    ci_low: float
    ci_high: float
    reached: float  # the share of resamples whose path reaches the target (the CI is over those)
    # the change at the crossing in each resample (NaN where it is not reached); a sweep's strategies are scored on
    # the same items and resampled with the same draws, so sample r of two recipes is paired
    samples: np.ndarray = field(default=None, repr=False, compare=False)


def target_gain(base: Results, reference: Results, task: str, share: float = 0.95) -> float:
    """`share` of the reference run's gain on `task` over the base (its primary metric)."""
    metric = base["tasks"][task]["primary_metric"]
    before, after = (value_of(parts(r["tasks"][task]["items"], metric).sum(axis=0), metric) for r in (base, reference))
    return float(share * (after - before))


def _crossing(gains: np.ndarray, changes: np.ndarray, target: float) -> tuple[np.ndarray, np.ndarray]:
    """gains, changes (R, P) along a path of P points -> (position, change) (R,) where the gain first reaches
    `target`, linearly interpolated; NaN where it never does."""
    reached = gains >= target
    first = np.where(reached.any(axis=1), reached.argmax(axis=1), -1)
    rows = np.arange(len(gains))
    position, change = np.full(len(gains), np.nan), np.full(len(gains), np.nan)
    at_start = first == 0
    position[at_start], change[at_start] = 0.0, changes[at_start, 0]
    inner = first > 0
    i, r = first[inner], rows[inner]
    share = (target - gains[r, i - 1]) / (gains[r, i] - gains[r, i - 1])
    position[inner] = i - 1 + share
    change[inner] = changes[r, i - 1] + share * (changes[r, i] - changes[r, i - 1])
    return position, change


def _path_values(base_items: list[dict], path_items: list[list[dict]], metric: str,
                 draws: np.ndarray | None) -> np.ndarray:
    """(R, P) change of each path point over the base, on each resample of clusters `draws` (R, K), or (1, P)."""
    index, k = cluster_index(base_items)
    base = by_cluster(parts(base_items, metric), index, k)
    points = np.stack([by_cluster(parts(items, metric), index, k) for items in path_items])  # (P, K, 2)
    if draws is None:
        return (value_of(points.sum(axis=1), metric) - value_of(base.sum(axis=0), metric))[None, :]
    before = resample(base, draws, metric)  # (R,)
    return np.stack([resample(p, draws, metric) - before for p in points], axis=1)


def forgetting_at_gain(base: Results, path: list[Results], task: str, target: float, resamples: int = 2000,
                       seed: int = 0) -> MatchedForgetting | None:
    """The retained-capability change where the recipe's `path` (results in order, from nearest the base to its
    end) first gains `target` on `task`; None if no point of the path gains that much."""
    metric = base["tasks"][task]["primary_metric"]
    names = retained_tasks(base, task)
    task_sets = (base["tasks"][task]["items"], [r["tasks"][task]["items"] for r in path], metric)
    kept_sets = (pooled_items(base, names), [pooled_items(r, names) for r in path], "score")
    position, change = _crossing(_path_values(*task_sets, None), _path_values(*kept_sets, None), target)
    if np.isnan(position[0]):
        return None
    rng = np.random.default_rng(seed)
    task_k, kept_k = cluster_index(task_sets[0])[1], cluster_index(kept_sets[0])[1]
    task_draws = rng.integers(0, task_k, size=(resamples, task_k))
    kept_draws = rng.integers(0, kept_k, size=(resamples, kept_k))
    _, changes = _crossing(_path_values(*task_sets, task_draws), _path_values(*kept_sets, kept_draws), target)
    low, high = percentile_ci(changes)
    return MatchedForgetting(target, float(position[0]), float(change[0]), low, high,
                             int(np.isfinite(changes).sum()) / resamples, changes)


def across_seeds(samples: list[np.ndarray], seed: int = 0) -> tuple[float, float]:
    """The 95% CI of the mean over seeds from each seed's resampled values (S arrays of R, paired by r): resample
    the seeds, then take each drawn seed's r-th value (the items, resampled within it), as retain.evaluation.stats
    does for a recipe over seeds; a resample in which a drawn seed's line never got there is left out."""
    values = np.stack(samples)  # (S, R)
    n_seeds, n = values.shape
    draws = np.random.default_rng(seed).integers(0, n_seeds, size=(n, n_seeds))  # (R, S) seed indices
    return percentile_ci(values[draws, np.arange(n)[:, None]].mean(axis=1))


def crossings(base_path: Path, paths: dict[str, list[list[Path]]], reference: list[list[Path]], task: str,
              share: float = 0.95) -> dict[str, list[MatchedForgetting | None]]:
    """Name -> each seed's crossing (None where its path never gets there), seed s against seed s of `reference`
    (its paths' last points are the runs whose gain the target takes `share` of). Names whose paths are not all
    scored are left out; nothing at all while the reference's runs are not scored."""
    if not all(path[-1].is_file() for path in reference):
        return {}
    base = load_results(base_path)
    targets = [target_gain(base, load_results(path[-1]), task, share) for path in reference]
    return {name: [forgetting_at_gain(base, [load_results(p) for p in path], task, target)
                   for path, target in zip(seeds, targets, strict=True)]
            for name, seeds in paths.items() if all(p.is_file() for path in seeds for p in path)}


def matched_difference(base_path: Path, paths_a: list[list[Path]], paths_b: list[list[Path]],
                       reference: list[list[Path]], task: str, share: float = 0.95) -> dict | None:
    """Recipe B's retained change minus recipe A's, each where its own line reaches `share` of the reference's gain,
    seed s against seed s: {delta, ci (seeds, then items: the same item draws for both, so paired), per_seed};
    None unless every path is scored and every seed of both gets there."""
    if not all(p.is_file() for path in reference for p in path):
        return None
    found = crossings(base_path, {"a": paths_a, "b": paths_b}, reference, task, share)
    if set(found) != {"a", "b"} or any(m is None for m in found["a"] + found["b"]):
        return None
    deltas = [b.retained_change - a.retained_change for a, b in zip(found["a"], found["b"])]
    samples = [b.samples - a.samples for a, b in zip(found["a"], found["b"])]
    return {"delta": float(np.mean(deltas)), "ci": list(across_seeds(samples)), "per_seed": deltas}


def matched_rows(base_path: Path, paths: dict[str, list[list[Path]]], task: str, reference: str = "unprotected",
                 share: float = 0.95) -> dict[str, dict]:
    """Strategy -> its forgetting at `share` of the reference strategy's gain, seed by seed (seed s of a strategy
    against seed s of the reference): {share, per_seed: [{change, ci, position} or None where the path never gets
    there], mean and its ci over seeds and items (None unless every seed got there)}. `paths` holds each
    strategy's paths, one per seed, each from the base to the run (retain.studies.sweep.line.line_path); a strategy
    whose paths are not all scored yet, and every strategy when the reference has no finished path, is left out."""
    if reference not in paths:
        return {}
    found = crossings(base_path, paths, paths[reference], task, share)
    if reference not in found:
        return {}
    rows = {}
    for name, seeds in found.items():
        every = all(m is not None for m in seeds)
        rows[name] = {"share": share,
                      "per_seed": [None if m is None else {"change": m.retained_change, "ci": [m.ci_low, m.ci_high],
                                                           "position": m.position} for m in seeds],
                      "mean": float(np.mean([m.retained_change for m in seeds])) if every else None,
                      "ci": list(across_seeds([m.samples for m in seeds])) if every else None}
    return rows
