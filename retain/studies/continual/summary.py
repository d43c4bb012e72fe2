"""What a finished sequence shows: the accuracy matrix and its summaries, capability curves, routing.

    summarize_sequence(seq, task_names, eval_dir, routing) -> dict   (summary.json)
    write_sequence_report(summary, out)                               summary.md, heatmap.png, capabilities.png

Scores are fractions in [0, 1] in the JSON and points (×100) in the Markdown.
"""

from __future__ import annotations

import math
from pathlib import Path

from retain.studies.continual import metrics
from retain.evaluation.compare import NO_CHANGE, task_change, verdict
from retain.evaluation.results import Results, load_results
from retain.evaluation.stats import statistic
from retain.core.files import atomic_write_text
from retain.studies.continual.figures import capability_curves_png, heatmap_png


def capability_curves(rows: list[Results], names: list[str], resamples: int, seed: int) -> dict:
    """Per capability task: its score after each row, and each row's change from the base with a paired CI."""
    curves = {}
    for name in names:
        base = rows[0]["tasks"][name]
        metric, lower = base["primary_metric"], base["lower_is_better"]
        changes = []
        for row in rows[1:]:
            change = task_change(base, [row["tasks"][name]], seed=seed, resamples=resamples)
            changes.append({"delta": change.delta, "ci_low": change.ci_low, "ci_high": change.ci_high,
                            "relative": change.relative, "verdict": verdict(change, lower)})
        curves[name] = {"metric": metric, "lower_is_better": lower, "capability": base["capability"],
                        "scores": [statistic(row["tasks"][name]["items"], metric) for row in rows],
                        "changes": changes}
    return curves


def summarize_sequence(seq, task_names: list[str], eval_dir: Path, routing: dict) -> dict:
    T = len(seq.stages)
    rows = [load_results(eval_dir / "base.json")] + [load_results(eval_dir / f"stage-{k}.json")
                                                       for k in range(1, T + 1)]
    scores = metrics.item_scores(rows, task_names)
    capability_names = [t for t in rows[0]["tasks"] if t not in task_names]
    summary = {
        "stages": [s.name for s in seq.stages], "tasks": task_names,
        "strategy": {"isolation": seq.isolation is not None, "optimizer": seq.optimizer,
                     "replay_buffer": seq.replay_buffer is not None, "multitask": seq.multitask},
        "split": seq.split, "limit": seq.limit, "items": {t: int(s.shape[1]) for t, s in zip(task_names, scores)},
        **metrics.summarize(scores, seq.resamples, seq.seed),
        "capabilities": capability_curves(rows, capability_names, seq.resamples, seq.seed),
    }
    if seq.isolation is not None:
        routed = [rows[0]] + [load_results(eval_dir / f"stage-{k}.routed.json") for k in range(1, T + 1)]
        summary["routed"] = metrics.summarize(metrics.item_scores(routed, task_names), seq.resamples, seq.seed)
        final = routing[T]
        summary["routing"] = {
            "per_task": final,
            "sequence_tasks": sum(final[t] for t in task_names) / len(task_names),
            "capabilities": (sum(final[t] for t in capability_names) / len(capability_names)
                             if capability_names else None),
            "per_stage": {str(k): routing[k] for k in sorted(routing)}}
    if (eval_dir / "multitask.json").is_file():
        reference = metrics.item_scores([load_results(eval_dir / "multitask.json")], task_names)
        summary["multitask"] = {
            "scores": dict(zip(task_names, metrics.matrix(reference)[0].tolist())),
            "acc": metrics.final_row_estimate(reference, seq.resamples, seq.seed).as_dict(),
            "sequence_minus_multitask": metrics.compare(scores, reference, seq.resamples, seq.seed,
                                                        names=("acc",))["acc"]}
    return summary


def points(x: float, signed: bool = True) -> str:
    """A fraction as points; signed for a change (BWT, a difference), unsigned for a level (ACC)."""
    if x is None or not math.isfinite(x):
        return "n/a"
    return f"{round(100 * x, 1) + 0.0:{'+' if signed else ''}.1f}"  # + 0.0: no "-0.0"


def estimate(e: dict, signed: bool = True) -> str:
    return f"{points(e['value'], signed)} [{points(e['ci_low'], signed)}, {points(e['ci_high'], signed)}]"


def matrix_table(R: list[list[float]], stages: list[str], tasks: list[str]) -> list[str]:
    lines = ["| after | " + " | ".join(tasks) + " |", "|---" * (len(tasks) + 1) + "|"]
    for i, row in enumerate(R):
        label = "base" if i == 0 else f"stage {i} ({stages[i - 1]})"
        lines.append(f"| {label} | " + " | ".join(f"{100 * v:.1f}" for v in row) + " |")
    return lines


def summary_lines(summary: dict, key: str = "") -> list[str]:
    block = summary[key] if key else summary
    return [f"- ACC {estimate(block['acc'], signed=False)} · BWT {estimate(block['bwt'])} · FWT {estimate(block['fwt'])} · "
            f"forgetting {estimate(block['forgetting'])} (points, 95% paired-bootstrap CI)"]


def capability_table(curves: dict, stages: list[str]) -> list[str]:
    lines = ["| capability (metric) | base | " + " | ".join(f"after {s}" for s in stages) + " |",
             "|---" * (len(stages) + 2) + "|"]
    for name, c in curves.items():
        cells = []
        for score, change in zip(c["scores"][1:], c["changes"]):
            shown = (f"{change['delta']:+.0%} [{change['ci_low']:+.0%}, {change['ci_high']:+.0%}]" if change["relative"]
                     else f"{100 * change['delta']:+.1f} [{100 * change['ci_low']:+.1f}, {100 * change['ci_high']:+.1f}]")
            cells.append(f"{score:.4g}: {shown}" + ("" if change["verdict"] != NO_CHANGE else " (n.s.)"))
        lines.append(f"| {name} ({c['metric']}) | {c['scores'][0]:.4g} | " + " | ".join(cells) + " |")
    return lines


def sequence_markdown(summary: dict) -> str:
    stages, tasks = summary["stages"], summary["tasks"]
    out = [f"# Sequence: {' → '.join(stages)}", "",
           f"Accuracy matrix R[i][j] (primary metric ×100; {summary['split']} split, items per task: "
           f"{', '.join(f'{t} {n}' for t, n in summary['items'].items())}):", "",
           *matrix_table(summary["matrix"], stages, tasks), "", *summary_lines(summary)]
    if "routed" in summary:
        r = summary["routing"]
        out += ["", "Adapters picked by the router (lowest prompt perplexity) instead of the task id:", "",
                *matrix_table(summary["routed"]["matrix"], stages, tasks), "", *summary_lines(summary, "routed"),
                f"- routing accuracy after the last stage: sequence tasks {100 * r['sequence_tasks']:.1f}%"
                + (f", capability suite (to the base) {100 * r['capabilities']:.1f}%" if r["capabilities"] is not None
                   else "")]
    if "multitask" in summary:
        m = summary["multitask"]
        out += ["", f"Multi-task reference (one run on the union): ACC {estimate(m['acc'], signed=False)}; sequence minus "
                    f"reference {estimate(m['sequence_minus_multitask'])}"]
    out += ["", "![accuracy matrix](heatmap.png)"]
    if summary["capabilities"]:
        out += ["", "Capabilities after each stage (score: change from the base, 95% CI):", "",
                *capability_table(summary["capabilities"], stages), "", "![capabilities](capabilities.png)"]
    return "\n".join(out) + "\n"


def write_sequence_report(summary: dict, out: Path) -> dict[str, Path]:
    out = Path(out)
    written = {"markdown": atomic_write_text(out / "summary.md", sequence_markdown(summary))}
    for name, png in (("heatmap", heatmap_png(summary)), ("capabilities", capability_curves_png(summary))):
        if png is not None:
            path = out / f"{name}.png"
            path.write_bytes(png)
            written[name] = path
    return written
