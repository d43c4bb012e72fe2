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
