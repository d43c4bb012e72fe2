"""The sequential backend: an Optuna study in <output>/study.db, one trial after another in this process.

Sample a trial (define-by-run, Space.suggest), run it (trial.run_trial), tell Optuna the result; a trial the
pruner stops at a dev check is PRUNED. A killed study resumes when run again: finished trials are in study.db
(and their records on disk, so none is trained twice), and the trial that was running is enqueued again with
the same parameters.
"""

from __future__ import annotations

from retain.core.schema import ConfigError
from retain.studies.tune.trial import Tuning, run_trial

STUDY_NAME = "retain-tune"
FINISHED = ("COMPLETE", "PRUNED")
# A FAIL trial without the user attr "invalid" was interrupted (Ctrl-C, a kill, a crash): the next run retries it.


def make_sampler(tuning: Tuning):
    import optuna

    t = tuning.tune
    if t.sampler == "nsga2":
        # the default population (50) would make a small study a random search
        return optuna.samplers.NSGAIISampler(seed=t.seed, population_size=max(4, t.trials // 4))
    # TPE's default 10 random start-up trials are most of a small study's budget
    return optuna.samplers.TPESampler(seed=t.seed, n_startup_trials=min(10, max(3, t.trials // 3)))


def make_pruner(tuning: Tuning):
    import optuna

    p = tuning.tune.pruner
    if p.kind == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=p.startup_trials, n_warmup_steps=p.warmup_steps)
    if p.kind == "percentile":
        return optuna.pruners.PercentilePruner(p.percentile, n_startup_trials=p.startup_trials,
                                               n_warmup_steps=p.warmup_steps)
    if p.kind == "successive_halving":  # rungs at every, 3·every, 9·every steps
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=p.every, reduction_factor=3)
    return optuna.pruners.NopPruner()


def open_study(tuning: Tuning, storage: str | None = None):
    """The study in <output>/study.db, created or loaded; refused if it was made for another search."""
    import optuna

    storage = storage or f"sqlite:///{(tuning.out / 'study.db').resolve()}"
    directions = (["maximize", "minimize"] if tuning.tune.objective.kind == "pareto" else ["maximize"])
    study = optuna.create_study(study_name=STUDY_NAME, storage=storage, load_if_exists=True,
                                sampler=make_sampler(tuning), pruner=make_pruner(tuning), directions=directions)
    made_for = study.user_attrs.get("fingerprint")
    if made_for is None:
        study.set_user_attr("fingerprint", tuning.fingerprint())
    elif made_for != tuning.fingerprint():
        raise ConfigError(f"{tuning.out / 'study.db'}: this study was made for another space, base config, task, "
                          "suite or objective — set `output` to a new directory (or delete the old study)")
    return study


def recover(study) -> int:
    """After a kill: fail the trials left RUNNING (nobody else runs them: we hold the lock) and enqueue every
    interrupted trial's parameters again (a failed trial that was not an invalid combination), unless a trial
    with those parameters is done or waiting. Returns how many were enqueued again."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    for t in trials:
        if t.state == TrialState.RUNNING:
            study.tell(t.number, state=TrialState.FAIL)
    interrupted = [t for t in trials
                   if t.state in (TrialState.RUNNING, TrialState.FAIL) and "invalid" not in t.user_attrs]
    live = [t.params for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.WAITING)]
    again = []
    for t in interrupted:
        if t.params and t.params not in live and t.params not in again:
            again.append(t.params)
    for params in again:
        study.enqueue_trial(params)
    return len(again)


def finished(study) -> int:
    """Trials that count toward the study's size: done, pruned, or failed on an invalid combination."""
    return sum(1 for t in study.get_trials(deepcopy=False) if t.state.name in FINISHED or "invalid" in t.user_attrs)


def search(tuning: Tuning) -> None:
    """The sequential backend: one trial after another in this process."""
    study = open_study(tuning)
    again = recover(study)
    for params in tuning.enqueued:  # once: a rerun finds them in the study already
        study.enqueue_trial(params, skip_if_exists=True)
    remaining = tuning.tune.trials - finished(study)
    done = tuning.tune.trials - remaining
    print(f"study {tuning.out / 'study.db'}: {done} of {tuning.tune.trials} trials done"
          + (f", {again} interrupted one(s) enqueued again" if again else ""))
    if remaining > 0:
        # an invalid combination of choices (e.g. two PEFT methods) fails its trial, not the study
        study.optimize(lambda trial: objective(tuning, trial), n_trials=remaining, catch=(ConfigError,))


def objective(tuning: Tuning, trial):
    import optuna

    tuning.space.suggest(trial)
    params = dict(trial.params)

    def on_check(step: int, value: float, gain: float, forgetting: float) -> bool:
        trial.report(value, step)
        return trial.should_prune()

    single = tuning.tune.objective.kind == "constrained"
    try:
        record = run_trial(tuning, params, on_check if single and tuning.tune.pruner.kind != "none" else None)
    except ConfigError as e:  # e.g. two PEFT methods chosen together: this trial fails, the study goes on
        trial.set_user_attr("invalid", str(e))
        raise
    trial.set_user_attr("name", record["name"])
    if record.get("cached") and single:  # the pruner compares intermediate values: give them back
        for step, value in record["intermediate"].items():
            trial.report(value, int(step))
    print(f"trial {trial.number} ({record['name']}): {record['state']}"
          + (f", dev gain {record['gain']:+.1f}, forgetting {record['forgetting']:.1f} points"
             if record.get("gain") is not None else "") + (f" — {record['reason']}" if record["reason"] else ""))
    if record["state"] == "pruned":
        raise optuna.TrialPruned(record["reason"])
    value = record["value"]
    return tuple(value) if isinstance(value, list) else value
