"""Claims that survive a second look: training seeds (a two-level bootstrap), clustered items, and severity
relative to the base's margin over chance."""

import itertools
import json

import numpy as np
import pytest

from retain.report.build import compare, write_report
from retain.report.severity import severity
from retain.evaluation.compare import claim_verdict, not_shown, verdict
from retain.evaluation.stats import Change, paired_bootstrap, parts, seeded_bootstrap, two_level_deltas


def items(values, clusters=None, metric="acc"):
    return [{"id": i, metric: float(v), **({"cluster": clusters[i]} if clusters else {})} for i, v in enumerate(values)]


# 2 seeds x 2 items: the base gets item 0 right; seed A then gets both right, seed B neither.
BASE, SEED_A, SEED_B = [1, 0], [1, 1], [0, 0]  # per-item changes: A (0, +1), B (-1, 0)


def toy_parts():
    base = parts(items(BASE), "acc")
    return base, np.stack([parts(items(SEED_A), "acc"), parts(items(SEED_B), "acc")])


def test_two_level_bootstrap_by_hand_on_fixed_draws():
    base, seeds = toy_parts()
    seed_draws = np.array([[0, 1], [1, 1], [0, 0]])
    cluster_draws = np.array([[[0, 1], [1, 1]],   # A on items 0,1: +0.5; B on 1,1: 0       -> mean +0.25
                              [[0, 0], [0, 1]],   # B on 0,0: -1;   B on 0,1: -0.5          -> mean -0.75
                              [[1, 1], [0, 0]]])  # A on 1,1: +1;   A on 0,0: 0             -> mean +0.5
    assert two_level_deltas(base, seeds, seed_draws, cluster_draws, "acc").tolist() == [0.25, -0.75, 0.5]


def test_two_level_bootstrap_matches_the_exact_enumeration():
    # every draw of 2 seeds and, for each, 2 items is equally likely: 4 x 16 = 64 outcomes
    base, seeds = toy_parts()
    draws = list(itertools.product(range(2), repeat=6))  # s1, s2, i11, i12, i21, i22
    seed_draws = np.array([d[:2] for d in draws])
    cluster_draws = np.array([[d[2:4], d[4:]] for d in draws])
    exact = two_level_deltas(base, seeds, seed_draws, cluster_draws, "acc")
    per_seed_item_means = {0: [0, 0.5, 0.5, 1], 1: [-1, -0.5, -0.5, 0]}
    by_hand = sorted((per_seed_item_means[s1][2 * a + b] + per_seed_item_means[s2][2 * c + d]) / 2
                     for s1, s2, a, b, c, d in draws)
    assert sorted(exact.tolist()) == by_hand
    # P(-1) = 1/64 < 2.5% <= P(<= -0.75) = 5/64: the exact 95% interval is [-0.75, +0.75] (symmetric)
    assert np.mean(exact <= -1) == 1 / 64 and np.mean(exact <= -0.75) == 5 / 64
    c = seeded_bootstrap(items(BASE), [items(SEED_A), items(SEED_B)], "acc", resamples=20000)
    assert (c.ci_low, c.ci_high) == (-0.75, 0.75)
    assert c.per_seed == (0.5, -0.5) and c.delta == 0 and c.after == 0.5 and c.p_value is None


def test_one_results_file_per_label_is_the_item_bootstrap_as_before():
    rng = np.random.default_rng(1)
    before, after = rng.integers(0, 2, 60), rng.integers(0, 2, 60)
    c = paired_bootstrap(items(before), items(after), "acc")
    idx = np.random.default_rng(0).integers(0, 60, size=(2000, 60))  # the draws the report always made
    low, high = np.percentile((after[idx] - before[idx]).mean(axis=1), [2.5, 97.5])
    assert (c.ci_low, c.ci_high) == pytest.approx((low, high), abs=1e-12)
    assert c.per_seed == (c.delta,) and c.p_value is not None and c.clusters is None


def change(delta, low, high, per_seed):
    return Change(0.5, 0.5 + delta, delta, low, high, None, 100, False, per_seed)


def test_a_claim_is_supported_only_when_the_ci_excludes_0_and_every_seed_agrees():
    assert claim_verdict(change(0.02, 0.01, 0.03, (0.02, 0.01, 0.03)), +1) == "supported"
    assert claim_verdict(change(0.02, 0.01, 0.03, (0.02, 0.01, 0.03)), -1) == "contradicted"
    assert claim_verdict(change(0.02, -0.01, 0.05, (0.02, 0.01, 0.03)), +1) == "not shown (the 95% CI includes 0)"
    flips = change(0.02, 0.005, 0.03, (0.035, 0.03, -0.005))
    assert claim_verdict(flips, +1) == "not shown (the seeds disagree in sign: +3.5 pts, +3.0 pts, -0.5 pts)"
    assert verdict(flips, lower_is_better=False) == "no significant change"
    assert not_shown(change(0.02, 0.01, 0.03, (0.02,))) is None  # one seed: the CI alone decides


def results(values: list[int], clusters=None) -> dict:
    task = {"kind": "generation", "capability": "facts", "primary_metric": "exact_match", "lower_is_better": False,
            "chance": 0.0, "n": len(values), "metrics": {"exact_match": float(np.mean(values))},
            "items": items(values, clusters, "exact_match")}
    return {"split": "test", "tasks": {"facts": task}}


def test_report_takes_one_results_file_per_seed_under_one_label(tmp_path):
    base = [1] * 40
    files = {"base": base, "a0": [1] * 30 + [0] * 10, "a1": [1] * 28 + [0] * 12, "a2": [1] * 33 + [0] * 7,
             "b": [1] * 39 + [0]}
    paths = []
    for name, values in files.items():
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(json.dumps(results(values)))
    out = write_report(paths, tmp_path / "r", labels=["base", "a", "a", "a", "b"])
    report = json.loads(out["json"].read_text())
    row = report["comparisons"]["a"]["capabilities"]["facts"]
    assert row["per_seed"] == pytest.approx([-0.25, -0.3, -0.175]) and row["delta"] == pytest.approx(-0.725 / 3)
    assert row["verdict"] == "worse" and row["p_value"] is None
    assert report["comparisons"]["b"]["capabilities"]["facts"]["per_seed"] == pytest.approx([-0.025])
    assert report["seeds"] == {"a": [str(p) for p in paths[1:4]]}
    assert list(report["scores"]) == ["base", "a/1", "a/2", "a/3", "b"]
    assert out["headline"].startswith("a (3 seeds): severe forgetting")
    assert "seeds -25.0, -30.0, -17.5" in out["md"].read_text()


def test_clusters_widen_the_ci_and_items_each_their_own_cluster_change_nothing():
    rng = np.random.default_rng(0)
    per_country = rng.integers(0, 2, 30)  # 30 countries, each asked 4 times with the same outcome
    before, after = [1] * 120, [int(v) for v in per_country for _ in range(4)]
    countries = [f"c{k}" for k in range(30) for _ in range(4)]
    independent = paired_bootstrap(items(before), items(after), "acc")
    clustered = paired_bootstrap(items(before, countries), items(after, countries), "acc")
    assert clustered.delta == independent.delta and clustered.clusters == 30
    assert clustered.ci_high - clustered.ci_low > 1.5 * (independent.ci_high - independent.ci_low)  # ~ sqrt(4)
    own = [f"item{k}" for k in range(120)]
    alone = paired_bootstrap(items(before, own), items(after, own), "acc")
    assert (alone.ci_low, alone.ci_high) == (independent.ci_low, independent.ci_high)


def test_a_pooled_capability_resamples_an_entity_across_its_tasks():
    countries = [f"c{k}" for k in range(20)]
    lost = [1] * 10 + [0] * 10  # the same 10 countries lost in both tasks

    def two_tasks(values, with_clusters):
        r = results(values, countries if with_clusters else None)
        r["tasks"]["facts2"] = {**r["tasks"]["facts"]}
        return r

    widths = {}
    for with_clusters in (False, True):
        row = compare(two_tasks([1] * 20, with_clusters), two_tasks(lost, with_clusters))["capabilities"]["facts"]
        widths[with_clusters] = row["ci_high"] - row["ci_low"]
    assert widths[True] > 1.2 * widths[False]


@pytest.mark.parametrize("before, after, chance, grade", [
    (20.0, 150.0, 100.0, "catastrophic"),  # a chance perplexity recorded: ends above it
    (20.0, 90.0, 100.0, "catastrophic"),  # keeps log(100/90) / log(100/20) = 6.5% of its margin
    (20.0, 40.0, 100.0, "severe"),  # keeps 57% of its margin, rose ×2
    (20.0, 40.0, None, "severe"),
])
def test_perplexity_is_catastrophic_relative_to_its_chance_perplexity(before, after, chance, grade):
    r = {"verdict": "worse", "relative": True, "delta": after / before - 1, "before": before, "after": after,
         "lower_is_better": True, "chance": chance}
    assert severity(r) == grade


def test_two_recipes_run_with_the_same_seeds_are_compared_seed_by_seed():
    from retain.evaluation.stats import seed_paired_bootstrap

    a = [items([1] * 8 + [0] * 2), items([1] * 6 + [0] * 4)]  # recipe A, seeds 0 and 1: 80%, 60%
    b = [items([1] * 9 + [0] * 1), items([1] * 8 + [0] * 2)]  # recipe B: 90%, 80%
    c = seed_paired_bootstrap(a, b, "acc")
    assert c.per_seed == pytest.approx((0.1, 0.2)) and c.before == pytest.approx(0.7) and c.p_value is None
    with pytest.raises(ValueError, match="1 seeds against 2"):
        seed_paired_bootstrap(a[:1], b, "acc")


def test_severe_and_catastrophic_look_different_and_the_legend_says_why(tmp_path):
    import re

    from retain.report.render import CSS

    paths = []
    for name, values in {"base": [1] * 40, "severe": [1] * 32 + [0] * 8, "collapsed": [1] + [0] * 39}.items():
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(json.dumps(results(values)))
    out = write_report(paths, tmp_path / "r")
    page = out["html"].read_text()
    assert "<td class='severe'>severe</td>" in page and "<td class='catastrophic'>catastrophic</td>" in page

    def rule(name):
        return re.search(r"\.%s\{([^}]*)\}" % name, CSS).group(1)

    assert "background" in rule("catastrophic") and rule("severe") != rule("catastrophic")
    text = out["md"].read_text()  # 100 -> 2.5 exact match with chance 0: catastrophic, and the legend says why
    assert "collapsed: catastrophic forgetting" in out["headline"]
    assert "keeps less than a tenth of its margin above chance" in text and "For perplexity" in text
    assert "practitioners' grading of forgetting after fine-tuning" in text


def test_cli_report_groups_files_that_share_a_label_as_seeds(tmp_path, capsys):
    from retain.cli import main

    paths = []
    for name, values in {"base": [1] * 20, "a0": [1] * 10 + [0] * 10, "a1": [1] * 12 + [0] * 8}.items():
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(json.dumps(results(values)))
    assert main(["report", *map(str, paths), "--label", "base,a,a", "--out", str(tmp_path / "r")]) == 0
    assert "a (2 seeds): severe forgetting" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["report", "--help"])
    assert "Files that share a label are one recipe trained with several seeds" in " ".join(capsys.readouterr().out.split())
