"""`retain sweep SWEEP.yaml`: many strategies on one task, each evaluated; the table and the Pareto front.

A sweep YAML:
    base: configs/demo/unprotected.yaml     # the run config every strategy starts from
    task: city_country                      # the task whose gain is measured (a bundled task or YAML)
    suite: lab                              # the capabilities whose loss is measured
    output: runs/sweep
    limit: null                             # items per task (for quick sweeps)
    batch_size: 64                          # evaluation requests per forward pass; device: cuda (default: auto)
    common: {training.lr: 1.0e-4}           # applied to every strategy before its own overrides
    seeds: [0, 1, 2]                        # training seeds each strategy runs with (default: 3 seeds)
    strategies:                             # name -> dotted overrides of the base config
      full: {}
      lora: {mitigations.lora: {r: 8}, training.lr: 1.0e-3}
    grid:                                   # optional: every combination, named by its values
      training.lr: [1.0e-4, 1.0e-3]

Each strategy and seed becomes an ordinary run config, <output>/configs/<run>.yaml, trained with
`retain train` semantics into <output>/runs/<run>/ and evaluated on the test split into
<output>/results/<run>.json; <run> is the strategy's name, with `.seed<S>` appended when the sweep has more
than one seed (retain.studies.common.run_name). Finished runs (their results file exists) are skipped, so a
killed sweep resumes where it was. The summary compares each strategy over its seeds: one run measures one
trained model, several measure the recipe (retain.report.stats). The fields every study file shares (base,
task, suite, output, limit, batch_size, device, common, seeds) are retain.studies.common's; `retain config
--explain sweep` lists them all.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from retain.config import config_to_yaml, load_config
from retain.core.files import atomic_write_json, atomic_write_text
from retain.evaluation.results import load_results
from retain.studies.common import (TaskStudyConfig, checked_run, load_study, plan_run, read_base, run_pending,
                                   score_base)
from retain.studies.common import run_name as seed_run_name
from retain.studies.sweep.line import line_path, score_lines
from retain.studies.sweep.matched_gain import matched_rows
from retain.studies.sweep.summary import Compared, compare_runs, summarize_compared, write_sweep_report


@dataclass(frozen=True, kw_only=True)
class SweepConfig(TaskStudyConfig):
    """A sweep file: strategies you list (or a grid), each run with every seed, on one task."""

    strategies: dict[str, Any] = field(default_factory=dict, metadata={
        "help": "strategy name -> dotted overrides of the base config, e.g. lora: {mitigations.lora: {r: 8}}"})
    grid: dict[str, Any] = field(default_factory=dict, metadata={
        "help": "dotted key -> a list of values: every combination is a strategy, named by its values"})
    line: list[float] = field(default_factory=list, metadata={
        "help": "interpolation weights in (0, 1) at which each run's final weights, moved toward the base (WiSE-FT), "
                "are scored too: the path forgetting at matched task gain is read from (e.g. [0.25, 0.5, 0.75])"})

    def validate(self):
        yield from super().validate()
        if not self.strategies and not self.grid:
            yield "strategies", "give at least one strategy or a grid"
        for name, overrides in self.strategies.items():
            if not isinstance(overrides, dict):
                yield f"strategies.{name}", f"expected a mapping of dotted keys to values, got {overrides!r}"
        for key, values in self.grid.items():
            if not isinstance(values, list) or not values:
                yield f"grid.{key}", "expected a non-empty list of values"
        if any(not 0 < a < 1 for a in self.line) or len(set(self.line)) != len(self.line):
            yield "line", f"expected distinct weights strictly between 0 and 1, got {list(self.line)!r}"


def expand(sweep: SweepConfig) -> dict[str, dict]:
    """Strategy name -> overrides, the listed strategies first, then the grid's combinations."""
    strategies = dict(sweep.strategies)
    keys = list(sweep.grid)
    if not keys:  # product() of nothing is one empty combination, not none
        return strategies
    for values in itertools.product(*(sweep.grid[k] for k in keys)):
        name = ",".join(f"{k.split('.')[-1]}={v}" for k, v in zip(keys, values))
        strategies[name] = dict(zip(keys, values))
    return strategies


def run_name(sweep: SweepConfig, strategy: str, seed: int) -> str:
    """The name of one run of a strategy: the strategy's own with one seed, 'name.seed<S>' with several."""
    return seed_run_name(strategy, seed, sweep.seeds)


def result_files(sweep: SweepConfig, strategy: str) -> list[Path]:
    """The results files of a strategy's runs, one per seed, in the order of `seeds`."""
    return [Path(sweep.output) / "results" / f"{run_name(sweep, strategy, s)}.json" for s in sweep.seeds]


def strategy_configs(sweep: SweepConfig, where: Path) -> dict:
    """Run name -> its complete RunConfig (base + overrides + its seed, output under the sweep's directory).

    Every strategy is checked here, so a bad override fails before any training.
    """
    base = read_base(sweep.base, f"{where}: base")
    configs = {}
    for name, overrides in expand(sweep).items():
        for seed in sweep.seeds:
            run = run_name(sweep, name, seed)
            data = plan_run(base, {**sweep.common, **overrides}, Path(sweep.output) / "runs" / run,
                            f"{where}: strategies.{name}", seed)
            configs[run] = checked_run(data, f"{where}: strategies.{name}")
    return configs


def run_configs(sweep: SweepConfig, where: Path) -> dict[str, Path]:
    """Write one run config per strategy, <output>/configs/<name>.yaml; returns name -> path."""
    out = Path(sweep.output)
    return {name: atomic_write_text(out / "configs" / f"{name}.yaml", config_to_yaml(config))
            for name, config in strategy_configs(sweep, where).items()}


def load_sweep(path: Path) -> SweepConfig:
    return load_study(SweepConfig, path, "sweep file")


def summarize_sweep(sweep: SweepConfig, names: list[str], compared: dict[str, Compared] | None = None) -> dict:
    """The summary of the strategies `names` from the sweep's files under its `output` (summarize's rows, and with
    `line`, each one's forgetting at matched task gain); `compared`: compare_runs's output where the caller has it."""
    out, task = Path(sweep.output), Path(sweep.task).stem
    base, results = out / "base.json", {name: result_files(sweep, name) for name in names}
    base_results = load_results(base)
    compared = compared if compared is not None else compare_runs(base_results, results, task)
    summary = summarize_compared(base_results, base, compared, task)
    if sweep.line:  # forgetting where each run's line reaches 95% of the unprotected run's gain, seed by seed
        lines = {name: [line_path(base, out, run_name(sweep, name, s), f, sweep.line)
                        for s, f in zip(sweep.seeds, files)] for name, files in results.items()}
        summary["matched_gain"] = matched_rows(base, lines, task)
    return summary


def run_sweep(path: Path, progress: bool = True) -> dict:
    sweep = load_sweep(path)
    out = Path(sweep.output)
    paths = run_configs(sweep, path)
    base_model = load_config(next(iter(paths.values()))).model.name
    score_base(base_model, sweep.scored, out / "base.json", sweep, progress=progress)
    run_pending({name: (config_path, out / "results" / f"{name}.json") for name, config_path in paths.items()},
                sweep.scored, sweep, progress)
    if sweep.line:
        score_lines(base_model, {name: out / "runs" / name for name in paths}, sweep.line, sweep.scored, sweep,
                    progress)
    summary = summarize_sweep(sweep, list(expand(sweep)))
    atomic_write_json(out / "summary.json", summary)
    write_sweep_report(summary, out)
    return summary
