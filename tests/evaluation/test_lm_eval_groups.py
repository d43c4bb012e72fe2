"""lm-eval group scores: retain records a group's score as lm-eval aggregates it, beside its pooled items."""

import json

import pytest

from conftest import write_jsonl, write_lm_eval_task

pytest.importorskip("lm_eval")

# Two subtasks of different sizes, so that a size-weighted and an unweighted mean differ when their accuracies do.
WORDS = ["france", "japan", "red", "green", "city", "mountain", "river", "blue", "three"]


def mc_rows(n: int, offset: int) -> list[dict]:
    return [{"context": f"the capital of {WORDS[(i + offset) % 9]} is", "choices": ["paris", "tokyo", "blue river"],
             "gold": (i * 7 + offset) % 3} for i in range(n)]


def write_group(tasks_dir, weight_by_size: bool) -> str:
    """A group YAML over two local multiple-choice tasks (8 and 3 documents); its name."""
    for name, n, offset in (("local_big", 8, 0), ("local_small", 3, 4)):
        write_lm_eval_task(tasks_dir, name, write_jsonl(tasks_dir / f"{name}.jsonl", mc_rows(n, offset)),
                           "multiple_choice")
    group = "local_group" if weight_by_size else "local_group_unweighted"
    (tasks_dir / f"{group}.yaml").write_text(
        f"group: {group}\ntask: [local_big, local_small]\naggregate_metric_list:\n"
        f"  - metric: acc\n    weight_by_size: {str(weight_by_size).lower()}\n"
        f"  - metric: acc_norm\n    weight_by_size: {str(weight_by_size).lower()}\n")
    return group


@pytest.mark.parametrize("weight_by_size", [True, False])
def test_group_score_equals_lm_evals_on_a_local_group(tiny_model, tmp_path, weight_by_size):
    import lm_eval
    from lm_eval.api.metrics import aggregate_subtask_metrics
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from retain.evaluation.runner import evaluate
    from retain.evaluation.tasks import load_suite
    from retain.report.build import compare

    group = write_group(tmp_path, weight_by_size)
    model, tokenizer = AutoModelForCausalLM.from_pretrained(tiny_model), AutoTokenizer.from_pretrained(tiny_model)
    theirs = lm_eval.simple_evaluate(model=HFLM(pretrained=model, tokenizer=tokenizer, batch_size=4), tasks=[group],
                                     task_manager=TaskManager(include_path=str(tmp_path)), log_samples=False)["results"]
    ours = evaluate(model, tokenizer, load_suite(str(tmp_path / f"{group}.yaml")), progress=False)

    scores = ours["groups"][group]
    assert scores["subtasks"] == {name: {"n": n, "acc": ours["tasks"][name]["metrics"]["acc"],
                                         "acc_norm": ours["tasks"][name]["metrics"]["acc_norm"]}
                                  for name, n in (("local_big", 8), ("local_small", 3))}
    assert scores["weight_by_size"] == {"acc": weight_by_size, "acc_norm": weight_by_size}
    for metric in ("acc", "acc_norm"):
        subtasks = scores["subtasks"].values()
        by_hand = aggregate_subtask_metrics([s[metric] for s in subtasks], [s["n"] for s in subtasks], weight_by_size)
        assert scores["metrics"][metric] == pytest.approx(by_hand, abs=1e-12)
        assert scores["metrics"][metric] == pytest.approx(theirs[group][f"{metric},none"], abs=1e-6)
    pooled = compare(ours, ours)["capabilities"][group]  # the report's row: every item of both tasks once
    assert pooled["tasks"] == ["local_big", "local_small"]
    items = [i["acc"] for t in ("local_big", "local_small") for i in ours["tasks"][t]["items"]]
    assert pooled["before"] == pytest.approx(sum(items) / 11)
    if weight_by_size:  # lm-eval's size-weighted mean is the pooled items
        assert scores["metrics"]["acc"] == pytest.approx(pooled["before"], abs=1e-12)
    else:  # the fixture model gets 3/8 and 1/3 right: unweighted 35.4 against 4/11 = 36.4 pooled
        assert scores["metrics"]["acc"] != pytest.approx(pooled["before"], abs=1e-3)


def test_retains_mmlu_records_lm_evals_size_weighted_mmlu_score(tiny_model, tmp_path, monkeypatch):
    from lm_eval.api.metrics import aggregate_subtask_metrics
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from retain.evaluation.runner import evaluate
    from retain.evaluation.tasks import load_suite

    rows = [{"question": f"What is {a} plus 3?", "answer_a": str(a + 3), "answer_b": str(a + 4), "answer_c": str(3 * a),
             "answer_d": str(a), "correct_answer": "ABCD"[a % 4], "topic": topic}
            for topic, count in (("elementary mathematics", 6), ("astronomy", 2)) for a in range(count)]
    monkeypatch.setenv("RETAIN_MMLU_FILE", str(write_jsonl(tmp_path / "mmlu.jsonl", rows)))
    model, tokenizer = AutoModelForCausalLM.from_pretrained(tiny_model), AutoTokenizer.from_pretrained(tiny_model)
    ours = evaluate(model, tokenizer, load_suite("mmlu"), progress=False)

    scores = ours["groups"]["mmlu"]
    assert {s: v["n"] for s, v in scores["subtasks"].items()} == {"astronomy": 2, "elementary_mathematics": 6}
    for subject, v in scores["subtasks"].items():
        accs = [i["acc"] for i in ours["tasks"]["mmlu"]["items"] if i["id"].startswith(subject + "/")]
        assert v["acc"] == pytest.approx(sum(accs) / len(accs))
    by_hand = aggregate_subtask_metrics([v["acc"] for v in scores["subtasks"].values()],
                                        [v["n"] for v in scores["subtasks"].values()], True)
    assert scores["metrics"]["acc"] == pytest.approx(by_hand, abs=1e-12)
    assert scores["metrics"]["acc"] == pytest.approx(ours["tasks"]["mmlu"]["metrics"]["acc"], abs=1e-12)


def results_file(path, accs: dict[str, list[float]], group_score: float) -> str:
    """A results file of two tasks in capability "g" and lm-eval's unweighted score of group "g"."""
    tasks = {name: {"kind": "multiple_choice", "capability": "g", "primary_metric": "acc", "lower_is_better": False,
                    "chance": 0.25, "n": len(values), "metrics": {"acc": sum(values) / len(values)},
                    "items": [{"id": i, "acc": v} for i, v in enumerate(values)]} for name, values in accs.items()}
    subtasks = {name: {"n": len(values), "acc": sum(values) / len(values)} for name, values in accs.items()}
    groups = {"g": {"metrics": {"acc": group_score}, "weight_by_size": {"acc": False}, "subtasks": subtasks}}
    path.write_text(json.dumps({"split": "test", "limit": None, "tasks": tasks, "groups": groups}))
    return path


def test_report_shows_lm_evals_group_score_beside_the_pooled_items(tmp_path):
    from retain.report.build import write_report

    # before: big 3/4, small 0/1 -> pooled 3/5 = 60.0, unweighted (75 + 0) / 2 = 37.5; after: big 1/4, small 1/1
    before = results_file(tmp_path / "base.json", {"big": [1, 1, 1, 0], "small": [0]}, 0.375)
    after = results_file(tmp_path / "tuned.json", {"big": [1, 0, 0, 0], "small": [1]}, 0.625)
    paths = write_report([before, after], tmp_path / "report")
    (row,) = json.loads(paths["json"].read_text())["lm_eval_groups"]
    assert row == {"group": "g", "metric": "acc", "weight_by_size": False, "subtasks": 2, "n": 5,
                   "scores": {"base": 0.375, "tuned": 0.625}, "pooled": {"tuned": {"before": 0.6, "after": 0.4}}}
    assert "| g | acc | unweighted | 2 | 5 | 37.5 | 62.5 | tuned: 60.0 → 40.0 |" in paths["md"].read_text()
    assert "<td>unweighted</td>" in paths["html"].read_text()
