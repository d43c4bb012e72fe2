"""Data where users keep it: every source and record shape loads with the right loss mask and trains.

Sources: JSONL, JSON arrays, parquet, CSV, TSV, arrow, compressed JSON, save_to_disk folders, a hub dataset
(from a prepared datasets cache: the tests run offline), LLaMA-Factory dataset_info.json entries, and rows
from Python. Shapes: prompt/response, TRL prompt/completion, Alpaca, OpenAI messages, ShareGPT, text,
preference pairs. Each trains two steps of the tiny model through retain.train.
"""

from __future__ import annotations

import gzip
import json
import math
import shutil
from pathlib import Path

import pytest
from transformers import AutoTokenizer

import retain
from retain.config import config_from_dict, load_config
from retain.data import IGNORE_INDEX, DataError, PreferenceExample, Turn, load_dataset, load_preferences
from retain.core.errors import ConfigError
from conftest import write_jsonl

datasets = pytest.importorskip("datasets")

QA = [{"prompt": f"what is {a} plus {b} ?", "response": f" {a + b}"} for a in range(3) for b in range(3)]
CHATS = [{"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": f"what is {a} plus 1 ?"},
                       {"role": "assistant", "content": str(a + 1)}]} for a in range(6)]
SHAREGPT = [{"conversations": [{"from": "system", "value": "be brief"}, {"from": "human", "value": f"{a} plus 2 ?"},
                               {"from": "gpt", "value": str(a + 2)}]} for a in range(6)]
# a template that marks the assistant's text itself; it writes the EOS outside the marked part
GENERATION_TEMPLATE = ("{% for m in messages %}{{ '<|' + m['role'] + '|>\\n' }}{% if m['role'] == 'assistant' %}"
                       "{% generation %}{{ m['content'] }}{% endgeneration %}{{ eos_token }}{% else %}"
                       "{{ m['content'] }}{% endif %}{{ '\\n' }}{% endfor %}"
                       "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}")


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    return AutoTokenizer.from_pretrained(tiny_model)


def learned(tokenizer, example) -> str:
    return tokenizer.decode([t for t in example.labels if t != IGNORE_INDEX])


def write_hub_cache(cache: Path, repo: str, rows: list[dict], scratch: Path) -> None:
    """Put `rows` where datasets.load_dataset(repo, split="train") finds them with downloads off."""
    data = write_jsonl(scratch / "hub-rows.jsonl", rows)
    builder = datasets.load_dataset_builder("json", data_files={"train": str(data)}, cache_dir=str(scratch / "build"))
    builder.download_and_prepare()
    namespace, name = repo.split("/")
    target = cache / f"{namespace}___{name}" / "default" / "0.0.0" / "local"
    shutil.copytree(builder.cache_dir, target)
    for arrow in target.glob("json-*.arrow"):
        arrow.rename(target / arrow.name.replace("json-", f"{name}-"))
    info = json.loads((target / "dataset_info.json").read_text())
    (target / "dataset_info.json").write_text(json.dumps({**info, "config_name": "default"}))


def dataset_info(folder: Path, entries: dict, files: dict[str, list[dict]]) -> Path:
    """A LLaMA-Factory data folder: dataset_info.json and its data files (JSON arrays, as LLaMA-Factory's own)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in files.items():
        (folder / name).write_text(json.dumps(rows, indent=2))
    (folder / "dataset_info.json").write_text(json.dumps(entries, indent=2))
    return folder / "dataset_info.json"


# --- every source ---------------------------------------------------------------------------------------

def jsonl(tmp: Path) -> str:
    return str(write_jsonl(tmp / "d.jsonl", QA))


def json_array(tmp: Path) -> str:
    rows = [{"instruction": r["prompt"], "output": r["response"].strip()} for r in QA]
    (tmp / "d.json").write_text(json.dumps(rows, indent=2))
    return str(tmp / "d.json")


def parquet(tmp: Path) -> str:
    datasets.Dataset.from_list(QA).to_parquet(str(tmp / "d.parquet"))
    return str(tmp / "d.parquet")


def csv(tmp: Path) -> str:
    datasets.Dataset.from_list(QA).to_csv(str(tmp / "d.csv"), index=False)
    return str(tmp / "d.csv")


def tsv(tmp: Path) -> str:
    (tmp / "d.tsv").write_text("prompt\tresponse\n" + "".join(f"{r['prompt']}\t{r['response']}\n" for r in QA))
    return str(tmp / "d.tsv")


def arrow(tmp: Path) -> str:
    datasets.Dataset.from_list(QA).save_to_disk(str(tmp / "saved"))
    (arrow_file,) = (tmp / "saved").glob("*.arrow")
    return str(shutil.copy(arrow_file, tmp / "d.arrow"))


def gzipped(tmp: Path) -> str:
    (tmp / "d.jsonl.gz").write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in QA).encode()))
    return str(tmp / "d.jsonl.gz")


def saved(tmp: Path) -> str:
    datasets.Dataset.from_list(CHATS).save_to_disk(str(tmp / "saved"))
    return str(tmp / "saved")


def saved_dict(tmp: Path) -> str:
    splits = datasets.DatasetDict({"train": datasets.Dataset.from_list(SHAREGPT),
                                   "test": datasets.Dataset.from_list(SHAREGPT[:2])})
    splits.save_to_disk(str(tmp / "saved"))
    return str(tmp / "saved") + "#train"


def llamafactory_alpaca(tmp: Path) -> str:
    rows = [{"q": r["prompt"], "a": r["response"].strip(), "sys": "be brief", "past": [["hi", "hello"]]} for r in QA]
    entry = {"file_name": "qa.json", "columns": {"prompt": "q", "response": "a", "system": "sys", "history": "past"}}
    return str(dataset_info(tmp / "lf", {"qa": entry}, {"qa.json": rows})) + "#qa"


def llamafactory_openai(tmp: Path) -> str:
    entry = {"file_name": "chats.json", "formatting": "sharegpt", "columns": {"messages": "messages"},
             "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant",
                      "system_tag": "system"}}
    return str(dataset_info(tmp / "lf", {"chats": entry}, {"chats.json": CHATS})) + "#chats"


def hub(tmp: Path, monkeypatch) -> str:
    write_hub_cache(tmp / "hf_datasets", "retain-test/chats", SHAREGPT, tmp)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp / "hf_datasets")
    return "hub:retain-test/chats:train[:4]"


SOURCES = {"jsonl": jsonl, "json-array": json_array, "parquet": parquet, "csv": csv, "tsv": tsv, "arrow": arrow,
           "jsonl-gz": gzipped, "save-to-disk": saved, "save-to-disk-dict": saved_dict,
           "llamafactory-alpaca": llamafactory_alpaca, "llamafactory-openai": llamafactory_openai}


def train_two_steps(make_config, tmp_path, source: str | None = None, **data):
    config = make_config(training={"max_steps": 2, "batch_size": 2}, output={"dir": str(tmp_path / "run")})
    if source is None:
        del config["data"]["train"]
    else:
        config["data"]["train"] = source
    result = retain.train(config, progress=False, **data)
    assert result.steps == 2 and all(math.isfinite(r["loss"]) for r in result.metrics if "loss" in r)
    return result


@pytest.mark.parametrize("name", SOURCES)
def test_each_source_loads_and_trains(name, make_config, tokenizer, tmp_path):
    source = SOURCES[name](tmp_path)
    ds = load_dataset(source, tokenizer)
    assert len(ds) >= 6 and ds.dropped == 0
    assert all(any(label != IGNORE_INDEX for label in e.labels) for e in ds.examples)
    train_two_steps(make_config, tmp_path, source)


def test_a_hub_dataset_loads_from_the_datasets_cache_and_trains(make_config, tokenizer, tmp_path, monkeypatch):
    source = hub(tmp_path, monkeypatch)
    ds = load_dataset(source, tokenizer)
    assert len(ds) == 4 and learned(tokenizer, ds.examples[0]) == "2<|endoftext|>\n"
    train_two_steps(make_config, tmp_path, source)


def test_the_same_rows_from_every_table_format_give_the_same_examples(tokenizer, tmp_path):
    reference = load_dataset(jsonl(tmp_path), tokenizer).examples
    for make in (parquet, csv, arrow, gzipped):
        assert load_dataset(make(tmp_path), tokenizer).examples == reference, make.__name__


@pytest.mark.parametrize("kind", ["dataset", "list"])
def test_rows_from_python_train_and_name_their_digest(kind, make_config, tmp_path):
    rows = SHAREGPT if kind == "list" else datasets.Dataset.from_list(SHAREGPT)
    result = train_two_steps(make_config, tmp_path, None, train_data=rows, dev_data=CHATS[:2])
    written = (result.output_dir / "config.yaml").read_text()
    assert "train: python:" in written and "dev: python:" in written
    config = config_from_dict(make_config(training={"max_steps": 1}, output={"dir": str(tmp_path / "again")}))
    assert retain.train(config, progress=False, train_data=rows).steps == 1  # a RunConfig's data.train replaced
    with pytest.raises(ConfigError, match="passed from Python"):  # a later process was not handed the rows
        load_config(result.output_dir / "config.yaml")


# --- every shape: what carries the loss ---------------------------------------------------------------------

@pytest.mark.parametrize("record, target", [
    ({"prompt": "what is one plus two ?", "completion": " three"}, " three<|endoftext|>"),  # TRL
    ({"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "red"}]}, "red<|endoftext|>\n"),
    ({"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "red"}], "system": "be brief"},
     "red<|endoftext|>\n"),
    ({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "red", "weight": 0},
                   {"role": "user", "content": "and ?"}, {"role": "assistant", "content": [
                       {"type": "text", "text": "blue"}]}]}, "blue<|endoftext|>\n"),  # OpenAI: weight, text parts
    ({"prompt": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "red"},
                 {"role": "user", "content": "and ?"}],
      "completion": [{"role": "assistant", "content": "blue"}]}, "blue<|endoftext|>\n"),  # TRL conversational
    ({"text": "the city is red", "source": None}, "the city is red<|endoftext|>"),  # nulls are absent fields
])
def test_each_shape_learns_only_its_target(record, target, tokenizer, tmp_path):
    (ex,) = load_dataset(write_jsonl(tmp_path / "d.jsonl", [record]), tokenizer).examples
    assert learned(tokenizer, ex) == target


def test_sharegpt_renders_as_the_same_conversation_in_messages(tokenizer, tmp_path):
    (a,) = load_dataset(write_jsonl(tmp_path / "a.jsonl", SHAREGPT[:1]), tokenizer).examples
    messages = [{"role": r, "content": m["value"]} for r, m in zip(("system", "user", "assistant"),
                                                                    SHAREGPT[0]["conversations"])]
    (b,) = load_dataset(write_jsonl(tmp_path / "b.jsonl", [{"messages": messages}]), tokenizer).examples
    assert a == b


def test_llamafactory_alpaca_is_a_conversation_with_history_and_system(tokenizer, tmp_path):
    (ex, *_) = load_dataset(llamafactory_alpaca(tmp_path), tokenizer).examples
    turns = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"},
             {"role": "assistant", "content": "hello"}, {"role": "user", "content": QA[0]["prompt"]},
             {"role": "assistant", "content": QA[0]["response"].strip()}]
    assert tokenizer.decode(ex.input_ids) == tokenizer.apply_chat_template(turns, tokenize=False)
    assert learned(tokenizer, ex) == "hello<|endoftext|>\n0<|endoftext|>\n"  # history answers are learned too


def test_llamafactory_entries_read_hub_text_and_defaults(tokenizer, tmp_path, monkeypatch):
    hub(tmp_path, monkeypatch)
    info = dataset_info(tmp_path / "lf", {
        "from_hub": {"hf_hub_url": "retain-test/chats", "formatting": "sharegpt"},  # default tags: from/value
        "pretrain": {"file_name": "text.json", "columns": {"prompt": "text"}},
        "alpaca_default": {"file_name": "alpaca.json"}},
        {"text.json": [{"text": "the city is red"}], "alpaca.json": [{"instruction": "hi", "input": "x", "output": "y"}]})
    assert len(load_dataset(f"{info}#from_hub", tokenizer)) == len(SHAREGPT)
    (text,) = load_dataset(f"{info}#pretrain", tokenizer).examples
    assert learned(tokenizer, text) == "the city is red<|endoftext|>"
    (alpaca,) = load_dataset(f"{info}#alpaca_default", tokenizer).examples
    assert tokenizer.decode(alpaca.input_ids).startswith("<|user|>\nhi\nx\n<|assistant|>\ny")  # "prompt\nquery"


def test_a_template_with_generation_markers_sets_the_mask(tokenizer, tmp_path):
    template = tmp_path / "marked.jinja"
    template.write_text(GENERATION_TEMPLATE)
    path = write_jsonl(tmp_path / "d.jsonl", CHATS[:1] + [QA[0]])
    chat, qa = load_dataset(path, tokenizer, chat=True, chat_template=str(template)).examples
    assert learned(tokenizer, chat) == "1"  # the marked part only: the EOS after it is not marked
    assert learned(tokenizer, qa) == "0"


def test_a_chat_template_file_overrides_the_tokenizers(make_config, tokenizer, tmp_path):
    template = tmp_path / "t.jinja"
    template.write_text("{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}{% if m['role'] == 'assistant' %}"
                        "{{ eos_token }}{% endif %}{{ '\\n' }}{% endfor %}{% if add_generation_prompt %}[assistant] {% endif %}")
    (ex,) = load_dataset(write_jsonl(tmp_path / "d.jsonl", CHATS[:1]), tokenizer, chat_template=str(template)).examples
    rendered = tokenizer.apply_chat_template(CHATS[0]["messages"], chat_template=template.read_text(), tokenize=False)
    assert rendered.startswith("[system] be brief\n[user]") and ex.input_ids == tokenizer(rendered)["input_ids"]
    assert learned(tokenizer, ex) == "1<|endoftext|>\n"  # after the template's "[assistant] " prompt
    config = make_config(data={"chat_template": str(template)}, training={"max_steps": 2},
                         output={"dir": str(tmp_path / "run")})
    run = retain.train(config, progress=False)
    assert run.steps == 2
    # final/ carries the template the fine-tune learned, so it is used the way it was trained
    assert (run.final_dir / "chat_template.jinja").read_text() == template.read_text()


def test_a_template_that_rewrites_earlier_turns_is_an_error_not_a_wrong_mask(tokenizer, tmp_path):
    template = tmp_path / "rewrites.jinja"  # shows only the last assistant answer, as reasoning templates drop thoughts
    template.write_text("{% for m in messages %}{% if m['role'] != 'assistant' or loop.last %}{{ m['content'] }}\n"
                        "{% endif %}{% endfor %}")
    path = write_jsonl(tmp_path / "d.jsonl", [{"messages": [
        {"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"},
        {"role": "assistant", "content": "d"}]}])
    with pytest.raises(DataError, match=r"d\.jsonl:1: chat template .*rewrites\.jinja renders the start"):
        load_dataset(path, tokenizer, chat_template=str(template))


def test_a_template_syntax_error_names_the_file_and_line(tokenizer, tmp_path):
    template = tmp_path / "broken.jinja"
    template.write_text("{% for m in messages %}\n{{ m['content'] }\n")
    with pytest.raises(DataError, match=r"broken\.jinja:2: not a valid Jinja template"):
        load_dataset(write_jsonl(tmp_path / "d.jsonl", CHATS[:1]), tokenizer, chat_template=str(template))


# --- preference pairs -------------------------------------------------------------------------------------------

def test_preference_pairs_parse_into_preference_examples(tmp_path):
    conversational = {"prompt": [{"role": "user", "content": "capital of france ?"}],
                      "chosen": [{"role": "assistant", "content": "paris"}],
                      "rejected": [{"role": "assistant", "content": "tokyo"}]}
    ultrafeedback = {"prompt": "capital of france ?",  # the answers repeat the prompt as their first turn
                     "chosen": [{"role": "user", "content": "capital of france ?"}, {"role": "assistant", "content": "paris"}],
                     "rejected": [{"role": "user", "content": "capital of france ?"}, {"role": "assistant", "content": "x"}]}
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "2+2=", "chosen": "4", "rejected": "5"}, conversational,
                                              ultrafeedback])
    plain, chat, uf = load_preferences(path)
    assert plain == PreferenceExample("2+2=", "4", "5", f"{path}:1") and not plain.conversational
    assert chat.prompt == (Turn("user", "capital of france ?"),) and chat.chosen == (Turn("assistant", "paris"),)
    assert uf.prompt == chat.prompt and uf.chosen == chat.chosen


def test_llamafactory_ranking_entries_are_preference_pairs(tmp_path):
    info = dataset_info(tmp_path / "lf", {
        "dpo_alpaca": {"file_name": "a.json", "ranking": True,
                       "columns": {"prompt": "instruction", "query": "input", "chosen": "chosen", "rejected": "rejected"}},
        "dpo_sharegpt": {"file_name": "s.json", "formatting": "sharegpt", "ranking": True,
                         "columns": {"messages": "conversations", "chosen": "chosen", "rejected": "rejected"}}},
        {"a.json": [{"instruction": "capital of", "input": "france", "chosen": "paris", "rejected": "tokyo"}],
         "s.json": [{"conversations": [{"from": "human", "value": "capital of france"}],
                     "chosen": {"from": "gpt", "value": "paris"}, "rejected": {"from": "gpt", "value": "tokyo"}}]})
    (a,) = load_preferences(f"{info}#dpo_alpaca")
    (s,) = load_preferences(f"{info}#dpo_sharegpt")
    assert a.prompt == (Turn("user", "capital of\nfrance"),) and s.prompt == (Turn("user", "capital of france"),)
    assert a.chosen == s.chosen == (Turn("assistant", "paris"),)


@pytest.mark.parametrize("record, message", [
    ({"prompt": "p", "chosen": "a"}, "field 'rejected': missing"),
    ({"prompt": "p", "chosen": "a", "rejected": ""}, "field 'rejected': empty"),
    ({"prompt": "p", "chosen": "a", "rejected": [{"role": "assistant", "content": "b"}]}, "field 'chosen': expected"),
    ({"prompt": "p", "chosen": [{"role": "user", "content": "a"}], "rejected": [{"role": "user", "content": "b"}]},
     "field 'chosen': no assistant turn"),
])
def test_a_malformed_preference_pair_names_its_line(record, message, tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "2+2=", "chosen": "4", "rejected": "5"}, record])
    with pytest.raises(DataError, match=f"^{path}:2: {message}"):
        load_preferences(path)


def test_preference_pairs_are_refused_for_supervised_training(tokenizer, tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "2+2=", "chosen": "4", "rejected": "5"}])
    with pytest.raises(DataError, match=f"^{path}:1: a preference pair .* supervised fine-tuning learns one answer"):
        load_dataset(path, tokenizer)


# --- bad rows in the new sources name the source and row ------------------------------------------------------

def table(tmp: Path, name: str, rows: list[dict]) -> Path:
    ds = datasets.Dataset.from_list(rows)
    path = tmp / name
    {".parquet": ds.to_parquet, ".csv": lambda p: ds.to_csv(p, index=False)}[path.suffix](str(path))
    return path


@pytest.mark.parametrize("make, message", [
    (lambda t: table(t, "d.parquet", [QA[0], {"prompt": "a", "response": None}]), r"d\.parquet:row 2: field 'response': missing"),
    (lambda t: table(t, "d.csv", [QA[0], {"prompt": "a", "response": ""}]), r"d\.csv:row 2: field 'response': empty"),
    (lambda t: table(t, "d.parquet", [{"prompt": "a", "response": 3}]), r"d\.parquet:row 1: field 'response': expected a string"),
    (lambda t: t.joinpath("d.json").write_text('[\n  {"prompt": "a", "response": "b"},\n  {"prompt": "a"}\n]') and
     t / "d.json", r"d\.json:3: field 'response': missing"),
    (lambda t: t.joinpath("d.json").write_text('[\n  {"prompt": "a", "response": "b"},\n  {"prompt": \n]') and
     t / "d.json", r"d\.json:4: not valid JSON"),
    (lambda t: t.joinpath("d.json").write_text('[{"prompt": "a", "response": "b"}, 3]') and t / "d.json",
     r"d\.json:1: expected a JSON object in the array, got int"),
    (lambda t: t.joinpath("d.parquet").write_text("not parquet") and t / "d.parquet", r"d\.parquet: could not be read as parquet"),
    (lambda t: write_jsonl(t / "d.jsonl", [{"conversations": [{"from": "human", "value": "a"},
                                                              {"from": "bot", "value": "b"}]}]),
     r"d\.jsonl:1: field 'conversations\[1\]\.from': unknown role 'bot' \(known: human, user, gpt, assistant, system\)"),
    (lambda t: write_jsonl(t / "d.jsonl", [{"messages": [{"role": "user", "content": "a"},
                                                         {"role": "tool", "content": "b"}]}]),
     "tool calls and tool results are not supported"),
    (lambda t: write_jsonl(t / "d.jsonl", [{"messages": [{"role": "user", "content": "a"},
                                                         {"role": "assistant", "content": "b", "weight": 2}]}]),
     r"field 'messages\[1\]\.weight': expected 0 or 1"),
    (lambda t: Path(saved_dict(t).split("#")[0]), r"saved: no split given; it has train, test — name one as"),
    (lambda t: Path(llamafactory_openai(t).split("#")[0] + "#nope"), r"dataset_info\.json#nope: no dataset named 'nope'"),
    (lambda t: dataset_info(t / "lf", {"x": {"file_name": "x.json", "num_samples": 5}}, {"x.json": QA}).as_posix()
     + "#x", r"dataset_info\.json#x: key 'num_samples' is not supported"),
    (lambda t: dataset_info(t / "lf", {"x": {"file_name": "x.json", "formatting": "sharegpt"}},
                            {"x.json": [{"conversations": [{"from": "human", "value": "a"},
                                                           {"from": "function_call", "value": "f()"}]}]}).as_posix()
     + "#x", r"x\.json:2: field 'conversations\[1\]\.from': 'function_call' — tool calls"),
    (lambda t: "hub:retain-test/not-cached:train", r"hub:retain-test/not-cached:train: not in the Hugging Face datasets cache"),
    (lambda t: "hub:retain-test/no-split", r"expected hub:ORG/NAME:SPLIT .* name the split"),
])
def test_a_bad_row_or_source_names_where(make, message, tokenizer, tmp_path):
    source = make(tmp_path)
    with pytest.raises(DataError, match=message):
        load_dataset(source if isinstance(source, str) else str(source), tokenizer)

