"""Report figures as PNG bytes (matplotlib, no display needed)."""

from __future__ import annotations

import io
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from retain.io import read_metrics  # noqa: E402

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
            err = [[100 * (r["delta"] - r["ci_low"]) for r in rows], [100 * (r["ci_high"] - r["delta"]) for r in rows]]
            ax.barh(ys, values, height=width, color=COLORS[k % len(COLORS)], xerr=err, capsize=3, label=name)
            ends = [v + high for v, high in zip(values, err[1])]
        for y, v, end in zip(ys, values, ends):  # the value beside the bar: a 0 is a visible "0.0", not nothing
            ax.text(max(end, 0) + 1, y, f"{v:.1f}", va="center", fontsize=6, color="#444")
            if v == 0:
                ax.plot([0], [y], marker="|", markersize=8, color=COLORS[k % len(COLORS)])
    ax.set_yticks(range(len(points)), points)
    ax.invert_yaxis()
    ax.set_xlabel("score (%), error bars: paired bootstrap 95% CI of the change")
    ax.set_xlim(-1, 110)
    ax.legend(loc="lower right", fontsize=8)


def _perplexity_panel(ax, comparisons: dict, relative: list[str]) -> None:
    """After / before on a log axis, so ×1.04 and ×463 both read; each bar labelled with its change and verdict."""
    from retain.report.render import format_relative

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
            ax.annotate(f"{format_relative(r['delta'])}\n({words})", (x, ratio), textcoords="offset points",
                        xytext=(0, 4 if ratio >= 1 else -16), ha="center", fontsize=6)
    ax.set_yscale("log")
    ax.axhline(1, color="black", linewidth=0.8)
    ax.set_xticks(range(len(relative)), [f"{c}\n(perplexity)" for c in relative], fontsize=8)
    ax.set_ylabel("perplexity after / before (log scale; above 1 is worse)")
    if len(labels) > 1:
        ax.legend(fontsize=7)


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
