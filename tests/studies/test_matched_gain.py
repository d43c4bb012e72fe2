"""Forgetting at matched task gain, read off a recipe's path (WiSE-FT line or checkpoints)."""

import pytest

from retain.studies.sweep.matched_gain import forgetting_at_gain, target_gain


def generation(capability, right: int, n: int = 10) -> dict:
    values = [1.0] * right + [0.0] * (n - right)
    return {"kind": "generation", "capability": capability, "primary_metric": "exact_match", "lower_is_better": False,
            "chance": 0.0, "n": n, "metrics": {"exact_match": right / n},
            "items": [{"id": i, "exact_match": v} for i, v in enumerate(values)]}


def results(task_right: int, facts_right: int) -> dict:
    return {"split": "test", "tasks": {"skill": generation("task: skill", task_right),
                                       "facts": generation("facts", facts_right)}}


BASE = results(0, 10)
# a WiSE-FT line from the base (α 0, 0.5, 1): the task gains 0, 40, 80 points; facts lose 0, 10, 40
LINE = [results(0, 10), results(4, 9), results(8, 6)]


def test_the_crossing_is_interpolated_between_the_points_around_it_by_hand():
    target = target_gain(BASE, LINE[-1], "skill", share=0.75)
    assert target == pytest.approx(0.6)
    m = forgetting_at_gain(BASE, LINE, "skill", target)
    assert m.position == pytest.approx(1.5)  # halfway from α 0.5 (40 points) to α 1 (80)
    assert m.retained_change == pytest.approx(-0.25)  # halfway from -10 to -40 points
    assert m.ci_low < -0.25 < m.ci_high and 0.5 < m.reached <= 1


def test_a_path_that_never_gains_that_much_has_no_matched_point():
    assert forgetting_at_gain(BASE, LINE, "skill", 0.9) is None


def test_a_target_reached_at_the_first_point_reads_it_there():
    m = forgetting_at_gain(BASE, LINE, "skill", 0.0)
    assert (m.position, m.retained_change) == (0.0, 0.0)


def test_a_sweeps_strategies_are_read_seed_by_seed_against_the_references_gain(tmp_path):
    import json

    from retain.studies.sweep.matched_gain import matched_difference, matched_rows

    def written(name: str, r: dict):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(r))
        return path

    base = written("base", BASE)
    # the reference gains 80 points (target at 95%: 76); a gentle recipe's line gains 0, 40, 80 and loses 0, 10, 40
    # facts; a timid one never gains more than 40 points
    paths = {"unprotected": [[base, written("u.5", results(4, 8)), written("u", results(8, 4))]],
             "gentle": [[base, written("g.5", results(4, 9)), written("g", results(8, 6))]],
             "timid": [[base, written("t.5", results(2, 10)), written("t", results(4, 10))]],
             "unscored": [[base, tmp_path / "missing.json", written("x", results(8, 6))]]}
    rows = matched_rows(base, paths, "skill", share=0.95)
    assert set(rows) == {"unprotected", "gentle", "timid"}  # a path not yet scored is left out
    gentle = rows["gentle"]["per_seed"][0]
    assert gentle["position"] == pytest.approx(1.9)  # 76 is 90% of the way from 40 to 80
    assert gentle["change"] == pytest.approx(-0.1 - 0.9 * 0.3) == rows["gentle"]["mean"]
    assert rows["unprotected"]["mean"] == pytest.approx(-0.2 - 0.9 * 0.4)
    low, high = rows["gentle"]["ci"]
    assert (low, high) == pytest.approx(tuple(gentle["ci"]))  # one seed: the CI over seeds and items is the items'
    assert rows["timid"] == {"share": 0.95, "per_seed": [None], "mean": None, "ci": None}  # it never gets there
    assert matched_rows(base, {"gentle": paths["gentle"]}, "skill") == {}  # no reference, no target
    # B - A where each line reaches the target, seed by seed, with a CI over the same item draws
    gentle_vs_unprotected = matched_difference(base, paths["unprotected"], paths["gentle"], paths["unprotected"],
                                               "skill", share=0.95)
    assert gentle_vs_unprotected["delta"] == pytest.approx(rows["gentle"]["mean"] - rows["unprotected"]["mean"])
    low, high = gentle_vs_unprotected["ci"]
    assert low <= gentle_vs_unprotected["delta"] <= high
    assert matched_difference(base, paths["unprotected"], paths["timid"], paths["unprotected"], "skill") is None
    assert matched_difference(base, paths["unprotected"], paths["unscored"], paths["unprotected"], "skill") is None


def test_the_table_cell_gives_the_mean_then_each_seed():
    from retain.studies.sweep.summary import _matched_cell

    assert _matched_cell({"per_seed": [{"change": -0.05}, {"change": 0.01}], "mean": -0.02, "ci": [-0.06, 0.02]}) \
        == "-2.0 [-6.0, +2.0] (-5.0 / +1.0)"
    assert _matched_cell({"per_seed": [{"change": -0.05}, None], "mean": None}) == "— (-5.0 / —)"
    assert _matched_cell(None) == ""  # not scored yet


def test_the_ci_over_seeds_resamples_seeds_then_reads_each_drawn_seeds_resample():
    import numpy as np

    from retain.studies.sweep.matched_gain import across_seeds

    # two seeds that each know their value exactly (every resample the same): the mean's CI spans the seeds
    low, high = across_seeds([np.full(4000, -0.1), np.full(4000, -0.3)])
    assert (low, high) == pytest.approx((-0.3, -0.1))
    same = np.linspace(-0.2, 0.0, 4001)
    assert across_seeds([same]) == pytest.approx((np.percentile(same, 2.5), np.percentile(same, 97.5)))
