"""retain's scores equal lm-evaluation-harness's on the same model, data and task definitions."""

import json

import pytest

from retain.evaluation.runner import evaluate
from retain.evaluation.tasks import load_task
from conftest import write_jsonl, write_lm_eval_task

lm_eval = pytest.importorskip("lm_eval")


def test_multiple_choice_and_perplexity_match_lm_eval(tiny_model, tmp_path):
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager
    from transformers import AutoModelForCausalLM, AutoTokenizer

    mc_rows = [{"context": f"the capital of {c} is", "choices": ["paris", "tokyo", "blue river", "three "],
                "gold": i % 4} for i, c in enumerate(["france", "japan", "red", "green", "city", "mountain"] * 4)]
    mc_rows.append({"context": "question : ", "choices": ["red", "green"], "gold": 1})  # trailing space moves
    words = "the capital of france is paris . one plus two is three . red green blue river mountain".split()
    docs = [{"text": " ".join(words[i % 7:] * (1 + 2 * i))} for i in range(12)]
    assert max(len(d["text"].split()) for d in docs) > 256  # longer than the model: several windows
    mc_file, ppl_file = write_jsonl(tmp_path / "mc.jsonl", mc_rows), write_jsonl(tmp_path / "ppl.jsonl", docs)

    tasks_dir = tmp_path / "lm_eval_tasks"
    write_lm_eval_task(tasks_dir, "parity_mc", mc_file, "multiple_choice")
    write_lm_eval_task(tasks_dir, "parity_ppl", ppl_file, "perplexity")
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    theirs = lm_eval.simple_evaluate(
        model=HFLM(pretrained=model, tokenizer=tokenizer, batch_size=4), tasks=["parity_mc", "parity_ppl"],
        task_manager=TaskManager(include_path=str(tasks_dir)), log_samples=False)["results"]

    (tmp_path / "mc.yaml").write_text(f"name: mc\nkind: multiple_choice\ndata: {{test: {json.dumps(str(mc_file))}}}\n")
    (tmp_path / "ppl.yaml").write_text(f"name: ppl\nkind: perplexity\ndata: {{test: {json.dumps(str(ppl_file))}}}\n")
    ours = evaluate(model, tokenizer, [load_task(tmp_path / "mc.yaml"), load_task(tmp_path / "ppl.yaml")],
                    progress=False)["tasks"]

    for metric in ("acc", "acc_norm"):
        assert ours["mc"]["metrics"][metric] == pytest.approx(theirs["parity_mc"][f"{metric},none"], abs=1e-6)
    for metric in ("word_perplexity", "byte_perplexity", "bits_per_byte"):
        assert ours["ppl"]["metrics"][metric] == pytest.approx(theirs["parity_ppl"][f"{metric},none"], rel=1e-6)
