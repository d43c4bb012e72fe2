"""The forgetting report: what each fine-tune gained and lost, per capability and task, with CIs.

    write_report([base.json, tuned.json, ...], out_dir, run_dirs=[...]) -> paths
writes report.json (every number), report.md, and report.html (self-contained, plots embedded).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from retain.core.schema import ConfigError
from retain.evaluation.compare import NO_CHANGE, pooled_chance, pooled_items, task_change, verdict, worse_by
from retain.evaluation.results import Results, check_comparable, load_results, relative, shared_tasks
from retain.evaluation.stats import Change, seeded_bootstrap
from retain.core.files import atomic_write_json, atomic_write_text
from retain.report import plots
from retain.report.render import format_change, metric_words, render_html, render_markdown
from retain.report.answers import changed_answers
from retain.report.groups import group_table
from retain.report.retention import measured_only
from retain.report.reward_hacking import hacking_lines
from retain.report.runs import load_run_file, next_steps, run_of
from retain.report.severity import rank, severity


def capability_groups(tasks: dict) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for name, task in tasks.items():
        groups.setdefault(task["capability"], []).append(name)
    return groups


def _row(change: Change, lower_is_better: bool, chance: float | None, **fields) -> dict:
    row = {**fields, "lower_is_better": lower_is_better, "chance": chance, **asdict(change),
           "verdict": verdict(change, lower_is_better)}
    row["severity"] = severity(row)
    return row


def secondary_metrics(task: dict) -> list[str]:
    """The task's other per-item mean metrics (contains beside exact_match, acc_norm beside acc)."""
    return [m for m in task["metrics"] if m != task["primary_metric"] and not relative(m)
            and all(isinstance(i.get(m), (int, float)) and not isinstance(i.get(m), bool) for i in task["items"])]


def compare(before: Results, after: Results | list[Results], seed: int = 0) -> dict:
    """Rows per task and per capability for the tasks both results share, and the run's forgetting grade.

    `after` is one fine-tune's results, or a list of them: one recipe trained with several seeds, whose rows
    hold the mean change, a two-level bootstrap CI and the change of each seed (`per_seed`).

    A row is a paired Change of the primary metric with its verdict ('better' / 'worse' / 'no significant
    change') and severity (see retain.report.severity). A task row also holds `other_metrics`, the same for
    its other per-item metrics; a capability row holds `moved`, the significant changes hidden by its
    unchanged primary metric (another metric of a task, or one task of a pooled capability).
    """
    afters = after if isinstance(after, list) else [after]
    shared = shared_tasks(before, afters)
    task_rows = {}
    for name in shared:
        b, seeds = before["tasks"][name], [a["tasks"][name] for a in afters]
        metric, lower = b["primary_metric"], b["lower_is_better"]
        task_rows[name] = _row(task_change(b, seeds, seed=seed), lower, b.get("chance"), capability=b["capability"],
                               metric=metric)
        others = [m for m in secondary_metrics(b) if all(m in secondary_metrics(a) for a in seeds)]
        task_rows[name]["other_metrics"] = {m: _row(task_change(b, seeds, m, seed=seed), lower, None, metric=m)
                                            for m in others}
    capability_rows = {}
    for capability, names in capability_groups({t: before["tasks"][t] for t in shared}).items():
        metrics = {before["tasks"][t]["primary_metric"] for t in names}
        if len(names) == 1 or len(metrics) > 1 or any(relative(m) for m in metrics):
            row = {**task_rows[names[0]], "tasks": names}
            row.pop("other_metrics")
        else:  # same mean-type metric: pool the items of all its tasks, still paired
            metric = metrics.pop()
            tasks_b = [before["tasks"][t] for t in names]
            pooled_a = [pooled_items(a, names) for a in afters]
            row = _row(seeded_bootstrap(pooled_items(before, names), pooled_a, metric, seed=seed),
                       tasks_b[0]["lower_is_better"], pooled_chance(tasks_b), capability=capability, metric=metric,
                       tasks=names)
        moved = [{"task": t, **task_rows[t]} for t in names if len(names) > 1]
        moved += [{"task": t, **r} for t in names for r in task_rows[t]["other_metrics"].values()]
        row["moved"] = [{k: v for k, v in m.items() if k != "other_metrics"} for m in moved
                        if m["verdict"] != NO_CHANGE] if row["verdict"] == NO_CHANGE else []
        capability_rows[capability] = row
    return {"tasks": task_rows, "capabilities": capability_rows,
            "forgetting": forgetting(task_rows, capability_rows)}


def forgetting(task_rows: dict, capability_rows: dict) -> dict:
    """The run's grade: the worst severity of any capability, task, or other metric of a task, and where
    (between equal grades, as the headline orders them: a perplexity first, then the larger change)."""
    graded = [(r, c) for c, r in capability_rows.items()]
    graded += [(r, f"task {t}") for t, r in task_rows.items()]
    graded += [(o, f"task {t}, {m}") for t, r in task_rows.items() for m, o in r["other_metrics"].items()]
    if not graded:
        return {"severity": "none", "worst": None}
    row, where = max(graded, key=lambda g: (rank(g[0]["severity"]), g[0]["relative"], abs(g[0]["delta"])))
    return {"severity": row["severity"], "worst": where if row["severity"] != "none" else None}


def _points(row: dict) -> tuple[str, str]:
    """('lost 60.0 pts', '(severe; 95% CI -72.0 to -48.0)') for a score row."""
    change, low, high = format_change(row)
    word = "gained" if row["verdict"] == "better" else "lost"
    grade = f"{row['severity']}; " if row["verdict"] == "worse" else ""
    return f"{word} {change.lstrip('+-')} pts", f"({grade}95% CI {low} to {high})"


def describe(capability: str, row: dict) -> str:
    """One change in the direction that matters, in the table's unit, with its severity if a loss:
    'lost 23.0 pts of country facts (severe; 95% CI -27.1 to -19.0)',
    'English text: perplexity ×1,658 (worse, catastrophic; 95% CI ×1,201 to ×2,087)'."""
    if not row["relative"]:
        amount, ci = _points(row)
        return f"{amount} of {capability} {ci}"
    change, low, high = format_change(row)
    grade = f", {row['severity']}" if row["verdict"] == "worse" else ""
    return f"{capability}: {metric_words(row['metric'])} {change} ({row['verdict']}{grade}; 95% CI {low} to {high})"


def describe_moved(capability: str, row: dict) -> str:
    """'world capitals (chat): exact_match unchanged, but contains lost 60.0 pts (severe; 95% CI ...)'."""
    pooled = len(row.get("tasks", ())) > 1
    parts = []
    for m in row["moved"]:
        what = f"{m['task']} {m['metric']}" if pooled else m["metric"]
        parts.append(describe(what, m) if m["relative"] else " ".join((what,) + _points(m)))
    return f"{capability}: {row['metric']} unchanged, but " + " and ".join(parts)


def headline(label: str, comparison: dict) -> str:
    """The run's forgetting grade, then each significant change (gains first, then losses, worst first), then
    capabilities whose primary metric held while something else in them moved, then the count unchanged."""
    rows = comparison["capabilities"]
    changed = [(c, r) for c, r in rows.items() if r["verdict"] != NO_CHANGE]
    moved = [(c, r) for c, r in rows.items() if r["verdict"] == NO_CHANGE and r.get("moved")]
    changed.sort(key=lambda cr: (cr[1]["verdict"] != "better", -rank(cr[1]["severity"]), not cr[1]["relative"],
                                 -abs(cr[1]["delta"])))
    steady = len(rows) - len(changed) - len(moved)
    parts = [describe(c, r) for c, r in changed] + [describe_moved(c, r) for c, r in moved]
    if steady:
        parts.append(f"{steady} {'other ' if parts else ''}capabilit{'y' if steady == 1 else 'ies'} unchanged")
    lead = ship_verdict(label, comparison).split(" — ")[0]
    return f"{lead} — " + ("; ".join(parts) or "no capability was compared") + "."


# What a run's forgetting grade means for shipping it (the grades: retain.report.severity)
SHIP = {"none": "ship it: nothing it knew was lost", "mild": "ship it: every loss under 5 points (perplexity +10%)",
        "moderate": "review before shipping: a loss of 5 to 15 points (perplexity +10% to +50%)",
        "severe": "do not ship", "catastrophic": "do not ship"}


def ship_verdict(label: str, comparison: dict) -> str:
    """One line per run, how bad and whether to ship: 'unprotected: catastrophic forgetting (worst: English
    text) — do not ship'."""
    grade = comparison.get("forgetting", {}).get("severity", "none")
    where = comparison.get("forgetting", {}).get("worst")
    lead = "no significant forgetting" if grade == "none" else f"{grade} forgetting (worst: {where})"
    # The fine-tuning task is the capability named "task: ..." (retain init and the lab's task files name it so):
    # a run that kept everything but did not learn it has nothing to ship either.
    tasks = {c: r for c, r in comparison.get("capabilities", {}).items() if c.startswith("task:")}
    if SHIP[grade].startswith("ship it") and tasks and not any(r["verdict"] == "better" for r in tasks.values()):
        return f"{label}: {lead} — nothing to ship: {', '.join(tasks)} did not improve significantly"
    return f"{label}: {lead} — {SHIP[grade]}"


def verdict_line(label: str, comparison: dict, budget_points: float | None = None) -> str:
    """The ship verdict, and for a run held to a retention budget whether the report's items kept to it: 'protected:
    mild forgetting (worst: arithmetic) — ship it: ...; on these items every task is within its 5-point retention
    budget' (the budget itself was checked on the dev split while training)."""
    line = ship_verdict(label, comparison)
    if budget_points is None:
        return line
    # the budget holds each task's primary score (retain.mitigations.budget), so it is read per task here too
    lost, task = max([(0.0, None)] + [(100 * worse_by(r["delta"], r["lower_is_better"]), t)
                                      for t, r in comparison["tasks"].items() if not r["relative"]],
                     key=lambda lt: lt[0])
    if lost <= budget_points:
        return f"{line}; on these items every task is within its {budget_points:g}-point retention budget"
    return f"{line}; on these items {task} lost {lost:.1f} pts, over its {budget_points:g}-point retention budget"


def largest_drop(comparison: dict, exclude: tuple[str, ...] = ()) -> float:
    """The largest loss (as a fraction: 0.6 = 60 points) among score-type capabilities not in `exclude`, in the
    direction that matters (0 if none got worse)."""
    return max([0.0] + [worse_by(r["delta"], r["lower_is_better"])  # 0.0 first: no "-0.0" on ties
                        for c, r in comparison["capabilities"].items() if not r["relative"] and c not in exclude])


def check_labels(labels: list[str] | None, result_paths: list[Path]) -> None:
    """One label per results file; a label may repeat (one recipe's seeds), the base's may not (a ConfigError,
    which is a ValueError, says what to give)."""
    if not labels:
        return
    if len(labels) != len(result_paths):
        raise ConfigError(f"--label: {len(labels)} label{'' if len(labels) == 1 else 's'} for {len(result_paths)} "
                          f"results files; give one per file, in order (the base first), or none")
    if labels.count(labels[0]) > 1:
        raise ConfigError(f"--label: {labels[0]} is the base's label (the first file) and is given again; the base is "
                          "one model: give the fine-tunes other labels (files that share a label are one recipe's "
                          "training seeds)")


def seed_groups(labels: list[str]) -> dict[str, list[int]]:
    """Label -> the indices of its results files, fine-tunes only (files that share a label: one recipe's seeds),
    in order of first appearance: ['base', 'a', 'b', 'a'] -> {'a': [1, 3], 'b': [2]}."""
    groups: dict[str, list[int]] = {}
    for k, label in enumerate(labels[1:], start=1):
        groups.setdefault(label, []).append(k)
    return groups


def score_key(labels: list[str], k: int) -> str:
    """The name of results file k in the report's scores: its label, or 'label/j' for the j-th seed of a label."""
    if labels.count(labels[k]) == 1:
        return labels[k]
    return f"{labels[k]}/{labels[:k + 1].count(labels[k])}"


def write_report(result_paths: list[Path], out: Path, run_dirs: list[Path] = (), labels: list[str] | None = None,
                 seed: int = 0) -> dict:
    if len(result_paths) < 2:
        raise ConfigError("a report compares a base results file with at least one fine-tune's: give two or more")
    check_labels(labels, result_paths)
    results = [load_results(p) for p in result_paths]
    check_comparable(result_paths, results)  # the same items scored in every file, before anything is written
    labels = labels or [Path(p).stem for p in result_paths]
    base_label = labels[0]
    groups = seed_groups(labels)
    comparisons = {label: compare(results[0], [results[k] for k in ks] if len(ks) > 1 else results[ks[0]], seed=seed)
                   for label, ks in groups.items()}
    headlines = [headline(label if len(groups[label]) == 1 else f"{label} ({len(groups[label])} seeds)", c)
                 for label, c in comparisons.items()]
    # the run behind each fine-tune (its first seed's): a --run, or the run whose final/ its results scored
    runs = {label: run_of(results[ks[0]], run_dirs) for label, ks in groups.items()}
    run_dirs = list({Path(d).resolve(): Path(d) for d in [*run_dirs, *filter(None, runs.values())]}.values())
    figures = {"capabilities": plots.capability_bars(base_label, comparisons)}
    forgetting_over_steps = plots.forgetting_curves(run_dirs)
    if forgetting_over_steps:
        figures["forgetting over training"] = forgetting_over_steps
    curves = plots.training_curves(run_dirs)
    if curves:
        figures["training"] = curves
    warnings = plots.warning_curves(run_dirs)
    if warnings:
        figures["early warnings"] = warnings
    budgets = {str(d): load_run_file(Path(d) / "retention.json")
               for d in run_dirs if (Path(d) / "retention.json").is_file()}
    budget_of = {label: None if measured_only(budgets.get(str(run)) or {}) else
                 (budgets.get(str(run)) or {}).get("max_drop_points") for label, run in runs.items()}
    report = {"base": base_label, "results": [str(p) for p in result_paths], "split": results[0].get("split"),
              "models": {score_key(labels, k): res.get("model") for k, res in enumerate(results)},
              "verdicts": {label: verdict_line(label, c, budget_of[label]) for label, c in comparisons.items()},
              "headlines": headlines,
              "answers": {label: changed_answers(results[0], results[ks[0]]) for label, ks in groups.items()},
              "next_steps": {label: next_steps(runs[label]) for label, c in comparisons.items()
                             if rank(c["forgetting"]["severity"]) >= rank("moderate") and runs[label]},
              "comparisons": comparisons, "lm_eval_groups": group_table(results, labels, comparisons),
              "retention_budgets": budgets,
              "reward_hacking": hacking_lines([Path(d) for d in run_dirs], comparisons),
              "seeds": {label: [str(result_paths[k]) for k in ks] for label, ks in groups.items() if len(ks) > 1},
              "scores": {score_key(labels, k): {t: r["metrics"] for t, r in res["tasks"].items()}
                         for k, res in enumerate(results)}}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "report.json", report)
    atomic_write_text(out / "report.md", render_markdown(report))
    atomic_write_text(out / "report.html", render_html(report, figures))
    return {"json": out / "report.json", "md": out / "report.md", "html": out / "report.html",
            "headline": "\n".join(headlines), "verdicts": "\n".join(report["verdicts"].values())}


__all__ = ["Change", "compare", "headline", "ship_verdict", "verdict_line", "write_report", "largest_drop"]
