"""Retention checks without a budget (every task `ignore`d, as `retain demo` runs them): the report draws them as
forgetting over training and claims no budget anywhere: not in the verdicts, the budget lines, nor the plot."""

import json

import yaml

from retain.report import plots
from retain.report.build import write_report


def scores(values: list[int]) -> dict:
    its = [{"id": i, "exact_match": float(v)} for i, v in enumerate(values)]
    return {"split": "test", "tasks": {"facts": {
        "kind": "generation", "capability": "facts", "primary_metric": "exact_match", "lower_is_better": False,
        "chance": 0.0, "n": len(its), "metrics": {"exact_match": sum(values) / len(values)}, "items": its}}}


def checked_run(where, weight: float):
    """A run dir whose retention.json recorded a start and two checks of `facts`, at this weight."""
    (where / "final").mkdir(parents=True)
    (where / "config.yaml").write_text(yaml.safe_dump({}))
    (where / "metrics.jsonl").write_text(json.dumps({"step": 1, "loss/task": 2.0}) + "\n")
    check = {"units": {"facts": "points"}, "within_budget": True, "budget_used": 0.0, "task_value": None}
    (where / "retention.json").write_text(json.dumps({
        "max_drop_points": 1.0, "max_perplexity_increase": 0.1, "action": "stop", "suite": "lab", "every": 20,
        "tasks": {"facts": {"unit": "points", "budget": 1.0, "weight": weight}}, "outcome": None,
        "start": {**check, "step": 0, "drops": {"facts": 0.0}},
        "checks": [{**check, "step": s, "drops": {"facts": d}} for s, d in ((20, 30.0), (40, 60.0))]}))
    return where


def report_of(tmp_path, run) -> dict:
    paths = [tmp_path / "base.json", tmp_path / f"{run.name}.json"]
    paths[0].write_text(json.dumps(scores([1] * 100)))
    paths[1].write_text(json.dumps({**scores([1] * 40 + [0] * 60), "model": str(run / "final")}))
    out = write_report(paths, tmp_path / f"report-{run.name}", labels=["base", run.name])
    return {"verdicts": out["verdicts"], "md": out["md"].read_text(), "html": out["html"].read_text()}


def test_checks_without_a_budget_are_drawn_and_claim_no_budget(tmp_path, monkeypatch):
    measured = report_of(tmp_path, checked_run(tmp_path / "measured", weight=0.0))
    assert "alt='forgetting over training'" in measured["html"]
    assert measured["verdicts"] == "measured: severe forgetting (worst: facts) — do not ship"
    assert "retention budget" not in measured["md"].lower()
    assert "Retention checks of " in measured["md"] and "none held to a budget" in measured["md"]
    assert "## Retention checks (no budget): " in measured["md"]
    # the same checks held to a 1-point budget say so everywhere
    budgeted = report_of(tmp_path, checked_run(tmp_path / "budgeted", weight=1.0))
    assert budgeted["verdicts"].endswith("over its 1-point retention budget")
    assert "## Retention budget: " in budgeted["md"]
    # and the plot draws a budget line only for a task held to one
    drawn = []
    monkeypatch.setattr(plots.plt.Axes, "axhline", lambda ax, y=0, **kw: drawn.append(y), raising=True)
    plots.forgetting_curves([tmp_path / "measured"])
    assert drawn == [0]  # the zero line alone
    drawn.clear()
    plots.forgetting_curves([tmp_path / "budgeted"])
    assert sorted(drawn) == [0, 1.0]


def test_labels_of_points_that_sit_on_each_other_are_all_placed_with_a_line_to_their_point():
    """place_labels on more points at one place than it has free offsets: every label is drawn once, and those
    that found no free place get a thin line to their point (it used to raise on the first crowded label)."""
    from matplotlib.text import Annotation

    from retain.report.plots import LABEL_OFFSETS, place_labels, plt

    fig, ax = plt.subplots()
    points = [(1.0, 1.0)] * (len(LABEL_OFFSETS) + 2)
    ax.plot(*zip(*points), "o")
    names = [f"run {k}" for k in range(len(points))]
    place_labels(ax, points, names)
    labels = [c for c in ax.get_children() if isinstance(c, Annotation)]
    assert sorted(a.get_text() for a in labels) == sorted(names)
    assert any(a.arrow_patch is not None for a in labels) and labels[0].arrow_patch is None  # the first was free
    plt.close(fig)
