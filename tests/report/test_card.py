"""`retain card`: a Hugging Face model card for a finished run, checked on the files it writes (no network)."""


import pytest
import yaml

import retain
from retain.cli import main
from retain.config import config_from_dict
from retain.evaluation.runner import evaluate_path
from retain.report.card import hub_model_id, hub_datasets

SUITE = "capital_recall,currency_choice"


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_model):
    """(run dir of a 6-step LoRA run on the tiny model, base results, fine-tune results)."""
    from conftest import write_jsonl

    root = tmp_path_factory.mktemp("card")
    data = write_jsonl(root / "qa.jsonl", [{"prompt": f"what is {a} plus {a} ?", "response": f" {2 * a}"}
                                           for a in range(8)])
    config = config_from_dict({"model": {"name": str(tiny_model)}, "data": {"train": str(data), "max_length": 32},
                               "training": {"lr": 1e-2, "max_steps": 6, "batch_size": 4, "report_to": []},
                               "mitigations": {"lora": {"r": 2}}, "output": {"dir": str(root / "run")}})
    run = retain.train(config)
    base = evaluate_path(str(tiny_model), SUITE, "test", root / "base.json", limit=6, progress=False)
    tuned = evaluate_path(str(run.final_dir), SUITE, "test", root / "tuned.json", limit=6, progress=False)
    return run.output_dir, (root / "base.json", base), (root / "tuned.json", tuned)


def front_matter(path):
    text = path.read_text(encoding="utf-8")
    assert text.startswith("---\n")
    head, body = text[4:].split("\n---\n", 1)
    return yaml.safe_load(head), body


def test_card_metadata_holds_the_runs_results_before_and_after(finished_run, capsys):
    run_dir, (base_path, base), (tuned_path, tuned) = finished_run
    assert main(["card", str(run_dir), "--base", str(base_path), "--tuned", str(tuned_path)]) == 0
    card = run_dir / "final" / "README.md"
    assert f"model card: {card}" in capsys.readouterr().out
    meta, body = front_matter(card)
    assert meta["library_name"] == "peft" and "base_model" not in meta  # a local base model has no hub id
    [entry] = meta["model-index"]
    assert entry["name"] == run_dir.name
    found = {}
    for result in entry["results"]:
        for metric in result["metrics"]:
            found[(result["dataset"]["name"], metric["name"])] = metric["value"]
    expected = {}
    for results, who in ((base, "base model"), (tuned, "fine-tuned")):
        for task in results["tasks"].values():  # one task per capability here
            metric = task["primary_metric"]
            expected[(task["capability"], f"{metric} ({who})")] = pytest.approx(task["metrics"][metric], abs=1e-6)
    assert found == expected and len(found) == 4
    assert "**Verdict: " in body and "| capability | metric | before | after |" in body
    assert "lora:" in body and "max_steps: 6" in body  # the run's config, as it ran
    assert "Data: trained on `qa.jsonl` (a local file, not on the hub)." in body and "datasets" not in meta

    from huggingface_hub import ModelCard

    assert len(ModelCard.load(card).data.eval_results) == 4  # huggingface_hub reads it back


def test_card_push_is_refused_offline_and_uploads_final_online(finished_run, tmp_path, monkeypatch, capsys):
    run_dir, (base_path, _), (tuned_path, _) = finished_run
    args = ["card", str(run_dir), "--base", str(base_path), "--tuned", str(tuned_path), "--push", "me/model"]
    assert main(args + ["--force"]) == 2
    assert "--push me/model: HF_HUB_OFFLINE is set" in capsys.readouterr().err

    from huggingface_hub import HfApi, constants

    calls = []
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo, exist_ok: calls.append(("create", repo)))
    monkeypatch.setattr(HfApi, "upload_folder", lambda self, **kw: calls.append(("upload", kw["repo_id"],
                                                                                kw["folder_path"])))
    assert main(args) == 2  # the card written offline is there: replaced only with --force
    assert "README.md: already exists" in capsys.readouterr().err and not calls
    assert main(args + ["--force"]) == 0
    assert calls == [("create", "me/model"), ("upload", "me/model", str(run_dir / "final"))]
    assert front_matter(run_dir / "final" / "README.md")[0]["model-index"][0]["name"] == "model"


def test_card_of_an_unfinished_run_or_mismatched_results_is_exit_2(finished_run, tmp_path, capsys):
    run_dir, (base_path, _), (tuned_path, _) = finished_run
    assert main(["card", str(tmp_path), "--base", str(base_path), "--tuned", str(tuned_path)]) == 2
    assert "not a finished run" in capsys.readouterr().err
    assert main(["card", str(run_dir), "--base", str(base_path), "--tuned", str(base_path)]) == 2
    assert "given twice" in capsys.readouterr().err


def test_base_model_and_datasets_are_hub_ids_only(tmp_path):
    assert hub_model_id({"name": "smollm2-135m-instruct"}) == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert hub_model_id({"name": "Qwen/Qwen2.5-0.5B"}) == "Qwen/Qwen2.5-0.5B"
    assert hub_model_id({"name": "retain-tiny"}) is None and hub_model_id({"name": "./m.Q4_K_M.gguf"}) is None
    assert hub_model_id({"name": str(tmp_path)}) is None
    assert hub_datasets({"train": "hub:org/data:train", "dev": "dev.jsonl"}) == ["org/data"]


def test_a_card_never_overwrites_a_file_silently(finished_run, tmp_path, capsys):
    run_dir, (base_path, _), (tuned_path, _) = finished_run
    mine = tmp_path / "README.md"
    mine.write_text("# my own notes\n")
    args = ["card", str(run_dir), "--base", str(base_path), "--tuned", str(tuned_path), "--out", str(mine)]
    assert main(args) == 2 and mine.read_text() == "# my own notes\n"
    assert f"{mine}: already exists" in capsys.readouterr().err
    assert main(args + ["--force"]) == 0 and front_matter(mine)[0]["tags"] == ["retain", "forgetting-report"]
    assert not list(tmp_path.glob("*.tmp*"))  # written whole, through a temporary file
    # the unfilled template PEFT saves beside an adapter is the training's, not a user's: replaced as is
    from huggingface_hub import ModelCard, ModelCardData

    template = tmp_path / "template" / "README.md"
    template.parent.mkdir()
    ModelCard.from_template(ModelCardData(library_name="peft")).save(template)
    assert main(args[:-1] + [str(template)]) == 0 and front_matter(template)[0]["tags"][0] == "retain"


def test_local_data_is_named_in_the_body_hub_data_in_the_front_matter():
    from retain.report.card import data_sources

    assert data_sources({"train": "/home/me/private/qa.jsonl", "dev": "hub:org/data:validation"}) == [
        "trained on `qa.jsonl` (a local file, not on the hub)", "dev split the hub dataset `org/data:validation`"]
    assert data_sources({"train": "lab:tasks/city_country/train.jsonl"}) == [
        "trained on `lab:tasks/city_country/train.jsonl` (bundled with retain)"]
