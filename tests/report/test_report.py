import json
import math

import pytest

from retain.report.build import compare, headline, write_report
from retain.report.render import budget_lines, ci_decimals, format_change, format_relative, render_markdown
from retain.report.severity import severity
from retain.evaluation.compare import verdict
from retain.evaluation.stats import mcnemar_exact, paired_bootstrap


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
    assert verdict(c, lower_is_better=False) == "worse"
    assert verdict(c, lower_is_better=True) == "better"  # an error rate that fell 40 points
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
    assert verdict(c, lower_is_better=True) == "worse"  # perplexity rose: the capability got worse
    back = paired_bootstrap(after, before, "word_perplexity")
    assert back.delta < 0 and verdict(back, lower_is_better=True) == "better"  # perplexity fell


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
    assert comparison["capabilities"]["facts"]["verdict"] == "worse"
    assert comparison["capabilities"]["arithmetic"]["verdict"] == "no significant change"
    text = headline("tuned", comparison)
    assert text.startswith("tuned: severe forgetting (worst: facts) — gained 90.0 pts of task")
    assert "lost 60.0 pts of facts (severe; 95% CI" in text
    assert text.endswith("; 1 other capability unchanged.")
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
    assert "<td class='worse'>worse</td><td class='severe'>severe</td>" in page
    md = out["md"].read_text()
    assert "| facts | exact_match (%), chance 0.0 | 100.0 | 40.0 | -60.0 pts [" in md
    assert md.count("| worse | severe |") == 2  # per capability and per task
    assert "mild < 5 points, moderate 5-15, severe > 15" in md and "Forgetting of tuned: severe" in md
    saved = json.loads(out["json"].read_text())["comparisons"]["tuned"]
    assert saved["tasks"]["new"]["verdict"] == "better" and saved["tasks"]["new"]["severity"] == "none"
    assert saved["capabilities"]["facts"]["severity"] == "severe"
    assert saved["forgetting"] == {"severity": "severe", "worst": "facts"}


def test_report_states_the_retention_budget_in_its_units_and_what_happened(tmp_path):
    base = results({"facts": ("facts", [1] * 20)})
    paths = []
    for name in ("base", "tuned"):
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(json.dumps(base))
    run = tmp_path / "run"
    run.mkdir()
    (run / "retention.json").write_text(json.dumps({
        "max_drop_points": 2.0, "max_perplexity_increase": 0.05, "action": "rollback", "suite": "lab", "every": 50,
        "outcome": {"action": "rollback", "step": 150, "restored_step": 100,
                    "reason": "english word_perplexity rose +99.1% (budget +5%)"}, "checks": []}))
    out = write_report(paths, tmp_path / "report", run_dirs=[run])
    text = out["md"].read_text()
    assert "no score may drop more than 2 points and no perplexity may rise more than 5%" in text
    assert "breached at step 150: action rollback (restored step 100); english word_perplexity rose +99.1%" in text


def test_a_retention_json_from_before_the_units_still_reads():
    old = {"max_drop": 0.01, "action": "stop", "suite": "lab", "every": 50, "outcome": None, "checks": [{}, {}]}
    [line] = budget_lines({"retention_budgets": {"run": old}})
    assert "no task may drop more than 0.01 (x100 points for scores, a relative rise for perplexities)" in line
    assert line.endswith("held at all 2 checks.")


# ---- what the numbers mean: wording, units, digits, severity --------------------------------------------------

def perplexity_task(logliks, capability="English text") -> dict:
    its = [{"id": i, "loglikelihood": float(x), "words": 10, "bytes": 50, "tokens": 12} for i, x in enumerate(logliks)]
    ppl = math.exp(-sum(logliks) / (10 * len(logliks)))
    return {"kind": "perplexity", "capability": capability, "primary_metric": "word_perplexity",
            "lower_is_better": True, "chance": None, "n": len(its), "items": its,
            "metrics": {"word_perplexity": ppl, "bits_per_byte": 1.0}}


def generation_task(capability, exact, contains) -> dict:
    its = [{"id": i, "exact_match": float(e), "contains": float(c), "prediction": "x"}
           for i, (e, c) in enumerate(zip(exact, contains))]
    return {"kind": "generation", "capability": capability, "primary_metric": "exact_match", "lower_is_better": False,
            "chance": 0.0, "n": len(its), "items": its,
            "metrics": {"exact_match": sum(exact) / len(exact), "contains": sum(contains) / len(contains)}}


def row(delta, low, high, relative=False, after=0.5, chance=None, lower_is_better=None):
    lower = relative if lower_is_better is None else lower_is_better
    before = after / (1 + delta) if relative else after - delta
    r = {"delta": delta, "ci_low": low, "ci_high": high, "relative": relative, "before": before, "after": after,
         "chance": chance, "lower_is_better": lower, "metric": "word_perplexity" if relative else "acc"}
    improved = (delta < 0) if lower else (delta > 0)
    r["verdict"] = "no significant change" if low <= 0 <= high else "better" if improved else "worse"
    return r


def test_a_perplexity_that_rose_x1658_is_worded_as_a_loss_with_thousands_separators(tmp_path):
    # word perplexity about e^2.1 -> 1658 times that: each document (10 words) loses 10 * ln(1658) nats, about
    base_ll = [-20.0 - (i % 3) for i in range(40)]
    tuned_ll = [x - 10 * math.log(1658) + 0.3 * ((i % 5) - 2) for i, x in enumerate(base_ll)]
    base = {"split": "test", "tasks": {"english": perplexity_task(base_ll)}}
    tuned = {"split": "test", "tasks": {"english": perplexity_task(tuned_ll)}}
    comparison = compare(base, tuned)
    english = comparison["capabilities"]["English text"]
    assert english["verdict"] == "worse" and english["severity"] == "catastrophic"
    text = headline("tuned", comparison)
    assert "English text: perplexity ×1,658 (worse, catastrophic; 95% CI ×" in text
    assert "rose" not in text and "fell" not in text and "1658.7" not in text
    # and the other way: a perplexity that fell is better, in percent while it has not halved
    back = headline("back", compare(tuned, {"split": "test", "tasks": {"english": perplexity_task(
        [x + 10 * math.log(1658) * 0.02 for x in tuned_ll])}}))
    assert "English text: perplexity -" in back and "% (better; 95% CI -" in back
    # the table says the same thing in the same unit
    paths = []
    for name, r in (("base", base), ("tuned", tuned)):
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(json.dumps(r))
    md = write_report(paths, tmp_path / "report")["md"].read_text()
    assert "| English text | word_perplexity | 8.15 | 13,505.70 | ×1,658 [×1,635, ×1,679] |" in md
    assert "| worse | catastrophic |" in md


@pytest.mark.parametrize("delta, low, high, relative, expected", [
    (-0.008, -0.0121, -0.0062, True, ("-0.80%", "-1.21%", "-0.62%")),  # today: -1% (95% CI -1% to -1%)
    (-0.08, -0.11, -0.05, True, ("-8.0%", "-11.0%", "-5.0%")),
    (-0.30, -0.45, -0.15, True, ("-30%", "-45%", "-15%")),
    (1657.6, 1200.2, 2086.9, True, ("×1,659", "×1,201", "×2,088")),
    (1.2, 0.9, 1.6, True, ("×2.20", "×1.90", "×2.60")),
    (-0.6, -0.74, -0.46, False, ("-60.0", "-74.0", "-46.0")),  # points: at least one decimal
    (-0.004, -0.006, -0.002, False, ("-0.40", "-0.60", "-0.20")),
    (0.0, 0.0, 0.0, False, ("+0.0", "+0.0", "+0.0")),  # a CI of no width: the least digits
])
def test_ci_bounds_get_enough_digits_to_differ(delta, low, high, relative, expected):
    shown = format_change(row(delta, low, high, relative))
    assert shown == expected
    if low != high:
        assert shown[1] != shown[2]


def test_ci_decimals_follow_the_width():
    assert [ci_decimals(0, w, least=0) for w in (30, 3, 0.3, 0.03, 0.003, 0.0003)] == [0, 1, 2, 3, 3, 3]
    assert ci_decimals(0, 30, least=1) == 1


def test_format_relative_alone():
    assert [format_relative(x) for x in (0.004, -0.043, 0.25, 1.5, 1657.4)] == ["+0.4%", "-4.3%", "+25%", "×2.5",
                                                                                "×1,658"]


@pytest.mark.parametrize("r, grade", [
    (row(-0.049, -0.07, -0.02), "mild"),
    (row(-0.05, -0.07, -0.03), "moderate"),  # 5 points is moderate (5-15)
    (row(0.70 - 0.85, -0.2, -0.1), "moderate"),  # 15 points (as floats subtract them) is still moderate
    (row(-0.151, -0.2, -0.1), "severe"),
    (row(-0.6, -0.7, -0.5, after=0.25, chance=0.25), "catastrophic"),  # at chance
    (row(-0.6, -0.7, -0.5, after=0.20, chance=0.25), "catastrophic"),  # below chance
    (row(-0.6, -0.7, -0.5, after=0.26, chance=0.25), "catastrophic"),  # 86 -> 26: keeps 1/61 of its margin
    (row(-0.51, -0.6, -0.4, after=0.35, chance=0.25), "severe"),  # 86 -> 35: keeps 10/61 of its margin
    (row(-0.975, -0.99, -0.95, after=0.025, chance=0.0), "catastrophic"),  # 100 -> 2.5 exact match: keeps 2.5%
    (row(-0.88, -0.95, -0.8, after=0.12, chance=0.0), "severe"),  # 100 -> 12: keeps 12% of its margin
    (row(-0.3, -0.5, 0.1), "none"),  # not significant: not graded
    (row(0.3, 0.2, 0.4), "none"),  # a gain
    (row(0.03, 0.01, 0.05, lower_is_better=True), "mild"),  # an error rate that rose 3 points
    (row(0.099, 0.05, 0.15, relative=True), "mild"),  # perplexity +9.9%
    (row(0.10, 0.05, 0.15, relative=True), "moderate"),
    (row(0.50, 0.4, 0.6, relative=True), "moderate"),
    (row(0.51, 0.4, 0.6, relative=True), "severe"),
    (row(9.0, 8.0, 10.0, relative=True), "catastrophic"),  # ×10
    (row(-0.3, -0.4, -0.2, relative=True), "none"),  # perplexity fell: better
])
def test_severity_as_the_seeds_grade_it(r, grade):
    assert severity(r) == grade


def test_severity_per_capability_and_for_the_run():
    base = results({"mc": ("choice", [1] * 120 + [0] * 80), "facts": ("facts", [1] * 60 + [0] * 20),
                    "sums": ("arithmetic", [1] * 50)})
    tuned = results({"mc": ("choice", [1] * 112 + [0] * 88), "facts": ("facts", [1] * 52 + [0] * 28),
                     "sums": ("arithmetic", [0] * 50)})
    base["tasks"]["mc"]["chance"] = tuned["tasks"]["mc"]["chance"] = 0.25
    comparison = compare(base, tuned)
    grades = {c: r["severity"] for c, r in comparison["capabilities"].items()}
    assert grades == {"choice": "mild", "facts": "moderate", "arithmetic": "catastrophic"}
    assert comparison["forgetting"] == {"severity": "catastrophic", "worst": "arithmetic"}
    text = headline("tuned", comparison)
    assert text.startswith("tuned: catastrophic forgetting (worst: arithmetic) — lost 100.0 pts of arithmetic "
                           "(catastrophic; 95% CI")
    assert "lost 10.0 pts of facts (moderate; 95% CI" in text and "lost 4.0 pts of choice (mild; 95% CI" in text


def test_nothing_lost_says_so():
    same = results({"facts": ("facts", [1] * 20 + [0] * 5), "sums": ("arithmetic", [1] * 10)})
    assert headline("same", compare(same, same)) == "same: no significant forgetting — 2 capabilities unchanged."


def test_unchanged_means_unchanged_other_metrics_are_checked():
    # measured: `contains` fell 60 points while the primary `exact_match` stayed at 0
    base = {"split": "test", "tasks": {"chat": generation_task("capitals (chat)", [0] * 50, [1] * 40 + [0] * 10),
                                       "facts": generation_task("facts", [1] * 30, [1] * 30)}}
    tuned = {"split": "test", "tasks": {"chat": generation_task("capitals (chat)", [0] * 50, [1] * 10 + [0] * 40),
                                        "facts": generation_task("facts", [1] * 30, [1] * 30)}}
    comparison = compare(base, tuned)
    chat = comparison["capabilities"]["capitals (chat)"]
    assert chat["verdict"] == "no significant change" and chat["severity"] == "none"
    assert [(m["metric"], m["verdict"], m["severity"]) for m in chat["moved"]] == [("contains", "worse", "severe")]
    assert comparison["tasks"]["chat"]["other_metrics"]["contains"]["delta"] == pytest.approx(-0.6)
    assert comparison["forgetting"]["severity"] == "severe"
    text = headline("tuned", comparison)
    assert "capitals (chat): exact_match unchanged, but contains lost 60.0 pts (severe; 95% CI" in text
    assert text.endswith("; 1 other capability unchanged.")  # facts only, not the chat capability
    md = render_markdown({"base": "b", "split": "test", "headlines": [text], "comparisons": {"tuned": comparison}})
    assert "| chat | contains (%), secondary | 80.0 | 20.0 | -60.0 pts [" in md


def test_a_pooled_capability_whose_tasks_moved_apart_is_not_unchanged():
    base = results({"a": ("facts", [1] * 30 + [0] * 30), "b": ("facts", [0] * 30 + [1] * 30)})
    tuned = results({"a": ("facts", [1] * 60), "b": ("facts", [0] * 60)})
    comparison = compare(base, tuned)
    facts = comparison["capabilities"]["facts"]
    assert facts["verdict"] == "no significant change"
    assert {(m["task"], m["verdict"]) for m in facts["moved"]} == {("a", "better"), ("b", "worse")}
    text = headline("tuned", comparison)
    assert "facts: exact_match unchanged, but a exact_match gained 50.0 pts" in text
    assert "b exact_match lost 50.0 pts (catastrophic; 95% CI" in text and "unchanged." not in text


@pytest.mark.parametrize("labels, message", [
    (["base"], "--label: 1 label for 3 results files; give one per file"),
    (["a", "b", "c", "d"], "--label: 4 labels for 3 results files"),
    (["a", "b", "a"], "--label: a is the base's label"),  # the base is one model; fine-tunes may share a label
])
def test_wrong_labels_are_a_clear_error(tmp_path, labels, message):
    paths = []
    for name in ("base", "one", "two"):
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(json.dumps(results({"facts": ("facts", [1] * 5)})))
    with pytest.raises(ValueError, match=message):
        write_report(paths, tmp_path / "report", labels=labels)
    assert not (tmp_path / "report").exists()


def test_cli_report_with_too_few_labels_exits_2_with_the_message(tmp_path, capsys):
    from retain.cli import main

    paths = []
    for name in ("base", "one", "two"):
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(json.dumps(results({"facts": ("facts", [1] * 5)})))
    code = main(["report", *map(str, paths), "--label", "base", "--out", str(tmp_path / "r")])
    assert code == 2 and "--label: 1 label for 3 results files" in capsys.readouterr().err


def test_cli_report_takes_labels_comma_separated_or_repeated(tmp_path, capsys):
    from retain.cli import main

    paths = []
    for name in ("base", "one", "two"):
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(json.dumps(results({"facts": ("facts", [1] * 5)})))
    for k, labels in enumerate((["--label", "b,x,y"], ["--label", "b,x", "--label", "y"])):
        assert main(["report", *map(str, paths), *labels, "--out", str(tmp_path / f"r{k}")]) == 0
        report = json.loads((tmp_path / f"r{k}" / "report.json").read_text())
        assert report["base"] == "b" and list(report["comparisons"]) == ["x", "y"]
    assert main(["report", *map(str, paths), "--label", "b,,y", "--out", str(tmp_path / "r2")]) == 2
    assert "--label: an empty label in 'b,,y'" in capsys.readouterr().err and not (tmp_path / "r2").exists()


# ---- figures ------------------------------------------------------------------------------------------------

def test_a_zero_score_has_a_visible_bar_and_value(monkeypatch):
    from retain.report import plots

    figures = []
    monkeypatch.setattr(plots, "_png", lambda fig: figures.append(fig) or b"png")
    base = results({"facts": ("facts", [1] * 20), "sums": ("arithmetic", [1] * 20)})
    tuned = results({"facts": ("facts", [0] * 20), "sums": ("arithmetic", [1] * 20)})
    plots.capability_bars("base", {"tuned": compare(base, tuned)})
    ax = figures[0].axes[0]
    assert "0.0" in [t.get_text() for t in ax.texts]  # the zero bar's value is written beside it
    zero_marks = [line for line in ax.lines if list(line.get_xdata()) == [0]]
    assert zero_marks and ax.get_xlim()[0] < 0  # a mark at 0, inside the axes, not hidden by the spine


def test_a_kl_of_exactly_zero_draws_no_spike_on_the_log_axis(tmp_path, monkeypatch):
    from retain.report import plots

    figures = []
    monkeypatch.setattr(plots, "_png", lambda fig: figures.append(fig) or b"png")
    run = tmp_path / "run"
    run.mkdir()
    rows = [{"step": s, "loss/task": 2.0 / s, "loss/kl": 0.0 if s in (1, 3) else 0.01 * s} for s in range(1, 7)]
    rows += [{"step": s, "loss/l2sp": 0.0} for s in range(1, 7)]  # always 0: not drawn at all
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    plots.training_curves([run])
    ax = figures[0].axes[0]
    assert ax.get_yscale() == "log" and ax.get_ylim()[0] > 1e-3  # clipped zeros would pull it to ~1e-300
    kl = next(line for line in ax.lines if "loss/kl" in line.get_label())
    assert "2 values <= 0 not shown" in kl.get_label()
    ys = kl.get_ydata()
    assert math.isnan(ys[0]) and math.isnan(ys[2]) and all(y > 0 for y in ys if not math.isnan(y))
    assert not any("loss/l2sp" in line.get_label() for line in ax.lines)


def test_filtered_lm_eval_metric_names_still_get_an_exact_mcnemar_p():
    from retain.evaluation.stats import paired_bootstrap

    before = [{"id": i, "exact_match,strict-match": float(i < 10)} for i in range(20)]
    after = [{"id": i, "exact_match,strict-match": 0.0} for i in range(20)]
    change = paired_bootstrap(before, after, "exact_match,strict-match")
    assert change.p_value is not None and change.p_value < 0.01


def test_largest_drop_is_zero_not_minus_zero_when_nothing_moved():
    from retain.report.build import largest_drop

    unchanged = {"delta": -0.0, "lower_is_better": False, "relative": False}
    comparison = {"capabilities": {"facts": dict(unchanged, delta=0.0), "choice": unchanged}}
    assert f"{100 * largest_drop(comparison):.1f}" == "0.0"
    comparison["capabilities"]["choice"] = dict(unchanged, delta=-0.25)  # a drop of 25 points
    assert largest_drop(comparison) == 0.25


def test_metrics_of_a_killed_run_read_up_to_the_half_written_line(tmp_path):
    from retain.core.files import read_metrics
    from retain.report.reward_hacking import reward_trend

    rows = [{"step": s, "grpo/reward": 0.1 * s, "grpo/kl": 0.01 * s} for s in range(1, 11)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 11, "grpo/rew')
    assert read_metrics(tmp_path) == rows
    trend = reward_trend(tmp_path)  # means of the first and last fifth: steps 1-2 and 9-10
    assert trend["start"] == pytest.approx(0.15) and trend["end"] == pytest.approx(0.95)
    assert read_metrics(tmp_path / "no-such-run") == []


# --- what the report says to do: verdict lines, forgetting over training, answers that changed, next steps ---

def fake_run(where, retention: dict | None = None, config: dict | None = None, metrics: list | None = None):
    """A run dir as training leaves it (config.yaml, metrics.jsonl, final/), with a retention.json if given."""
    import yaml

    (where / "final").mkdir(parents=True)
    (where / "config.yaml").write_text(yaml.safe_dump(config or {}))
    (where / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in metrics or [{"step": 1, "loss/task": 2.0}]))
    if retention is not None:
        (where / "retention.json").write_text(json.dumps(retention))
    return where


def test_verdict_lines_say_how_bad_and_whether_to_ship_with_the_budget(tmp_path):
    from retain.report.build import verdict_line

    base = results({"facts": ("facts", [1] * 200)})
    collapsed = compare(base, results({"facts": ("facts", [0] * 200)}))
    assert verdict_line("unprotected", collapsed) == \
        "unprotected: catastrophic forgetting (worst: facts) — do not ship"
    mild = results({"facts": ("facts", [0] * 8 + [1] * 192)})  # 4 points lost, every time the same way
    run = fake_run(tmp_path / "run", retention={"max_drop_points": 5.0, "max_perplexity_increase": 0.1, "suite": "lab",
                                                "action": "stop", "every": 20, "outcome": None, "checks": []})
    paths = []
    for name, res in (("base", base), ("protected", {**mild, "model": str(run / "final")})):
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(json.dumps(res))
    out = write_report(paths, tmp_path / "report", labels=["base", "protected"])  # the run found from the model path
    line = "protected: mild forgetting (worst: facts) — ship it: every loss under 5 points (perplexity +10%); " \
           "on these items every task is within its 5-point retention budget"
    assert out["verdicts"] == line
    assert line in out["md"].read_text().split("\n- ")[0]  # on top, before the headlines
    assert verdict_line("protected", compare(base, mild), 2.0).endswith(
        "on these items facts lost 4.0 pts, over its 2-point retention budget")
    # kept everything, learned nothing: the task (a capability named "task: ...") did not improve
    task = ("task: towns", [0] * 200)
    unchanged = compare(results({"facts": ("facts", [1] * 200), "towns": task}),
                        results({"facts": ("facts", [1] * 200), "towns": task}))
    assert verdict_line("tuned", unchanged) == \
        "tuned: no significant forgetting — nothing to ship: task: towns did not improve significantly"
    learned = compare(results({"facts": ("facts", [1] * 200), "towns": task}),
                      results({"facts": ("facts", [1] * 200), "towns": ("task: towns", [1] * 200)}))
    assert verdict_line("tuned", learned) == "tuned: no significant forgetting — ship it: nothing it knew was lost"


def generation(predictions: list[str], targets: list[str]) -> dict:
    its = [{"id": i, "exact_match": float(p.strip() == t), "prediction": p, "context": f"Q{i}: capital?", "target": t}
           for i, (p, t) in enumerate(zip(predictions, targets))]
    return {"split": "test", "tasks": {"capitals": {
        "kind": "generation", "capability": "facts", "primary_metric": "exact_match", "lower_is_better": False,
        "chance": 0.0, "n": len(its), "metrics": {"exact_match": sum(i["exact_match"] for i in its) / len(its)},
        "items": its}}}


def test_answers_before_and_after_are_only_those_whose_outcome_changed():
    from retain.report.answers import changed_answers

    targets = ["Paris", "Rome", "Oslo", "Lima", "Bern", "Kyiv"]
    before = generation(["Paris", "Rome", "Oslo", "Lima", "Bonn", "Kyiv"], targets)
    after = generation(["France.", "Rome", "Oslo, Norway", "Lima", "Bern", "Ukraine"], targets)
    shown = changed_answers(before, after)["capitals"]
    # items 0, 2 and 5 lost (losses first, in item order), item 4 gained; 1 and 3 unchanged are never shown
    assert [(a["id"], a["outcome"]) for a in shown] == [(0, "lost"), (2, "lost"), (5, "lost")]
    assert (shown[0]["prompt"], shown[0]["target"], shown[0]["before"], shown[0]["after"]) == \
        ("Q0: capital?", "Paris", "Paris", "France.")
    assert [a["id"] for a in changed_answers(before, after, per_task=5)["capitals"]] == [0, 2, 5, 4]
    assert changed_answers(before, before) == {}


def test_the_forgetting_plot_is_drawn_when_the_run_logged_checks_and_only_then(tmp_path):
    from retain.report import plots

    check = {"units": {"facts": "points", "english": "relative"}, "within_budget": True}
    checked = fake_run(tmp_path / "checked", retention={
        "suite": "lab", "action": "stop", "every": 20, "outcome": None, "max_drop_points": 2.0, "max_perplexity_increase": 0.2, "start": {"step": 0, "drops": {"facts": 0.0,
                                                                                               "english": 0.0}},
        "checks": [{**check, "step": s, "drops": {"facts": d, "english": d / 10}} for s, d in ((20, 1.0), (40, 3.0))]})
    logged = fake_run(tmp_path / "logged", metrics=[{"step": 20, "retention/max_drop_points": 1.0}])
    plain = fake_run(tmp_path / "plain")
    assert plots.forgetting_curves([checked]) and plots.forgetting_curves([logged])
    assert plots.forgetting_curves([plain]) is None and plots.forgetting_curves([]) is None
    base = results({"facts": ("facts", [1] * 20)})
    for run in (checked, plain):
        paths = [tmp_path / "base.json", tmp_path / f"{run.name}.json"]
        paths[0].write_text(json.dumps(base))
        paths[1].write_text(json.dumps({**base, "model": str(run / "final")}))
        page = write_report(paths, tmp_path / f"report-{run.name}")["html"].read_text()
        assert ("alt='forgetting over training'" in page) == (run is checked)


def test_what_to_try_next_names_the_doctors_findings_for_the_runs_config(tmp_path, make_config):
    config = make_config(training={"lr": 1e-2, "max_steps": 6})
    run = fake_run(tmp_path / "unprotected", config=config)
    paths = [tmp_path / "base.json", tmp_path / "tuned.json"]
    paths[0].write_text(json.dumps(results({"facts": ("facts", [1] * 40)})))
    paths[1].write_text(json.dumps({**results({"facts": ("facts", [0] * 40)}), "model": str(run / "final")}))
    out = write_report(paths, tmp_path / "report")
    advice = json.loads(out["json"].read_text())["next_steps"]["tuned"]
    assert "high_lr" in [f["cause"] for f in advice["findings"]] and "training.lr=" in advice["command"]
    md = out["md"].read_text()
    assert "## tuned: what to try next" in md and "**high_lr**" in md and f"retain train {run / 'config.yaml'}" in md
    assert "what to try next" in out["html"].read_text()
