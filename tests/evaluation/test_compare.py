"""One home for "how much did a capability change": the budget's drops, the report's rows, the pooled retained
change and the continual bootstrap all read retain.evaluation.compare / stats, and agree on the same results."""

import json
import math

import numpy as np
import pytest

from retain.studies.continual.metrics import resampled_matrices
from retain.evaluation.compare import (pooled_items, retained_change, sure_drops, task_change, task_drops, verdict,
                                       worse_by)
from retain.evaluation.results import load_results, primary_value, relative, shared_tasks
from retain.evaluation.stats import percentile_ci, resample
from retain.report.build import compare


def task(metric: str, values: list[float], lower: bool = False, kind: str = "multiple_choice", capability="c"):
    if relative(metric):
        items = [{"id": i, "loglikelihood": x, "words": 10} for i, x in enumerate(values)]
        value = math.exp(-sum(values) / (10 * len(values)))
    else:
        items = [{"id": i, metric: float(x)} for i, x in enumerate(values)]
        value = sum(values) / len(values)
    return {"kind": kind, "capability": capability, "primary_metric": metric, "lower_is_better": lower,
            "chance": None, "n": len(items), "metrics": {metric: value}, "items": items}


def results(facts, english, other=None) -> dict:
    tasks = {"facts": task("acc", facts, capability="facts"),
             "english": task("word_perplexity", english, lower=True, kind="perplexity", capability="english")}
    if other is not None:
        tasks["other"] = task("exact_match", other, kind="generation", capability="other")
    return {"model": "m", "suite": "s", "limit": None, "dtype": "float32", "split": "test", "tasks": tasks}


BEFORE = results([1, 1, 1, 1, 0, 1, 1, 1, 1, 1], [-20.0] * 8, [1, 0, 1, 0])
AFTER = results([0, 1, 0, 1, 0, 0, 1, 1, 0, 1], [-22.0] * 8, [1, 1, 1, 0])


def test_the_budget_and_the_report_measure_the_same_change():
    drops = task_drops(BEFORE, AFTER)
    rows = compare(BEFORE, AFTER)["tasks"]
    assert drops["facts"] == pytest.approx(40.0)  # 90% -> 50%: 40 points lost
    assert drops["facts"] == pytest.approx(-100 * rows["facts"]["delta"])
    assert drops["english"] == pytest.approx(math.exp(0.2) - 1)  # -20 -> -22 nats over 10 words: x e^0.2
    assert drops["english"] == pytest.approx(rows["english"]["delta"])  # relative, lower is better: a rise is worse
    assert rows["english"]["verdict"] == "worse" and rows["facts"]["verdict"] == "worse"
    assert drops["other"] == pytest.approx(-25.0)  # a gain is a negative drop


def test_worse_by_follows_the_direction_that_matters():
    assert worse_by(-0.1, lower_is_better=False) == 0.1 and worse_by(0.1, lower_is_better=True) == 0.1
    assert worse_by(0.1, lower_is_better=False) == -0.1


def test_a_sure_drop_is_at_most_the_measured_one_and_equal_without_a_confidence():
    measured, sure = task_drops(BEFORE, AFTER), sure_drops(BEFORE, AFTER, 0.8)
    assert sure_drops(BEFORE, AFTER, None) == measured
    assert sure["facts"] < measured["facts"]
    assert sure["english"] == pytest.approx(measured["english"])  # every document lost the same: no spread


def test_the_retained_change_pools_every_score_task_but_the_fine_tuning_one():
    change, names = retained_change(BEFORE, AFTER, "other")
    assert names == ["facts"]  # english is a perplexity, other is the task
    assert change.delta == pytest.approx(-0.4) and change.before == pytest.approx(0.9)
    both, names = retained_change(BEFORE, AFTER, "none")
    assert names == ["facts", "other"]
    assert both.delta == pytest.approx((5 - 9 + 3 - 2) / 14)  # 14 items pooled: (9 + 2) -> (5 + 3) right
    pooled = pooled_items(BEFORE, names)
    assert pooled[0]["id"] == ("facts", 0) and pooled[-1]["id"] == ("other", 3)
    assert [i["score"] for i in pooled[10:]] == [1.0, 0.0, 1.0, 0.0]


def test_task_change_uses_the_primary_metric_unless_told():
    change = task_change(BEFORE["tasks"]["facts"], [AFTER["tasks"]["facts"]])
    assert (change.before, change.after, change.relative) == (pytest.approx(0.9), pytest.approx(0.5), False)
    assert verdict(change, lower_is_better=False) == "worse"


def test_resample_by_hand():
    per_cluster = np.array([[1.0, 1.0], [0.0, 1.0], [2.0, 2.0]])  # cluster 2: two items, both right
    draws = np.array([[0, 1, 2], [1, 1, 1], [2, 2, 0]])
    assert resample(per_cluster, draws, "acc").tolist() == [3 / 4, 0.0, 5 / 5]
    own = np.stack([per_cluster, per_cluster[::-1]])  # a table of its own per resample (the two-level bootstrap's)
    assert resample(own, np.array([[0, 1, 2], [0, 0, 1]]), "acc").tolist() == [3 / 4, 4 / 5]
    assert all(math.isnan(x) for x in percentile_ci(np.array([np.nan, np.inf])))
    assert percentile_ci(np.array([np.nan, *range(101)])) == (2.5, 97.5)  # the finite samples only


def test_the_continual_bootstrap_is_the_item_bootstrap_it_always_was():
    rng = np.random.default_rng(3)
    scores = [rng.integers(0, 2, size=(3, 12)).astype(float), rng.integers(0, 2, size=(3, 7)).astype(float)]
    (boot,) = resampled_matrices([scores], resamples=50, seed=5)
    draws = np.random.default_rng(5)
    idx = [draws.integers(0, n, size=(50, n)) for n in (12, 7)]
    by_hand = np.stack([s[:, i].mean(axis=2).T for s, i in zip(scores, idx)], axis=-1)  # (B, rows, T)
    assert boot.shape == (50, 3, 2)
    np.testing.assert_allclose(boot, by_hand, rtol=0, atol=1e-12)


def test_a_results_file_loads_unchanged(tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps(BEFORE))
    loaded = load_results(path)
    assert loaded == BEFORE  # the typed reader returns the file as written: the format is the JSON
    assert primary_value(loaded["tasks"]["facts"]) == pytest.approx(0.9)
    assert shared_tasks(loaded, [results([1], [-1.0])]) == ["facts", "english"]
