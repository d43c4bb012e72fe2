"""The study skeleton (retain.studies.common) and the study files' one field set, as `retain config --explain`
prints it: sweep, tune and sequence share their common fields, plan runs by one rule, and skip finished runs."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import pytest
import yaml

from retain.cli import main
from retain.config.explain import nested
from retain.studies.continual.plan import load_sequence, raw_stage_config, seed_sequences
from retain.core.schema import ConfigError
from retain.studies import common
from retain.studies.common import StudyConfig, TaskStudyConfig, plan_run, run_name
from retain.studies.explain import STUDIES
from conftest import REPO_ROOT

REPO = REPO_ROOT
SHIPPED = sorted(p for kind in ("sweeps", "tune", "sequences") for p in (REPO / "configs" / kind).glob("*.yaml")
                 if {"strategies", "grid", "space", "stages"} & set(yaml.safe_load(p.read_text())))  # not run configs


def study_dataclasses() -> list[type]:
    found, todo = [], [cls for cls, _, _ in STUDIES.values()]
    while todo:
        cls = todo.pop()
        if cls not in found:
            found.append(cls)
            todo += [nested(tp) for tp in typing.get_type_hints(cls).values() if nested(tp) is not None]
    return found


@pytest.mark.parametrize("cls", study_dataclasses(), ids=lambda cls: cls.__name__)
def test_every_study_field_has_a_one_line_help(cls):
    helps = {f.name: str(f.metadata.get("help", "")) for f in dataclasses.fields(cls)}
    assert all(h.strip() and "\n" not in h for h in helps.values()), {n: h for n, h in helps.items() if not h.strip()}


def test_the_three_study_configs_share_one_field_set():
    shared = {f.name: f for f in dataclasses.fields(StudyConfig)}
    assert {"output", "common", "seeds", "limit", "batch_size", "device"} <= set(shared)
    for cls, _, _ in STUDIES.values():
        assert issubclass(cls, StudyConfig)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        assert all(fields[name] is shared[name] for name in shared), cls  # inherited, not written again
    sweep, tune, sequence = (STUDIES[k][0] for k in ("sweep", "tune", "sequence"))
    assert issubclass(sweep, TaskStudyConfig) and issubclass(tune, TaskStudyConfig)
    assert not issubclass(sequence, TaskStudyConfig)  # one task per stage, its own base and suite


def test_explain_a_study_kind_and_its_keys(capsys):
    assert main(["config", "--explain", "sweep"]) == 0
    out = capsys.readouterr().out
    for f in dataclasses.fields(STUDIES["sweep"][0]):
        assert f"\n  {f.name} " in out, f.name
    assert "seeds = [0, 1, 2]" in out and "base (required)" in out
    seeds_help = next(f for f in dataclasses.fields(StudyConfig) if f.name == "seeds").metadata["help"]
    for kind in STUDIES:  # the same field, the same words, whichever study
        assert main(["config", "--explain", f"{kind}.seeds"]) == 0
        assert capsys.readouterr().out == f"{kind}.seeds: list of int (default [0, 1, 2])\n  {seeds_help}\n"
    assert main(["config", "--explain", "sequence.stages.task"]) == 0
    assert "sequence.stages.task: str (required)" in capsys.readouterr().out
    assert main(["config", "--explain", "tune.pruner.every"]) == 0
    assert "int (default 50)" in capsys.readouterr().out
    assert main(["config", "--explain", "sweep.seedz"]) == 2
    assert "did you mean sweep.seeds" in capsys.readouterr().err
    assert main(["config", "--explain"]) == 0
    assert "study files: sweep, tune, sequence" in capsys.readouterr().out


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_explain_every_shipped_study_file(path, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    assert main(["config", "--explain", str(path.relative_to(REPO))]) == 0
    out = capsys.readouterr().out
    kind = {"sweeps": "sweep", "tune": "tune", "sequences": "sequence"}[path.parent.name]
    assert out.startswith(f"{path.relative_to(REPO)}: a {kind} file") and "  seeds = " in out
    given = yaml.safe_load(path.read_text())
    assert f"  output = {given['output']}  " in out and "limit" in out


def test_explain_a_study_file_checks_it(tmp_path, capsys):
    path = tmp_path / "sweep.yaml"
    path.write_text("base: b.yaml\ntask: t\nsuite: lab\noutput: out\nstrategies: {a: {}}\nseeds: [1, 1]\n")
    assert main(["config", "--explain", str(path)]) == 2
    assert f"{path}: seeds: expected a non-empty list of distinct training seeds" in capsys.readouterr().err
    path.write_text("base: b.yaml\ntask: t\nsuite: lab\noutput: out\nstrategies: {a: {}}\n")
    assert main(["config", "--explain", str(path)]) == 0
    out = capsys.readouterr().out
    assert "seeds = [0, 1, 2] (default)" in out and "strategies = {a: {}}  " in out
    assert main(["config", "--explain", str(REPO / "configs" / "full.yaml")]) == 2
    assert "not a study file" in capsys.readouterr().err


def test_a_run_is_planned_from_base_common_overrides_seed_and_output():
    base = {"training": {"lr": 1.0, "seed": 7}, "output": {"dir": "x"}}
    data = plan_run(base, {"training.lr": 2.0, "training.epochs": 3}, Path("out/runs/a"), "where", seed=1)
    assert data == {"training": {"lr": 2.0, "seed": 1, "epochs": 3}, "output": {"dir": "out/runs/a"}}
    assert base == {"training": {"lr": 1.0, "seed": 7}, "output": {"dir": "x"}}  # the base is not changed
    assert plan_run(base, {}, Path("o"), "where")["training"]["seed"] == 7  # seed None: the base's
    with pytest.raises(ConfigError, match=r"^here: training.seed is set by the study's `seeds`"):
        plan_run(base, {"training.seed": 3}, Path("o"), "here", seed=0)
    assert [run_name("lora", s, [0]) for s in (0,)] == ["lora"]
    assert [run_name("lora", s, [0, 2]) for s in (0, 2)] == ["lora.seed0", "lora.seed2"]


def test_run_pending_skips_a_finished_run_and_trains_the_others(tmp_path, monkeypatch, make_config, capsys):
    configs = {}
    for name in ("done", "todo"):
        configs[name] = tmp_path / f"{name}.yaml"
        configs[name].write_text(yaml.safe_dump(make_config(output={"dir": str(tmp_path / name)})))
    (tmp_path / "done.json").write_text("{}")
    trained = []
    monkeypatch.setattr(common, "train_and_evaluate",
                        lambda config, result, suite, study, **kw: trained.append((config.output.dir, result, suite)))
    study = StudyConfig(output=str(tmp_path))
    common.run_pending({n: (p, tmp_path / f"{n}.json") for n, p in configs.items()}, "lab", study, progress=False)
    assert trained == [(str(tmp_path / "todo"), tmp_path / "todo.json", "lab")]
    printed = capsys.readouterr().out
    assert "[1/2] done: done already, skipped" in printed and f"[2/2] todo: retain train {configs['todo']}" in printed


def test_a_sequence_runs_once_per_seed_each_in_its_own_directory(tmp_path, make_config):
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump(make_config()))
    stages = [{"name": "a", "task": "capital_recall"}, {"name": "b", "task": "currency_choice"}]
    path = tmp_path / "seq.yaml"
    path.write_text(yaml.safe_dump({"output": str(tmp_path / "seq"), "base": str(base), "stages": stages}))
    seq = load_sequence(path)
    assert list(seq.seeds) == [0, 1, 2]  # the shared default
    runs = seed_sequences(load_sequence(path, ["seeds=[0, 4]"]))
    assert {s: r.output for s, r in runs.items()} == {0: str(tmp_path / "seq" / "seed0"),
                                                       4: str(tmp_path / "seq" / "seed4")}
    data = raw_stage_config(runs[4], 2, path)
    assert data["training"]["seed"] == 4 and data["output"]["dir"] == str(tmp_path / "seq" / "seed4" / "stages" / "2-b")
    one = seed_sequences(load_sequence(path, ["seeds=[3]"]))  # one seed: the file's own output, as before
    assert {s: r.output for s, r in one.items()} == {3: str(tmp_path / "seq")}
    stages[1]["overrides"] = {"training.seed": 5}
    path.write_text(yaml.safe_dump({"output": str(tmp_path / "seq"), "base": str(base), "stages": stages}))
    with pytest.raises(ConfigError, match=r"stages\[1\] \(b\): training.seed is set by the study's `seeds`"):
        raw_stage_config(load_sequence(path), 2, path)
