"""What every study shares: the fields of its file, and the skeleton each one runs.

A study (`retain sweep`, `retain tune`, `retain sequence`; `retain demo` is one with fixed files) is many
ordinary runs planned from one base run config, each scored against the base model:

    plan      base config + `common` + the run's own overrides + its training seed + its output dir
              -> one run config per recipe and seed (plan_run, named by run_name)
    base      the base model scored once, into a results file every run is compared with (score_base)
    runs      a run whose results file exists is finished and skipped (a killed study resumes where it
              was); the others are trained, then scored (train_and_evaluate), one progress line each
    summary   what the study compares, in its own module (retain.studies.sweep.summary, retain.studies.continual.summary)

The fields every study file has are StudyConfig's; a study of recipes for one task (sweep, tune) adds
TaskStudyConfig's. `retain config --explain sweep|tune|sequence` prints them (retain.studies.explain).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from retain.config import RunConfig, config_from_dict, load_config, set_dotted
from retain.evaluation.runner import evaluate_path
from retain.core.schema import ConfigError, build, read_yaml
from retain.training.loop import RunResult, train

DEFAULT_SEEDS = (0, 1, 2)  # one run measures one trained model; three measure the recipe


@dataclass(frozen=True, kw_only=True)
class StudyConfig:
    """The fields every study file has (sweep, tune, sequence)."""

    output: str = field(metadata={
        "help": "the study's directory: run configs, runs, results and the summary are written under it"})
    common: dict[str, Any] = field(default_factory=dict, metadata={
        "help": "dotted overrides of the base run config applied to every run first, e.g. {training.lr: 1.0e-4}"})
    seeds: list[int] = field(default_factory=lambda: list(DEFAULT_SEEDS), metadata={
        "help": "training seeds (training.seed) each recipe runs with; a run's name gets .seed<S> when there are "
                "several; the summary compares recipes over them (one seed measures one trained model)"})
    limit: int | None = field(default=None, metadata={
        "help": "items per task when scoring (null: all; a few for a quick study)"})
    batch_size: int = field(default=64, metadata={"help": "evaluation requests per forward pass"})
    device: str | None = field(default=None, metadata={
        "help": "evaluation device, e.g. cuda (null: the GPU when there is one)"})

    def validate(self):
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            yield "seeds", f"expected a non-empty list of distinct training seeds, got {list(self.seeds)!r}"
        if self.limit is not None and self.limit < 1:
            yield "limit", f"must be >= 1, got {self.limit}"
        if self.batch_size < 1:
            yield "batch_size", f"must be >= 1, got {self.batch_size}"


@dataclass(frozen=True, kw_only=True)
class TaskStudyConfig(StudyConfig):
    """A study of recipes for one task, all started from one base config (sweep, tune)."""

    base: str = field(metadata={"help": "the run config every run starts from"})
    task: str = field(metadata={
        "help": "the task whose gain is measured: a bundled task name or a task YAML (the one being fine-tuned)"})
    suite: str = field(metadata={
        "help": "the capabilities whose loss is measured, as `retain eval --suite` takes it (lab; mmlu,my.yaml)"})

    @property
    def scored(self) -> str:
        """What every run and the base are scored on: the capability suite, then the task."""
        return f"{self.suite},{self.task}"


def load_study(cls: type, path: Path, what: str, edit: Callable[[dict], None] | None = None):
    """A study file, strictly: an unknown key or a wrong type is a ConfigError naming the file and key.

    `edit` changes the raw mapping first (a command line's key=value overrides of the study file).
    """
    data = read_yaml(path, what)  # its errors name the file and line already
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of a {what}'s keys at the top level")
    if edit is not None:
        edit(data)
    try:
        return build(cls, data)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def run_name(name: str, seed: int, seeds) -> str:
    """The name of one run of a recipe: the recipe's own with one seed, '<name>.seed<S>' with several."""
    return name if len(seeds) == 1 else f"{name}.seed{seed}"


def read_base(source: str, where: str) -> dict:
    """The run config file `source` as a dict, to plan runs from; ConfigError prefixed with `where`."""
    try:
        data = read_yaml(source, "base config")
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: {source} is not a run config (expected a mapping of sections)")
    return data


def plan_run(base: dict, overrides: dict, output_dir: Path, where: str, seed: int | None = None) -> dict:
    """One run's config dict: a copy of `base`, `overrides` set in order (the study's `common` first, then the
    run's own), then its training seed (None: the base's) and its output dir. Errors are prefixed with `where`."""
    if seed is not None and "training.seed" in overrides:
        raise ConfigError(f"{where}: training.seed is set by the study's `seeds` (each recipe runs with every "
                          "seed in it); list the seeds there instead")
    data = copy.deepcopy(base)
    for dotted, value in {**overrides, **({} if seed is None else {"training.seed": seed})}.items():
        set_dotted(data, dotted, value, where)
    set_dotted(data, "output.dir", str(output_dir))
    return data


def checked_run(data: dict, where: str) -> RunConfig:
    """The RunConfig of a planned run, checked now (before any training); ConfigError prefixed with `where`."""
    try:
        return config_from_dict(data)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None


def evaluate_into(result: Path, model: str, suite: str, study: StudyConfig, split: str = "test",
                  progress: bool = True, **options) -> dict:
    """Score `model` on `suite` into the results file `result`, with the study's limit, batch size and device
    (`options` replace them, e.g. limit=the tuner's test_limit)."""
    settings = {"limit": study.limit, "batch_size": study.batch_size, "device": study.device, **options}
    return evaluate_path(model, suite, split, result, progress=progress, **settings)


def score_base(model: str, suite: str, result: Path, study: StudyConfig, split: str = "test",
               progress: bool = True, **options) -> Path:
    """The base model's scores, once: a study run again finds them in `result`."""
    if not result.is_file():
        print(f"scoring the base model {model} on the {split} split ({result})")
        evaluate_into(result, model, suite, study, split, progress, **options)
    return result


def announce(k: int, total: int, name: str, what: str, unit: str = "") -> None:
    """The progress line of run (or `unit`, e.g. stage) k of `total`."""
    print(f"[{unit + ' ' if unit else ''}{k}/{total}] {name}: {what}")


def train_and_evaluate(config: RunConfig, result: Path, suite: str, study: StudyConfig, split: str = "test",
                       progress: bool = True, **train_options) -> RunResult:
    """Train `config` (`retain train` semantics, replacing an unfinished run in its output dir), then score its
    final weights into `result` — written last, so that an existing results file means a finished run."""
    run = train(config, **{"overwrite": True, "progress": progress, **train_options})
    evaluate_into(result, str(run.final_dir), suite, study, split, progress)
    return run


def run_pending(runs: dict[str, tuple[Path, Path]], suite: str, study: StudyConfig, progress: bool = True) -> None:
    """Each run, name -> (its run config file, its results file): skipped when finished, else trained and scored."""
    for k, (name, (config_path, result)) in enumerate(runs.items(), 1):
        if result.is_file():
            announce(k, len(runs), name, "done already, skipped")
        else:
            announce(k, len(runs), name, f"retain train {config_path}")
            train_and_evaluate(load_config(config_path), result, suite, study, progress=progress)
