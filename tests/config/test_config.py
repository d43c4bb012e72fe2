import json
from pathlib import Path

import pytest
import yaml

from retain.config import load_config
from retain.core.schema import ConfigError
from retain.mitigations.freezing import FreezeOptions
from retain.mitigations.peft_methods import LoraOptions
from conftest import REPO_ROOT

REPO = REPO_ROOT
CAPABILITY_FILES = sorted([*(REPO / "configs").rglob("tasks/*.yaml"), *(REPO / "configs").rglob("*suite.yaml")])
SHIPPED = sorted(p for p in (REPO / "configs").rglob("*.yaml")
                 if p.parent.name not in ("accelerate", "sweeps", "sequences", "tune") and p not in CAPABILITY_FILES)
SWEEPS = sorted((REPO / "configs" / "sweeps").glob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    config = load_config(path)
    assert config.model.name
    assert config.training.lr > 0


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.name)
def test_every_shipped_sweep_expands_to_valid_run_configs(path, monkeypatch):
    from retain.studies.sweep import load_sweep, strategy_configs

    monkeypatch.chdir(REPO)  # sweeps name their base config relative to the repository
    sweep = load_sweep(path)
    configs = strategy_configs(sweep, path)
    assert len(sweep.seeds) >= 3 and "unprotected.seed0" in configs and len(configs) >= 3 * len(sweep.seeds)
    assert {c.training.seed for c in configs.values()} == set(sweep.seeds)


@pytest.mark.parametrize("path", CAPABILITY_FILES, ids=lambda p: p.name)
def test_every_shipped_task_and_suite_loads_with_its_data(path, tmp_path, monkeypatch):
    from retain.evaluation.tasks import mmlu
    from retain.evaluation.tasks import check_suite, load_suite

    # The study's suite names MMLU, whose data is a separate wheel: a one-question stand-in here.
    row = {"question": "q", "answer_a": "a", "answer_b": "b", "answer_c": "c", "answer_d": "d",
           "correct_answer": "A", "topic": "astronomy"}
    (tmp_path / "mmlu.jsonl").write_text(json.dumps(row) + "\n")
    monkeypatch.setenv("RETAIN_MMLU_FILE", str(tmp_path / "mmlu.jsonl"))
    mmlu._rows_by_subject.cache_clear()
    tasks = load_suite(str(path))
    check_suite(tasks, "test")
    assert tasks and all(t.primary_metric for t in tasks)
    mmlu._rows_by_subject.cache_clear()


@pytest.mark.parametrize("path", sorted((REPO / "configs" / "accelerate").glob("*.yaml")), ids=lambda p: p.name)
def test_accelerate_configs_are_valid_yaml_with_a_distributed_type(path):
    assert yaml.safe_load(path.read_text())["distributed_type"] in ("MULTI_GPU", "FSDP", "DEEPSPEED")


def write(tmp_path, data) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def base(tmp_path, qa_data):
    return {"model": {"name": "m"}, "data": {"train": str(qa_data)}, "output": {"dir": str(tmp_path / "o")}}


@pytest.mark.parametrize("mutate, message", [
    (lambda c: c["training"].update(lrr=1), "training.lrr: unknown key"),
    (lambda c: c["training"].update(lr=0), "training.lr: must be > 0"),
    (lambda c: c["training"].update(lr="fast"), "training.lr: expected a number"),
    (lambda c: c["training"].update(batch_size=2.5), "training.batch_size: expected an integer"),
    (lambda c: c["training"].update(scheduler="exp"), "training.scheduler: 'exp' is not one of"),
    (lambda c: c["data"].update(train="nope.jsonl"), "data.train: file not found"),
    (lambda c: c.pop("output"), "output: required key is missing"),
    (lambda c: c.update(mitigations={"lorra": {}}), "mitigations.lorra: unknown mitigation"),
    (lambda c: c.update(mitigations={"lora": {"r": 0}}), "mitigations.lora.r: must be >= 1"),
    (lambda c: c.update(mitigations={"freeze": {"patterns": ["("]}}), "mitigations.freeze.patterns[0]: not a valid"),
    (lambda c: c.update(mitigations={"prompt_tuning": {}, "interpolate": {}}),
     "mitigations.interpolate: moves the weights toward the base, and prompt_tuning changes none of them"),
])
def test_bad_config_names_file_and_key(tmp_path, qa_data, mutate, message):
    data = base(tmp_path, qa_data)
    data["training"] = {}
    mutate(data)
    path = write(tmp_path, data)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value).startswith(f"{path}: ")
    assert message in str(err.value)


def test_overrides_are_dotted_and_typed(tmp_path, qa_data):
    path = write(tmp_path, base(tmp_path, qa_data))
    config = load_config(path, ["training.lr=3e-4", "training.max_steps=7", "mitigations.lora.r=4"])
    assert config.training.lr == 3e-4 and config.training.max_steps == 7
    assert config.mitigations["lora"] == LoraOptions(r=4)
    with pytest.raises(ConfigError, match="training.max_steps: expected an integer"):
        load_config(path, ["training.max_steps=many"])


def test_options_are_frozen_and_lists_become_tuples(tmp_path, qa_data):
    data = base(tmp_path, qa_data)
    data["mitigations"] = {"freeze": {"patterns": ["mlp"], "first_n_blocks": 1}}
    config = load_config(write(tmp_path, data))
    assert config.mitigations["freeze"] == FreezeOptions(patterns=("mlp",), first_n_blocks=1)
    with pytest.raises(AttributeError):
        config.training.lr = 1.0
