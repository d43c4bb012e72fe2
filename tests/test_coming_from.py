"""docs/coming-from.md holds: every data format it shows loads, its dataset_info.json example loads, and
every retain config key it names exists."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from retain.data import IGNORE_INDEX, DataError, load_dataset, load_preferences
from conftest import write_jsonl

COMING_FROM = Path(__file__).resolve().parents[1] / "docs" / "coming-from.md"


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    return AutoTokenizer.from_pretrained(tiny_model)



def doc_section(title: str) -> str:
    text = COMING_FROM.read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start: end if end > 0 else None]


def table_rows(section: str) -> list[list[str]]:
    """The body rows of the markdown table(s) in `section`, as lists of cells."""
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in section.splitlines()
            if line.startswith("| ")]
    return [r for r in rows[1:] if not set("".join(r)) <= set("-: ")] if rows else []


def doc_records() -> dict[str, dict]:
    records = {}
    for cells in table_rows(doc_section("Data formats")):
        record = next(c for c in cells if c.startswith("`{"))
        records[cells[0]] = json.loads(record.strip("`"))
    return records


def test_every_data_format_of_coming_from_loads(tokenizer, tmp_path):
    records = doc_records()
    assert {"Alpaca", "ShareGPT", "OpenAI messages", "text", "preference pairs"} <= set(records)
    for name, record in records.items():
        path = write_jsonl(tmp_path / f"{name.replace(' ', '_')}.jsonl", [record])
        if "chosen" in record:
            assert len(load_preferences(path)) == 1
            with pytest.raises(DataError, match="preference pair"):
                load_dataset(path, tokenizer)
        else:
            (example,) = load_dataset(path, tokenizer).examples
            assert any(label != IGNORE_INDEX for label in example.labels), name


def test_the_dataset_info_example_of_coming_from_loads(tokenizer, tmp_path):
    section = doc_section("LLaMA-Factory's dataset_info.json")
    entries = json.loads(section.split("```json\n", 1)[1].split("```", 1)[0])
    records = doc_records()
    files = {"alpaca.json": [records["Alpaca"]], "sharegpt.json": [records["ShareGPT"]],
             "openai.json": [records["OpenAI messages"]]}
    for name, rows in files.items():
        write_jsonl(tmp_path / "data" / name, rows)  # JSON lines under a .json name: LLaMA-Factory reads both
    info = tmp_path / "data" / "dataset_info.json"
    info.write_text(json.dumps(entries))
    rendered = {}
    for name in entries:
        (example,) = load_dataset(f"{info}#{name}", tokenizer).examples
        rendered[name] = example
    assert rendered["capitals_sharegpt"] == rendered["capitals_openai"]  # the same conversation, two layouts
    train = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    assert train.split("#")[1].strip() in entries


def retain_keys(title: str) -> list[str]:
    """The retain key of each row of the section's table: the first `code` of its last code cell."""
    return [next(c for c in reversed(cells) if c.startswith("`")).split("`")[1].split(":")[0]
            for cells in table_rows(doc_section(title))]


def assert_key_exists(key: str) -> None:
    """section.name[.option...] names a field of the config's dataclasses, down to the last part."""
    import dataclasses
    import typing

    from retain.config import RunConfig
    from retain.mitigations import MITIGATIONS

    section, name, *rest = key.split(".")
    if section == "mitigations":  # mitigations.NAME[.OPTION]
        assert name in MITIGATIONS, key
        assert not rest or rest[0] in {f.name for f in dataclasses.fields(MITIGATIONS[name][0])}, key
        return
    owner = typing.get_type_hints(RunConfig)[section]
    for part in (name, *rest):  # training.dpo.beta: a field of the training section, then of DPOOptions
        assert dataclasses.is_dataclass(owner) and part in {f.name for f in dataclasses.fields(owner)}, key
        owner = typing.get_type_hints(owner)[part]


def test_every_retain_key_of_coming_from_exists():
    keys = retain_keys("Config keys")
    assert len(keys) >= 25
    for key in keys:
        assert_key_exists(key)


def test_every_preference_key_of_coming_from_exists():
    keys = retain_keys("Preference and reward keys")
    assert {"training.dpo.beta", "training.grpo.group_size", "training.grpo.kl_coef"} <= set(keys)
    for key in keys:
        assert_key_exists(key)
