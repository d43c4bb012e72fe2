import json

import pytest
from transformers import AutoTokenizer

from retain.data import IGNORE_INDEX, DataError, SeededOrder, collate, load_dataset
from conftest import write_jsonl


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    return AutoTokenizer.from_pretrained(tiny_model)


def target_text(tokenizer, example) -> str:
    return tokenizer.decode([t for t in example.labels if t != IGNORE_INDEX])


@pytest.mark.parametrize("record, target", [
    ({"prompt": "what is one plus two ?", "response": " three"}, " three<|endoftext|>"),
    ({"instruction": "name the capital", "input": "france", "output": "paris"}, "paris<|endoftext|>"),
    ({"instruction": "name the capital", "output": "paris"}, "paris<|endoftext|>"),
    ({"text": "the city is red"}, "the city is red<|endoftext|>"),
])
def test_each_shape_puts_loss_on_the_target_only(tmp_path, tokenizer, record, target):
    ds = load_dataset(write_jsonl(tmp_path / "d.jsonl", [record]), tokenizer)
    (ex,) = ds.examples
    assert target_text(tokenizer, ex) == target
    assert len(ex.labels) == len(ex.input_ids)


def test_loss_on_all_labels_every_token(tmp_path, tokenizer):
    path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "what is one", "response": " two"}])
    (ex,) = load_dataset(path, tokenizer, loss_on="all").examples
    assert ex.labels == ex.input_ids


def test_chat_uses_the_tokenizer_template_and_labels_assistant_turns(tmp_path, tokenizer):
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "capital of france ?"},
                {"role": "assistant", "content": "paris"}, {"role": "user", "content": "japan ?"},
                {"role": "assistant", "content": "tokyo"}]
    (ex,) = load_dataset(write_jsonl(tmp_path / "d.jsonl", [{"messages": messages}]), tokenizer).examples
    assert tokenizer.chat_template  # the fixture's tokenizer ships one
    assert target_text(tokenizer, ex) == "paris<|endoftext|>\ntokyo<|endoftext|>\n"
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    assert tokenizer.decode(ex.input_ids) == full


def test_chat_without_template_uses_the_plain_one(tmp_path, tiny_model):
    tok = AutoTokenizer.from_pretrained(tiny_model)
    tok.chat_template = None
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "red"}]
    (ex,) = load_dataset(write_jsonl(tmp_path / "d.jsonl", [{"messages": messages}]), tok).examples
    assert tok.decode(ex.input_ids) == "<|user|>\nhi\n<|assistant|>\nred<|endoftext|>\n"
    assert target_text(tok, ex) == "red<|endoftext|>\n"


@pytest.mark.parametrize("line, message", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "expected a JSON object"),
    (json.dumps({"prompt": "p"}), "field 'response': missing"),
    (json.dumps({"prompt": "p", "response": 3}), "field 'response': expected a string, got int"),
    (json.dumps({"prompt": "p", "response": ""}), "field 'response': empty"),
    (json.dumps({"instruction": "i"}), "field 'output': missing"),
    (json.dumps({"messages": "hi"}), "field 'messages': expected a non-empty list"),
    (json.dumps({"messages": [{"role": "bot", "content": "x"}]}), "field 'messages[0]'"),
    (json.dumps({"messages": [{"role": "user", "content": "x"}]}), "no assistant turn"),
    (json.dumps({"title": "x"}), "no known fields"),
])
def test_malformed_line_names_file_line_and_field(tmp_path, tokenizer, line, message):
    good = json.dumps({"prompt": "a", "response": " b"})
    path = write_jsonl(tmp_path / "bad.jsonl", [good, "", good, line])
    with pytest.raises(DataError) as err:
        load_dataset(path, tokenizer)
    assert str(err.value).startswith(f"{path}:4: ")
    assert message in str(err.value)


def test_truncation_is_counted_not_silent(tmp_path, tokenizer):
    rows = [{"prompt": "a", "response": " the city is red " * 20}, {"prompt": "a", "response": " b"}]
    ds = load_dataset(write_jsonl(tmp_path / "d.jsonl", rows), tokenizer, max_length=16)
    assert ds.truncated == 1 and ds.dropped == 0
    assert max(len(e.input_ids) for e in ds.examples) == 16


def test_examples_with_no_target_left_are_dropped_and_counted(tmp_path, tokenizer):
    rows = [{"prompt": "the city is red " * 20, "response": " b"}, {"prompt": "a", "response": " b"}]
    ds = load_dataset(write_jsonl(tmp_path / "d.jsonl", rows), tokenizer, max_length=8)
    assert (len(ds), ds.truncated, ds.dropped) == (1, 1, 1)


def test_collate_pads_right_and_masks(tokenizer, tmp_path):
    rows = [{"prompt": "a", "response": " b"}, {"prompt": "the city is", "response": " red green blue"}]
    ds = load_dataset(write_jsonl(tmp_path / "d.jsonl", rows), tokenizer)
    batch = collate(ds.examples, pad_id=1)
    short = len(ds.examples[0].input_ids)
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape
    assert batch["attention_mask"][0, short:].sum() == 0
    assert (batch["labels"][0, short:] == IGNORE_INDEX).all()


def test_seeded_order_is_a_permutation_per_epoch_and_reproducible():
    a, b = list(SeededOrder(10, seed=3, epochs=2)), list(SeededOrder(10, seed=3, epochs=2))
    assert a == b
    assert sorted(a[:10]) == sorted(a[10:]) == list(range(10))
    assert a[:10] != a[10:]
    assert list(SeededOrder(10, seed=4, epochs=1)) != a[:10]


def test_prompt_response_rendered_through_the_chat_template(tmp_path, tokenizer):
    path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "Glasgow is a city in", "response": " United Kingdom."}])
    (ex,) = load_dataset(path, tokenizer, chat=True).examples
    messages = [{"role": "user", "content": "Glasgow is a city in"}, {"role": "assistant", "content": "United Kingdom."}]
    assert tokenizer.decode(ex.input_ids) == tokenizer.apply_chat_template(messages, tokenize=False)
    assert target_text(tokenizer, ex) == "United Kingdom.<|endoftext|>\n"


def test_general_data_is_read_once_the_same_way_for_every_protection(tmp_path, tokenizer):
    # replay's pool, EWC's Fisher, SI's anchor, the early warnings and CorDA all read general data through this:
    # every token a target (the model should keep predicting all of it), prompt/response records included
    from retain.data import general_examples

    write_jsonl(tmp_path / "g.jsonl", [{"text": "the sky is blue"}, {"prompt": "two and two", "response": " four"}])
    examples = general_examples(str(tmp_path / "g.jsonl"), tokenizer, max_length=64)
    assert len(examples) == 2 and all(e.labels == e.input_ids for e in examples)
    assert general_examples(tmp_path / "g.jsonl", tokenizer, 64) == examples  # a Path as well as a config string
    assert len(general_examples("lab:general.jsonl", tokenizer, 64)) > 100  # a bundled file, as the lab names it
