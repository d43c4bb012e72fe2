"""The retention budget's section of the report: the budget per task, every check, the point chosen and why.

Read from a run's retention.json (retain.mitigations.budget.RetentionBudget.files); a retention.json from
before per-task budgets and kept points has no `tasks` or `start` and gets no section (its one-line summary,
render.budget_lines, still reads it).
"""

from __future__ import annotations

import html


def _budget(name: str, b: dict) -> str:
    if b["weight"] == 0:
        return f"{name}: ignored"
    limit = f"+{100 * b['budget']:g}%" if b["unit"] == "relative" else f"{b['budget']:g} points"
    return f"{name}: {limit}" + ("" if b["weight"] == 1 else f" (weight {b['weight']:g})")


def _value(x) -> str:
    return "-" if x is None else f"{x:.4g}"


def _drops(check: dict, tasks: dict) -> str:
    """The tasks that moved against their budget, worst first: 'english +35%, addition -10.0 pts'."""
    units = check.get("units") or {t: tasks.get(t, {}).get("unit", "points") for t in check["drops"]}
    moved = sorted(((t, d) for t, d in check["drops"].items() if d > 0), key=lambda td: -td[1] *
                   (100 if units.get(td[0]) == "relative" else 1))
    return ", ".join(f"{t} +{100 * d:.0f}%" if units.get(t) == "relative" else f"{t} -{d:.1f} pts"
                     for t, d in moved[:3]) or "none"


def checks_table(b: dict) -> tuple[list[str], list[list[str]]]:
    """Header and rows: one per check, the start first."""
    metric = (b.get("task") or {}).get("metric") or "task"
    header = ["step", "within budget", "budget used", f"dev {metric}", "largest drops"]
    rows = []
    for c in [b["start"]] + b["checks"]:
        used = c.get("budget_used")
        rows.append([str(c["step"]), "yes" if c["within_budget"] else "no",
                     "-" if used is None else f"{100 * used:.0f}%" + (f" ({c['worst_task']})" if c.get("worst_task")
                                                                       and used > 0 else ""),
                     _value(c.get("task_value")), _drops(c, b["tasks"])])
    return header, rows


def summary(b: dict) -> list[str]:
    """Sentences: the budget per task, what ranks the points, and where the run ended and why."""
    if measured_only(b):
        return [f"Every task ignored (weight 0): measured on the dev split at {len(b['checks'])} checks and recorded, "
                "never a breach; the run ended with its last weights."]
    task = b.get("task") or {}
    ranked = (f"Points are ranked by the dev {task['metric']} of {task['source']} "
              f"({'higher' if task['higher_is_better'] else 'lower'} is better)." if task.get("source") else
              "No dev task score was measured (no `task`, no data.dev): the latest point within budget wins.")
    sure = (f" A drop counts when the dev items show it at {100 * b['confidence']:g}% confidence (its measured "
            "value less the paired standard errors); the table shows drops as measured." if b.get("confidence") else "")
    lines = ["Budget per task: " + "; ".join(_budget(n, t) for n, t in b["tasks"].items()) + "." + sure, ranked,
             f"Action {b['action']}" + (f", patience {b['patience']} checks" if b.get("patience") else
                                        ", at the first breach" if b["action"] != "stop" else "")
             + f"; the weights of {b.get('keep', '?')} checks kept to return to."]
    outcome = b.get("outcome")
    if not outcome:
        lines.append(f"Held at all {len(b['checks'])} checks; the run ended with its last weights.")
    elif "chosen" not in outcome:
        lines.append(f"Stopped at step {outcome['step']}: {outcome.get('reason', '')}.")
    else:
        chosen, start = outcome["chosen"], b["start"].get("task_value")
        gain = (f" (start: {_value(start)})" if start is not None else "")
        metric = task.get("metric") or "task"
        lines.append(f"Ended at {chosen['point']}: dev {metric} {_value(chosen.get('task_value'))}"
                     f"{gain}, {100 * (chosen.get('budget_used') or 0):.0f}% of the budget used. Chosen as "
                     f"{chosen['rule']}. Acted because: {outcome['why']}.")
        for cand in outcome.get("candidates", []):
            where = "the start" if cand["origin"] == 0 else f"step {cand['origin']}"
            lines.append(f"Searched the line from {where} toward step {cand['end']}: within budget up to "
                         f"alpha {cand['alpha']:.3f}, dev {metric} {_value(cand.get('task_value'))}.")
    return lines


def has_section(b: dict) -> bool:
    return "start" in b and "tasks" in b


def measured_only(b: dict) -> bool:
    """Checks without a budget: every task `ignore`d (weight 0), so each was measured and recorded, never a breach
    (what `retain demo` runs to draw forgetting over training)."""
    return bool(b.get("tasks")) and all(t["weight"] == 0 for t in b["tasks"].values())


def _title(b: dict) -> str:
    return "Retention checks (no budget)" if measured_only(b) else "Retention budget"


def retention_markdown(report: dict) -> list[str]:
    lines = []
    for run, b in report.get("retention_budgets", {}).items():
        if not has_section(b):
            continue
        header, rows = checks_table(b)
        lines += [f"## {_title(b)}: {run}", ""] + summary(b) + [""]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(r) + " |" for r in rows] + [""]
    return lines


def retention_html(report: dict) -> list[str]:
    esc = html.escape
    parts = []
    for run, b in report.get("retention_budgets", {}).items():
        if not has_section(b):
            continue
        header, rows = checks_table(b)
        parts.append(f"<h2>{_title(b)}: {esc(run)}</h2>" + "".join(f"<p>{esc(s)}</p>" for s in summary(b)))
        parts.append("<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>"
                     + "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in rows)
                     + "</table>")
    return parts
