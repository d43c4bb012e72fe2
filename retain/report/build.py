"""The forgetting report: what each fine-tune gained and lost, per capability and task, with CIs.

    write_report([base.json, tuned.json, ...], out_dir, run_dirs=[...]) -> paths
writes report.json (every number), report.md, and report.html (self-contained, plots embedded).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from retain.io import atomic_write_json, atomic_write_text
from retain.report import plots
from retain.report.render import format_relative, render_html, render_markdown
from retain.report.stats import Change, paired_bootstrap, verdict


def load_results(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: results file not found (write one with `retain eval`)") from None


def capability_groups(tasks: dict) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for name, task in tasks.items():
        groups.setdefault(task["capability"], []).append(name)
    return groups


def compare(before: dict, after: dict, seed: int = 0) -> dict:
    """Rows per task and per capability for the tasks both results share."""
    shared = [t for t in before["tasks"] if t in after["tasks"]]
    task_rows = {}
    for name in shared:
        b, a = before["tasks"][name], after["tasks"][name]
        metric = b["primary_metric"]
        change = paired_bootstrap(b["items"], a["items"], metric, seed=seed)
        task_rows[name] = {"capability": b["capability"], "metric": metric, "lower_is_better": b["lower_is_better"],
                           "chance": b.get("chance"), **asdict(change),
                           "verdict": verdict(change, b["lower_is_better"])}
    capability_rows = {}
    for capability, names in capability_groups({t: before["tasks"][t] for t in shared}).items():
        metrics = {before["tasks"][t]["primary_metric"] for t in names}
        if len(names) == 1 or len(metrics) > 1 or metrics & {"word_perplexity", "byte_perplexity"}:
            capability_rows[capability] = {**task_rows[names[0]], "tasks": names}
            continue
        # same mean-type metric: pool the items of all its tasks, still paired
        metric = metrics.pop()
        pooled_b = [{**i, "id": (t, i["id"])} for t in names for i in before["tasks"][t]["items"]]
        pooled_a = [{**i, "id": (t, i["id"])} for t in names for i in after["tasks"][t]["items"]]
        change = paired_bootstrap(pooled_b, pooled_a, metric, seed=seed)
        lower = before["tasks"][names[0]]["lower_is_better"]
        capability_rows[capability] = {"capability": capability, "metric": metric, "lower_is_better": lower,
                                       **asdict(change), "verdict": verdict(change, lower), "tasks": names}
    return {"tasks": task_rows, "capabilities": capability_rows}


def describe(capability: str, row: dict) -> str:
    """'lost 23.0 pts of country facts (95% CI -27.1 to -19.0)' and the like."""
    if row["relative"]:
        return (f"{capability} {row['metric'].replace('_', ' ')} {format_relative(row['delta'])} "
                f"(95% CI {format_relative(row['ci_low'])} to {format_relative(row['ci_high'])})")
    pts = 100 * row["delta"]
    word = "gained" if row["verdict"] == "rose" else "lost"
    return (f"{word} {abs(pts):.1f} pts of {capability} "
            f"(95% CI {100 * row['ci_low']:+.1f} to {100 * row['ci_high']:+.1f})")


def headline(label: str, comparison: dict) -> str:
    rows = [(c, r) for c, r in comparison["capabilities"].items() if r["verdict"] != "no significant change"]
    if not rows:
        return f"{label}: no capability changed significantly."
    rows.sort(key=lambda cr: (cr[1]["verdict"] != "rose", -abs(cr[1]["delta"])))
    steady = len(comparison["capabilities"]) - len(rows)
    tail = f"; {steady} other capabilit{'y' if steady == 1 else 'ies'} unchanged" if steady else ""
    return f"{label}: " + "; ".join(describe(c, r) for c, r in rows) + tail + "."


def largest_drop(comparison: dict, exclude: tuple[str, ...] = ()) -> float:
    """The largest fall, in points, among score-type capabilities not in `exclude` (0 if none fell)."""
    return max((-r["delta"] for c, r in comparison["capabilities"].items()
                if not r["relative"] and not r["lower_is_better"] and c not in exclude), default=0.0)


def write_report(result_paths: list[Path], out: Path, run_dirs: list[Path] = (), labels: list[str] | None = None,
                 seed: int = 0) -> dict:
    if len(result_paths) < 2:
        raise ValueError("a report compares a base results file with at least one fine-tune's")
    results = [load_results(p) for p in result_paths]
    labels = labels or [Path(p).stem for p in result_paths]
    if len(labels) != len(results):
        raise ValueError(f"{len(labels)} labels for {len(results)} results files")
    base_label = labels[0]
    comparisons = {label: compare(results[0], r, seed=seed) for label, r in zip(labels[1:], results[1:])}
    headlines = [headline(label, c) for label, c in comparisons.items()]
    figures = {"capabilities": plots.capability_bars(base_label, comparisons)}
    curves = plots.training_curves(run_dirs)
    if curves:
        figures["training"] = curves
    budgets = {str(d): json.loads((Path(d) / "retention.json").read_text())
               for d in run_dirs if (Path(d) / "retention.json").is_file()}
    report = {"base": base_label, "results": [str(p) for p in result_paths], "split": results[0].get("split"),
              "headlines": headlines, "comparisons": comparisons, "retention_budgets": budgets,
              "scores": {label: {t: r["metrics"] for t, r in res["tasks"].items()} for label, res in zip(labels, results)}}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "report.json", report)
    atomic_write_text(out / "report.md", render_markdown(report))
    atomic_write_text(out / "report.html", render_html(report, figures))
    return {"json": out / "report.json", "md": out / "report.md", "html": out / "report.html",
            "headline": "\n".join(headlines)}


__all__ = ["Change", "compare", "headline", "write_report", "largest_drop"]
