"""The retention budget keeps learning: per-task budgets, the best reachable point, early warnings.

Unit tests of the selection logic on made-up check histories first; then the budget inside the loop on
the lab, where acting at the first breach (the old logic) ends at the base model.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

import retain
from retain.config import config_from_dict
from retain.core.errors import ConfigError
from retain.mitigations.budget import RetentionBudget, RetentionOptions
from retain.mitigations.budget.judge import over_budget
from retain.mitigations.budget.points import Point, best_within, repair, repair_lines, search_line, to_keep


def check(step, within, score=None, used=0.0):
    return {"step": step, "within_budget": within, "task_score": score, "budget_used": used, "drops": {}}


START = check(0, True, 0.0)


# ---- which point: the selection logic -----------------------------------------------------------------

def test_rollback_goes_to_the_best_check_within_budget_not_the_last():
    history = [START, check(10, True, 0.3, 0.5), check(20, True, 0.6, 0.9), check(30, True, 0.5, 0.2),
               check(40, False, 0.9, 3.0)]
    assert best_within(history)["step"] == 20


def test_equal_scores_prefer_less_budget_used_and_without_scores_the_latest_wins():
    assert best_within([START, check(10, True, 0.6, 0.9), check(20, True, 0.6, 0.1)])["step"] == 20
    assert best_within([START, check(10, True, 0.6, 0.1), check(20, True, 0.6, 0.9)])["step"] == 10
    unscored = [check(0, True), check(10, True, used=0.1), check(20, True, used=0.9), check(30, False)]
    assert best_within(unscored)["step"] == 20  # what rollback did before task scores: the last good one


def test_kept_points_are_the_best_within_budget_and_the_best_scores():
    history = [START, check(10, True, 0.2), check(20, True, 0.4), check(30, False, 0.9), check(40, False, 0.8),
               check(50, False, 0.1)]
    assert to_keep(history, 3) == {20, 30, 40}
    assert to_keep(history, 1) == {20}
    assert to_keep([START], 3) == set()


def test_repair_searches_lines_from_the_start_and_from_the_best_within_budget_toward_better_breaches():
    history = [START, check(10, True, 0.4), check(20, False, 0.9), check(30, False, 0.3)]
    # step 30 scores below the best within budget: no line toward it can beat step 10
    assert repair_lines(history, {10, 20, 30}) == [(0, 20), (10, 20)]


def test_bisection_finds_the_budget_boundary_on_a_line():
    def measure(point: Point) -> dict:  # forgetting grows with alpha; within budget up to 0.6
        return {"within_budget": point.alpha <= 0.6, "task_score": point.alpha, "budget_used": point.alpha / 0.6}

    found = search_line(0, 20, measure, iterations=8)
    assert 0.6 - 1 / 2 ** 8 <= found["point"].alpha <= 0.6
    assert search_line(0, 20, lambda p: {"within_budget": False}, iterations=4) is None


def test_repair_picks_the_highest_task_score_within_budget_over_all_lines():
    history = [START, check(10, True, 0.2), check(20, False, 0.9), check(30, False, 0.7)]

    def measure(point: Point) -> dict:
        # toward step 20 the budget holds only to alpha 0.25; toward step 30 up to 0.9
        edge = {20: 0.25, 30: 0.9}[point.end]
        end_score = {20: 0.9, 30: 0.7}[point.end]
        origin_score = {0: 0.0, 10: 0.2}[point.origin]
        return {"within_budget": point.alpha <= edge, "budget_used": point.alpha / edge,
                "task_score": origin_score + point.alpha * (end_score - origin_score)}

    chosen = repair(history, {10, 20, 30}, measure, iterations=6)
    assert chosen["point"].end == 30 and chosen["point"].origin == 10  # 0.2 + 0.88·0.5 beats 0.2 + 0.25·0.7
    assert chosen["task_score"] > 0.6
    assert len(chosen["candidates"]) == 4
    nothing_better = repair(history, {10, 20, 30}, lambda p: {"within_budget": False}, iterations=3)
    assert nothing_better["point"] == Point(0, 10, 1.0)  # the best check within budget itself


def test_a_point_that_gains_nothing_does_not_replace_the_start():
    # the old repair's failure on the lab: a sliver of the fine-tune (alpha 0.08) with no task gain was "chosen"
    history = [START, check(10, False, 0.4, 9.0)]
    chosen = repair(history, {10}, lambda p: {"within_budget": p.alpha < 0.1, "task_score": 0.0, "budget_used": 0.0},
                    iterations=5)
    assert chosen["point"].end == 0 and chosen["candidates"][0]["alpha"] > 0
    unscored = [check(0, True), check(10, False)]  # without a task score, the furthest point within budget
    chosen = repair(unscored, {10}, lambda p: {"within_budget": p.alpha < 0.3, "budget_used": 0.5}, iterations=5)
    assert chosen["point"].end == 10 and 0.25 <= chosen["point"].alpha < 0.3


# ---- the budget's decisions, on a scripted model ------------------------------------------------------------

class Scripted(RetentionBudget):
    """A budget whose scores are functions of a 2-weight model (a, b): the task score is a, and the facts
    score drops 10·b points; checks move along b = 4·a², so forgetting grows faster than the task."""

    def _score(self, model):
        _, b = model.weight.detach()[0].tolist()
        return {"tasks": {"facts": {"primary_metric": "acc", "lower_is_better": False,
                                    "metrics": {"acc": 0.9 - 0.1 * b}}}}

    def _scan(self, model, first):
        return self._within(model)

    def _task_value(self, model):
        return model.weight.detach()[0, 0].item()

    def task_source(self):
        return {"source": "scripted", "metric": "exact_match", "higher_is_better": True}


def scripted(total=50, **options) -> tuple[Scripted, torch.nn.Module]:
    from retain.mitigations.roles import Context

    model = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.zero_()
    budget = Scripted(RetentionOptions(suite="english", every=10, max_drop_points=2.0, **options))
    budget.setup(model, Context(tokenizer=None, total_steps=total, max_length=8, load_base_model=None,
                                output_dir=None))
    return budget, model


def train_to(budget, model, steps) -> list:
    decisions = []
    for step in steps:
        a = step / 100
        with torch.no_grad():
            model.weight.copy_(torch.tensor([[a, 4 * a * a]]))
        decisions.append(budget.check(model, step, step == budget.total_steps))
    return decisions


def test_rollback_with_patience_trains_through_a_breach_and_returns_to_the_best_check():
    budget, model = scripted(action="rollback", patience=2)
    *_, last = train_to(budget, model, [10, 20, 30, 40])
    assert [c["within_budget"] for c in budget.history] == [True, True, False, False]
    assert last.stop and torch.equal(last.weights["weight"], torch.tensor([[0.2, 0.16]]))  # step 20's weights
    assert budget.outcome["restored_step"] == 20 and "no better point in 2 checks" in budget.outcome["why"]


def test_repair_finds_a_better_point_than_any_check_between_the_best_and_a_breach():
    budget, model = scripted(action="repair", patience=9)
    *_, last = train_to(budget, model, [10, 20, 30, 40, 50])
    chosen = budget.outcome["chosen"]
    assert last.stop and chosen["origin"] == 20 and chosen["end"] in (40, 50)  # 30's weights were not kept
    assert chosen["task_value"] > 0.205 and chosen["budget_used"] <= 1  # better than step 20's 0.2, within budget
    a, b = last.weights["weight"][0].tolist()
    assert a == pytest.approx(chosen["task_value"]) and 10 * b <= 2.0


def test_the_kept_points_survive_a_resume_and_the_resumed_budget_decides_the_same():
    budget, model = scripted(action="repair", patience=9)
    train_to(budget, model, [10, 20, 30])
    state = budget.state_dict()
    assert set(state["kept"]) == {10, 20, 30}
    resumed, model2 = scripted(action="repair", patience=9)
    resumed.load_state_dict(state)
    *_, a = train_to(budget, model, [40, 50])
    *_, b = train_to(resumed, model2, [40, 50])
    assert budget.outcome == resumed.outcome and torch.equal(a.weights["weight"], b.weights["weight"])


def test_the_report_states_the_budget_each_check_and_the_point_chosen(tmp_path):
    from retain.report.build import write_report

    budget, model = scripted(action="repair", patience=9)
    train_to(budget, model, [10, 20, 30, 40, 50])
    run = tmp_path / "run"
    run.mkdir()
    (run / "retention.json").write_text(json.dumps(budget.files()["retention.json"]))
    rows = [{"step": s, "loss": 1.0, "loss/task": 1.0, "warn/kl_general": s / 100, "warn/drift/all": s / 50,
             "warn/drift/layer0": s / 40} for s in (10, 20, 30)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    results = {"split": "test", "tasks": {"facts": {
        "kind": "multiple_choice", "capability": "facts", "primary_metric": "acc", "lower_is_better": False,
        "chance": 0.25, "n": 4, "metrics": {"acc": 0.5}, "items": [{"id": i, "acc": i % 2} for i in range(4)]}}}
    paths = [tmp_path / "base.json", tmp_path / "tuned.json"]
    for p in paths:
        p.write_text(json.dumps(results))
    out = write_report(paths, tmp_path / "report", run_dirs=[run])
    md = out["md"].read_text()
    assert "Budget per task: facts: 2 points." in md
    assert "Points are ranked by the dev exact_match of scripted (higher is better)." in md
    assert "| step | within budget | budget used | dev exact_match | largest drops |" in md
    assert "| 0 | yes | 0% | 0 | none |" in md and "| 30 | no | 180% (facts) | 0.3 | facts -3.6 pts |" in md
    assert "Ended at 0." in md and "·(step 20) + 0." in md and "Searched the line from step 20 toward step" in md
    assert "action repair ended at" in md  # the one-line summary beside the headline
    html = out["html"].read_text()
    assert "alt='early warnings'" in html and "Retention budget: " in html


# ---- per-task budgets ----------------------------------------------------------------------------------

def lab_config(**retention) -> dict:
    return {"model": {"name": "retain-tiny"}, "data": {"train": "lab:tasks/city_country/train.jsonl"},
            "output": {"dir": "x"}, "mitigations": {"retention": retention}}


def base_results():
    return {"tasks": {
        "facts": {"primary_metric": "acc", "lower_is_better": False, "metrics": {"acc": 0.8}},
        "english": {"primary_metric": "word_perplexity", "lower_is_better": True, "metrics": {"word_perplexity": 20.0}},
        "open": {"primary_metric": "distinct_2", "lower_is_better": False, "metrics": {"distinct_2": 0.9}}}}


def test_per_task_budgets_in_their_own_units_weights_and_ignore():
    options = config_from_dict(lab_config(max_drop_points=2.0, tasks={
        "english": {"max_perplexity_increase": 0.5}, "open": "ignore", "facts": {"weight": 2.0}})).mitigations[
        "retention"]
    drops = {"facts": 1.5, "english": 0.4, "open": 90.0}  # facts counts double: 3 > 2; open is never a breach
    assert over_budget(options, base_results(), drops) == ["facts acc dropped 1.5 points (budget 2 points at weight 2)"]
    assert over_budget(options, base_results(), {"facts": 0.5, "english": 0.6, "open": 0.0}) == [
        "english word_perplexity rose +60.0% (budget +50%)"]


def scored(correct: list[int], logliks: list[float]) -> dict:
    return {"tasks": {
        "facts": {"primary_metric": "acc", "lower_is_better": False, "metrics": {"acc": sum(correct) / len(correct)},
                  "items": [{"id": i, "acc": c} for i, c in enumerate(correct)]},
        "english": {"primary_metric": "word_perplexity", "lower_is_better": True,
                    "metrics": {"word_perplexity": math.exp(-sum(logliks) / (10 * len(logliks)))},
                    "items": [{"id": i, "loglikelihood": x, "words": 10} for i, x in enumerate(logliks)]}}}


def test_a_drop_breaches_only_when_the_dev_items_show_it():
    from retain.evaluation.compare import sure_drops, task_drops

    before = scored([1] * 20, [-20.0] * 30)
    one_lost = scored([0] + [1] * 19, [-20.0 - (i % 2) for i in range(30)])  # +5% perplexity, half the docs
    drops, sure = task_drops(before, one_lost), sure_drops(before, one_lost, 0.8)
    assert drops["facts"] == pytest.approx(5.0) and sure["facts"] < 1  # one answer of 20: hardly shown
    assert drops["english"] == pytest.approx(math.exp(0.05) - 1) and 0 < sure["english"] < drops["english"]
    assert sure_drops(before, one_lost, None) == drops
    options = RetentionOptions(max_drop_points=5.0)  # confidence 0.8 by default
    assert over_budget(options, before, drops, sure) == []

    def breaches(lost: int) -> list[str]:
        after = scored([0] * lost + [1] * (20 - lost), [-20.0] * 30)
        return over_budget(options, before, task_drops(before, after), sure_drops(before, after, 0.8))

    assert breaches(2) == []  # 10 points measured on 20 items: not shown to be past 5
    [breach] = breaches(3)
    assert breach.startswith("facts acc dropped 15.0 points, at 80% confidence at least ") and breach.endswith(
        " points (budget 5 points)")


def test_the_default_perplexity_budget_is_ten_percent():
    assert config_from_dict(lab_config()).mitigations["retention"].limits() == (1.0, 0.10)


@pytest.mark.parametrize("tasks, message", [
    ({"english": {"max_perplexity_increse": 0.5}}, "mitigations.retention.tasks.english.max_perplexity_increse: "
                                                   "unknown key"),
    ({"english": "skip"}, "mitigations.retention.tasks.english: expected `ignore` or a mapping"),
    ({"english": {"weight": -1}}, "mitigations.retention.tasks.english.weight: must be a number >= 0"),
])
def test_a_bad_task_budget_names_its_key(tasks, message):
    with pytest.raises(ConfigError, match=message.replace("`", ".")):
        config_from_dict(lab_config(tasks=tasks))


def test_patience_needs_an_action_that_can_wait():
    with pytest.raises(ConfigError, match="patience: has no effect with action stop"):
        config_from_dict(lab_config(patience=2))
    assert RetentionOptions(action="early_stop").patience_checks() == 2
    assert RetentionOptions(action="rollback").patience_checks() is None


# ---- early warnings ------------------------------------------------------------------------------------

def test_bucketed_kl_is_zero_against_itself_and_a_lower_bound_of_the_full_kl():
    from retain.mitigations.distill import kl_divergence
    from retain.mitigations.early_warnings import bucketed_kl, top_k_reference

    torch.manual_seed(0)
    base, tuned = torch.randn(6, 50), torch.randn(6, 50)
    ids, logprobs = top_k_reference(base, 8)
    assert float(bucketed_kl(ids, logprobs, base)) == pytest.approx(0.0, abs=1e-6)
    full = float(kl_divergence(tuned[None], base[None], torch.ones(1, 6, dtype=torch.bool)))
    assert 0 < float(bucketed_kl(ids, logprobs, tuned)) <= full + 1e-6
    ids, logprobs = top_k_reference(base, 50)  # k = the vocabulary: exact
    assert float(bucketed_kl(ids, logprobs, tuned)) == pytest.approx(full, rel=1e-4)


def test_drift_is_relative_per_layer():
    from retain.mitigations.early_warnings import drift_by_layer, layer_of

    assert [layer_of(n) for n in ("model.layers.3.mlp.up_proj.weight", "model.embed_tokens.weight", "lm_head.weight",
                                  "model.norm.weight")] == ["layer3", "embed", "head", "other"]
    start = {"model.layers.0.w": torch.ones(4), "model.layers.1.w": torch.ones(4)}
    now = {"model.layers.0.w": torch.ones(4) * 1.5, "model.layers.1.w": torch.ones(4)}
    drift = drift_by_layer(now, start)
    assert drift["layer0"] == pytest.approx(0.5) and drift["layer1"] == 0.0
    assert drift["all"] == pytest.approx((4 * 0.25 / 8) ** 0.5)


def test_early_warnings_are_logged_and_grow_as_the_model_leaves_the_base(make_config, tmp_path):
    from conftest import write_jsonl

    general = write_jsonl(tmp_path / "general.jsonl", [{"text": "the capital of france is paris . one plus two"}] * 8)
    config = make_config(training={"max_steps": 6, "lr": 3e-2},
                         mitigations={"early_warnings": {"every": 2, "general": str(general), "examples": 4}})
    result = retain.train(config_from_dict(config), progress=False)
    rows = [r for r in result.metrics if "warn/kl_general" in r]
    assert [r["step"] for r in rows] == [2, 4, 6]
    assert {"warn/kl_task", "warn/drift/all", "warn/drift/layer0", "warn/drift/embed"} <= set(rows[0])
    assert rows[0]["warn/kl_general"] > 0 and rows[-1]["warn/drift/all"] > rows[0]["warn/drift/all"] > 0


# ---- on the lab: a budget that keeps learning ------------------------------------------------------------

def test_on_the_lab_the_budget_ends_with_a_task_gain_where_acting_at_the_first_breach_ends_at_the_base(tmp_path):
    """Full fine-tuning of retain-tiny on city -> country (lr 1e-4, 200 steps) forgets continents and capitals.
    A 5-point budget is breached at the first check, where the task is not learned yet: the old logic (act at
    the first breach, roll back to the last good check or bisect from those weights) ends at the base. Kept
    checkpoints, patience and repair along the lines from them end with the task learned, within budget."""
    from retain.evaluation.runner import evaluate
    from retain.evaluation.tasks import load_suite
    from retain.evaluation.compare import sure_drops
    from retain.model.loading import load_for_eval

    budget = {"task": "city_country", "limit": 20, "every": 50, "max_drop_points": 5.0, "action": "repair",
              "patience": 3}
    config = config_from_dict({
        "model": {"name": "retain-tiny"},
        "data": {"train": "lab:tasks/city_country/train.jsonl", "max_length": 64},
        "training": {"lr": 1e-4, "max_steps": 200, "batch_size": 16, "warmup_steps": 20, "scheduler": "cosine",
                     "log_every": 50, "seed": 0},
        "mitigations": {"retention": budget}, "output": {"dir": str(tmp_path / "run")}})
    retain.train(config, progress=False)
    record = json.loads((tmp_path / "run" / "retention.json").read_text())

    first = record["checks"][0]
    # the old logic acted here: rollback to the base, or bisect toward weights that had learned nothing yet
    assert first["task_value"] <= 0.05 and max(first["drops"].values()) > 5
    chosen = record["outcome"]["chosen"]
    assert chosen["task_value"] >= 0.2, record["outcome"]  # at least 4 of 20 dev answers, from 0
    assert chosen["budget_used"] <= 1

    # measured again from final/, independently of the budget's bookkeeping
    model, tokenizer = load_for_eval("retain-tiny")
    suite = load_suite(record["suite"])
    before = evaluate(model, tokenizer, suite, "dev", limit=20, progress=False)
    model, tokenizer = load_for_eval(str(tmp_path / "run" / "final"))
    after = evaluate(model, tokenizer, suite, "dev", limit=20, progress=False)
    assert max(sure_drops(before, after, 0.8).values()) <= 5.0 + 1e-9
    task = evaluate(model, tokenizer, load_suite("city_country"), "dev", limit=20, progress=False)
    assert task["tasks"]["city_country"]["metrics"]["exact_match"] == pytest.approx(chosen["task_value"])
