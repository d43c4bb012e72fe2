"""Does a protection meet the target: keep at least 95% of a reference run's task gain at no more than a tenth of
its forgetting? Judged over training seeds and items, as every comparison is (retain.evaluation.stats).

    judge_target(base, reference, recipe, task, gain_share=0.95, forgetting_share=0.1) -> Target

`reference` (the unprotected run) and `recipe` are lists of results, one per training seed, in the same seed order:
seed s of the recipe is paired with seed s of the reference (the same data order). The gain is the change of the
task's primary metric over the base; the forgetting is minus the change of the retained capabilities (the pooled
items of every score-type task except the task: retain.evaluation.compare.retained_tasks and pooled_items).

The two-level bootstrap draws seeds, then clusters within each drawn seed, and uses the same draws for the
reference and the recipe, so each resample holds a paired (reference, recipe) gain and forgetting. The target is
    met        the 95% CIs of  recipe gain - 0.95 · reference gain  and  0.1 · reference forgetting - recipe
               forgetting  both lie above 0, and every seed pair meets both;
    not met    the point estimate misses either line;
    not shown  the point estimate meets both, but a CI reaches past a line or a seed pair misses one;
    cannot be judged  the reference's own gain or forgetting is not shown (a share of nothing means nothing).
The margins (how far past each line, in points) decide; the shares (recipe / reference) say the same in the
issue's words, with a CI over the resamples where the reference's change is positive.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from retain.evaluation.compare import not_shown, pooled_items, retained_change, retained_tasks
from retain.evaluation.stats import by_cluster, cluster_index, parts, percentile_ci, seeded_bootstrap, two_level_deltas

GAIN_SHARE, FORGETTING_SHARE = 0.95, 0.1  # the target of issue 19: ≥ 95% of the gain at ≤ a tenth of the forgetting


@dataclass(frozen=True)
class Criterion:
    """One side of the target. Values are fractions (0.2 = 20 points); forgetting is positive when a capability
    was lost."""

    name: str  # "gain" or "forgetting"
    line: float  # the share of the reference's value the recipe must reach (gain) or stay under (forgetting)
    reference: float  # the reference's value, mean over seeds
    recipe: float  # the recipe's value, mean over seeds
    share: float | None  # recipe / reference (None where the reference's value is not positive)
    share_ci: tuple[float, float] | None
    margin: float  # how far past the line (> 0: meets it): recipe - line·reference for the gain, line·reference -
    margin_ci: tuple[float, float]  # recipe for the forgetting
    per_seed_share: tuple[float | None, ...]
    per_seed_margin: tuple[float, ...]

    @property
    def met(self) -> bool:
        return self.margin > 0


@dataclass(frozen=True)
class Target:
    gain: Criterion
    forgetting: Criterion
    verdict: str  # "met", "not met", "not shown" or "cannot be judged"
    reason: str  # why, in words (empty when met)


def _paired_changes(base_items: list[dict], reference: list[list[dict]], recipe: list[list[dict]], metric: str,
                    rng: np.random.Generator, resamples: int):
    """(reference, recipe) changes over the base: each (point, per seed (S,), resamples (R,)), the resamples
    drawn once and used for both (retain.evaluation.stats.two_level_deltas)."""
    ids = [i["id"] for i in base_items]
    if any([i["id"] for i in items] != ids for runs in (reference, recipe) for items in runs):
        raise ValueError(f"{metric}: a run was scored on other items than the base; judge runs scored on the same "
                         "split and limit")
    index, k = cluster_index(base_items)
    base = by_cluster(parts(base_items, metric), index, k)
    n_seeds = len(recipe)
    seed_draws = rng.integers(0, n_seeds, size=(resamples, n_seeds)) if n_seeds > 1 else np.zeros((resamples, 1), int)
    cluster_draws = rng.integers(0, k, size=(resamples, n_seeds, k))
    every_cluster = np.broadcast_to(np.arange(k), (1, n_seeds, k))
    one_seed_each = np.broadcast_to(np.arange(k), (n_seeds, 1, k))
    out = []
    for runs in (reference, recipe):
        tuned = np.stack([by_cluster(parts(items, metric), index, k) for items in runs])  # (S, K, 2)
        point = two_level_deltas(base, tuned, np.arange(n_seeds)[None, :], every_cluster, metric)[0]
        per_seed = two_level_deltas(base, tuned, np.arange(n_seeds)[:, None], one_seed_each, metric)
        out.append((float(point), per_seed, two_level_deltas(base, tuned, seed_draws, cluster_draws, metric)))
    return out


def _share(recipe, reference):
    return None if reference <= 0 else float(recipe / reference)


def _criterion(name: str, line: float, reference, recipe, sign: int) -> Criterion:
    """`sign` +1: the recipe must reach line·reference (gain); -1: stay under it (forgetting)."""
    (ref, ref_seeds, ref_draws), (rec, rec_seeds, rec_draws) = reference, recipe
    margins = sign * (rec_draws - line * ref_draws)
    positive = ref_draws > 0
    shares = percentile_ci(rec_draws[positive] / ref_draws[positive])  # NaN, NaN when no resample is positive
    return Criterion(
        name, line, ref, rec, _share(rec, ref), None if np.isnan(shares[0]) else shares,
        float(sign * (rec - line * ref)), percentile_ci(margins),
        tuple(_share(r, f) for r, f in zip(rec_seeds, ref_seeds)),
        tuple(float(sign * (r - line * f)) for r, f in zip(rec_seeds, ref_seeds)))


def _negated(changes):
    """Forgetting from retained changes: (point, per seed, resamples) with the sign flipped (0 - x: no -0.0)."""
    return [(0 - point, 0 - seeds, 0 - draws) for point, seeds, draws in changes]


def judge_target(base: dict, reference: list[dict], recipe: list[dict], task: str, gain_share: float = GAIN_SHARE,
                 forgetting_share: float = FORGETTING_SHARE, resamples: int = 2000, seed: int = 0) -> Target:
    """The target's verdict for `recipe` against `reference` (see the module's docstring)."""
    if len(reference) != len(recipe):
        raise ValueError(f"{len(recipe)} seeds against the reference's {len(reference)}; judge recipes run with the "
                         "same seeds")
    rng = np.random.default_rng(seed)
    metric = base["tasks"][task]["primary_metric"]
    task_items = [[r["tasks"][task]["items"] for r in runs] for runs in (reference, recipe)]
    gains = _paired_changes(base["tasks"][task]["items"], *task_items, metric, rng, resamples)
    names = retained_tasks(base, task)
    kept = [[pooled_items(r, names) for r in runs] for runs in (reference, recipe)]
    losses = _negated(_paired_changes(pooled_items(base, names), *kept, "score", rng, resamples))
    gain = _criterion("gain", gain_share, *gains, sign=+1)
    forgetting = _criterion("forgetting", forgetting_share, *losses, sign=-1)
    verdict, reason = _verdict(base, reference, task, gain, forgetting)
    return Target(gain, forgetting, verdict, reason)


def _verdict(base: dict, reference: list[dict], task: str, gain: Criterion, forgetting: Criterion) -> tuple[str, str]:
    metric = base["tasks"][task]["primary_metric"]
    reference_gain = seeded_bootstrap(base["tasks"][task]["items"], [r["tasks"][task]["items"] for r in reference],
                                      metric)
    reference_kept, _ = retained_change(base, reference, task)
    for what, change, direction in (("gain", reference_gain, 1), ("forgetting", reference_kept, -1)):
        why = not_shown(change)
        if why or direction * change.delta <= 0:
            return "cannot be judged", f"the reference's {what} is not shown ({why or 'it went the other way'})"
    missed = [c for c in (gain, forgetting) if not c.met]
    if missed:
        return "not met", "; ".join(_missed(c) for c in missed)
    unsure = [f"the {c.name} margin's 95% CI reaches {100 * c.margin_ci[0]:+.1f} pts" for c in (gain, forgetting)
              if c.margin_ci[0] <= 0]
    unsure += [f"seed {k} misses the {c.name} line ({100 * m:+.1f} pts)" for c in (gain, forgetting)
               for k, m in enumerate(c.per_seed_margin) if m <= 0]
    return ("not shown", "; ".join(unsure)) if unsure else ("met", "")


def _missed(c: Criterion) -> str:
    need, off = ("at least", "short") if c.name == "gain" else ("at most", "over")
    share = "" if c.share is None else f"{100 * c.share:.0f}% of the reference's {c.name}, "
    return f"{c.name}: {share}{need} {100 * c.line:.0f}% needed ({100 * -c.margin:.1f} pts {off})"
