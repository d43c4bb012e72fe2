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
