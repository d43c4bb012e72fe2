"""Report figures as PNG bytes (matplotlib, no display needed)."""

from __future__ import annotations

import io
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from retain.core.files import read_metrics  # noqa: E402
from retain.report.render import format_relative  # noqa: E402
from retain.report.runs import load_run_file  # noqa: E402

COLORS = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c"]


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def capability_bars(base_label: str, comparisons: dict) -> bytes:
    """Per capability: the base and each fine-tune, with the fine-tune's paired 95% CI as error bars.

    Score-type capabilities in points on the left; perplexity-type as after / before on the right (log
    axis). Every bar carries its value, so a score of 0 (a bar of no length) still shows.
    """
    labels = list(comparisons)
    capabilities = list(next(iter(comparisons.values()))["capabilities"])
    points = [c for c in capabilities if not comparisons[labels[0]]["capabilities"][c]["relative"]]
    relative = [c for c in capabilities if c not in points]
    panels = [p for p in (points, relative) if p]
    fig, axes = plt.subplots(1, len(panels), figsize=(12 if len(panels) == 2 else 8, 0.55 * max(len(points), 3) + 1.5),
                             gridspec_kw={"width_ratios": [3, 1.2] if len(panels) == 2 else [1]}, squeeze=False)
    axes = list(axes[0])
    if points:
        _score_panel(axes.pop(0), base_label, comparisons, points)
    if relative:
        _perplexity_panel(axes.pop(0), comparisons, relative)
    fig.suptitle("Capabilities before and after fine-tuning")
    return _png(fig)


def _score_panel(ax, base_label: str, comparisons: dict, points: list[str]) -> None:
    labels = list(comparisons)
    width = 0.8 / (len(labels) + 1)
    for k, name in enumerate([base_label] + labels):
        ys = [i + (k - len(labels) / 2) * width for i in range(len(points))]
        if k == 0:
            values = [100 * comparisons[labels[0]]["capabilities"][c]["before"] for c in points]
            ax.barh(ys, values, height=width, color=COLORS[0], label=name)
            ends = values
        else:
            rows = [comparisons[name]["capabilities"][c] for c in points]
            values = [100 * r["after"] for r in rows]
            # the CI of the change, placed at base + change (the after-score), inside the score's range 0-100
            lows = [min(max(100 * (r["before"] + r["ci_low"]), 0), v) for r, v in zip(rows, values)]
            highs = [max(min(100 * (r["before"] + r["ci_high"]), 100), v) for r, v in zip(rows, values)]
            err = [[v - low for v, low in zip(values, lows)], [high - v for v, high in zip(values, highs)]]
            ax.barh(ys, values, height=width, color=COLORS[k % len(COLORS)], xerr=err, capsize=3, label=name)
            ends = highs
        for y, v, end in zip(ys, values, ends):  # the value beside the bar: a 0 is a visible "0.0", not nothing
            ax.text(max(end, 0) + 1, y, f"{v:.1f}", va="center", fontsize=6, color="#444")
            if v == 0:
                ax.plot([0], [y], marker="|", markersize=8, color=COLORS[k % len(COLORS)])
    ax.set_yticks(range(len(points)), points)
    ax.invert_yaxis()
    ax.set_xlabel("score (%), error bars: paired bootstrap 95% CI of the change")
    ax.set_xlim(-1, 110)
    # above the panel, not over it: any corner inside can hide the end of a bar
    ax.legend(loc="lower left", bbox_to_anchor=(0, 1.0), ncol=len(labels) + 1, fontsize=8, frameon=False)


def _perplexity_panel(ax, comparisons: dict, relative: list[str]) -> None:
    """After / before on a log axis, so ×1.04 and ×463 both read; each bar labelled with its change and verdict."""

    labels = list(comparisons)
    for k, name in enumerate(labels):
        rows = [comparisons[name]["capabilities"][c] for c in relative]
        xs = [i + (k - (len(labels) - 1) / 2) * 0.8 / len(labels) for i in range(len(relative))]
        ratios = [1 + r["delta"] for r in rows]
        err = [[r["delta"] - r["ci_low"] for r in rows], [r["ci_high"] - r["delta"] for r in rows]]
        ax.bar(xs, [x - 1 for x in ratios], bottom=1, width=0.8 / len(labels), color=COLORS[(k + 1) % len(COLORS)],
               yerr=err, capsize=3, label=name)
        for x, ratio, r in zip(xs, ratios, rows):
            words = {"better": "better", "worse": "worse"}.get(r["verdict"], "n.s.")
            end = 1 + (r["ci_high"] if ratio >= 1 else r["ci_low"])  # beyond the error bar, not over it
            ax.annotate(f"{format_relative(r['delta'])}\n({words})", (x, end), textcoords="offset points",
                        xytext=(0, 4 if ratio >= 1 else -16), ha="center", fontsize=6)
    ax.set_yscale("log")
    # room above the highest error bar (and below the lowest) for its label
    highs = [1 + comparisons[n]["capabilities"][c]["ci_high"] for n in labels for c in relative]
    lows = [1 + comparisons[n]["capabilities"][c]["ci_low"] for n in labels for c in relative]
    low, high = ax.get_ylim()
    ax.set_ylim(min(low, min(lows) / 1.5), max(high, max(highs) * 3))
    ax.axhline(1, color="black", linewidth=0.8)
    ax.set_xticks(range(len(relative)), [f"{c}\n(perplexity)" for c in relative], fontsize=8)
    ax.set_ylabel("perplexity after / before (log scale; above 1 is worse)")
    if len(labels) > 1:
        ax.legend(loc="lower left", bbox_to_anchor=(0, 1.0), ncol=len(labels), fontsize=7, frameon=False)


# where a point's label may go, in points from the point, tried in order: right, above, below, left
LABEL_OFFSETS = [(5, 4, "left"), (5, -10, "left"), (-5, 4, "right"), (-5, -10, "right"), (5, 14, "left"),
                 (5, -20, "left"), (-5, 14, "right"), (-5, -20, "right"), (0, 24, "center"), (0, -30, "center")]


def place_labels(ax, points: list[tuple[float, float]], names: list[str], fontsize: int = 8) -> None:
    """Label each point beside it where the label overlaps no earlier label or other point's marker (the first
    free place of LABEL_OFFSETS; if none is free, the least crowded one, with a thin line to its point)."""
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    to_pixels = ax.transData.transform
    markers = [to_pixels(p) for p in points]
    placed = []  # bounding boxes (pixels) of the labels so far
    for (x, y), name in zip(points, names):
        best = None
        for dx, dy, ha in LABEL_OFFSETS:
            text = ax.annotate(name, (x, y), textcoords="offset points", xytext=(dx, dy), ha=ha, fontsize=fontsize)
            box = text.get_window_extent(renderer).expanded(1.05, 1.1)
            clashes = sum(box.overlaps(b) for b in placed) + sum(box.contains(*m) for m in markers)
            if best is None or clashes < best[0]:
                if best is not None:
                    best[1].remove()
                best = (clashes, text, box, (dx, dy))
            else:
                text.remove()
            if clashes == 0:
                break
        if best[0]:  # crowded: the same label again, with a thin line to its point (arrowprops is set at creation)
            best[1].remove()
            dx, dy = best[3]
            ax.annotate(name, (x, y), textcoords="offset points", xytext=(dx, dy), ha=best[1].get_ha(),
                        fontsize=fontsize, arrowprops={"arrowstyle": "-", "color": "#999", "linewidth": 0.5})
        placed.append(best[2])


def _positive(points: list[tuple[float, float]]) -> tuple[list[tuple[float, float]], int]:
    """A log axis cannot show 0 (a KL of exactly 0 at the anchor) or less: those become gaps, not spikes."""
    kept = [(x, y) if y > 0 and math.isfinite(y) else (x, math.nan) for x, y in points]
    return kept, sum(1 for _, y in kept if math.isnan(y))


def training_curves(run_dirs: list[Path]) -> bytes | None:
    """Every loss term and the dev loss against step, one line per run (log axis; values <= 0 left out)."""
    runs = [Path(d) for d in run_dirs if (Path(d) / "metrics.jsonl").is_file()]
    if not runs:
        return None
    fig, ax = plt.subplots(figsize=(8, 4))
    for k, run in enumerate(runs):
        rows = read_metrics(run)  # after a kill, the curve stops at the last whole line
        keys = sorted({key for r in rows for key in r if key.startswith(("loss/", "eval/"))})
        for key in keys:
            pts, left_out = _positive([(r["step"], r[key]) for r in rows if key in r])
            if left_out == len(pts):
                continue  # e.g. a KL that stayed exactly 0: nothing a log axis can show
            style = "--" if key.startswith("eval/") else "-"
            note = f" ({left_out} values <= 0 not shown)" if left_out else ""
            ax.plot(*zip(*pts), style, color=COLORS[(k + 1) % len(COLORS)], alpha=1.0 if key == "loss/task" else 0.6,
                    marker="o" if len(pts) < 5 else None, label=f"{run.name}: {key}{note}")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    ax.set_title("Training curves")
    return _png(fig)


def warning_curves(run_dirs: list[Path]) -> bytes | None:
    """The early warnings (retain.mitigations.early_warnings) against step: KL to the base on general and task
    data (left), the relative weight drift per layer (right); one colour per run. None if no run logged them."""
    runs = [(Path(d), read_metrics(d)) for d in run_dirs]  # [] rows without a metrics.jsonl
    runs = [(d, rows) for d, rows in runs if any(k.startswith("warn/") for r in rows for k in r)]
    if not runs:
        return None
    fig, (kl_ax, drift_ax) = plt.subplots(1, 2, figsize=(12, 4))
    for k, (run, rows) in enumerate(runs):
        color = COLORS[(k + 1) % len(COLORS)]
        keys = sorted({key for r in rows for key in r if key.startswith("warn/")})
        for key in keys:
            pts = [(r["step"], r[key]) for r in rows if key in r]
            if key.startswith("warn/kl_"):
                kl_ax.plot(*zip(*pts), "-" if key.endswith("general") else "--", color=color, marker="o",
                           markersize=3, label=f"{run.name}: {key.removeprefix('warn/')}")
            else:
                layer = key.removeprefix("warn/drift/")
                drift_ax.plot(*zip(*pts), "-", color=color, linewidth=2.5 if layer == "all" else 1,
                              alpha=1.0 if layer == "all" else 0.5, label=f"{run.name}: {layer}")
                drift_ax.annotate(layer, pts[-1], fontsize=6, color=color)
    kl_ax.set_xlabel("optimizer step")
    kl_ax.set_ylabel("KL(base ‖ model), nats per token")
    kl_ax.set_title("Early warnings: distance from the base's predictions")
    kl_ax.legend(fontsize=7)
    drift_ax.set_xlabel("optimizer step")
    drift_ax.set_ylabel("‖θ − θ0‖ / ‖θ0‖")
    drift_ax.set_title("Weight drift per layer")
    drift_ax.legend(fontsize=6, ncol=2)
    return _png(fig)


def _retention_checks(run: Path) -> list[dict]:
    """The run's retention checks (retention.json: the start, then every check), [] without a budget."""
    path = run / "retention.json"
    if not path.is_file():
        return []
    b = load_run_file(path)
    return [b["start"]] + b["checks"] if "start" in b else b.get("checks", [])


def forgetting_curves(run_dirs: list[Path]) -> bytes | None:
    """How forgetting developed over training, from what each run logged: the drop of every task its retention
    budget checked, in points (left) and for perplexities as the relative rise (right), with the budget as a
    dotted line; a run with checks in metrics.jsonl only (retention/max_drop_points, ...) draws its largest drop.
    One colour per run. None if no run logged a retention check."""
    series = []  # (run, colour, unit, name, points)
    for k, run in enumerate(Path(d) for d in run_dirs):
        color = COLORS[(k + 1) % len(COLORS)]
        checks = _retention_checks(run)
        if checks:
            units = checks[-1].get("units") or {}
            for task in checks[-1]["drops"]:
                unit = units.get(task, "points")
                pts = [(c["step"], c["drops"][task] * (100 if unit == "relative" else 1)) for c in checks
                       if task in c["drops"]]
                series.append((run, color, unit, task, pts))
            continue
        rows = read_metrics(run)
        for key, unit in (("retention/max_drop_points", "points"), ("retention/max_perplexity_increase", "relative")):
            pts = [(r["step"], r[key] * (100 if unit == "relative" else 1)) for r in rows if key in r]
            if pts:
                series.append((run, color, unit, "largest drop", pts))
    if not series:
        return None
    units = [u for u in ("points", "relative") if any(s[2] == u for s in series)]
    fig, axes = plt.subplots(1, len(units), figsize=(12 if len(units) == 2 else 8, 4), squeeze=False)
    styles, markers = ["-", "--", ":", "-."], "osd^v*P"  # one look per task (colour: per run)
    for ax, unit in zip(axes[0], units):
        mine = [s for s in series if s[2] == unit]
        for j, (run, color, _, task, pts) in enumerate(mine):
            ax.plot(*zip(*pts), styles[j % len(styles)], color=color, marker=markers[j % len(markers)], markersize=4,
                    label=f"{run.name}: {task}")
        for run in dict.fromkeys(s[0] for s in mine):
            for limit in _budget_limits(run, unit, [s[3] for s in mine if s[0] == run]):
                ax.axhline(limit, color="#c62828", linestyle=":", linewidth=1)
                ax.annotate(f"budget ({run.name})", (0, limit), fontsize=6, color="#c62828", va="bottom")
        ax.axhline(0, color="black", linewidth=0.6)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("drop from the base (points)" if unit == "points" else "perplexity rise (%)")
        ax.legend(fontsize=6, ncol=2)
    axes[0][0].set_title("Forgetting over training (retention checks on the dev split)")
    return _png(fig)


def _budget_limits(run: Path, unit: str, tasks: list[str]) -> list[float]:
    """The run's budgets for these tasks in the plot's unit (points, or % for perplexities): each task's own
    (retention.json `tasks`, weight > 0; none for ignored ones), else the run's one budget of that unit; [] without
    retention.json."""
    path = run / "retention.json"
    if not path.is_file():
        return []
    b = load_run_file(path)
    scale = 100 if unit == "relative" else 1
    own = b.get("tasks") or {}
    limits = {own[t]["budget"] for t in tasks if t in own and own[t].get("weight", 1) > 0}
    if not limits and not any(t in own for t in tasks):  # tasks ignored (weight 0) have no budget to draw
        value = b.get("max_drop_points" if unit == "points" else "max_perplexity_increase")
        limits = {value} if value is not None else set()
    return sorted(scale * v for v in limits)
