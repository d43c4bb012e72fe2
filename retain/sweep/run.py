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
than one seed (run_name). Finished runs (their results file exists) are skipped, so a killed sweep resumes where
it was. The summary compares each strategy over its seeds: one run measures one trained model, several
measure the recipe (retain.report.stats).
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from retain.config import config_from_dict, config_to_yaml, load_config, set_dotted
from retain.evaluation.runner import evaluate_path
from retain.io import atomic_write_json, atomic_write_text
from retain.strict import ConfigError, build, read_yaml
from retain.sweep.summary import summarize, write_sweep_report
from retain.training.loop import train


@dataclass(frozen=True)
class SweepConfig:
    base: str
    task: str
    output: str
    suite: str  # the capability suite, as `retain eval --suite` takes it (e.g. mmlu,my_tasks.yaml; lab)
    limit: int | None = None
    batch_size: int = 64  # evaluation requests per forward pass
    device: str | None = None  # evaluation device: None/auto picks the GPU when there is one
    common: dict[str, Any] = field(default_factory=dict)  # dotted overrides applied to every strategy first
    strategies: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, Any] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])  # training.seed of each strategy's runs

    def validate(self):
        if not self.strategies and not self.grid:
            yield "strategies", "give at least one strategy or a grid"
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            yield "seeds", f"expected a non-empty list of distinct training seeds, got {self.seeds!r}"
        for name, overrides in self.strategies.items():
            if not isinstance(overrides, dict):
                yield f"strategies.{name}", f"expected a mapping of dotted keys to values, got {overrides!r}"
        for key, values in self.grid.items():
            if not isinstance(values, list) or not values:
                yield f"grid.{key}", "expected a non-empty list of values"


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
    return strategy if len(sweep.seeds) == 1 else f"{strategy}.seed{seed}"


def result_files(sweep: SweepConfig, strategy: str) -> list[Path]:
    """The results files of a strategy's runs, one per seed, in the order of `seeds`."""
    return [Path(sweep.output) / "results" / f"{run_name(sweep, strategy, s)}.json" for s in sweep.seeds]


def strategy_configs(sweep: SweepConfig, where: Path) -> dict:
    """Run name -> its complete RunConfig (base + overrides + its seed, output under the sweep's directory).

    Every strategy is checked here, so a bad override fails before any training.
    """
    try:
        base = read_yaml(sweep.base, "base config")
    except ConfigError as e:
        raise ConfigError(f"{where}: base: {e}") from None
    if not isinstance(base, dict):
        raise ConfigError(f"{where}: base: {sweep.base} is not a run config (expected a mapping of sections)")
    configs = {}
    for name, overrides in expand(sweep).items():
        if "training.seed" in {**sweep.common, **overrides}:
            raise ConfigError(f"{where}: strategies.{name}: training.seed is set by the sweep's `seeds` (each "
                              f"strategy runs with every seed in it); list the seeds there instead")
        for seed in sweep.seeds:
            data = copy.deepcopy(base)
            for dotted, value in {**sweep.common, **overrides, "training.seed": seed}.items():
                set_dotted(data, dotted, value, f"{where}: strategies.{name}")
            run = run_name(sweep, name, seed)
            set_dotted(data, "output.dir", str(Path(sweep.output) / "runs" / run))
            try:
                configs[run] = config_from_dict(data)
            except ConfigError as e:
                raise ConfigError(f"{where}: strategies.{name}: {e}") from None
    return configs


def run_configs(sweep: SweepConfig, where: Path) -> dict[str, Path]:
    """Write one run config per strategy, <output>/configs/<name>.yaml; returns name -> path."""
    out = Path(sweep.output)
    return {name: atomic_write_text(out / "configs" / f"{name}.yaml", config_to_yaml(config))
            for name, config in strategy_configs(sweep, where).items()}


def load_sweep(path: Path) -> SweepConfig:
    data = read_yaml(path, "sweep file")  # its errors name the file and line already
    try:
        return build(SweepConfig, data)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def run_sweep(path: Path, progress: bool = True) -> dict:
    sweep = load_sweep(path)
    out = Path(sweep.output)
    configs = run_configs(sweep, path)
    suite = f"{sweep.suite},{sweep.task}"
    base_results = out / "base.json"
    base_model = load_config(next(iter(configs.values()))).model.name
    if not base_results.is_file():
        print(f"evaluating the base model {base_model}")
        evaluate_path(base_model, suite, "test", base_results, limit=sweep.limit, progress=progress,
                      batch_size=sweep.batch_size, device=sweep.device)
    for k, (name, config_path) in enumerate(configs.items(), 1):
        result_path = out / "results" / f"{name}.json"
        if result_path.is_file():  # written last, after training and evaluation: the run is finished
            print(f"[{k}/{len(configs)}] {name}: done already, skipped")
        else:
            print(f"[{k}/{len(configs)}] {name}: retain train {config_path}")
            run = train(load_config(config_path), overwrite=True, progress=progress)
            evaluate_path(str(run.final_dir), suite, "test", result_path, limit=sweep.limit, progress=progress,
                          batch_size=sweep.batch_size, device=sweep.device)
    results = {name: result_files(sweep, name) for name in expand(sweep)}
    summary = summarize(base_results, results, task=Path(sweep.task).stem)
    atomic_write_json(out / "summary.json", summary)
    write_sweep_report(summary, out)
    return summary
