"""`retain doctor CONFIG` flags each cause of forgetting the seeds name, with evidence and the setting that fixes it."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml

from conftest import write_jsonl
from retain.cli import main
from retain.report.doctor import self_rehearsal
from retain.core.paths import resolve_path


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
    assert "data.dev=" in found["no_dev"]["fix"]
    recipe = json.loads(out)["recipe"]
    assert "training.lr=0.0001" in recipe and "training.epochs=3" in recipe
    # not the lab's data for a model that is not the lab's: the model's own rehearsal at its measured defaults
    # (not at the 15% that suits general data), or 15% of a file the user names; the findings say the same
    own = (["mitigations.replay.source=self"] if self_rehearsal() else
           ["mitigations.replay.ratio=0.15", "mitigations.replay.file=GENERAL.jsonl"])
    assert [item for item in recipe if item.startswith("mitigations.replay.")] == own
    assert ", ".join(own) in found["narrow_data"]["fix"]


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


CHAT_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|> {% endif %}")


def chat_model(tiny_model, tmp_path):
    """The tiny model with a chat template: a chat model, as far as the doctor can tell."""
    from transformers import AutoTokenizer

    path = tmp_path / "tiny-chat"
    shutil.copytree(tiny_model, path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(path)
    return path


def base_model(tiny_model, tmp_path):
    """The tiny model without its chat template (the lab's tokenizers have one): a base model."""
    path = tmp_path / "tiny-base"
    shutil.copytree(tiny_model, path)
    (path / "chat_template.jinja").unlink(missing_ok=True)
    settings = json.loads((path / "tokenizer_config.json").read_text())
    settings.pop("chat_template", None)
    (path / "tokenizer_config.json").write_text(json.dumps(settings))
    return path


def recipe_line(out: str) -> list[str]:
    """The overrides of the printed `retain train CONFIG ...` line."""
    (line,) = [line for line in out.splitlines() if line.startswith("  retain train ")]
    return line.split()[3:]


def test_a_chat_model_on_plain_records_is_a_format_gap_with_both_renderings(make_config, tiny_model, tmp_path,
                                                                            capsys):
    config = make_config(model={"name": str(chat_model(tiny_model, tmp_path))})
    code, out, _ = doctor(capsys, config, tmp_path, "--json", "--probe", "0")
    gap = causes(out)["format_gap"]
    assert code == 0 and "has a chat template" in gap["evidence"]
    assert "36 of 36 records are trained as plain text" in gap["evidence"]
    # the same record both ways: as trained (plain) and through the model's template
    assert "as trained 'what is 0 plus 0 ? 0" in gap["evidence"]
    assert "through its chat template '<|user|> what is 0 plus 0 ?\\n<|assistant|> 0" in gap["evidence"]
    assert "data.chat=true" in gap["fix"] and "mitigations.replay" in gap["fix"]
    assert "data.chat=true" in json.loads(out)["recipe"]
    code, out, _ = doctor(capsys, make_config(model=config["model"], data={"chat": True}), tmp_path, "--json",
                          "--probe", "0")
    assert code == 0 and "format_gap" not in causes(out) and "data.chat=true" not in json.loads(out)["recipe"]
    if self_rehearsal():  # a config that rehearses already is not told to
        code, out, _ = doctor(capsys, make_config(model=config["model"], mitigations={"replay": {"source": "self"}}),
                              tmp_path, "--json", "--probe", "0")
        gap = causes(out)["format_gap"]
        assert code == 0 and "data.chat=true" in gap["fix"] and "replay" not in gap["fix"]


def test_a_base_model_on_chat_rendered_records_is_a_format_gap(make_config, tiny_model, tmp_path, capsys):
    base = {"name": str(base_model(tiny_model, tmp_path))}
    rows = [{"messages": [{"role": "user", "content": f"what is {a} plus {a} ?"},
                          {"role": "assistant", "content": str(2 * a)}]} for a in range(12)]
    data = write_jsonl(tmp_path / "chat.jsonl", rows)
    code, out, _ = doctor(capsys, make_config(model=base, data={"train": str(data)}), tmp_path, "--json", "--probe",
                          "0")
    gap = causes(out)["format_gap"]
    assert code == 0 and "has no chat template" in gap["evidence"]
    assert "12 of 12 records are rendered through" in gap["evidence"]
    assert "as the model reads text 'what is 0 plus 0 ?\\n0'" in gap["evidence"]
    code, out, _ = doctor(capsys, make_config(model=base), tmp_path, "--json", "--probe", "0")  # plain: no gap
    assert "format_gap" not in causes(out)


def test_advice_never_repeats_what_the_config_already_has(make_config, tmp_path, capsys):
    rows = [{"prompt": f"what is {a} plus {b} ?", "response": f" {a + b}"} for a in range(6) for b in range(6)]
    data = write_jsonl(tmp_path / "37.jsonl", rows + rows[:1])  # 37 examples: 3 epochs round up to 28 steps
    three = make_config(data={"train": str(data)}, training={"epochs": 3, "max_steps": None, "lr": 1e-4,
                                                            "scheduler": "cosine", "warmup_steps": 3})
    code, out, _ = doctor(capsys, three, tmp_path, "--json", "--probe", "0")
    assert code == 0 and "many_epochs" not in causes(out)
    recipe = json.loads(out)["recipe"]
    for item in ("training.epochs=3", "training.lr=0.0001", "training.scheduler=cosine", "training.warmup_steps=3"):
        assert item not in recipe  # each is what the config says already
    five = make_config(training={"epochs": 5, "max_steps": None})
    assert "training.epochs=3" in causes(doctor(capsys, five, tmp_path, "--json", "--probe", "0")[1])[
        "many_epochs"]["fix"]
    # with max_steps the config does not read epochs: the advice is in steps (3 passes of 36 at batch 4)
    steps = make_config(training={"max_steps": 60, "batch_size": 4})
    fix = causes(doctor(capsys, steps, tmp_path, "--json", "--probe", "0")[1])["many_epochs"]["fix"]
    assert fix.startswith("training.max_steps=27") and "training.epochs" not in fix
    replayed = make_config(training={"epochs": 5, "max_steps": None},
                           mitigations={"replay": {"ratio": 0.15, "file": str(data)}})
    found = causes(doctor(capsys, replayed, tmp_path, "--json", "--probe", "0")[1])
    assert "mitigations.replay.ratio=0.15" not in found["little_data"]["fix"] + found["narrow_data"]["fix"]


@pytest.mark.parametrize("model", ["plain", "chat"])
def test_the_printed_recipe_loads_through_the_strict_schema_once_its_placeholders_are_filled(
        make_config, tiny_model, tmp_path, capsys, model):
    from retain.config import load_config
    from retain.objectives import make_objective

    general = write_jsonl(tmp_path / "general.jsonl", [{"text": "the capital of france is paris ."}] * 8)
    name = str(base_model(tiny_model, tmp_path) if model == "plain" else chat_model(tiny_model, tmp_path))
    config = make_config(model={"name": name}, training={"lr": 1e-2, "epochs": 10, "max_steps": None})
    code, out, _ = doctor(capsys, config, tmp_path, "--probe", "0")
    assert code == 0
    overrides = recipe_line(out)
    (fill,) = [line for line in out.splitlines() if line.startswith("  fill in: ")]
    named = {part.split(" = ")[0] for part in fill[len("  fill in: "):].split("; ")}
    used = {item.split("=", 1)[1] for item in overrides if item.split("=", 1)[1].isupper()
            or item.endswith("=GENERAL.jsonl")}
    assert used and used <= named  # every placeholder the recipe uses is named under it
    filled = [item.replace("GENERAL.jsonl", str(general)).replace("=SUITE", "=english") for item in overrides]
    loaded = load_config(tmp_path / "run.yaml", filled)  # strict: an unknown key or bad value is an error
    make_objective(loaded)  # and no combination a run refuses
    assert loaded.training.lr == 1e-4 and loaded.training.epochs == 3
    assert loaded.mitigations["retention"].action == "early_stop"
    assert loaded.data.chat is (model == "chat")


def test_every_objective_a_run_accepts_is_accepted(make_config, tmp_path, capsys):
    pairs = write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": f"what is {a} plus {a} ?", "chosen": f" {2 * a}",
                                                    "rejected": f" {2 * a + 1}"} for a in range(12)])
    dpo = make_config(data={"train": str(pairs)}, training={"objective": "dpo"})
    code, out, err = doctor(capsys, dpo, tmp_path, "--json", "--probe", "2")
    assert code == 0, err
    assert json.loads(out)["facts"]["objective"] == "dpo" and json.loads(out)["facts"]["examples"] == 12
    assert json.loads(out)["facts"]["probe"]["examples"] == 2  # the chosen answers, against the base's
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": f"what is {a} plus {a} ?"} for a in range(12)])
    grpo = make_config(data={"train": str(prompts)},
                       training={"objective": "grpo", "grpo": {"rewards": {"format": {"pattern": "x"}}}})
    code, out, err = doctor(capsys, grpo, tmp_path, "--json")
    assert code == 0, err
    assert json.loads(out)["facts"]["objective"] == "grpo" and "narrow_data" in causes(out)
    # what a run refuses, the doctor refuses the same way (exit 2, naming the key)
    code, _, err = doctor(capsys, make_config(data={"train": str(pairs)}, training={"objective": "dpo"},
                                              mitigations={"dft": {}}), tmp_path)
    assert code == 2 and "mitigations.dft" in err and "training.objective dpo" in err
