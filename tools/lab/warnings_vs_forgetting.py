"""Do the early warnings predict forgetting? Spearman's ρ, across the runs of finished lab sweeps, between each
warning (retain.mitigations.early_warnings, in each run's metrics.jsonl) at a few points of training and the
run's final forgetting: the points of retained capabilities it lost against the base on the test split (the
sweep summary's retained change, negated). ρ > 0: the runs with the larger signal forgot more.

A signal can only predict what it sees. Left out of the correlations, and listed on their own:
    a weight transform after training (WiSE-FT interpolation): the final weights are not the ones checked;
    a monitor other than the warnings (the retention budget): it may end the run at an earlier check's weights;
    PEFT, for drift only: drift is then the adapter's own growth, not the model's (the KLs still count).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from retain.config import config_to_yaml, load_config
from retain.studies.continual.metrics import percentile_ci
from retain.core.files import read_metrics
from retain.mitigations import MITIGATIONS, PEFT_METHODS
from retain.mitigations.early_warnings import EarlyWarnings
from retain.mitigations.roles import Monitor, WeightTransform
from retain.studies.sweep import SweepConfig, run_name

MAIN_SIGNALS = ("kl_general", "kl_task", "drift/all")
ALL = "all sweeps"  # the scope of the pooled runs
# column -> fraction of the run's steps whose nearest check is read (None: the first check)
POINTS = {"first check": None, "~25% of steps": 0.25, "~50% of steps": 0.5, "last check": 1.0}


def average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n along the last axis, tied values sharing their mean rank. x: (..., n) -> (..., n)."""
    below = (x[..., :, None] > x[..., None, :]).sum(-1)
    tied = (x[..., :, None] == x[..., None, :]).sum(-1)  # counts itself
    return below + (tied + 1) / 2


def spearman(x, y) -> np.ndarray:
    """Spearman's ρ along the last axis: the Pearson correlation of the average ranks; NaN where x or y is
    constant. x, y: (..., n) -> (...)."""
    rx, ry = (average_ranks(np.asarray(v, dtype=float)) for v in (x, y))
    rx, ry = rx - rx.mean(-1, keepdims=True), ry - ry.mean(-1, keepdims=True)
    norm = np.sqrt((rx ** 2).sum(-1) * (ry ** 2).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norm > 0, (rx * ry).sum(-1) / norm, np.nan)


@dataclass(frozen=True)
class Correlation:
    rho: float
    ci_low: float
    ci_high: float
    n: int

    def cell(self) -> str:
        return f"{self.rho:+.2f} [{self.ci_low:+.2f}, {self.ci_high:+.2f}]"


def rank_correlation(x, y, resamples: int = 2000, seed: int = 0) -> Correlation:
    """ρ(x, y) and its 95% percentile bootstrap CI, resampling the (x, y) pairs (runs) with replacement; a
    resample where either side is constant has no ρ and is dropped."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    index = np.random.default_rng(seed).integers(0, len(x), size=(resamples, len(x)))
    low, high = percentile_ci(spearman(x[index], y[index]))
    return Correlation(float(spearman(x, y)), low, high, len(x))


@dataclass
class Run:
    sweep: str
    name: str
    forgetting: float  # retained-capability points lost against the base, test split (> 0: forgot)
    checks: list[dict]  # the metrics.jsonl rows holding warn/*, by step
    blind: str | None = None  # why no signal sees the final weights
    peft: str | None = None  # the PEFT method: drift is the adapter's growth
    config: str = ""  # the run config as YAML, its output dir left out: two runs with the same one are one run
    kl_on_task: bool = False  # mitigations.kl pulls the task examples toward the base: what kl_task measures

    def value(self, signal: str, fraction: float | None) -> float | None:
        """The signal at the first check (fraction None) or at the check nearest fraction × the last step."""
        rows = [r for r in self.checks if f"warn/{signal}" in r]
        if not rows:
            return None
        if fraction is None:
            return rows[0][f"warn/{signal}"]
        target = fraction * rows[-1]["step"]
        return min(rows, key=lambda r: (abs(r["step"] - target), r["step"]))[f"warn/{signal}"]

    def counts_for(self, signal: str) -> bool:
        return self.blind is None and not (self.peft and signal.startswith("drift"))


def blind_spot(mitigations: dict) -> str | None:
    """Why a run's signals cannot see its final weights (from the MITIGATIONS table's roles), or None."""
    for name in mitigations:
        cls = MITIGATIONS[name][1]
        if issubclass(cls, WeightTransform) and not getattr(cls, "keeps_outputs", False):
            return f"`{name}` changes the weights after training"
        if issubclass(cls, Monitor) and cls is not EarlyWarnings:
            return f"`{name}` may end the run at an earlier check's weights"
    return None


def load_runs(sweep: SweepConfig, summary: dict) -> list[Run]:
    """The sweep's runs that logged early warnings, with their final forgetting."""
    out, runs = Path(sweep.output), []
    for name, row in summary["rows"].items():
        run_dir = out / "runs" / run_name(sweep, name, sweep.seeds[0])  # the first seed's logs; forgetting: the mean
        rows = read_metrics(run_dir)
        checks = sorted((r for r in rows if any(k.startswith("warn/") for k in r)), key=lambda r: r["step"])
        if not checks:
            continue
        config = load_config(run_dir / "config.yaml")
        runs.append(Run(out.name, name, 0.0 - 100 * row["retained_change"], checks, blind_spot(config.mitigations),
                        next((m for m in config.mitigations if m in PEFT_METHODS), None),
                        config_to_yaml(replace(config, output=replace(config.output, dir=""))),
                        "kl" in config.mitigations and config.mitigations["kl"].apply_to != "replay"))
    return runs


def signals_of(runs: list[Run]) -> list[str]:
    """The main signals, then drift per layer (embed, layer0.., head, other) as the runs logged them."""
    layers = {k[len("warn/drift/"):] for r in runs for c in r.checks for k in c if k.startswith("warn/drift/")}
    layers.discard("all")

    def order(layer: str) -> tuple:  # embed, layer0, layer1, .., layer10, then head and other
        return (0, 0, "") if layer == "embed" else (1, int(layer[5:]), "") if layer[5:].isdigit() else (2, 0, layer)

    return list(MAIN_SIGNALS) + [f"drift/{layer}" for layer in sorted(layers, key=order)]


def correlate(runs: list[Run], signal: str, fraction: float | None, counted=Run.counts_for) -> Correlation | None:
    pairs = [(v, r.forgetting) for r in runs if counted(r, signal) and (v := r.value(signal, fraction)) is not None]
    if len(pairs) < 3:
        return None
    return rank_correlation(*zip(*pairs))


def misplaced(runs: list[Run], signal: str) -> tuple[Run, int, float, int] | None:
    """The counted run the signal's order at the last check misplaces by the most points: (run, its rank by the
    signal, what the run of that rank by forgetting lost, n); rank 1 is the largest. Measured in points, not
    ranks, because runs at a floor of forgetting differ by noise and their ranks among themselves mean little."""
    counted = [r for r in runs if r.counts_for(signal) and r.value(signal, 1.0) is not None]
    if len(counted) < 3:
        return None
    by_signal = sorted(counted, key=lambda r: -r.value(signal, 1.0))
    by_forgetting = sorted((r.forgetting for r in counted), reverse=True)
    k = max(range(len(counted)), key=lambda i: abs(by_signal[i].forgetting - by_forgetting[i]))
    return by_signal[k], k + 1, by_forgetting[k], len(counted)


def reading(runs: list[Run], tables: dict[str, dict]) -> list[str]:
    """Plain-language lines from the measured figures only. tables: scope ('all sweeps' or a sweep) ->
    {(signal, column): Correlation | None}; runs: the pooled runs."""
    lines, pooled = [], tables[ALL]
    first, last = next(iter(POINTS)), list(POINTS)[-1]
    for column in (first, last):
        best = max((s for s in MAIN_SIGNALS if pooled.get((s, column))), key=lambda s: pooled[(s, column)].rho,
                   default=None)
        if best is not None:
            c = pooled[(best, column)]
            lines.append(f"- Strongest of the three at the {column}, all sweeps: `{best}`, ρ = {c.cell()} over "
                         f"{c.n} runs.")
    for signal in MAIN_SIGNALS:
        said = []
        for scope, table in tables.items():
            above = [column for column in POINTS if table.get((signal, column)) and table[(signal, column)].ci_low > 0]
            below = [column for column in POINTS if table.get((signal, column)) and table[(signal, column)].ci_high < 0]
            said.append(f"{scope}: " + ("; ".join([f"above 0 at {', '.join(above)}"] * bool(above)
                                                  + [f"below 0 at {', '.join(below)}"] * bool(below))
                                        or "includes 0 at every point"))
        lines.append(f"- `{signal}`, where its 95% CI is clear of 0 — {'. '.join(said)}.")
    for signal in MAIN_SIGNALS:
        worst = misplaced(runs, signal)
        if worst is not None:
            run, rank, expected, n = worst
            lines.append(f"- Where `{signal}` (last check, all sweeps) errs most: {run.name} ({run.sweep}) ranks "
                         f"{rank} of {n} by the signal (largest first); the run ranked {rank} by forgetting lost "
                         f"{expected:.1f} points, this one {run.forgetting:.1f}.")
    return lines


def distinct(runs: list[Run]) -> tuple[list[Run], list[tuple[Run, Run]]]:
    """The runs with each config once (the first of them), and (run, the earlier run of its config) for the rest."""
    first: dict[str, Run] = {}
    for r in runs:
        first.setdefault(r.config, r)
    return [r for r in runs if first[r.config] is r], [(r, first[r.config]) for r in runs if first[r.config] is not r]


def correlations(runs: list[Run], signals) -> dict:
    """(signal, column) -> Correlation over `runs` (None where fewer than 3 runs have the signal)."""
    return {(s, column): correlate(runs, s, fraction) for s in signals for column, fraction in POINTS.items()}


def section(runs: list[Run], command: str) -> list[str]:
    """The docs/mitigations.md section: tables, what was left out and why, and the reading."""
    if not runs:
        return []
    signals = signals_of(runs)
    sweeps = list(dict.fromkeys(r.sweep for r in runs))
    pooled, twins = distinct(runs)
    tables = {ALL: correlations(pooled, signals)}  # scope -> (signal, column) -> Correlation | None
    if len(sweeps) > 1:  # each sweep on its own too, for the main signals
        tables.update({s: correlations([r for r in runs if r.sweep == s], MAIN_SIGNALS) for s in sweeps})
    blind = [r for r in runs if r.blind]
    peft = [r for r in runs if r.peft and not r.blind]
    every = min(r.checks[0]["step"] for r in runs)  # the first check of every run
    first_column = next(iter(POINTS))
    once = "".join(f"; {r.name} ({r.sweep}) is the same config as {same.name} ({same.sweep}) and counts once"
                   for r, same in twins)
    lines = ["## Early warnings: do they predict forgetting?", "",
             f"Every run of {' and '.join(f'`{s}`' for s in sweeps)} logged the early warnings "
             f"(`mitigations.early_warnings`, every {every} steps: KL to the base on general text and on the "
             "task's own examples, and weight drift ‖θ − θ0‖ / ‖θ0‖). Each cell is Spearman's ρ across runs "
             "between the signal at that point of training and the run's final forgetting (retained-capability "
             "points lost against the base, test split: the tables above), with a 95% bootstrap CI over runs "
             "(2,000 resamples); ρ > 0 means the runs with the larger signal forgot more. The first check is at step "
             f"{every}; ~25% and ~50% read the check nearest that share of the run's own steps; runs of every "
             f"sweep are pooled (same base, same test items{once}), and then ρ also reflects how the sweeps' "
             "baselines differ; a sweep's own rows compare runs from one baseline. "
             f"Reproduce: `{command}`.", "",
             "Left out, because the signal cannot see the final weights: "
             + ("; ".join(f"{r.name} ({r.sweep}: {r.blind})" for r in blind) or "none") + ". "
             "Left out of the drift rows only, because under PEFT drift is the adapter's own growth: "
             + (", ".join(f"{r.name} ({r.sweep})" for r in peft) or "none") + ". "
             "Drift counts the trainable weights only, so with frozen layers it is relative to the layers that "
             "train. `mitigations.kl` on the task's batches trains down what `kl_task` measures (the KL to the base "
             "on the task's examples) in " + (", ".join(f"{r.name} ({r.sweep})" for r in runs if r.kl_on_task)
                                              or "no run") + "; they are counted all the same.", "",
             "| signal | runs | n | " + " | ".join(POINTS) + " |", "|---|---|---|" + "---|" * len(POINTS)]

    def row(signal: str, label: str, cells: dict) -> str:
        n = max((c.n for c in cells.values() if c), default=0)
        return (f"| `{signal}` | {label} | {n} | "
                + " | ".join(cells[column].cell() if cells[column] else "" for column in POINTS) + " |")

    for signal in signals:
        lines += [row(signal, scope, {column: table[(signal, column)] for column in POINTS})
                  for scope, table in tables.items() if (signal, first_column) in table]
    lines += ["", "The reading (from the table):", "", *reading(pooled, tables), ""]
    if blind:
        lines += ["The left-out runs, for the record: their signals at the last check (before the weights were "
                  "changed) beside the forgetting of the weights they ended with.", "",
                  "| run | sweep | why left out | kl_general | kl_task | drift/all | forgetting (pts lost) |",
                  "|---|---|---|---|---|---|---|"]
        for r in blind:
            cells = [r.value(s, 1.0) for s in MAIN_SIGNALS]
            lines.append(f"| {r.name} | {r.sweep} | {r.blind} | "
                         + " | ".join("" if v is None else f"{v:.3g}" for v in cells) + f" | {r.forgetting:+.1f} |")
        with_them = correlate(pooled, "kl_general", 1.0, counted=lambda r, s: True)
        if with_them is not None:
            lines += ["", f"With them put back, `kl_general` at the last check gives ρ = {with_them.cell()} over "
                          f"{with_them.n} runs."]
        lines.append("")
    return lines
