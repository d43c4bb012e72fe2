"""lm-eval's group scores in the report, beside the capability rows that pool the same items.

    group_table(results, labels, comparisons) -> [{group, metric, weight_by_size, subtasks, n, scores, pooled}]

A results file records, for each lm-eval group (and retain's all-subjects mmlu), the group's score as lm-eval
aggregates it (retain.evaluation.groups). The report lists it per results label (a label's seeds averaged) next
to the capability row of the same name, whose score pools the items: equal to lm-eval's size-weighted mean,
different from an unweighted one (weight_by_size: false) when subtasks differ in size.
"""

from __future__ import annotations

import html


def group_table(results: list[dict], labels: list[str], comparisons: dict) -> list[dict]:
    """One row per group and aggregated metric that every results file scored; `labels[k]` names results[k]
    (the base first; a repeated label: one recipe's seeds, averaged)."""
    shared = [g for g in results[0].get("groups", {}) if all(g in r.get("groups", {}) for r in results)]
    rows = []
    for group in shared:
        base = results[0]["groups"][group]
        for metric, weighted in base["weight_by_size"].items():
            scores: dict[str, list[float]] = {}
            for label, res in zip(labels, results):
                scores.setdefault(label, []).append(res["groups"][group]["metrics"][metric])
            # the capability row of the group's name (lm-eval tasks' capability is their innermost group)
            pooled = {label: {"before": c["capabilities"][group]["before"], "after": c["capabilities"][group]["after"]}
                      for label, c in comparisons.items() if c["capabilities"].get(group, {}).get("metric") == metric}
            rows.append({"group": group, "metric": metric, "weight_by_size": weighted,
                         "subtasks": len(base["subtasks"]), "n": sum(s["n"] for s in base["subtasks"].values()),
                         "scores": {label: sum(v) / len(v) for label, v in scores.items()}, "pooled": pooled})
    return rows


def _value(metric: str, x: float) -> str:
    return f"{x:,.2f}" if "perplexity" in metric or metric == "bits_per_byte" else f"{100 * x:.1f}"


def _cells(report: dict) -> tuple[list[str], list[list[str]]]:
    rows = report.get("lm_eval_groups", [])
    labels = list(rows[0]["scores"]) if rows else []
    header = ["group", "metric", "lm-eval weighting", "subtasks", "n"] + labels + ["pooled items (capability row)"]
    body = []
    for r in rows:
        pooled = "; ".join(f"{label}: {_value(r['metric'], p['before'])} → {_value(r['metric'], p['after'])}"
                           for label, p in r["pooled"].items()) or "-"
        body.append([r["group"], r["metric"], "by size" if r["weight_by_size"] else "unweighted", str(r["subtasks"]),
                     str(r["n"])] + [_value(r["metric"], r["scores"][label]) for label in labels] + [pooled])
    return header, body


NOTE = ("Each group's score as lm-eval aggregates its subtasks' (lm_eval --tasks GROUP reports the same on the same "
        "model): by size, each subtask weighted by its documents, which equals the pooled items of the capability "
        "row; unweighted, each subtask counts once.")


def groups_markdown(report: dict) -> list[str]:
    if not report.get("lm_eval_groups"):
        return []
    header, body = _cells(report)
    return (["## lm-eval group scores", "", NOTE, "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            + ["| " + " | ".join(row) + " |" for row in body] + [""])


def groups_html(report: dict) -> list[str]:
    if not report.get("lm_eval_groups"):
        return []
    esc = html.escape
    header, body = _cells(report)
    return [f"<h2>lm-eval group scores</h2><p>{esc(NOTE)}</p><table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in header)
            + "</tr>" + "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in body)
            + "</table>"]
