"""BOS for every kind of tokenizer: scores agree with lm-eval, training data never doubles it.

Three kinds, built from the tiny fixture's tokenizer:
    adds_bos   the post-processor prepends BOS (Llama-2/3, Gemma, ...)
    no_add     a BOS token exists but is not added (GPT-2, Qwen, the fixture itself)
    no_bos     no BOS token at all (lm-eval and retain fall back to EOS as the prefix token)
"""

import json
import shutil

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from retain.data import load_dataset
from retain.evaluation.lm import LM
from conftest import score_with_both, write_jsonl

BOS = "<|system|>"  # a special token the fixture's vocabulary has, used as a BOS distinct from EOS
BOS_TEMPLATE = ("{{ bos_token }}{% for m in messages %}{{ '<|' + m['role'] + '|>\\n' + m['content'] }}"
                "{% if m['role'] == 'assistant' %}{{ eos_token }}{% endif %}{{ '\\n' }}{% endfor %}"
                "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}")


def make_tokenizer_dir(tiny_model, tmp_path, kind: str):
    """A copy of the tiny model whose tokenizer is of `kind`."""
    path = tmp_path / kind
    shutil.copytree(tiny_model, path)
    spec = json.loads((path / "tokenizer.json").read_text())
    config = json.loads((path / "tokenizer_config.json").read_text())
    if kind == "adds_bos":
        bos_id = next(t["id"] for t in spec["added_tokens"] if t["content"] == BOS)
        spec["post_processor"] = {
            "type": "TemplateProcessing", "single": [{"SpecialToken": {"id": BOS, "type_id": 0}},
                                                     {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {BOS: {"id": BOS, "ids": [bos_id], "tokens": [BOS]}}}
        config["bos_token"] = BOS
    elif kind == "no_bos":
        config["bos_token"] = None
    (path / "tokenizer.json").write_text(json.dumps(spec))
    (path / "tokenizer_config.json").write_text(json.dumps(config))
    (path / "chat_template.jinja").write_text(BOS_TEMPLATE)
    return path


@pytest.fixture(scope="module", params=["adds_bos", "no_add", "no_bos"])
def kind_dir(request, tiny_model, tmp_path_factory):
    return request.param, make_tokenizer_dir(tiny_model, tmp_path_factory.mktemp("bos"), request.param)


def test_the_three_kinds_are_what_they_claim(kind_dir):
    kind, path = kind_dir
    tok = AutoTokenizer.from_pretrained(path)
    ids = tok("the capital")["input_ids"]
    assert (tok.bos_token is None) == (kind == "no_bos")
    assert (ids[0] == tok.bos_token_id) == (kind == "adds_bos")


def test_chat_training_data_has_exactly_one_bos(kind_dir, tmp_path):
    kind, path = kind_dir
    tok = AutoTokenizer.from_pretrained(path)
    messages = [{"role": "user", "content": "capital of france ?"}, {"role": "assistant", "content": "paris"}]
    (ex,) = load_dataset(write_jsonl(tmp_path / "chat.jsonl", [{"messages": messages}]), tok).examples
    rendered = tok.apply_chat_template(messages, tokenize=False)
    # Exactly the template's tokens: its own BOS (when it has one to write), none added on top.
    assert ex.input_ids == tok(rendered, add_special_tokens=False)["input_ids"]
    if kind != "no_bos":
        assert ex.input_ids[0] == tok.bos_token_id and ex.input_ids[1] != tok.bos_token_id


def test_scores_match_lm_eval_for_every_kind(kind_dir, tmp_path):
    pytest.importorskip("lm_eval")
    kind, path = kind_dir
    mc = write_jsonl(tmp_path / "mc.jsonl", [
        {"context": f"the capital of {c} is", "choices": ["paris", "tokyo", "blue river"], "gold": i % 3}
        for i, c in enumerate(["france", "japan", "red", "green", "city", "mountain"])]
        + [{"context": "", "choices": ["red", "green"], "gold": 0}])
    words = "the capital of france is paris . one plus two is three . red green blue river".split()
    ppl = write_jsonl(tmp_path / "ppl.jsonl", [{"text": " ".join(words[i:] * (1 + 3 * i))} for i in range(6)])
    ours, theirs = score_with_both(AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path),
                                   mc, ppl, tmp_path)
    for metric in ("acc", "acc_norm"):
        assert ours["mc"]["metrics"][metric] == pytest.approx(theirs["mc"][f"{metric},none"], abs=1e-6)
    for metric in ("word_perplexity", "byte_perplexity"):
        assert ours["ppl"]["metrics"][metric] == pytest.approx(theirs["ppl"][f"{metric},none"], rel=1e-6)
    assert "lm-eval" in ours["ppl"]["bos"]  # the result says which BOS rule it was scored with


def test_single_bos_scores_each_document_after_one_bos(tiny_model, tmp_path):
    path = make_tokenizer_dir(tiny_model, tmp_path, "adds_bos")
    model = AutoModelForCausalLM.from_pretrained(path)
    tok = AutoTokenizer.from_pretrained(path)
    text = "the capital of france is paris"
    ids = tok(text)["input_ids"]
    assert ids[0] == tok.bos_token_id  # one BOS from the tokenizer
    with torch.no_grad():
        logprobs = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), -1)
    by_hand = sum(logprobs[i, ids[i + 1]].item() for i in range(len(ids) - 1))
    (single, n_single), = LM(model, tok, rolling_bos="single").loglikelihood_rolling([text])
    (doubled, n_doubled), = LM(model, tok).loglikelihood_rolling([text])
    assert single == pytest.approx(by_hand, abs=1e-4) and n_single == len(ids) - 1
    assert n_doubled == len(ids) and doubled < single  # lm-eval's way also charges log p(BOS | BOS)
