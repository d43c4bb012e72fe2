"""`retain doctor CONFIG` flags each cause of forgetting the seeds name, with evidence and the setting that fixes it."""

from __future__ import annotations

import json
import shutil

import yaml

from conftest import write_jsonl
from retain.cli import main
from retain.paths import resolve_path


def doctor(capsys, config: dict, tmp_path, *flags) -> tuple[int, str, str]:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    code = main(["doctor", str(path), *flags])
    out, err = capsys.readouterr()
    return code, out, err


def causes(out: str) -> dict:
    return {f["cause"]: f for f in json.loads(out)["findings"]}


def test_a_reckless_config_gets_every_config_cause_with_evidence_and_a_fix(make_config, tmp_path, capsys):
    # full fine-tuning at lr 1e-2, 10 epochs over 36 examples of one template, no dev set, nothing protecting
    config = make_config(training={"lr": 1e-2, "epochs": 10, "max_steps": None, "warmup_steps": 0})
    code, out, _ = doctor(capsys, config, tmp_path, "--json", "--probe", "4")
    assert code == 0
    found = causes(out)
    assert {"high_lr", "no_warmup", "many_epochs", "little_data", "narrow_data", "no_protection", "no_dev",
            "no_retention"} <= set(found)
    assert "lr 0.01" in found["high_lr"]["evidence"] and "training.lr=0.0001" in found["high_lr"]["fix"]
    assert "10.0 epochs" in found["many_epochs"]["evidence"] and "training.epochs=3" in found["many_epochs"]["fix"]
    assert "100% of the prompts have one shape: 'what is _ plus _ ?'" in found["narrow_data"]["evidence"]
    assert "mitigations.replay.ratio=0.15" in found["narrow_data"]["fix"]
    assert "data.dev=" in found["no_dev"]["fix"]
    recipe = json.loads(out)["recipe"]
    assert "training.lr=0.0001" in recipe and "training.epochs=3" in recipe
    assert "mitigations.replay.ratio=0.15" in recipe
    assert "mitigations.replay.file=GENERAL.jsonl" in recipe  # not the lab's data for a model that is not the lab's


def test_a_careful_config_gets_none_of_them(make_config, qa_data, tmp_path, capsys):
    general = write_jsonl(tmp_path / "general.jsonl", [{"text": "the capital of france is paris ."}] * 8)
    config = make_config(data={"dev": str(qa_data)},
                         training={"lr": 5e-5, "epochs": 1, "max_steps": None, "warmup_steps": 2},
                         mitigations={"lora": {"r": 4}, "retention": {"suite": "english", "limit": 2},
                                      "replay": {"file": str(general)}})
    code, out, _ = doctor(capsys, config, tmp_path, "--json", "--probe", "0")
    assert code == 0
    assert not {"high_lr", "no_warmup", "many_epochs", "little_data", "no_protection", "no_dev",
                "no_retention"} & set(causes(out))


def test_a_second_stage_is_recognised_from_the_first_runs_config(make_config, tiny_model, tmp_path, capsys):
    stage1 = tmp_path / "stage1"
    shutil.copytree(tiny_model, stage1 / "final")
    (stage1 / "config.yaml").write_text(yaml.safe_dump(make_config(data={"train": "lab:tasks/qa_format/train.jsonl"})))
    (stage1 / "metrics.jsonl").write_text("")
    code, out, _ = doctor(capsys, make_config(model={"name": str(stage1 / "final")}), tmp_path, "--json",
                          "--probe", "0")
    finding = causes(out)["multi_stage"]
    assert code == 0 and str(stage1) in finding["evidence"] and "fresh optimizer state" in finding["evidence"]
    assert "lab:tasks/qa_format/train.jsonl" in finding["fix"] and "ewc" in finding["fix"]


def capitals(wrong: bool) -> list[dict]:
    facts = [json.loads(line) for line in resolve_path("lab:suite/capital_recall.test.jsonl").read_text().splitlines()]
    facts = [f for f in facts if " " not in f["target"]][:16]
    answers = [f["target"] for f in facts]
    if wrong:  # every country gets its neighbour's capital
        answers = answers[1:] + answers[:1]
    return [{"prompt": f["context"], "response": f" {a}."} for f, a in zip(facts, answers)]


def test_data_that_contradicts_what_the_base_answers_is_flagged_with_examples(tmp_path, capsys):
    def run(rows, name):
        data = write_jsonl(tmp_path / f"{name}.jsonl", rows)
        config = {"model": {"name": "retain-tiny"}, "data": {"train": str(data), "max_length": 32},
                  "training": {"lr": 1e-4, "epochs": 1}, "output": {"dir": str(tmp_path / name)}}
        code, out, _ = doctor(capsys, config, tmp_path, "--json", "--probe", "16")
        assert code == 0
        return json.loads(out)

    wrong = run(capitals(wrong=True), "wrong")
    probe = wrong["facts"]["probe"]
    assert probe["contradicts"] >= 8, probe  # the lab model knows its capitals
    finding = causes(json.dumps(wrong))["contradicting_data"]
    assert "-> base" in finding["evidence"] and "mitigations.kl" in finding["fix"]
    right = run(capitals(wrong=False), "right")
    assert right["facts"]["probe"]["agrees"] >= 8 and "contradicting_data" not in causes(json.dumps(right))


def test_the_text_report_and_a_bad_config(make_config, tmp_path, capsys):
    code, out, _ = doctor(capsys, make_config(training={"lr": 1e-2}), tmp_path, "--probe", "2")
    assert code == 0
    assert "full fine-tuning of" in out and "1. high_lr:" in out and "   set: training.lr=" in out
    assert f"retain train {tmp_path / 'run.yaml'} training.lr=" in out
    code, _, err = doctor(capsys, make_config(training={"lrr": 1e-2}), tmp_path)
    assert code == 2 and "training.lrr: unknown key" in err
