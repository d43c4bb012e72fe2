"""The retention budget: no capability may get worse than its budget allows on the dev split, and the run
ends at the best point it reached within that budget.

Every `every` steps (and at the last step) the model is scored on the suite's dev split and compared with
the base model's dev scores from before the first step. Each task has a budget in its own unit:
    scores       `max_drop_points`: before − after in points (1.0 = one point; 100 × a fraction)
    perplexities `max_perplexity_increase`: after / before − 1, relative (0.10 = +10%)
A drop breaches only when the dev items show it at `confidence` (0.8: the measured drop less 0.84 paired
standard errors is past the budget): on a dev split of 20 items one answer is 5 points, and answers near a
tie flip with any change to the weights, so the measured drop alone vetoes steps on noise (null: as
measured). At 0.8, 20 items and a 5-point budget, two answers lost (10 points) hold and three breach.
`tasks:` overrides them per task (`{english: {max_perplexity_increase: 0.5}, open_prompts: ignore}`); a
task's `weight` counts its drop that many times against its budget (0.5: it may go twice as far; 0 or
`ignore`: measured and recorded, never a breach). (`max_drop`, one number for both, is a deprecated
alias: max_drop_points = 100 × it, max_perplexity_increase = it.)

Why the perplexity default is +10%, not +1%: perplexity on general text counts every token, so any
fine-tune on narrow data moves it before a single answer changes. In the lab's sweeps (docs/mitigations.md)
every fine-tune without KL to the base raised English perplexity by about 5% or more, the gentlest too (LoRA
at lr 1e-4 +6.6%, WiSE-FT at α 0.5 +4.9%, losing 3.3 and 0.5 points of pooled scores). +10% is where the
report's severity grading stops calling a perplexity rise mild (retain.report.severity); name a tighter one
per task if that text is what you must keep. (The lab sweep's budget run, 5 points and +5% at lr 1e-3, ends
at the base model: its first check, step 20, already breaches every task's budget, and rollback returns the
start.)

What ranks the points (the run's own task, "higher is better"): `task` names a task YAML or bundled task
(e.g. city_country) scored on its dev split by its primary metric — what a user watches; without it, the
loss on the run's data.dev (lower is better); with neither, the latest check within budget wins.

The weights at the checks are kept in memory (`keep` of them, on the CPU: the best within budget and the
best by task score) and go into every checkpoint, so a resumed run ends where an uninterrupted one would.
When it acts (`patience` unset: at the first breach; else once `patience` checks in a row found no better
point; and always at the last step), the action decides the weights the run ends with:
    stop        keep the weights as they are (the breach is recorded)
    rollback    the best kept check within budget (highest dev task score)
    early_stop  rollback, stopping once `patience` (default 2) checks in a row found no better point
    repair      the best point within budget on the lines from the start, and from the best check within
                budget, toward each kept check that breached: WiSE-FT with α found by bisection per line
Every check and the point chosen, with why, are written to <output>/retention.json (by the loop, from
files()); the report states them.
"""

from __future__ import annotations


import torch

from retain.core.errors import ConfigError
from retain.evaluation.compare import sure_drops, task_drops
from retain.evaluation.results import primary_value
from retain.mitigations.budget.options import RetentionOptions
from retain.mitigations.budget.judge import budget_shares, is_perplexity, over_budget
from retain.mitigations.budget.points import Point, best_within, merit, repair, to_keep
from retain.mitigations.roles import Context, Decision, Monitor, Setup, Stateful, WritesFiles
from retain.data import MODEL_INPUTS, collate
from retain.evaluation.runner import evaluate
from retain.evaluation.tasks import load_suite
from retain.model.weights import interpolate, restore, trainable



def on_cpu(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A copy on the CPU: kept points must not take accelerator memory from training."""
    return {n: w.detach().to("cpu", copy=True) for n, w in weights.items()}


@torch.no_grad()
def mean_loss(model, examples: list, pad_id: int, batch_size: int) -> float:
    """Token-weighted mean loss of `model` on tokenized examples (the run's dev data), in eval mode."""

    device = next(model.parameters()).device
    total, tokens = 0.0, 0
    for i in range(0, len(examples), batch_size):
        batch = collate(examples[i: i + batch_size], pad_id)
        n = int((batch["labels"][:, 1:] != -100).sum())
        out = model(**{k: batch[k].to(device) for k in MODEL_INPUTS})
        total, tokens = total + out.loss.float().item() * n, tokens + n
    return total / max(tokens, 1)


class RetentionBudget(Setup, Monitor, Stateful, WritesFiles):
    """A budget per capability on the dev split; ends the run at the best point it reached within it."""

    def __init__(self, options: RetentionOptions):
        self.options = options
        self.history: list[dict] = []  # one record per check
        self.kept: dict[int, dict] = {}  # step -> trainable weights (CPU), see points.to_keep
        self.stale = 0  # checks in a row without a better point (for patience)
        self.outcome: dict | None = None
        self.total_steps: int | None = None
        self.sure: dict | None = None  # the sure drops of the weights scored last

    # --- measuring ---

    def setup(self, model, ctx: Context) -> None:

        o = self.options
        self.tasks = load_suite(o.suite)
        self.tokenizer = ctx.tokenizer
        self.total_steps = ctx.total_steps  # None outside retain's loop: then only a breach or patience acts
        unknown = sorted(set(o.tasks) - {t.name for t in self.tasks})
        if unknown:
            raise ConfigError(f"mitigations.retention.tasks.{unknown[0]}: not a task of the suite "
                              f"(its tasks: {', '.join(t.name for t in self.tasks)})")
        self.own_task, self.dev_examples = None, None
        if o.task is not None:
            own = load_suite(o.task)
            if len(own) != 1:
                raise ConfigError(f"mitigations.retention.task: {o.task!r} names {len(own)} tasks; name one")
            own[0].check("dev")
            self.own_task = own[0]
        elif getattr(ctx, "dev_examples", None):
            self.dev_examples = ctx.dev_examples
        self.start = on_cpu(trainable(model))
        self.base = self._score(model)
        for name, task in self.base["tasks"].items():
            kind = "perplexity" if is_perplexity(task) else "score"
            given = o.tasks.get(name)
            wrong = "max_drop_points" if kind == "perplexity" else "max_perplexity_increase"
            if isinstance(given, dict) and given.get(wrong) is not None:
                right = "max_perplexity_increase" if kind == "perplexity" else "max_drop_points"
                raise ConfigError(f"mitigations.retention.tasks.{name}.{wrong}: {name} is a {kind}; give {right}")
        value = self._task_value(model)
        self.start_check = {"step": 0, "drops": {t: 0.0 for t in self.base["tasks"]}, "within_budget": True,
                            "budget_used": 0.0, **self._task_fields(value)}

    def _score(self, model) -> dict:

        was_training = model.training
        results = evaluate(model, self.tokenizer, self.tasks, split="dev", limit=self.options.limit, progress=False,
                           batch_size=self.options.batch_size)
        model.train(was_training)
        return results

    def task_source(self) -> dict:
        """What ranks the points: the metric, its source and direction."""
        if self.own_task is not None:
            return {"source": self.options.task, "metric": self.own_task.primary_metric,
                    "higher_is_better": not self.own_task.lower_is_better}
        if self.dev_examples is not None:
            return {"source": "data.dev", "metric": "loss", "higher_is_better": False}
        return {"source": None, "metric": None, "higher_is_better": True}

    def _task_value(self, model) -> float | None:
        """The run's own task on its dev data, as measured (None when there is nothing to measure)."""

        was_training = model.training
        model.eval()
        if self.own_task is not None:
            task = evaluate(model, self.tokenizer, [self.own_task], split="dev", limit=self.options.limit,
                            progress=False, batch_size=self.options.batch_size)["tasks"][self.own_task.name]
            value = primary_value(task)
        elif self.dev_examples is not None:
            value = mean_loss(model, self.dev_examples, self.tokenizer.pad_token_id, self.options.batch_size)
        else:
            value = None
        model.train(was_training)
        return value

    def _task_fields(self, value: float | None) -> dict:
        """task_value as measured, task_score oriented so that higher is better (points.merit)."""
        if value is None:
            return {"task_value": None, "task_score": None}
        return {"task_value": value, "task_score": value if self.task_source()["higher_is_better"] else -value}

    def _within(self, model) -> tuple[bool, dict[str, float]]:
        """(within budget, measured drops); the sure drops it was judged on are left in self.sure."""
        results = self._score(model)
        drops, self.sure = task_drops(self.base, results), sure_drops(self.base, results, self.options.confidence)
        return not over_budget(self.options, self.base, drops, self.sure), drops

    def _scan(self, model, first: list[str]) -> tuple[bool, dict[str, float]]:
        """_within, task by task, stopping at the first breach (tasks named in `first` are scored first): most
        points a repair search measures breach, and one task says so."""

        was_training = model.training
        drops, self.sure = {}, {}
        for task in sorted(self.tasks, key=lambda t: t.name not in first):
            result = evaluate(model, self.tokenizer, [task], split="dev", limit=self.options.limit, progress=False,
                              batch_size=self.options.batch_size)
            base = {"tasks": {task.name: self.base["tasks"][task.name]}}
            drops.update(task_drops(base, result))
            self.sure.update(sure_drops(base, result, self.options.confidence))
            if over_budget(self.options, self.base, {task.name: drops[task.name]},
                           {task.name: self.sure[task.name]}):
                first[:] = [task.name]
                model.train(was_training)
                return False, drops
        model.train(was_training)
        return True, drops

    def _measure(self, model, ok: bool, drops: dict[str, float], step: int, score_task: bool = True) -> dict:
        """A check-like record of the weights now in `model` (scored last by _within or _scan)."""
        sure = self.sure if self.sure is not None and self.sure.keys() == drops.keys() else None
        shares = budget_shares(self.options, self.base, drops, sure)
        units = {t: "relative" if is_perplexity(self.base["tasks"][t]) else "points" for t in drops}
        value = self._task_value(model) if score_task else None
        return {"step": step, "worst_task": max(shares, key=shares.get) if shares else None, "drops": drops,
                "sure_drops": sure, "units": units, "within_budget": ok,
                "budget_used": max(shares.values(), default=0.0), **self._task_fields(value)}

    # --- deciding ---

    def check(self, model, step: int, last_step: bool) -> Decision | None:
        o = self.options
        if step % o.every and not last_step:
            return None
        self.sure = None  # what _within judged on (a replaced _within may leave none)
        ok, drops = self._within(model)
        record = self._measure(model, ok, drops, step)
        before = best_within([self.start_check] + self.history) if o.action != "repair" else \
            max([self.start_check] + self.history, key=merit)
        self.history.append(record)
        if o.action != "stop":  # `stop` never returns to a point: nothing to keep
            self._keep(step, model)
        # a better point: within budget for rollback; any better task score for repair (a line back from it
        # may reach a better point within budget)
        better = merit(record) > merit(before) and (ok or o.action == "repair")
        self.stale = 0 if better else self.stale + 1
        metrics = self._metrics(record)
        breaches = "; ".join(over_budget(self.options, self.base, drops, record["sure_drops"]))
        if o.action == "stop":
            if ok:
                return Decision(metrics=metrics)
            self.outcome = {"action": "stop", "step": step, "reason": breaches}
            return Decision(stop=True, reason=f"retention budget breached at step {step}: {breaches}; stopped",
                            metrics=metrics)
        patience = o.patience_checks()
        if not ok and patience is None:
            why = f"retention budget breached at step {step}: {breaches}"
        elif patience is not None and self.stale >= patience:
            why = f"no better point in {patience} check{'s' if patience > 1 else ''} (step {step})"
            why += f"; breached: {breaches}" if breaches else ""
        elif self.total_steps is not None and step >= self.total_steps:
            why = f"end of training (step {step})" + (f"; breached: {breaches}" if breaches else "")
        else:
            return Decision(metrics=metrics)
        return self._act(model, step, why, breaches, metrics)

    def _act(self, model, step: int, why: str, breaches: str, metrics: dict) -> Decision:
        """End the run at the chosen point: the best check within budget, or (repair) the best point on a line."""
        o = self.options
        checks = [self.start_check] + self.history
        touched = False
        if o.action == "repair":
            now = on_cpu(trainable(model))  # the search moves the model; these go back if nothing better is found
            measured, breached_last = [], []

            def measure(point: Point) -> dict:
                restore(model, self._point_weights(point, now, step))
                ok, drops = self._scan(model, breached_last)
                measured.append(point)
                return self._measure(model, ok, drops, point.end, score_task=ok)

            chosen = repair(checks, set(self.kept), measure, o.repair_iterations)
            touched = bool(measured)
        else:
            chosen = {**best_within(checks), "candidates": []}
            chosen["point"] = Point(0, chosen["step"], 1.0 if chosen["step"] else 0.0)
        point = chosen["point"]
        if point.end == 0:
            point = Point(0, 0, 0.0)  # the start: α 0 on any line from it
        at_now = point.alpha == 1.0 and point.end == step
        weights = None if at_now and not touched else self._point_weights(point, now if touched else None, step)
        if at_now and not any(not c["within_budget"] for c in self.history):
            self.outcome = None  # held at every check and ended where it stood: nothing was decided
        else:
            self.outcome = {
                "action": o.action, "step": step, "reason": breaches or why, "why": why,
                "chosen": {"point": point.describe(), "origin": point.origin, "end": point.end, "alpha": point.alpha,
                           **{k: chosen.get(k) for k in ("task_value", "task_score", "drops", "sure_drops", "budget_used")},
                           "rule": self._rule(len(checks), chosen["candidates"])},
                "candidates": chosen["candidates"]}
            if o.action == "repair":
                self.outcome["alpha"] = point.alpha
            else:
                self.outcome["restored_step"] = point.end
        return Decision(stop=True, reason=f"{why}; {o.action}: {point.describe()}", weights=weights,
                        metrics=metrics)

    def _rule(self, n_checks: int, candidates: list) -> str:
        """Why this point, in words, for retention.json and the report."""
        source = self.task_source()
        ranked = (f"the highest dev {source['metric']} ({source['source']})" if source["source"] else
                  "the furthest along (no dev task score to rank by: set `task` or data.dev)")
        lines = f" and {len(candidates)} line{'s' if len(candidates) != 1 else ''} searched" if candidates else ""
        return f"{ranked} within budget among {n_checks} checks (the start included){lines}"

    def _point_weights(self, point: Point, now: dict | None, step: int) -> dict:

        def at(s: int) -> dict:
            if s == 0:
                return self.start
            if s == step and now is not None:
                return now
            return self.kept[s]

        if point.alpha == 1.0:
            return at(point.end)
        return interpolate(at(point.origin), at(point.end), point.alpha)

    def _keep(self, step: int, model) -> None:
        """Keep this check's weights if they are among the `keep` worth returning to; drop the rest."""
        available = [c for c in self.history if c["step"] in self.kept or c["step"] == step]
        wanted = to_keep(available, self.options.keep)
        if step in wanted:
            self.kept[step] = on_cpu(trainable(model))
        self.kept = {s: w for s, w in self.kept.items() if s in wanted}

    def _metrics(self, record: dict) -> dict:
        units, drops = record["units"], record["drops"]
        metrics = {f"retention/{key}": max(d for t, d in drops.items() if units[t] == unit)
                   for key, unit in (("max_drop_points", "points"), ("max_perplexity_increase", "relative"))
                   if unit in units.values()}
        metrics["retention/within_budget"] = float(record["within_budget"])
        if record["task_value"] is not None:
            metrics["retention/task"] = record["task_value"]
        return metrics

    # --- state and files ---

    def state_dict(self) -> dict:
        """The checks so far and the kept weights: a resumed run ends where an uninterrupted one would."""
        return {"history": self.history, "kept": self.kept, "stale": self.stale}

    def load_state_dict(self, state: dict) -> None:
        if "kept" not in state:  # a checkpoint from before kept points: its last weights within budget
            state = {**state, "kept": {state["last_good_step"]: state["last_good"]} if state["last_good_step"] else {}}
        for weights in state["kept"].values():
            if weights.keys() != self.start.keys():
                raise ValueError("retention: the checkpoint's kept weights are not this run's trainable weights")
        self.history = list(state["history"])
        self.kept = {int(s): on_cpu(w) for s, w in state["kept"].items()}
        self.stale = state.get("stale", 0)

    def files(self) -> dict:
        if not self.history:
            return {}
        o = self.options
        points, rise = o.limits()
        budgets = {}
        for name, task in self.base["tasks"].items():
            limit, weight = o.budget_for(name, is_perplexity(task))
            budgets[name] = {"unit": "relative" if is_perplexity(task) else "points", "budget": limit,
                             "weight": weight}
        return {"retention.json": {"max_drop_points": points, "max_perplexity_increase": rise, "tasks": budgets,
                                   "confidence": o.confidence, "action": o.action,
                                   "patience": o.patience_checks(), "keep": o.keep,
                                   "suite": o.suite, "every": o.every, "task": self.task_source(),
                                   "start": self.start_check, "outcome": self.outcome, "checks": self.history}}
