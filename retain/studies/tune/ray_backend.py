"""`retain tune TUNE.yaml --backend ray`: the same trials on a Ray cluster, through Ray Tune.

Ray Tune schedules (one trial per worker, with the TUNE file's `resources`); Optuna samples, inside Ray's
OptunaSearch, from the same define-by-run space and with the same sampler as the sequential backend, and the
trials it enqueues (`enqueue:`) become OptunaSearch's points_to_evaluate. Each worker runs retain.studies.tune.trial.
run_trial, so a trial writes the same run config, run dir and record whichever backend ran it. Pruning is
Ray's: `median` is MedianStoppingRule, `successive_halving` is ASHA, both fed by the trial's dev checks.

`ray.init()` joins the cluster RAY_ADDRESS names, or starts one on this machine. Trials read the same
relative paths as here (RAY_CHDIR_TO_TRIAL_DIR=0), so every node must see the working directory and the
output dir at the same path (one machine, or a shared filesystem). A killed run resumes with Ray's own
Tuner.restore from <output>/ray/tune.
"""

from __future__ import annotations

import os

from retain.core.files import atomic_write_json
from retain.core.schema import ConfigError
from retain.studies.tune.space import trial_name
from retain.studies.tune.study import make_sampler
from retain.studies.tune.trial import Tuning, read_json, run_trial

EXPERIMENT = "tune"


class TrialDiverged(RuntimeError):
    """A trial's loss went non-finite: Ray records it as errored (its record on disk says why)."""


def ray_trial(config: dict, tuning: Tuning) -> None:
    """One trial in a Ray worker: `config` holds the Optuna parameters OptunaSearch sampled."""
    from ray import tune

    params = dict(config)
    single = tuning.tune.objective.kind == "constrained"

    def on_check(step: int, value: float, gain: float, forgetting: float) -> bool:
        tune.report({"objective": value, "gain": gain, "forgetting": forgetting, "step": step, "final": False})
        return False  # Ray's scheduler decides; it stops the trial at this report if it must

    record = run_trial(tuning, params, on_check if single and tuning.tune.pruner.kind != "none" else None)
    if record["state"] != "complete":
        raise TrialDiverged(record["reason"])
    result = {"gain": record["gain"], "forgetting": record["forgetting"], "step": record["steps"], "final": True}
    if single:
        result["objective"] = record["value"]
    tune.report(result)


def make_scheduler(tuning: Tuning):
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, MedianStoppingRule

    p = tuning.tune.pruner
    if p.kind == "median":
        return MedianStoppingRule(time_attr="step", metric="objective", mode="max", grace_period=p.warmup_steps,
                                  min_samples_required=p.startup_trials)
    if p.kind == "successive_halving":  # rungs at every, 3·every, 9·every steps, as the sequential pruner
        return ASHAScheduler(time_attr="step", metric="objective", mode="max", max_t=10 ** 9, grace_period=p.every,
                             reduction_factor=3)
    if p.kind == "percentile":
        raise ConfigError("pruner.kind: percentile has no Ray Tune scheduler — use median or successive_halving "
                          "with --backend ray")
    return FIFOScheduler()


def search_with_ray(tuning: Tuning) -> None:
    import ray
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    scheduler = make_scheduler(tuning)
    # Trials must resolve relative paths (data, output) as `retain train` here would, not from a trial dir.
    os.environ["RAY_CHDIR_TO_TRIAL_DIR"] = "0"
    if not ray.is_initialized():
        ray.init(include_dashboard=False, runtime_env={"env_vars": {"RAY_CHDIR_TO_TRIAL_DIR": "0"}})
    single = tuning.tune.objective.kind == "constrained"
    r = tuning.tune.resources
    trainable = tune.with_resources(tune.with_parameters(ray_trial, tuning=tuning), {"cpu": r.cpu, "gpu": r.gpu})
    root = (tuning.out / "ray").resolve()
    if tune.Tuner.can_restore(str(root / EXPERIMENT)):
        print(f"resuming the Ray Tune experiment in {root / EXPERIMENT}")
        tuner = tune.Tuner.restore(str(root / EXPERIMENT), trainable, resume_unfinished=True, resume_errored=True)
    else:
        searcher = OptunaSearch(space=tuning.space.suggest, metric="objective" if single else ["gain", "forgetting"],
                                mode="max" if single else ["max", "min"],
                                points_to_evaluate=[dict(p) for p in tuning.enqueued] or None,
                                sampler=make_sampler(tuning))
        tuner = tune.Tuner(trainable, tune_config=tune.TuneConfig(
            search_alg=searcher, scheduler=scheduler, num_samples=tuning.tune.trials,
            max_concurrent_trials=tuning.tune.max_concurrent),
            run_config=tune.RunConfig(name=EXPERIMENT, storage_path=str(root), verbose=1 if tuning.progress else 0,
                                      # a worker lost to the cluster (preempted, slow to start) is retried; a
                                      # finished trial's retry returns its record from disk
                                      failure_config=tune.FailureConfig(max_failures=2)))
    grid = tuner.fit()
    for result in grid:
        record_missing(tuning, dict(result.config or {}), result.metrics or {}, result.error)


def record_missing(tuning: Tuning, params: dict, metrics: dict, error) -> None:
    """The record of a trial that ended without writing its own: stopped by Ray's scheduler at a dev check,
    or failed (a diverged trial's record is on disk already)."""
    if not params:
        return
    name = trial_name(params)
    path = tuning.out / "trials" / f"{name}.json"
    if path.is_file() and read_json(path)["state"] in ("complete", "pruned"):
        return

    stopped = error is None and not metrics.get("final")
    atomic_write_json(path, {
        "name": name, "params": params,
        "overrides": {p.key: p.value(params[p.key]) for p in tuning.space.active(params)},
        "config": str(tuning.out / "configs" / f"{name}.yaml"), "intermediate": {},
        "state": "pruned" if stopped else "failed",
        "reason": f"stopped by Ray's scheduler at step {metrics.get('step')}" if stopped else f"error: {error}",
        "gain": metrics.get("gain"), "forgetting": metrics.get("forgetting"), "value": metrics.get("objective")})
