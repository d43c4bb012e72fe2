"""The sweep summary on any suite: no column assumes the lab's `english` task."""

import json
import math

from retain.studies.sweep.summary import markdown_table, pareto_plot, summarize, write_sweep_report


def generation(capability, values) -> dict:
    return {"kind": "generation", "capability": capability, "primary_metric": "exact_match", "lower_is_better": False,
            "chance": 0.0, "n": len(values), "metrics": {"exact_match": sum(values) / len(values)},
            "items": [{"id": i, "exact_match": float(v)} for i, v in enumerate(values)]}


def perplexity(capability, shift) -> dict:
    items = [{"id": i, "loglikelihood": -20.0 - (i % 3) - shift, "words": 10, "bytes": 50, "tokens": 12}
             for i in range(30)]
    return {"kind": "perplexity", "capability": capability, "primary_metric": "word_perplexity",
            "lower_is_better": True, "chance": None, "n": 30, "items": items,
            "metrics": {"word_perplexity": math.exp(-sum(i["loglikelihood"] for i in items) / 300)}}


def write(path, tasks) -> str:
    path.write_text(json.dumps({"split": "test", "tasks": tasks}))
    return path


def sweep_files(tmp_path, perplexity_tasks: dict[str, str]):
    def tasks(task_score, facts_score, shift):
        t = {"skill": generation("task: skill", [1] * task_score + [0] * (40 - task_score)),
             "facts": generation("facts", [1] * facts_score + [0] * (40 - facts_score))}
        t.update({name: perplexity(capability, shift) for name, capability in perplexity_tasks.items()})
        return t

    base = write(tmp_path / "base.json", tasks(0, 40, 0.0))
    runs = {"unprotected": write(tmp_path / "unprotected.json", tasks(38, 0, 5.0)),
            "gentle": write(tmp_path / "gentle.json", tasks(20, 38, 0.2))}
    return base, runs


def test_one_perplexity_column_per_perplexity_task_of_any_suite(tmp_path):
    base, runs = sweep_files(tmp_path, {"wiki": "wiki text", "code": "python code"})
    summary = summarize(base, runs, task="skill")
    table = markdown_table(summary)
    header = table.splitlines()[0]
    assert "wiki perplexity" in header and "code perplexity" in header and "English" not in header
    assert "| forgetting |" in header
    unprotected = next(line for line in table.splitlines() if line.startswith("| unprotected |"))
    assert unprotected.count(" +65% (worse) ") == 2  # e^(5/10) = 1.65: perplexity 65% higher, worded as a loss
    assert "| catastrophic |" in unprotected  # facts 100% -> 0%: at chance
    assert summary["rows"]["unprotected"]["perplexity_changes"]["wiki"]["verdict"] == "worse"
    assert summary["rows"]["gentle"]["severity"] in ("mild", "none")
    write_sweep_report(summary, tmp_path)  # the Pareto plot and summary.md, generic labels
    text = (tmp_path / "summary.md").read_text()
    assert "Forgetting: the worst grade of any capability other than the task's" in text
    assert pareto_plot(summary)[:4] == b"\x89PNG"


def test_a_suite_without_perplexity_has_no_perplexity_column(tmp_path):
    base, runs = sweep_files(tmp_path, {})
    header = markdown_table(summarize(base, runs, task="skill")).splitlines()[0]
    assert "perplexity" not in header


def test_a_summary_json_written_before_the_generic_columns_still_renders():
    old_row = {"gain": 0.5, "gain_ci": [0.4, 0.6], "retained_change": -0.1, "retained_ci": [-0.2, -0.05],
               "max_drop": 0.2, "perplexity_change": 357.6, "verdicts": {}, "deltas": {}}
    table = markdown_table({"rows": {"unprotected": old_row}, "pareto_front": ["unprotected"]})
    assert "english perplexity" in table.splitlines()[0] and "| ×359 |" in table
