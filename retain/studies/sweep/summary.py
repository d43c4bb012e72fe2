"""Summaries of many fine-tunes against one base: gain on the task vs loss of the other capabilities."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from retain.evaluation.compare import not_shown, retained_change
from retain.evaluation.results import load_results, primary_value
from retain.evaluation.stats import Change
from retain.core.files import atomic_write_text
from retain.report.build import compare, largest_drop
from retain.report.plots import COLORS, _png, place_labels, plt
from retain.report.render import format_change, format_relative
from retain.report.severity import LEGEND as SEVERITY_LEGEND
from retain.report.severity import worst


@dataclasses.dataclass
class Compared:
    """One strategy's results against the base: `runs` (one per training seed, as loaded), compare's output and
    the pooled retained change."""

    runs: list[dict]
    comparison: dict
    retained: Change
    pooled_tasks: list[str]


def compare_runs(base: dict, result_paths: dict[str, Path | list[Path]], task: str) -> dict[str, Compared]:
    """Each strategy's results (one file, or a list: one per training seed) against the base, bootstrapped once."""
    compared = {}
    for name, paths in result_paths.items():
        runs = [load_results(p) for p in (paths if isinstance(paths, list) else [paths])]
        after = runs if len(runs) > 1 else runs[0]
        retained, pooled_tasks = retained_change(base, after, task)
        compared[name] = Compared(runs, compare(base, after), retained, pooled_tasks)
    return compared


def summarize(base_path: Path, result_paths: dict[str, Path | list[Path]], task: str) -> dict:
    """The sweep's rows against the base, from files; a strategy's results are one file, or a list: one per
    training seed."""
    base = load_results(base_path)
    return summarize_compared(base, base_path, compare_runs(base, result_paths, task), task)


def summarize_compared(base: dict, base_path: Path, compared: dict[str, Compared], task: str) -> dict:
    """The sweep's rows from compare_runs's output against the loaded `base` (read from `base_path`)."""
    rows, pooled_tasks = {}, []
    for name, c in compared.items():
        comparison, retained, pooled_tasks = c.comparison, c.retained, c.pooled_tasks
        gain = comparison["tasks"][task]
        others = {k: r for k, r in comparison["capabilities"].items() if k != gain["capability"]}
        rows[name] = {
            "gain": gain["delta"], "gain_ci": [gain["ci_low"], gain["ci_high"]], "task_after": gain["after"],
            "retained_change": retained.delta, "retained_ci": [retained.ci_low, retained.ci_high],
            "retained_after": retained.after,
            "seeds": len(c.runs), "gain_per_seed": list(gain["per_seed"]), "retained_per_seed": list(retained.per_seed),
            "max_drop": largest_drop(comparison, exclude=(gain["capability"],)),
            "severity": worst(r["severity"] for r in others.values()),
            "perplexity_changes": {t: {"delta": r["delta"], "ci": [r["ci_low"], r["ci_high"]], "verdict": r["verdict"]}
                                   for t, r in comparison["tasks"].items() if r["relative"] and t != task},
            "verdicts": {k: r["verdict"] for k, r in comparison["capabilities"].items()},
            "deltas": {k: r["delta"] for k, r in comparison["capabilities"].items()},
        }
    front = pareto_front({n: (r["gain"], -r["retained_change"]) for n, r in rows.items()})
    return {"task": task, "base": str(base_path), "retained_tasks": pooled_tasks,
            "base_task_score": primary_value(base["tasks"][task]),
            "base_retained_score": retained_change(base, base, task)[0].before, "rows": rows, "pareto_front": front}


def per_seed_cell(values, relative: bool) -> str:
    return ", ".join(format_relative(x) if relative else f"{100 * x:+.1f}" for x in values)


def verdict_cell(change: Change, shown_as: str) -> str:
    why = not_shown(change)
    return f"not shown ({why})" if why else f"supported ({shown_as})"


def as_change(row: dict) -> Change:
    return Change(**{f.name: row[f.name] for f in dataclasses.fields(Change)})


def capability_table(comparisons: dict[str, dict]) -> list[str]:
    """Per strategy and capability: change [CI over seeds, then items], each seed's change, verdict, grade."""
    lines = ["| strategy | capability | items | change [95% CI] | per seed | verdict | grade |",
             "|---|---|---|---|---|---|---|"]
    for name, comparison in comparisons.items():
        for capability, r in comparison["capabilities"].items():
            change, low, high = format_change(r)
            unit = "" if r["relative"] else " pts"
            lines.append(f"| {name} | {capability} | {r['n']} | {change}{unit} [{low}, {high}] | "
                         f"{per_seed_cell(r['per_seed'], r['relative'])} | "
                         f"{verdict_cell(as_change(r), r['verdict'])} | {r['severity']} |")
    return lines


def pareto_front(points: dict[str, tuple[float, float]]) -> list[str]:
    """Names not dominated in (gain: higher better, loss: lower better), by increasing loss."""
    front = []
    for name, (gain, loss) in points.items():
        dominated = any(g >= gain and l <= loss and (g > gain or l < loss) for n, (g, l) in points.items() if n != name)
        if not dominated:
            front.append(name)
    return sorted(front, key=lambda n: points[n][1])


def _perplexity_changes(row: dict) -> dict[str, dict]:
    """Task -> {delta, verdict} of every perplexity task; a summary.json written before these columns were
    generic has one `perplexity_change`, of the lab's `english` task."""
    if "perplexity_changes" in row:
        return row["perplexity_changes"]
    old = row.get("perplexity_change")
    return {} if old is None else {"english": {"delta": old}}


def _perplexity_cell(change: dict | None) -> str:
    if change is None:
        return ""
    words = {"better": " (better)", "worse": " (worse)", "no significant change": " (n.s.)"}
    return format_relative(change["delta"]) + words.get(change.get("verdict"), "")


def markdown_table(summary: dict) -> str:
    """One row per strategy: task gain, pooled retained change, largest drop, forgetting grade, and one column
    per perplexity task of the suite (whatever the suite: no task is assumed)."""
    ppl_tasks = list(dict.fromkeys(t for r in summary["rows"].values() for t in _perplexity_changes(r)))
    matched = summary.get("matched_gain") or {}
    header = (["strategy", "task gain (pts) [95% CI]", "retained capabilities change (pts) [95% CI]",
               "largest capability drop (pts)", "forgetting"] + [f"{t} perplexity" for t in ppl_tasks]
              + ([MATCHED_HEADER] if matched else []) + ["Pareto"])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, r in summary["rows"].items():
        ppl = _perplexity_changes(r)
        cells = [name,
                 f"{100 * r['gain']:+.1f} [{100 * r['gain_ci'][0]:+.1f}, {100 * r['gain_ci'][1]:+.1f}]",
                 f"{100 * r['retained_change']:+.1f} [{100 * r['retained_ci'][0]:+.1f}, "
                 f"{100 * r['retained_ci'][1]:+.1f}]",
                 f"{100 * r['max_drop']:.1f}", r.get("severity", "")]
        cells += [_perplexity_cell(ppl.get(t)) for t in ppl_tasks]
        cells += [_matched_cell(matched.get(name))] if matched else []
        cells.append("★" if name in summary["pareto_front"] else "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


MATCHED_HEADER = "retained change at matched gain (pts): mean [95% CI] (per seed)"


def _matched_cell(row: dict | None) -> str:
    """The retained change where the run's WiSE-FT line first reaches the reference's share of gain: the mean over
    seeds with its CI (seeds, then items), then each seed's ('—' for a seed whose line never gets there; '' for a
    strategy not yet scored)."""
    if row is None:
        return ""
    seeds = " / ".join("—" if s is None else f"{100 * s['change']:+.1f}" for s in row["per_seed"])
    if row["mean"] is None:
        return f"— ({seeds})"
    low, high = row["ci"]
    return f"{100 * row['mean']:+.1f} [{100 * low:+.1f}, {100 * high:+.1f}] ({seeds})"


LEGEND = ("Points are percentage points; the retained capabilities pool the items of every score-type task except "
          "the fine-tuning task. A perplexity column is the relative change (after / before: +12%, or ×1,658 once it "
          "more than doubles; lower is better, n.s. = the 95% CI includes 0). Forgetting: the worst grade of any "
          "capability other than the task's. " + SEVERITY_LEGEND + " Retained change at matched gain (where a sweep "
          "scores each run's `line`): the retained change where the run's weights, moved toward the base (WiSE-FT), "
          "first reach 95% of the unprotected run's task gain, seed s against the unprotected run's seed s — the mean, "
          "then each seed's value (—: that seed's line never gets there); a recipe that learns less is not credited "
          "for forgetting less.")


def pareto_plot(summary: dict) -> bytes:
    fig, ax = plt.subplots(figsize=(8, 5.5))
    front = summary["pareto_front"]
    labelled = []
    for k, (name, r) in enumerate(summary["rows"].items()):
        x, y = -100 * r["retained_change"], 100 * r["gain"]
        xerr = [[x - (-100 * r["retained_ci"][1])], [-100 * r["retained_ci"][0] - x]]
        yerr = [[y - 100 * r["gain_ci"][0]], [100 * r["gain_ci"][1] - y]]
        on_front = name in front
        ax.errorbar(x, y, xerr=xerr, yerr=yerr, fmt="o" if on_front else "s", capsize=3,
                    color=COLORS[0] if on_front else COLORS[7], alpha=1.0 if on_front else 0.7)
        labelled.append(((x, y), name))
    pts = sorted((-100 * summary["rows"][n]["retained_change"], 100 * summary["rows"][n]["gain"]) for n in front)
    if len(pts) > 1:
        ax.plot(*zip(*pts), "-", color=COLORS[0], alpha=0.5, label="Pareto front")
        ax.legend()
    ax.axvline(0, color="black", linewidth=0.6)
    fig.canvas.draw()  # the axes' final limits, so that label boxes are measured where they will be drawn
    place_labels(ax, [p for p, _ in labelled], [n for _, n in labelled])
    ax.set_xlabel(f"capability loss (pts, items pooled over {len(summary['retained_tasks'])} retained tasks; "
                  "left is better)")
    ax.set_ylabel(f"gain on {summary['task']} (pts)")
    ax.set_title("New skill vs. forgetting, per strategy (95% CIs)")
    return _png(fig)


def write_sweep_report(summary: dict, out: Path) -> None:
    png = pareto_plot(summary)
    (out / "pareto.png").write_bytes(png)
    text = (f"# Sweep on {summary['task']}\n\nBase: task score {100 * summary['base_task_score']:.1f}, "
            f"retained capabilities {100 * summary['base_retained_score']:.1f} "
            f"(pooled: {', '.join(summary['retained_tasks'])}).\n\n"
            + markdown_table(summary) + f"\n\n{LEGEND}\n\nPareto front: {', '.join(summary['pareto_front'])}.\n\n"
            "![Pareto plot](pareto.png)\n")
    atomic_write_text(out / "summary.md", text)
