"""The accuracy matrix of a task sequence and what it shows: ACC, BWT, FWT, forgetting, with bootstrap CIs.

R has one row per moment the model was scored and one column per task of the sequence:
    R[0][j]   the base model on task j (before any stage)
    R[i][j]   the model after stage i (1..T) on task j; task j is trained in stage j + 1

    ACC         mean_j R[T][j]                                  what the final model knows
    BWT         mean_{j<T-1} (R[T][j] − R[j+1][j])             how learning later tasks changed earlier ones
                                                                (negative: forgetting; Lopez-Paz & Ranzato 2017)
    FWT         mean_{j>0} (R[j][j] − R[0][j])                 what earlier stages did for a task not yet
                                                                trained, against the base model
    forgetting  mean_{j<T-1} (max_{1≤l<T} R[l][j] − R[T][j])    best earlier score minus final (Chaudhry 2018)

Every function takes R with any leading batch dimensions, shape (..., T + 1, T), so the same code
gives the point estimate (one matrix) and the bootstrap distribution (B matrices at once).

The CIs are paired bootstrap intervals: every resample draws one set of item indices per task and
uses it in every row (and in every matrix being compared), because row i and row i' scored the
same items; the spread is then that of the change, not of item difficulty (see retain.evaluation.stats).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from retain.evaluation.results import Results, relative
from retain.evaluation.stats import mean_parts, percentile_ci, resample


def acc(R: np.ndarray) -> np.ndarray:
    return R[..., -1, :].mean(axis=-1)


def bwt(R: np.ndarray) -> np.ndarray:
    T = R.shape[-1]
    if T < 2:
        return np.full(R.shape[:-2], np.nan)
    learned = np.stack([R[..., j + 1, j] for j in range(T - 1)], axis=-1)  # right after its own stage
    return (R[..., -1, :T - 1] - learned).mean(axis=-1)


def fwt(R: np.ndarray) -> np.ndarray:
    T = R.shape[-1]
    if T < 2:
        return np.full(R.shape[:-2], np.nan)
    before = np.stack([R[..., j, j] for j in range(1, T)], axis=-1)  # after the stage before its own
    return (before - R[..., 0, 1:]).mean(axis=-1)


def forgetting(R: np.ndarray) -> np.ndarray:
    T = R.shape[-1]
    if T < 2:
        return np.full(R.shape[:-2], np.nan)
    best_earlier = R[..., 1:T, :T - 1].max(axis=-2)  # rows 1..T-1: every stage before the last
    return (best_earlier - R[..., -1, :T - 1]).mean(axis=-1)


SUMMARIES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "acc": acc, "bwt": bwt, "fwt": fwt, "forgetting": forgetting}


@dataclass(frozen=True)
class Estimate:
    value: float
    ci_low: float
    ci_high: float

    def as_dict(self) -> dict:
        return {"value": self.value, "ci_low": self.ci_low, "ci_high": self.ci_high}


def item_scores(rows: list[Results], tasks: list[str]) -> list[np.ndarray]:
    """Per task j, an array (rows, n_j) of its items' primary-metric values, from `retain eval` results.

    Only mean-type metrics (accuracy, exact match, ...) make an accuracy matrix: a perplexity is not
    a mean over items, and its "forgetting" is not a difference of scores.
    """
    scores = []
    for task in tasks:
        per_row = [row["tasks"][task] for row in rows]
        metric = per_row[0]["primary_metric"]
        if relative(metric) or per_row[0]["lower_is_better"]:
            raise ValueError(f"task {task}: its metric {metric} is not a score to put in an accuracy matrix "
                             "— use a generation or multiple-choice task")
        ids = [item["id"] for item in per_row[0]["items"]]
        for r in per_row[1:]:
            if [item["id"] for item in r["items"]] != ids:
                raise ValueError(f"task {task}: the rows scored different items — evaluate every stage the same way")
        scores.append(np.array([[float(item[metric]) for item in r["items"]] for r in per_row]))
    return scores


def matrix(scores: list[np.ndarray]) -> np.ndarray:
    """R, shape (rows, T): each task's mean item score in each row."""
    return np.stack([s.mean(axis=1) for s in scores], axis=-1)


def resampled_matrices(score_sets: list[list[np.ndarray]], resamples: int, seed: int) -> list[np.ndarray]:
    """For each set of item scores, R under the same `resamples` draws of items: shape (B, rows, T).

    All sets must be scores of the same items (the same tasks, split and limit): they are resampled
    jointly, so a difference between two strategies' ACC gets a paired interval.
    """
    rng = np.random.default_rng(seed)
    n_items = [s.shape[1] for s in score_sets[0]]
    draws = [rng.integers(0, n, size=(resamples, n)) for n in n_items]  # one draw per task, shared
    out = []
    for scores in score_sets:
        if [s.shape[1] for s in scores] != n_items:
            raise ValueError("the matrices to compare scored different numbers of items")
        # each row's mean of its drawn items (B,), stacked over rows and tasks -> (B, rows, T)
        out.append(np.stack([np.stack([resample(mean_parts(row), idx, "score") for row in s], axis=-1)
                             for s, idx in zip(scores, draws)], axis=-1))
    return out


def summarize(scores: list[np.ndarray], resamples: int = 2000, seed: int = 0) -> dict:
    """R and each summary with its 95% paired-bootstrap CI, as plain data (values in [0, 1])."""
    R = matrix(scores)
    (boot,) = resampled_matrices([scores], resamples, seed)
    summary = {}
    for name, fn in SUMMARIES.items():
        low, high = percentile_ci(fn(boot))
        summary[name] = Estimate(float(fn(R)), low, high).as_dict()
    return {"matrix": R.tolist(), **summary}


def compare(scores_a: list[np.ndarray], scores_b: list[np.ndarray], resamples: int = 2000, seed: int = 0,
            names: tuple[str, ...] = tuple(SUMMARIES)) -> dict:
    """Each summary of A minus that of B, with a paired CI (both scored on the same items).

    Only ACC compares a sequence with a one-row matrix (the multi-task reference): pass names=("acc",).
    """
    boot_a, boot_b = resampled_matrices([scores_a, scores_b], resamples, seed)
    Ra, Rb = matrix(scores_a), matrix(scores_b)
    out = {}
    for name in names:
        fn = SUMMARIES[name]
        low, high = percentile_ci(fn(boot_a) - fn(boot_b))
        out[name] = Estimate(float(fn(Ra) - fn(Rb)), low, high).as_dict()
    return out


def final_row_estimate(scores: list[np.ndarray], resamples: int = 2000, seed: int = 0) -> Estimate:
    """The mean over tasks of one row (e.g. the multi-task reference's only row), with its CI."""
    R = matrix(scores)
    (boot,) = resampled_matrices([scores], resamples, seed)
    low, high = percentile_ci(acc(boot))
    return Estimate(float(acc(R)), low, high)
