"""Report figures as PNG bytes (matplotlib, no display needed)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

COLORS = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c"]


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def capability_bars(base_label: str, comparisons: dict) -> bytes:
    """Per capability: the base and each fine-tune, with the fine-tune's paired 95% CI as error bars.

    Accuracy-type capabilities in points on the left; perplexity-type as % change on the right.
    """
    labels = list(comparisons)
    capabilities = list(next(iter(comparisons.values()))["capabilities"])
    points = [c for c in capabilities if not comparisons[labels[0]]["capabilities"][c]["relative"]]
    relative = [c for c in capabilities if c not in points]
    fig, axes = plt.subplots(1, 2, figsize=(12, 0.55 * max(len(points), 3) + 1.5),
                             gridspec_kw={"width_ratios": [3, 1.2]})
    ax = axes[0]
    width = 0.8 / (len(labels) + 1)
    for k, name in enumerate([base_label] + labels):
        ys = [i + (k - len(labels) / 2) * width for i in range(len(points))]
        if k == 0:
            values = [100 * comparisons[labels[0]]["capabilities"][c]["before"] for c in points]
            ax.barh(ys, values, height=width, color=COLORS[0], label=name)
            continue
        rows = [comparisons[name]["capabilities"][c] for c in points]
        values = [100 * r["after"] for r in rows]
        err = [[100 * (r["delta"] - r["ci_low"]) for r in rows], [100 * (r["ci_high"] - r["delta"]) for r in rows]]
        ax.barh(ys, values, height=width, color=COLORS[k % len(COLORS)], xerr=err, capsize=3, label=name)
    ax.set_yticks(range(len(points)), points)
    ax.invert_yaxis()
    ax.set_xlabel("score (%), error bars: paired bootstrap 95% CI of the change")
    ax.set_xlim(0, 105)
    ax.legend(loc="lower right", fontsize=8)
    ax = axes[1]  # perplexities: after / before on a log axis, so x1.04 and x463 both read
    for k, name in enumerate(labels):
        rows = [comparisons[name]["capabilities"][c] for c in relative]
        xs = [i + (k - (len(labels) - 1) / 2) * 0.8 / len(labels) for i in range(len(relative))]
        ratios = [1 + r["delta"] for r in rows]
        err = [[r["delta"] - r["ci_low"] for r in rows], [r["ci_high"] - r["delta"] for r in rows]]
        ax.bar(xs, [x - 1 for x in ratios], bottom=1, width=0.8 / len(labels), color=COLORS[(k + 1) % len(COLORS)],
               yerr=err, capsize=3, label=name)
    ax.set_yscale("log")
    ax.axhline(1, color="black", linewidth=0.8)
    ax.set_xticks(range(len(relative)), [f"{c}\n(perplexity)" for c in relative], fontsize=8)
    ax.set_ylabel("perplexity after / before (log scale; lower is better)")
    fig.suptitle("Capabilities before and after fine-tuning")
    return _png(fig)


def training_curves(run_dirs: list[Path]) -> bytes | None:
    """Every loss term and the dev loss against step, one line per run."""
    runs = [(Path(d), Path(d) / "metrics.jsonl") for d in run_dirs]
    runs = [(d, p) for d, p in runs if p.is_file()]
    if not runs:
        return None
    fig, ax = plt.subplots(figsize=(8, 4))
    for k, (run, path) in enumerate(runs):
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        keys = sorted({key for r in rows for key in r if key.startswith(("loss/", "eval/"))})
        for key in keys:
            pts = [(r["step"], r[key]) for r in rows if key in r]
            style = "--" if key.startswith("eval/") else "-"
            ax.plot(*zip(*pts), style, color=COLORS[(k + 1) % len(COLORS)], alpha=1.0 if key == "loss/task" else 0.6,
                    marker="o" if len(pts) < 5 else None, label=f"{run.name}: {key}")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    ax.set_title("Training curves")
    return _png(fig)
