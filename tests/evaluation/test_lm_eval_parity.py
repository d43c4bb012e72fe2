"""retain's scores equal lm-evaluation-harness's on the same model, data and task definitions."""

import pytest

from conftest import score_with_both, write_jsonl

pytest.importorskip("lm_eval")


def test_multiple_choice_and_perplexity_match_lm_eval(tiny_model, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    mc_rows = [{"context": f"the capital of {c} is", "choices": ["paris", "tokyo", "blue river", "three "],
                "gold": i % 4} for i, c in enumerate(["france", "japan", "red", "green", "city", "mountain"] * 4)]
    mc_rows.append({"context": "question : ", "choices": ["red", "green"], "gold": 1})  # trailing space moves
    words = "the capital of france is paris . one plus two is three . red green blue river mountain".split()
    docs = [{"text": " ".join(words[i % 7:] * (1 + 2 * i))} for i in range(12)]
    assert max(len(d["text"].split()) for d in docs) > 256  # longer than the model: several windows
    mc_file, ppl_file = write_jsonl(tmp_path / "mc.jsonl", mc_rows), write_jsonl(tmp_path / "ppl.jsonl", docs)

    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    ours, theirs = score_with_both(model, AutoTokenizer.from_pretrained(tiny_model), mc_file, ppl_file, tmp_path)

    for metric in ("acc", "acc_norm"):
        assert ours["mc"]["metrics"][metric] == pytest.approx(theirs["mc"][f"{metric},none"], abs=1e-6)
    for metric in ("word_perplexity", "byte_perplexity", "bits_per_byte"):
        assert ours["ppl"]["metrics"][metric] == pytest.approx(theirs["ppl"][f"{metric},none"], rel=1e-6)


# A few C-Eval / CMMLU-shaped questions (the hub's field names), for a local copy of each task's own definition.
CHINESE_ITEMS = [("中国的首都是哪座城市？", ["上海", "北京", "广州", "深圳"], "B"),
                 ("一年有几个季节？", ["两个", "三个", "四个", "五个"], "C"),
                 ("水在标准大气压下的沸点是多少摄氏度？", ["100", "90", "80", "120"], "A"),
                 ("“一心一意”是什么意思？", ["三心二意", "专心", "粗心", "小心"], "B"),
                 ("下列哪个是哺乳动物？", ["鲨鱼", "青蛙", "鲸", "蛇"], "C"),
                 ("3 加 4 等于几？", ["6", "8", "5", "7"], "D")]


@pytest.mark.parametrize("task, template, question, answer, split", [
    ("ceval-valid", "ceval/_default_ceval_yaml", "question", "answer", "val"),
    ("cmmlu", "cmmlu/_default_template_yaml", "Question", "Answer", "test")])
def test_chinese_benchmarks_score_as_lm_eval_scores_them_on_a_local_copy(tiny_model, tmp_path, task, template,
                                                                         question, answer, split):
    """lm-eval:ceval-valid and lm-eval:cmmlu read the hub; their task definition, run on a local copy of a few
    items in their fields, gives retain's scorer and lm-eval's own the same accuracies."""
    from pathlib import Path

    import lm_eval
    import yaml
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from retain.evaluation.runner import evaluate
    from retain.evaluation.tasks import load_suite

    rows = [{question: q, **dict(zip("ABCD", choices)), answer: gold} for q, choices, gold in CHINESE_ITEMS]
    data = write_jsonl(tmp_path / "items.jsonl", rows)
    definition = yaml.safe_load((Path(lm_eval.__file__).parent / "tasks" / template).read_text(encoding="utf-8"))
    definition.update(task="local_" + task.replace("-", "_"), dataset_path="json",
                      dataset_kwargs={"data_files": {split: str(data), "dev": str(data)}})
    tasks_dir = tmp_path / "tasks"
    tasks_dir.mkdir()
    path = tasks_dir / f"{definition['task']}.yaml"
    path.write_text(yaml.safe_dump(definition, allow_unicode=True), encoding="utf-8")

    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    theirs = lm_eval.simple_evaluate(model=HFLM(pretrained=model, tokenizer=tokenizer, batch_size=4),
                                     tasks=[definition["task"]], task_manager=TaskManager(include_path=str(tasks_dir)),
                                     log_samples=False)["results"][definition["task"]]
    (ours,) = evaluate(model, tokenizer, load_suite(str(path)), progress=False)["tasks"].values()
    assert ours["n"] == len(CHINESE_ITEMS)
    for metric in ("acc", "acc_norm"):
        assert ours["metrics"][metric] == pytest.approx(theirs[f"{metric},none"], abs=1e-6)
