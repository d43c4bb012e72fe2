"""`retain tune TUNE.yaml`: the search, on one machine with Optuna (study.py) or on a Ray cluster
(ray_backend.py), then the report (report.py).

    lock the output dir (one `retain tune` per study)
    prepare   the base model's dev scores; the reference run (base config, nothing sampled) and the budget
    search    trials until the study has `trials` of them (a rerun continues where a killed one stopped)
    report    the dev Pareto front re-scored on the test split, the recommended recipe, importances
"""

from __future__ import annotations

from pathlib import Path

from retain.core.schema import ConfigError
from retain.studies.tune.report import write_report
from retain.studies.tune.study import search
from retain.training.rundir import locked_output_dir
from retain.studies.tune.space import load_tune
from retain.studies.tune.trial import Tuning, prepare, task_name


def load_tuning(path: Path, progress: bool = True) -> Tuning:
    tune, space, base, enqueued = load_tune(path)
    try:
        task = task_name(tune.task)
    except ConfigError as e:
        raise ConfigError(f"{path}: task: {e}") from None
    return Tuning(tune, space, base, enqueued, Path(tune.output), task, progress=progress)


def run_tune(path: Path, backend: str = "optuna", progress: bool = True) -> dict:
    """Search, then report; returns the report's summary (see report.write_report)."""

    tuning = load_tuning(Path(path), progress)
    with locked_output_dir(tuning.out):
        reference = prepare(tuning)
        if reference["state"] != "complete":
            raise ConfigError(f"{path}: base: the reference run (the base config) did not finish: "
                              f"{reference['reason']} — fix the base config first")
        if backend == "ray":
            from retain.studies.tune.ray_backend import search_with_ray

            search_with_ray(tuning)
        else:
            search(tuning)
        return write_report(tuning)
