"""Answers before and after: for each generation task, a few items whose outcome changed, as the model wrote them.

    changed_answers(before, after, per_task=3) -> {task: [{id, prompt, target, before, after, outcome}]}

A generation task's results hold each item's prediction (and, from results written since the report shows them,
its prompt and target). An item's outcome is its primary metric (exact match, ...); only items where it differs
between the base and the fine-tune are shown, losses first, then gains, in item order: the answers that explain
the numbers ("The capital of France is Paris." turning into "France.").
"""

from __future__ import annotations

import html

OUTCOME_CLASS = {"lost": "worse", "gained": "better"}  # the report's colours for the after-answer
PROMPT_TAIL = 160  # characters of a prompt shown: the end, where the question is (a few-shot prefix comes first)


def _tail(text: str | None) -> str | None:
    if text is None:
        return None
    text = text.rstrip()
    return text if len(text) <= PROMPT_TAIL else "…" + text[-PROMPT_TAIL:]


def changed_answers(before: dict, after: dict, per_task: int = 3) -> dict[str, list[dict]]:
    """Up to `per_task` items per generation task (tasks both results share, with predictions) whose primary
    metric changed; each {id, prompt, target, before, after, outcome: 'lost' | 'gained'} (prompt and target None
    in results written before they were recorded)."""
    shown = {}
    for name, task in before["tasks"].items():
        theirs = after["tasks"].get(name)
        if theirs is None or task.get("kind") != "generation" or task["lower_is_better"]:
            continue
        metric = task["primary_metric"]
        pairs = [(b, a) for b, a in zip(task["items"], theirs["items"]) if "prediction" in b and "prediction" in a]
        changed = [(b, a) for b, a in pairs if b.get(metric) != a.get(metric)]
        changed.sort(key=lambda ba: ba[1][metric] > ba[0][metric])  # stable: losses first, each in item order
        if changed:
            shown[name] = [{"id": b["id"], "prompt": _tail(b.get("context")), "target": b.get("target"),
                            "before": b["prediction"], "after": a["prediction"],
                            "outcome": "gained" if a[metric] > b[metric] else "lost", "metric": metric}
                           for b, a in changed[:per_task]]
    return shown


def _quote(text: str | None) -> str:
    return "-" if text is None else repr(text.strip())[1:-1] or "(nothing)"


def answers_markdown(report: dict) -> list[str]:
    lines = []
    for label, tasks in report.get("answers", {}).items():
        if not tasks:
            continue
        lines += [f"## {label}: answers that changed", ""]
        for task, shown in tasks.items():
            lines += [f"**{task}** ({shown[0]['metric']}):", "", "| prompt | expected | base | " + label + " |",
                      "|---|---|---|---|"]
            cells = [[_quote(a["prompt"]), _quote(a["target"]), _quote(a["before"]), f"{_quote(a['after'])} "
                      f"({a['outcome']})"] for a in shown]
            lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in cells]
            lines.append("")
    return lines


def answers_html(report: dict) -> list[str]:
    esc = html.escape
    parts = []
    for label, tasks in report.get("answers", {}).items():
        if not tasks:
            continue
        parts.append(f"<h2>{esc(label)}: answers that changed</h2>")
        for task, shown in tasks.items():
            parts.append(f"<p><b>{esc(task)}</b> ({esc(shown[0]['metric'])})</p><table class='answers'><tr>"
                         f"<th>prompt</th><th>expected</th><th>base</th><th>{esc(label)}</th></tr>")
            parts += [f"<tr><td>{esc(_quote(a['prompt']))}</td><td>{esc(_quote(a['target']))}</td>"
                      f"<td>{esc(_quote(a['before']))}</td><td class='{OUTCOME_CLASS[a['outcome']]}'>"
                      f"{esc(_quote(a['after']))}</td></tr>" for a in shown]
            parts.append("</table>")
    return parts
