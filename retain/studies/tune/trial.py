"""One trial, whichever backend runs it: write its run config, train it (with a dev check the pruner watches),
score the result on the dev split, and keep a record. Also what every study needs first: the base model's
dev scores and the reference run (the base config unchanged: the unprotected recipe the budget is relative to).

Files, under the study's output dir:
    configs/<name>.yaml   the trial's run config: `retain train configs/<name>.yaml` reproduces it alone
    runs/<name>/          its output dir;  dev/<name>.json  its dev results;  trials/<name>.json  its record
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from retain.config import config_from_dict, config_to_yaml, load_config
from retain.evaluation.compare import retained_change
from retain.evaluation.runner import evaluate
from retain.evaluation.tasks import load_suite
from retain.core.files import atomic_write_json, atomic_write_text
from retain.mitigations import build_mitigations
from retain.mitigations.roles import Context, Decision, WeightTransform, playing
from retain.core.schema import ConfigError, to_dict
from retain.model.loading import load_model, load_tokenizer
from retain.studies.common import announce, checked_run, evaluate_into, plan_run, read_base, score_base
from retain.training.checkpoint import NonFiniteError
from retain.training.collapse import CollapseError
from retain.training.loop import train
from retain.studies.tune.space import Space, TuneConfig, trial_config, trial_name

REFERENCE = "reference"
# on_check(step, objective value, dev gain, dev forgetting) -> True to prune the trial
CheckHook = Callable[[int, float, float, float], bool]


@dataclass
class Tuning:
    """Everything a trial needs (picklable: Ray ships it to its workers)."""

    tune: TuneConfig
    space: Space
    base: dict  # the base run config as a dict, `common` applied
    enqueued: list[dict]  # Optuna parameters of the trials to run first
    out: Path
    task: str  # the fine-tuning task's name in results files
    budget: float | None = None  # dev forgetting budget in points, once the reference has run
    progress: bool = True

    @property
    def suite(self) -> str:
        return self.tune.scored

    @property
    def check_limit(self) -> int | None:
        return self.tune.pruner.limit or self.tune.limit

    def value(self, gain: float, forgetting: float):
        """The objective: (gain, forgetting) for a Pareto study; for a constrained one, one number: the gain,
        less `penalty` points per point of forgetting beyond the budget (what the pruner compares)."""
        if self.tune.objective.kind == "pareto":
            return gain, forgetting
        excess = max(0.0, forgetting - (self.budget if self.budget is not None else float("inf")))
        return gain - self.tune.objective.penalty * excess

    def fingerprint(self) -> str:
        """What a study's stored trials depend on: a rerun with another space, base or objective is refused."""
        t = self.tune
        return json.dumps({"space": self.space.fingerprint(), "base": self.base, "task": t.task, "suite": t.suite,
                           "objective": [t.objective.kind, t.objective.max_forgetting_points,
                                         t.objective.max_forgetting_share, t.objective.penalty],
                           "limit": t.limit}, sort_keys=True)


def task_name(task: str) -> str:
    """The name results files give the task `task` (a bundled name or a task YAML)."""
    tasks = load_suite(task)
    if len(tasks) != 1:
        raise ConfigError(f"task: {task!r} names {len(tasks)} tasks — give the one task being fine-tuned")
    return tasks[0].name


def measure(before: dict, after: dict, task: str) -> tuple[float, float]:
    """(task gain, forgetting) in points: the change of the task's primary metric (its better direction up),
    and the fall of the retained capabilities' score, pooled over every score-type task but the task's own
    (retain.studies.sweep.summary.retained_change; negative forgetting: they improved)."""
    b, a = before["tasks"][task], after["tasks"][task]
    metric = b["primary_metric"]
    gain = 100 * (a["metrics"][metric] - b["metrics"][metric]) * (-1 if b["lower_is_better"] else 1)
    retained, names = retained_change(before, after, task)
    if not names:
        raise ConfigError(f"suite: no score-type task besides {task} to measure forgetting on — add one "
                          "(multiple choice or generation)")
    return gain + 0.0, -100 * retained.delta + 0.0  # + 0.0: no "-0.0" in the records


class DevCheck:
    """A Monitor (role 7) the tuner adds to a trial's run: every `every` steps it scores the dev split's score
    tasks and hands the objective to `on_check`; True stops the run there (pruned).

    It scores what the run would give if it ended now: with the config's weight transforms (WiSE-FT) applied to
    a copy, since intermediate raw weights would make those recipes look worse than they end. The last step is
    not checked: the trial's final dev score is taken from final/ by the tuner.
    """

    def __init__(self, tuning: Tuning, config, on_check: CheckHook, base_check: dict):
        self.tuning, self.on_check, self.base_check = tuning, on_check, base_check
        scores = ("multiple_choice", "generation")  # the kinds measure() pools; perplexity is not scored here
        self.tasks = [t for t in load_suite(tuning.suite)
                      if t.name == tuning.task or (t.kind in scores and not t.lower_is_better)]
        self.tokenizer = load_tokenizer(config.model)
        self.transforms = [m for m in playing(build_mitigations(config.mitigations), WeightTransform)
                           if not getattr(m, "keeps_outputs", False)]  # one that keeps outputs changes no score
        base_model: list = []  # loaded once, at the first check that needs it

        def load_base():
            if not base_model:
                base_model.append(load_model(config.model))
            return base_model[0]

        # total_steps is not known here; a weight transform reads only the base model and the tokenizer
        self.ctx = Context(tokenizer=self.tokenizer, total_steps=0, max_length=config.data.max_length,
                           load_base_model=load_base, output_dir=Path(config.output.dir))
        self.intermediate: dict[int, float] = {}
        self.last: tuple[float, float] | None = None
        self.pruned_at: int | None = None

    def check(self, model, step: int, last_step: bool) -> Decision | None:
        if last_step or step % self.tuning.tune.pruner.every:
            return None
        was_training = model.training
        scored = model
        if self.transforms:
            scored = copy.deepcopy(model)
            for m in self.transforms:
                scored = m.transform_weights(scored, self.ctx)
        t = self.tuning.tune
        results = evaluate(scored, self.tokenizer, self.tasks, split="dev", limit=self.tuning.check_limit,
                           progress=False, batch_size=t.batch_size)
        model.train(was_training)
        gain, forgetting = measure(self.base_check, results, self.tuning.task)
        value = self.tuning.value(gain, forgetting)
        self.intermediate[step], self.last = value, (gain, forgetting)
        metrics = {"tune/dev_gain": gain, "tune/dev_forgetting": forgetting, "tune/objective": value}
        if self.on_check(step, value, gain, forgetting):
            self.pruned_at = step
            return Decision(stop=True, reason=f"pruned by the tuner at step {step}: objective {value:.1f} "
                                              f"(dev gain {gain:+.1f}, forgetting {forgetting:.1f} points)",
                            metrics=metrics)
        return Decision(metrics=metrics)


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def run_trial(tuning: Tuning, params: dict, on_check: CheckHook | None = None, name: str | None = None) -> dict:
    """Train and score one trial; returns its record (written to trials/<name>.json).

    A trial whose record exists for the same run config is not run again (`cached` in the returned record): a
    rerun of a killed study, or a sampler suggesting the same values twice, costs nothing.
    """
    out, t = tuning.out, tuning.tune
    name = name or trial_name(params)
    config_path = out / "configs" / f"{name}.yaml"
    config = config_from_dict(trial_config(tuning.base, tuning.space, params, out / "runs" / name))
    record_path = out / "trials" / f"{name}.json"
    if record_path.is_file() and same_config(config_path, config):
        record = read_json(record_path)
        if record["state"] in ("complete", "pruned"):
            return {**record, "cached": True}
    atomic_write_text(config_path, config_to_yaml(config))
    config = load_config(config_path)  # what runs is exactly the file a user would train
    record = {"name": name, "params": params,
              "overrides": {p.key: p.value(params[p.key]) for p in tuning.space.active(params)},
              "config": str(config_path), "intermediate": {}}
    monitor = None
    if on_check is not None:
        monitor = DevCheck(tuning, config, on_check, read_json(out / "dev" / "base-check.json"))
    try:
        run = train(config, overwrite=True, progress=tuning.progress, monitors=(monitor,) if monitor else ())
    except (NonFiniteError, CollapseError) as e:  # a learning rate too high for the recipe: a result, not a crash
        how = "diverged" if isinstance(e, NonFiniteError) else "collapsed"
        record.update(state="pruned", reason=f"{how}: {e}", gain=None, forgetting=None, value=None)
        atomic_write_json(record_path, record)
        return record
    if monitor is not None:
        record["intermediate"] = {str(s): v for s, v in monitor.intermediate.items()}
    record["steps"] = run.steps
    if monitor is not None and monitor.pruned_at is not None:
        gain, forgetting = monitor.last
        record.update(state="pruned", reason=f"pruned at step {monitor.pruned_at}", gain=gain,
                      forgetting=forgetting, value=monitor.intermediate[monitor.pruned_at])
    else:
        dev_path = out / "dev" / f"{name}.json"
        evaluate_into(dev_path, str(run.final_dir), tuning.suite, t, "dev", tuning.progress)
        gain, forgetting = measure(read_json(out / "dev" / "base.json"), read_json(dev_path), tuning.task)
        value = tuning.value(gain, forgetting)
        record.update(state="complete", reason="", gain=gain, forgetting=forgetting, dev_results=str(dev_path),
                      value=list(value) if isinstance(value, tuple) else value)
    atomic_write_json(record_path, record)
    return record


def same_config(path: Path, config) -> bool:
    """Whether the run config at `path` means `config` (compared as loaded, so a key the schema gained since,
    with its default, is no change)."""
    try:
        return path.is_file() and to_dict(load_config(path)) == to_dict(config)  # lists and tuples alike
    except ConfigError:
        return False


def prepare(tuning: Tuning) -> dict:
    """Before any trial: the base model's dev scores (and at the pruner's item limit), then the reference run
    (base + common, nothing sampled), whose dev forgetting sets a relative budget. Returns its record."""
    out, t = tuning.out, tuning.tune
    model = config_from_dict(trial_config(tuning.base, tuning.space, {}, out / "runs" / REFERENCE)).model.name
    wanted = [(out / "dev" / "base.json", t.limit)]
    if t.pruner.kind != "none":  # the base at the item limit of the pruner's checks, to compare them with
        wanted.append((out / "dev" / "base-check.json", tuning.check_limit))
    for path, limit in wanted:
        score_base(model, tuning.suite, path, t, "dev", tuning.progress, limit=limit)
    print(f"reference run (the base config, nothing sampled): {out / 'configs' / (REFERENCE + '.yaml')}")
    reference = run_trial(tuning, {}, name=REFERENCE)
    o = t.objective
    if o.max_forgetting_points is not None:
        tuning.budget = o.max_forgetting_points
    elif o.max_forgetting_share is not None:
        tuning.budget = o.max_forgetting_share * max(0.0, reference["forgetting"])
    return reference


def seed_runs(tuning: Tuning, name: str) -> list[str]:
    """The runs of trial `name`'s recipe, one per training seed in the study's `seeds`, in that order: the trial
    itself for the seed it was trained with, and a re-run of its run config with each other seed,
    <name>.seed<S> (configs/ and runs/ as a trial's; trained here unless its final weights exist already)."""
    out, seeds = tuning.out, tuning.tune.seeds
    config_path = out / "configs" / f"{name}.yaml"
    trained = load_config(config_path).training.seed
    runs = []
    for k, seed in enumerate(seeds, 1):
        run = name if seed == trained else f"{name}.seed{seed}"
        runs.append(run)
        if (out / "runs" / run / "final").is_dir():
            continue
        announce(k, len(seeds), run, f"{name}'s recipe with training seed {seed}")
        where = f"{config_path}: seed {seed}"
        config = checked_run(plan_run(read_base(str(config_path), where), {}, out / "runs" / run, where, seed), where)
        run_path = atomic_write_text(out / "configs" / f"{run}.yaml", config_to_yaml(config))
        train(load_config(run_path), overwrite=True, progress=tuning.progress)
    return runs
