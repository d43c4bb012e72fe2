"""Self-rehearsal (`replay.source: self`): the base writes its own replay data once, in its chat format and as
plain text, filtered, cached per model and settings, and mixed into training at the replay ratio."""

import json
import pytest
import torch

from retain.config import config_from_dict
from retain.core.errors import ConfigError, DataError
from retain.mitigations.rehearsal import (RehearsalSettings, cache_file, self_rehearsal, template_parts,
                                         write_records)
from conftest import write_jsonl

def load(path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)


# sampled answers: the random tiny model's greedy answers loop without ever ending
SETTINGS = RehearsalSettings(samples=12, chat_share=0.5, max_new_tokens=200, answer_temperature=1.0, seed=0,
                             batch_size=4)


def test_the_template_gives_the_user_turn_opening_and_the_turn_end(chat_model):
    _, tokenizer = load(chat_model)
    opening, stops = template_parts(tokenizer)
    assert opening == "<|user|>\n"
    newline = tokenizer("\n", add_special_tokens=False)["input_ids"][0]
    assert stops == sorted({tokenizer.eos_token_id, newline})  # a user turn ends at "\n", an answer at EOS
    tokenizer.chat_template = None
    assert template_parts(tokenizer) is None


class Scripted:
    """A model whose generate() returns set continuations (token ids), to check what is kept."""

    def __init__(self, rows):
        self.rows, self.calls = rows, 0

    def parameters(self):
        yield torch.zeros(1)

    def generate(self, input_ids, **kwargs):
        rows = self.rows[self.calls][: len(input_ids)]
        self.calls += 1
        width = max(map(len, rows))
        pad = kwargs["pad_token_id"]
        return torch.cat([input_ids, torch.tensor([r + [pad] * (width - len(r)) for r in rows])], dim=1)


def test_only_unique_complete_long_enough_answers_are_kept(chat_model):
    _, tokenizer = load(chat_model)
    eos = tokenizer.eos_token_id
    words = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    settings = RehearsalSettings(samples=4, chat_share=0.5, max_new_tokens=50, answer_temperature=0.0, seed=0,
                                 batch_size=8)
    model = Scripted([
        # queries: one complete, one the same again, one too short, one cut by the length limit (no stop)
        [words("what is the capital of france") + [eos], words("what is the capital of france") + [eos],
         words("red") + [eos], words("where is the river")],
        # the answer to the one query kept
        [words("the capital of france is paris") + [eos, 5, 6]],
        # plain text: two continuations, one empty
        [words("the green mountain and the blue river"), [eos]],
    ])
    records = write_records(model, tokenizer, settings)
    assert records == [
        {"messages": [{"role": "user", "content": "what is the capital of france"},
                      {"role": "assistant", "content": "the capital of france is paris"}]},
        {"text": "the green mountain and the blue river"}]


def test_openings_are_continued_in_turn_and_kept_with_their_continuation(chat_model, tmp_path):
    _, tokenizer = load(chat_model)
    eos = tokenizer.eos_token_id
    words = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    openings = tmp_path / "openings.txt"
    openings.write_text("the green mountain\nthe blue river\n")
    settings = RehearsalSettings(samples=3, chat_share=0.0, max_new_tokens=50, answer_temperature=0.0, seed=0,
                                 batch_size=8, openings=str(openings))
    prompts = []

    class Recording(Scripted):
        def generate(self, input_ids, **kwargs):
            prompts.extend(tokenizer.decode(row, skip_special_tokens=True) for row in input_ids.tolist())
            return super().generate(input_ids, **kwargs)

    # the first opening's second turn is sampled again: another continuation
    model = Recording([[words(" is very high") + [eos], words(" runs to the sea"), words(" is far away") + [eos]]])
    records = write_records(model, tokenizer, settings)
    assert prompts == ["the green mountain", "the blue river", "the green mountain"]
    assert records == [{"text": "the green mountain is very high"}, {"text": "the blue river runs to the sea"},
                       {"text": "the green mountain is far away"}]
    openings.write_text("\n")
    with pytest.raises(DataError, match="openings.txt: replay.openings: no opening"):
        write_records(model, tokenizer, settings)


def test_the_cache_key_is_the_settings_and_the_files_contents_and_older_keys_still_hold(tmp_path):
    settings = RehearsalSettings(samples=200, chat_share=0.7, max_new_tokens=128, answer_temperature=0.0, seed=0)
    # the key cache files were written under before `openings` existed: without openings it is still this one
    assert cache_file(tmp_path, "f", settings).name == "ae2abd7b917a7541.jsonl"
    openings = tmp_path / "openings.txt"
    openings.write_text("the green mountain\n")
    with_openings = RehearsalSettings(**{**settings.__dict__, "openings": str(openings)})
    first = cache_file(tmp_path, "f", with_openings)
    assert first != cache_file(tmp_path, "f", settings)
    moved = tmp_path / "moved.txt"
    moved.write_text(openings.read_text())
    assert cache_file(tmp_path, "f", RehearsalSettings(**{**settings.__dict__, "openings": str(moved)})) == first
    openings.write_text("the blue river\n")
    assert cache_file(tmp_path, "f", with_openings) != first


def test_written_once_per_model_and_settings_then_read_from_the_cache(chat_model, tmp_path):
    model, tokenizer = load(chat_model)
    loads = []

    def load_model():
        loads.append(1)
        return model

    first = self_rehearsal(SETTINGS, str(chat_model), tokenizer, load_model, str(tmp_path), log=lambda _: None)
    records = [json.loads(line) for line in first.read_text().splitlines()]
    chats = [r for r in records if "messages" in r]
    assert chats and len(records) > len(chats)  # chat exchanges and plain text
    for r in chats:
        assert [m["role"] for m in r["messages"]] == ["user", "assistant"] and all(m["content"] for m in r["messages"])
    again = self_rehearsal(SETTINGS, str(chat_model), tokenizer, load_model, str(tmp_path), log=lambda _: None)
    assert again == first and loads == [1]  # the second call loads no model and generates nothing
    # the same settings write the same records (seeded); other settings are another file
    rewritten = self_rehearsal(SETTINGS, str(chat_model), tokenizer, load_model, str(tmp_path / "again"),
                               log=lambda _: None)
    assert rewritten.read_text() == first.read_text()
    other = RehearsalSettings(**{**SETTINGS.__dict__, "seed": 1})
    assert self_rehearsal(other, str(chat_model), tokenizer, load_model, str(tmp_path), log=lambda _: None) != first
    with pytest.raises(ConfigError, match="not known"):
        self_rehearsal(SETTINGS, "", tokenizer, load_model, str(tmp_path))


def test_a_prompts_file_is_answered_by_the_base(chat_model, tmp_path):
    model, tokenizer = load(chat_model)
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": f"what is {a} plus {a} ?"} for a in range(12)])
    settings = RehearsalSettings(**{**SETTINGS.__dict__, "prompts": str(prompts), "chat_share": 1.0})
    path = self_rehearsal(settings, str(chat_model), tokenizer, lambda: model, str(tmp_path), log=lambda _: None)
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert records and {r["messages"][0]["content"] for r in records} <= {f"what is {a} plus {a} ?" for a in range(12)}


def test_a_run_with_source_self_mixes_the_base_records_in_at_the_ratio(make_config, chat_model, tmp_path, capsys):
    import retain

    config = make_config(model={"name": str(chat_model)}, training={"max_steps": 2, "bf16": False},
                         mitigations={"replay": {"source": "self", "ratio": 0.25, "samples": 12,
                                                 "max_new_tokens": 200, "answer_temperature": 1.0, "cache_dir": str(tmp_path / "cache")},
                                      "kl": {"weight": 1.0, "apply_to": "replay"}})
    result = retain.train(config_from_dict(config), progress=False)
    out = capsys.readouterr().out
    assert "self-rehearsal:" in out and str(tmp_path / "cache") in out
    assert "train after data mitigations: 48 examples" in out  # 36 task examples + 12 (a quarter of the mix)
    assert any(row.get("loss/kl", 0) > 0 for row in result.metrics)  # KL on the base's own tokens


def test_source_self_settings_are_checked(make_config):
    base = make_config()  # not the lab's model: replay from a file would have to name one
    with pytest.raises(ConfigError, match="replay.file: required"):
        config_from_dict({**base, "mitigations": {"replay": {}}})
    # the base writes its own; alone, source self brings its measured defaults: half the examples, and KL to the
    # base on their tokens (unless the config has its own kl, or kl_weight 0)
    mitigations = config_from_dict({**base, "mitigations": {"replay": {"source": "self"}}}).mitigations
    assert mitigations["replay"].ratio == 0.5
    assert (mitigations["kl"].weight, mitigations["kl"].apply_to) == (1.0, "replay")
    own = config_from_dict({**base, "mitigations": {"replay": {"source": "self", "ratio": 0.3},
                                                    "kl": {"weight": 0.2}}}).mitigations
    assert own["replay"].ratio == 0.3 and (own["kl"].weight, own["kl"].apply_to) == (0.2, "all")
    assert "kl" not in config_from_dict({**base, "mitigations": {"replay": {"source": "self", "kl_weight": 0}}}
                                        ).mitigations
    from_file = config_from_dict({**base, "mitigations": {"replay": {"file": str(base["data"]["train"])}}}).mitigations
    assert from_file["replay"].ratio == 0.15 and "kl" not in from_file
    for bad, key in [({"source": "self", "file": "lab:general.jsonl"}, "file"), ({"source": "self", "samples": 0},
                     "samples"), ({"source": "self", "chat_share": 1.5}, "chat_share"),
                     ({"source": "self", "kl_weight": -1}, "kl_weight"),
                     ({"prompts": "x.jsonl"}, "prompts"), ({"openings": "x.txt"}, "openings"),
                     ({"source": "self", "openings": "no-such-openings.txt"}, "openings")]:
        with pytest.raises(ConfigError, match=f"replay.{key}"):
            config_from_dict({**base, "mitigations": {"replay": bad}})
