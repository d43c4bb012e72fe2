"""The TUNE.yaml file: what to search (a space of dotted config keys), for what (the objective), how long.

    base: configs/demo/unprotected.yaml    # the run config every trial starts from (also the reference run)
    task: city_country                     # the task whose gain is measured
    suite: lab                             # the capabilities whose loss is measured (dev split while searching)
    output: runs/tune-lab
    trials: 16                             # trials in the study (enqueued ones included; the reference is extra)
    limit: 60                              # dev items per task (decisions); test_limit: the report's (null: all)
    sampler: tpe                           # tpe (single or multi-objective) | nsga2 (multi-objective)
    objective: {kind: constrained, max_forgetting_share: 0.1}
    pruner: {kind: median, every: 50, startup_trials: 3}
    space:
      training.lr: {float: [1.0e-5, 1.0e-3], log: true}
      training.warmup_steps: {int: [0, 40], step: 10}
      mitigations.replay: {choice: [absent, {ratio: 0.15}, {ratio: 0.3}]}
      mitigations.replay.ratio: {float: [0.05, 0.4]}   # not sampled in a trial whose replay is `absent`
    enqueue:                               # trials to run first, as values of the space's keys
      - {training.lr: 1.0e-4, mitigations.replay: absent}
    resources: {cpu: 1, gpu: 0}            # per trial, for --backend ray
    seeds: [0, 1, 2]                       # the report re-runs the recommended recipe and the reference with each

The fields every study file shares (base, task, suite, output, limit, batch_size, device, common, seeds) are
retain.studies.common's; `retain config --explain tune` lists every key with its help.

A choice is a list (its values label themselves; a mapping or list value is labelled by its JSON) or a
mapping label -> value. The value `absent` removes the key from the trial's config (a mitigation off).
Every trial is base + common + the sampled values, set with the one dotted-key setter (set_dotted).
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from retain.config import config_from_dict, set_dotted
from retain.core.schema import ConfigError
from retain.studies.common import TaskStudyConfig, load_study, plan_run, read_base

ABSENT = "absent"  # a choice value that removes its key from the trial's config


@dataclass(frozen=True)
class Objective:
    """What the study optimises: the dev task gain and dev forgetting (pareto), or one number (constrained)."""

    kind: Literal["pareto", "constrained"] = field(default="pareto", metadata={
        "help": "pareto: dev task gain (max) and dev forgetting (min), which Optuna cannot prune; constrained: "
                "dev gain - penalty x (dev forgetting beyond the budget), which a pruner can watch"})
    max_forgetting_points: float | None = field(default=None, metadata={
        "help": "budget: the pooled retained dev score may fall this many points"})
    max_forgetting_share: float | None = field(default=None, metadata={
        "help": "budget as a share of the reference run's dev forgetting (e.g. 0.1)"})
    penalty: float = field(default=2.0, metadata={
        "help": "constrained: objective points lost per point of forgetting beyond the budget"})

    def validate(self):
        if self.max_forgetting_points is not None and self.max_forgetting_share is not None:
            yield "max_forgetting_share", "give the budget once: max_forgetting_points or max_forgetting_share"
        if self.kind == "constrained" and self.max_forgetting_points is None and self.max_forgetting_share is None:
            yield "kind", "constrained needs a budget: max_forgetting_points or max_forgetting_share"
        for key in ("max_forgetting_points", "max_forgetting_share", "penalty"):
            value = getattr(self, key)
            if value is not None and (not math.isfinite(value) or value < 0):
                yield key, f"must be a finite number >= 0, got {value}"


@dataclass(frozen=True)
class Pruner:
    """Dev checks inside a trial, and Optuna's rule for stopping a trial that falls behind the others."""

    kind: Literal["none", "median", "percentile", "successive_halving"] = field(default="none", metadata={
        "help": "Optuna's pruner: none, median, percentile or successive_halving (rungs at every, 3x, 9x steps)"})
    every: int = field(default=50, metadata={"help": "optimizer steps between dev checks inside a trial"})
    limit: int | None = field(default=None, metadata={
        "help": "items per task at a check (null: the study's limit)"})
    warmup_steps: int = field(default=0, metadata={"help": "no trial is pruned before this step"})
    startup_trials: int = field(default=2, metadata={"help": "no pruning until this many trials have finished"})
    percentile: float = field(default=25.0, metadata={
        "help": "percentile: prune below this percentile of the other trials at the same step"})

    def validate(self):
        if self.every < 1:
            yield "every", f"must be >= 1, got {self.every}"
        if not 0 < self.percentile < 100:
            yield "percentile", f"must be in (0, 100), got {self.percentile}"


@dataclass(frozen=True)
class Resources:
    """What one trial needs on a Ray cluster (--backend ray)."""

    cpu: float = field(default=1.0, metadata={"help": "CPUs per trial"})
    gpu: float = field(default=0.0, metadata={"help": "GPUs per trial (a fraction shares one)"})


@dataclass(frozen=True, kw_only=True)
class TuneConfig(TaskStudyConfig):
    """A tune file: a search space of recipes for one task, an objective, and how many trials.

    Every decision is made on the dev split (at `limit` items per task); the report re-runs the recommended
    recipe and the reference (the base config) with every training seed in `seeds` and compares them on test.
    """

    trials: int = field(metadata={
        "help": "trials in the study (enqueued ones included; the reference run is extra)"})
    space: dict[str, Any] = field(metadata={
        "help": "dotted key -> {float: [low, high], log: true} | {int: [low, high], step: N} | {choice: [...]}"})
    sampler: Literal["tpe", "nsga2"] = field(default="tpe", metadata={
        "help": "tpe (single or multi-objective) or nsga2 (multi-objective)"})
    seed: int = field(default=0, metadata={"help": "the sampler's seed (the training seeds are `seeds`)"})
    objective: Objective = field(default=Objective(), metadata={
        "help": "what the study optimises, and the dev forgetting budget"})
    pruner: Pruner = field(default=Pruner(), metadata={"help": "dev checks inside a trial, and when to stop it"})
    enqueue: list[dict[str, Any]] = field(default_factory=list, metadata={
        "help": "trials to run first, as values of the space's keys"})
    test_limit: int | None = field(default=None, metadata={
        "help": "test items per task for the report (null: all, for the tightest CIs)"})
    resources: Resources = field(default=Resources(), metadata={"help": "per trial, for --backend ray"})
    max_concurrent: int | None = field(default=None, metadata={
        "help": "ray: trials at once (null: as many as the resources allow)"})

    def validate(self):
        yield from super().validate()
        if self.trials < 1:
            yield "trials", f"must be >= 1, got {self.trials}"
        if not self.space:
            yield "space", "give at least one key to search, e.g. training.lr: {float: [1.0e-5, 1.0e-3], log: true}"
        if self.sampler == "nsga2" and self.objective.kind != "pareto":
            yield "sampler", "nsga2 is multi-objective: use objective.kind: pareto, or sampler: tpe"
        if self.objective.kind == "pareto" and self.pruner.kind != "none":
            yield "pruner.kind", ("Optuna's pruners watch one objective (Trial.report is single-objective): use "
                                  "objective.kind: constrained, or pruner: {kind: none}")
        if len(self.enqueue) > self.trials:
            yield "enqueue", f"{len(self.enqueue)} trials enqueued but trials is {self.trials}"


@dataclass(frozen=True)
class Param:
    """One dotted key of the space: a float or int range, or labelled choices."""

    key: str
    kind: Literal["float", "int", "choice"]
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    step: float | None = None
    choices: dict = field(default_factory=dict)  # label -> config value (ABSENT: the key is removed)

    def suggest(self, trial):
        """The Optuna parameter (a number, or a choice's label) for `trial`."""
        if self.kind == "float":
            return trial.suggest_float(self.key, self.low, self.high, log=self.log, step=self.step)
        if self.kind == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high), log=self.log, step=int(self.step or 1))
        return trial.suggest_categorical(self.key, list(self.choices))

    def distribution(self):
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if self.kind == "float":
            return FloatDistribution(self.low, self.high, log=self.log, step=self.step)
        if self.kind == "int":
            return IntDistribution(int(self.low), int(self.high), log=self.log, step=int(self.step or 1))
        return CategoricalDistribution(list(self.choices))

    def value(self, param):
        """The config value for an Optuna parameter."""
        return copy.deepcopy(self.choices[param]) if self.kind == "choice" else param

    def param_for(self, value, where: str):
        """The Optuna parameter for a config value a user wrote (enqueue): a choice's label or value, a number."""
        if self.kind == "choice":
            if isinstance(value, str) and value in self.choices:
                return value
            for label, choice in self.choices.items():
                if choice == value and type(choice) is type(value):
                    return label
            raise ConfigError(f"{where}: {value!r} is not one of the choices ({', '.join(map(str, self.choices))})")
        number = int if self.kind == "int" else float
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (number is int and value != int(value)):
            raise ConfigError(f"{where}: expected {'an integer' if number is int else 'a number'}, got {value!r}")
        if not self.low <= value <= self.high:
            raise ConfigError(f"{where}: {value!r} is outside the range [{self.low}, {self.high}]")
        return number(value)

    def extremes(self) -> list:
        return list(self.choices.values()) if self.kind == "choice" else [self.value(self.low), self.value(self.high)]


def _label(value) -> Any:
    """A choice's Optuna label: None, bools, numbers and strings label themselves; mappings and lists by JSON."""
    return value if value is None or isinstance(value, (bool, int, float, str)) else json.dumps(value, sort_keys=True)


def parse_param(key: str, spec: Any) -> Param:
    """`{float: [lo, hi], log: true}`, `{int: [lo, hi], step: 2}` or `{choice: [...] | {label: value}}`."""
    if not isinstance(spec, dict):
        raise ConfigError(f"space.{key}: expected {{float: [low, high]}}, {{int: [low, high]}} or {{choice: [...]}}, "
                          f"got {spec!r}")
    kinds = [k for k in ("float", "int", "choice") if k in spec]
    if len(kinds) != 1:
        raise ConfigError(f"space.{key}: give exactly one of float, int, choice (got {', '.join(spec) or 'none'})")
    kind = kinds[0]
    allowed = {"choice"} if kind == "choice" else {kind, "log", "step"}
    unknown = sorted(set(spec) - allowed)
    if unknown:
        raise ConfigError(f"space.{key}.{unknown[0]}: unknown key (known: {', '.join(sorted(allowed))})")
    if kind == "choice":
        raw = spec["choice"]
        if isinstance(raw, list):
            choices = {_label(v): v for v in raw}
            if len(choices) != len(raw):
                raise ConfigError(f"space.{key}.choice: a value is given twice")
        elif isinstance(raw, dict):
            choices = {str(label): v for label, v in raw.items()}
        else:
            raise ConfigError(f"space.{key}.choice: expected a list or a mapping label -> value, got {raw!r}")
        if not choices:
            raise ConfigError(f"space.{key}.choice: give at least one value")
        return Param(key, "choice", choices=choices)
    bounds, log, step = spec[kind], spec.get("log", False), spec.get("step")
    number = int if kind == "int" else (int, float)
    if (not isinstance(bounds, list) or len(bounds) != 2
            or not all(isinstance(b, number) and not isinstance(b, bool) for b in bounds)):
        raise ConfigError(f"space.{key}.{kind}: expected [low, high] ({'integers' if kind == 'int' else 'numbers'}), "
                          f"got {bounds!r}")
    low, high = bounds
    if not low < high:
        raise ConfigError(f"space.{key}.{kind}: low must be below high, got [{low}, {high}]")
    if not isinstance(log, bool):
        raise ConfigError(f"space.{key}.log: expected true or false, got {log!r}")
    if log and low <= 0:
        raise ConfigError(f"space.{key}.log: a log scale needs low > 0, got {low}")
    if step is not None and (isinstance(step, bool) or not isinstance(step, number) or step <= 0):
        raise ConfigError(f"space.{key}.step: expected a number > 0, got {step!r}")
    if step is not None and log:
        raise ConfigError(f"space.{key}.step: a log scale takes no step (Optuna samples one or the other)")
    return Param(key, kind, low=low, high=high, log=log, step=step)


@dataclass(frozen=True)
class Space:
    params: tuple[Param, ...]

    def active(self, params: dict) -> list[Param]:
        """The space's params that `params` sets: none under a block an earlier choice made absent."""
        removed = [p.key for p in self.params if p.key in params and p.value(params[p.key]) == ABSENT]
        return [p for p in self.params if p.key in params and not any(p.key.startswith(r + ".") for r in removed)]

    def suggest(self, trial) -> None:
        """Define-by-run: sample every active key on `trial` (an optuna.Trial, or Ray's wrapper of one)."""
        removed: list[str] = []
        for p in self.params:
            if any(p.key.startswith(r + ".") for r in removed):
                continue  # conditional: its block is off in this trial
            if p.value(p.suggest(trial)) == ABSENT:
                removed.append(p.key)

    def apply(self, data: dict, params: dict, where: str = "") -> dict:
        """Set the sampled values on a run-config dict, in the space's order; returns it."""
        for p in self.active(params):
            value = p.value(params[p.key])
            if value == ABSENT:
                remove_dotted(data, p.key)
            else:
                set_dotted(data, p.key, value, where)
        return data

    def params_for(self, values: dict, where: str) -> dict:
        """Optuna parameters for a dict of dotted key -> config value (an enqueued trial)."""
        by_key = {p.key: p for p in self.params}
        out = {}
        for key, value in values.items():
            if key not in by_key:
                raise ConfigError(f"{where}.{key}: not a key of the space (keys: {', '.join(by_key)})")
            out[key] = by_key[key].param_for(value, f"{where}.{key}")
        return out

    def fingerprint(self) -> str:
        return json.dumps([[p.key, p.kind, p.low, p.high, p.log, p.step, list(p.choices)] for p in self.params])


def remove_dotted(data: dict, dotted: str) -> None:
    """Delete `data[a][b][c]` for "a.b.c" if it is there (a choice's `absent`)."""
    *parents, last = dotted.split(".")
    node = data
    for key in parents:
        node = node.get(key) if isinstance(node, dict) else None
        if node is None:
            return
    if isinstance(node, dict):
        node.pop(last, None)


def trial_name(params: dict) -> str:
    """A trial's name from its parameters alone: the same trial has the same name (and run dir) whichever
    backend ran it, and a rerun finds its results."""
    digest = hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()
    return f"trial-{digest[:8]}"


def load_tune(path: Path) -> tuple[TuneConfig, Space, dict, list[dict]]:
    """(the checked TUNE.yaml, its space, the base run config as a dict with `common` applied, the enqueued
    trials as Optuna parameters).

    Every error names the file and key (ConfigError, exit 2): unknown keys, wrong types, a space key the
    run config does not have, a range end or choice that makes an invalid run config, a bad enqueued value.
    """
    tune = load_study(TuneConfig, path, "tune file")
    try:
        space = Space(tuple(parse_param(key, spec) for key, spec in tune.space.items()))
        enqueued = [space.params_for(values, f"enqueue[{i}]") for i, values in enumerate(tune.enqueue)]
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    base = read_base(tune.base, f"{path}: base")
    for dotted, value in tune.common.items():
        set_dotted(base, dotted, value, f"{path}: common")
    check_space(space, base, Path(path))
    return tune, space, base, enqueued


def check_space(space: Space, base: dict, path: Path) -> None:
    """Each range end and each choice, alone on the base, must make a valid run config: a typo in a key
    or a value the config refuses fails now, not in trial 7."""
    for p in space.params:
        for value in p.extremes():
            data = copy.deepcopy(base)
            if value == ABSENT:
                remove_dotted(data, p.key)
            else:
                set_dotted(data, p.key, value, f"{path}: space.{p.key}")
            try:
                config_from_dict(data)
            except ConfigError as e:
                raise ConfigError(f"{path}: space.{p.key}: {value!r} makes an invalid run config: {e}") from None


def trial_config(base: dict, space: Space, params: dict, output_dir: Path, seed: int | None = None) -> dict:
    """The run config dict of a trial: base (common applied) + the sampled values + its own output dir (and a
    training seed: None keeps the base's)."""
    where = f"trial {trial_name(params)}"
    return plan_run(space.apply(copy.deepcopy(base), params, where), {}, output_dir, where, seed)
