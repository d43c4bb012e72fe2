import json
import math

import pytest

from retain.report.build import compare, headline, write_report
from retain.report.stats import mcnemar_exact, paired_bootstrap, verdict


def items(values, metric="acc"):
    return [{"id": i, metric: float(v)} for i, v in enumerate(values)]


def test_mcnemar_exact_by_hand():
    assert mcnemar_exact([1] * 5 + [0] * 5, [0] * 5 + [0] * 5) == pytest.approx(2 / 32)
    assert mcnemar_exact([1, 0, 1], [1, 0, 1]) == 1.0
    # 10 lost, 2 gained: 2 * P(X <= 2), X ~ Bin(12, 1/2)
    expected = 2 * sum(math.comb(12, k) for k in range(3)) / 2 ** 12
    assert mcnemar_exact([1] * 10 + [0] * 2, [0] * 10 + [1] * 2) == pytest.approx(expected)


def test_paired_bootstrap_on_a_clear_drop_and_no_change():
    before = items([1] * 80 + [0] * 20)
    after = items([0] * 40 + [1] * 40 + [0] * 20)
    c = paired_bootstrap(before, after, "acc")
    assert c.delta == pytest.approx(-0.4) and c.ci_low < -0.4 < c.ci_high < -0.25
    assert verdict(c, lower_is_better=False) == "fell"
    same = paired_bootstrap(before, before, "acc")
    assert (same.delta, same.ci_low, same.ci_high) == (0, 0, 0)
    assert verdict(same, lower_is_better=False) == "no significant change"


def test_perplexity_change_is_relative_and_lower_is_better():
    before = [{"id": i, "loglikelihood": -20.0, "words": 10, "bytes": 50, "tokens": 12} for i in range(30)]
    after = [{**b, "loglikelihood": -25.0 + (i % 3)} for i, b in enumerate(before)]
    c = paired_bootstrap(before, after, "word_perplexity")
    assert c.relative and c.before == pytest.approx(math.exp(2.0))
    assert c.after == pytest.approx(math.exp(24.0 / 10))
    assert c.delta == pytest.approx(math.exp(0.4) - 1)
    assert verdict(c, lower_is_better=True) == "fell"


def test_mismatched_items_are_refused():
    with pytest.raises(ValueError, match="different items"):
        paired_bootstrap(items([1, 0]), items([1, 0, 1]), "acc")


def results(task_values: dict) -> dict:
    tasks = {}
    for name, (capability, values) in task_values.items():
        tasks[name] = {"kind": "generation", "capability": capability, "primary_metric": "exact_match",
                       "lower_is_better": False, "chance": 0.0, "n": len(values),
                       "metrics": {"exact_match": sum(values) / len(values)}, "items": items(values, "exact_match")}
    return {"split": "test", "tasks": tasks}


def test_report_end_to_end(tmp_path):
    base = results({"facts": ("facts", [1] * 50), "sums": ("arithmetic", [1] * 40 + [0] * 10),
                    "new": ("task", [0] * 50)})
    tuned = results({"facts": ("facts", [1] * 20 + [0] * 30), "sums": ("arithmetic", [1] * 40 + [0] * 10),
                     "new": ("task", [1] * 45 + [0] * 5)})
    comparison = compare(base, tuned)
    assert comparison["capabilities"]["facts"]["verdict"] == "fell"
    assert comparison["capabilities"]["arithmetic"]["verdict"] == "no significant change"
    text = headline("tuned", comparison)
    assert text.startswith("tuned: gained 90.0 pts of task") and "lost 60.0 pts of facts" in text
    assert "1 other capability unchanged" in text
    paths = []
    for name, r in (("base", base), ("tuned", tuned)):
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(json.dumps(r))
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "loss/task": 2.0 / s}) + "\n" for s in (1, 2, 3)))
    out = write_report(paths, tmp_path / "report", run_dirs=[run])
    page = out["html"].read_text()
    assert page.count("data:image/png;base64,") == 2 and "lost 60.0 pts of facts" in page
    assert "| facts | exact_match (%), chance 0.0 | 100.0 | 40.0 |" in out["md"].read_text()
    assert json.loads(out["json"].read_text())["comparisons"]["tuned"]["tasks"]["new"]["verdict"] == "rose"


def test_report_states_the_retention_budget_and_what_happened(tmp_path):
    base = results({"facts": ("facts", [1] * 20)})
    paths = []
    for name in ("base", "tuned"):
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(json.dumps(base))
    run = tmp_path / "run"
    run.mkdir()
    (run / "retention.json").write_text(json.dumps({
        "max_drop": 0.01, "action": "rollback", "suite": "lab", "every": 50,
        "outcome": {"action": "rollback", "step": 150, "restored_step": 100}, "checks": []}))
    out = write_report(paths, tmp_path / "report", run_dirs=[run])
    text = out["md"].read_text()
    assert "no task may drop more than 0.01" in text and "breached at step 150: action rollback (restored step 100)" in text
