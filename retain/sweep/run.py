"""`retain sweep SWEEP.yaml`: many strategies on one task, each evaluated; the table and the Pareto front.

A sweep YAML:
    base: configs/demo/unprotected.yaml     # the run config every strategy starts from
    task: city_country                      # the task whose gain is measured (a bundled task or YAML)
    suite: lab                              # the capabilities whose loss is measured
    output: runs/sweep
    limit: null                             # items per task (for quick sweeps)
    batch_size: 64                          # evaluation requests per forward pass; device: cuda (default: auto)
    common: {training.lr: 1.0e-4}           # applied to every strategy before its own overrides
    strategies:                             # name -> dotted overrides of the base config
      full: {}
      lora: {mitigations.lora: {r: 8}, training.lr: 1.0e-3}
    grid:                                   # optional: every combination, named by its values
      training.lr: [1.0e-4, 1.0e-3]

Each strategy becomes an ordinary run config, <output>/configs/<name>.yaml, trained with
`retain train` semantics into <output>/runs/<name>/ and evaluated on the test split. Finished
runs (their results file exists) are skipped, so a killed sweep resumes where it was.
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

    def validate(self):
        if not self.strategies and not self.grid:
            yield "strategies", "give at least one strategy or a grid"
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


def strategy_configs(sweep: SweepConfig, where: Path) -> dict:
    """Strategy name -> its complete RunConfig (base + overrides, output under the sweep's directory).

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
        data = copy.deepcopy(base)
        for dotted, value in {**sweep.common, **overrides}.items():
            set_dotted(data, dotted, value, f"{where}: strategies.{name}")
        set_dotted(data, "output.dir", str(Path(sweep.output) / "runs" / name))
        try:
            configs[name] = config_from_dict(data)
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
    results = {}
    for k, (name, config_path) in enumerate(configs.items(), 1):
        result_path = out / "results" / f"{name}.json"
        if result_path.is_file():  # written last, after training and evaluation: the run is finished
            print(f"[{k}/{len(configs)}] {name}: done already, skipped")
        else:
            print(f"[{k}/{len(configs)}] {name}: retain train {config_path}")
            run = train(load_config(config_path), overwrite=True, progress=progress)
            evaluate_path(str(run.final_dir), suite, "test", result_path, limit=sweep.limit, progress=progress,
                          batch_size=sweep.batch_size, device=sweep.device)
        results[name] = result_path
    summary = summarize(base_results, results, task=Path(sweep.task).stem)
    atomic_write_json(out / "summary.json", summary)
    write_sweep_report(summary, out)
    return summary
