"""A sequence's figures as PNG bytes: the accuracy-matrix heatmap and the per-stage capability curves."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def heatmap_png(summary: dict) -> bytes:
    """R[i][j] ×100 as a heatmap: rows the base and each stage, columns the tasks (and the routed one beside)."""
    panels = [("task id" if "routed" in summary else "accuracy matrix", summary["matrix"])]
    if "routed" in summary:
        panels.append(("router", summary["routed"]["matrix"]))
    rows = ["base"] + [f"after {s}" for s in summary["stages"]]
    fig, axes = plt.subplots(1, len(panels), figsize=(1.6 * len(summary["tasks"]) * len(panels) + 2, 0.6 * len(rows) + 1.5),
                             squeeze=False)
    for ax, (title, R) in zip(axes[0], panels):
        values = 100 * np.array(R)
        ax.imshow(values, vmin=0, vmax=100, cmap="viridis", aspect="auto")
        ax.set_xticks(range(len(summary["tasks"])), summary["tasks"], rotation=20, ha="right")
        ax.set_yticks(range(len(rows)), rows)
        ax.set_title(title)
        for i in range(values.shape[0]):
            for j in range(values.shape[1]):
                ax.text(j, i, f"{values[i, j]:.0f}", ha="center", va="center",
                        color="white" if values[i, j] < 60 else "black")
    return _png(fig)


def capability_curves_png(summary: dict) -> bytes | None:
    """Each capability after each stage: scores in points (left), perplexities on a log axis (right)."""
    curves = summary["capabilities"]
    if not curves:
        return None
    score_like = {n: c for n, c in curves.items() if not c["changes"] or not c["changes"][0]["relative"]}
    perplexity = {n: c for n, c in curves.items() if n not in score_like}
    panels = [p for p in (score_like, perplexity) if p]
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4), squeeze=False)
    x = list(range(len(summary["stages"]) + 1))
    labels = ["base"] + summary["stages"]
    for ax, group in zip(axes[0], panels):
        log = group is perplexity
        for name, c in group.items():
            ax.plot(x, c["scores"] if log else [100 * s for s in c["scores"]], marker="o", label=name)
        if log:
            ax.set_yscale("log")
        ax.set_xticks(x, labels, rotation=20, ha="right")
        ax.set_ylabel("perplexity (log)" if log else "score (points)")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle("capabilities after each stage")
    return _png(fig)
