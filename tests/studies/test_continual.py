"""Continual learning: the accuracy-matrix metrics by hand, the replay reservoir, the router, optimizer
state across stages, and `retain sequence` end to end (with a resume after a stage is lost)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import REPO_ROOT, write_jsonl
from retain.cli import main
from retain.studies.continual import metrics
from retain.studies.continual.buffer import Reservoir, reservoir_sample

REPO = REPO_ROOT

# rows: base, after stage 1, 2, 3; columns: tasks 1, 2, 3 (task j is trained in stage j)
TOY = np.array([[0.1, 0.0, 0.2],
                [0.9, 0.1, 0.2],
                [0.6, 0.8, 0.3],
                [0.5, 0.7, 0.9]])


def test_acc_bwt_fwt_forgetting_on_a_toy_matrix_by_hand():
    assert metrics.acc(TOY) == pytest.approx((0.5 + 0.7 + 0.9) / 3)
    assert metrics.bwt(TOY) == pytest.approx(((0.5 - 0.9) + (0.7 - 0.8)) / 2)  # final minus just-learned
    assert metrics.fwt(TOY) == pytest.approx(((0.1 - 0.0) + (0.3 - 0.2)) / 2)  # before its stage minus base
    assert metrics.forgetting(TOY) == pytest.approx(((0.9 - 0.5) + (0.8 - 0.7)) / 2)  # best earlier minus final
    batch = np.stack([TOY, TOY[:, ::-1]])  # leading batch dimensions: one value per matrix
    assert metrics.acc(batch).shape == (2,) and metrics.acc(batch)[0] == pytest.approx(metrics.acc(TOY))
    assert np.isnan(metrics.bwt(TOY[:2, :1]))  # one task: nothing earlier to forget


def results(rows_of_items: list[dict[str, list[float]]]) -> list[dict]:
    """`retain eval`-shaped results, one per row, from per-task item scores (exact match)."""
    return [{"tasks": {task: {"primary_metric": "exact_match", "lower_is_better": False,
                              "items": [{"id": i, "exact_match": v} for i, v in enumerate(values)]}
                       for task, values in row.items()}} for row in rows_of_items]


def test_the_matrix_from_item_scores_and_its_paired_bootstrap():
    # each task's 10 items reproduce TOY's column exactly
    rows = results([{f"t{j}": [1.0] * round(10 * TOY[i, j]) + [0.0] * (10 - round(10 * TOY[i, j]))
                     for j in range(3)} for i in range(4)])
    scores = metrics.item_scores(rows, ["t0", "t1", "t2"])
    assert np.allclose(metrics.matrix(scores), TOY)
    summary = metrics.summarize(scores, resamples=500, seed=0)
    for name in ("acc", "bwt", "fwt", "forgetting"):
        e = summary[name]
        assert e["ci_low"] <= e["value"] <= e["ci_high"], name
    same = metrics.compare(scores, scores, resamples=200)  # paired: identical matrices differ by exactly 0
    assert all(same[n] == {"value": 0.0, "ci_low": 0.0, "ci_high": 0.0} for n in same)
    rows[2]["tasks"]["t1"]["items"] = rows[2]["tasks"]["t1"]["items"][:5]
    with pytest.raises(ValueError, match="different items"):
        metrics.item_scores(rows, ["t1"])


def test_reservoir_has_a_fixed_size_is_seeded_and_keeps_every_row_with_equal_chance():
    stages = [[("a", i) for i in range(10)], [("b", i) for i in range(30)]]  # a small old task, a large new one
    buffer = Reservoir(size=8, seed=3)
    for rows in stages:
        buffer.extend(rows)
    assert len(buffer.items) == 8 and buffer.seen == 40
    assert reservoir_sample(stages, 8, seed=3) == buffer.items  # a function of (seed, size, rows)
    assert reservoir_sample(stages, 8, seed=4) != buffer.items
    assert reservoir_sample([[1, 2]], 8) == [1, 2]  # fewer rows than room: all of them
    counts = Counter(row for seed in range(4000) for row in reservoir_sample(stages, 8, seed))
    # every one of the 40 rows is kept with probability 8/40, the old stage's as often as the new one's
    share = np.array([counts[row] / 4000 for rows in stages for row in rows])
    assert np.abs(share - 0.2).max() < 0.03
    assert abs(share[:10].mean() - share[10:].mean()) < 0.02


def test_the_router_picks_the_adapter_trained_on_text_like_the_prompt(make_config, tmp_path):
    import retain
    from retain.config import config_from_dict
    from retain.studies.continual.routing import BASE, load_adapter_set, prompt_nll, route, routing_accuracy, use_adapter

    numbers = [f"{a} {b} {a + b} {a} {b}" for a in range(10, 40) for b in range(3)]
    words = [" ".join(["red green blue river mountain"] * 2)] * 20 + ["city country river red"] * 20
    adapters = {}
    for name, texts in (("numbers", numbers), ("words", words)):
        data = write_jsonl(tmp_path / f"{name}.jsonl", [{"text": t} for t in texts])
        config = make_config(data={"train": str(data), "loss_on": "all"}, training={"max_steps": 25, "lr": 3e-2},
                             mitigations={"lora": {"r": 4, "alpha": 8}}, output={"dir": str(tmp_path / name)})
        adapters[name] = retain.train(config_from_dict(config), progress=False).final_dir
    model, tokenizer = load_adapter_set(make_config()["model"]["name"], adapters)
    prompts = {"numbers": ["12 1 13 12", "35 2 37 35"], "words": ["red green blue river", "city country river"]}
    for task, texts in prompts.items():
        nll = {}
        for candidate in (BASE, *adapters):
            with use_adapter(model, candidate):
                nll[candidate] = prompt_nll(model, tokenizer, texts)
        assert routing_accuracy(route(nll), task) == 1.0, (task, nll)
    assert route({"a": np.array([1.0, 0.2]), "b": np.array([0.5, 0.5])}) == ["b", "a"]


def test_optimizer_state_is_reset_unless_reused(make_config, tmp_path):
    import torch

    import retain
    from retain.config import config_from_dict
    from retain.core.errors import ConfigError
    from retain.training.loop import train

    def run(name, steps, **kwargs):
        model = str(tmp_path / "first" / "final") if name != "first" else make_config()["model"]["name"]
        config = config_from_dict(make_config(model={"name": model}, training={"max_steps": steps},
                                              output={"dir": str(tmp_path / name)}))
        train(config, progress=False, save_optimizer_state=True, **kwargs)
        state = torch.load(tmp_path / name / "optimizer.pt", weights_only=True)["state"]
        return {int(s["step"]) for s in state.values()}

    assert run("first", 3) == {3}
    assert run("reset", 2) == {2}  # the default: a fresh AdamW
    assert run("reused", 2, optimizer_state_in=tmp_path / "first" / "optimizer.pt") == {5}  # 3 carried + 2
    lora = config_from_dict(make_config(mitigations={"lora": {"r": 2}}, output={"dir": str(tmp_path / "lora")}))
    with pytest.raises(ConfigError, match="other trainable weights"):
        retain.training.loop.train(lora, progress=False, optimizer_state_in=tmp_path / "first" / "optimizer.pt")

    from retain.studies.continual.plan import SequenceConfig, StageConfig
    from retain.studies.continual.sequence import optimizer_carry

    stages = (StageConfig("one", "t1", "c.yaml"), StageConfig("two", "t2", "c.yaml"))
    reset = SequenceConfig(output=str(tmp_path / "seq"), stages=stages)
    assert optimizer_carry(reset, 1) == (None, False) and optimizer_carry(reset, 2) == (None, False)
    reuse = SequenceConfig(output=str(tmp_path / "seq"), stages=stages, optimizer="reuse")
    assert optimizer_carry(reuse, 2) == (tmp_path / "seq" / "stages" / "1-one" / "optimizer.pt", True)


def tiny_sequence(make_config, tmp_path, **extra) -> Path:
    """Two stages on the tiny model: sums, then word pairs; each scored by its own generation task."""
    sums = write_jsonl(tmp_path / "sums.jsonl", [{"prompt": f"what is {a} plus {b} ?", "response": f" {a + b}"}
                                                 for a in range(4) for b in range(4)])
    pairs = write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": f"{w} country", "response": f" {v}"}
                                                   for w, v in [("red", "green"), ("blue", "river"), ("city", "red")]])
    for name, data in (("sums", sums), ("pairs", pairs)):
        (tmp_path / f"{name}.yaml").write_text(
            f"name: {name}\nkind: generation\ndata: {{test: {data}}}\nfields: {{context: prompt, target: response}}\n"
            "max_new_tokens: 3\n")
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump(make_config(training={"max_steps": 4, "save_every": 2})))
    seq = {"output": str(tmp_path / "seq"), "base": str(base), "resamples": 200, "seeds": [0],
           "stages": [{"name": "sums", "task": str(tmp_path / "sums.yaml"), "overrides": {"data.train": str(sums)}},
                      {"name": "pairs", "task": str(tmp_path / "pairs.yaml"), "overrides": {"data.train": str(pairs)}}],
           **extra}
    path = tmp_path / "seq.yaml"
    path.write_text(yaml.safe_dump(seq, sort_keys=False))
    return path


def test_retain_sequence_end_to_end_and_resumes_a_lost_stage(make_config, tmp_path, capsys):
    general = write_jsonl(tmp_path / "general.jsonl", [{"text": f"the capital of {w} is paris ."}
                                                       for w in ("france", "japan", "red", "blue")])
    online = {"mitigations.ewc": {"weight": 0.1, "file": str(general), "batches": 2, "batch_size": 2},
              "mitigations.si": {"weight": 0.1, "file": str(general), "steps": 2, "batch_size": 2}}
    path = tiny_sequence(make_config, tmp_path, optimizer="reuse", multitask=True, common=online,
                         replay_buffer={"size": 5, "ratio": 0.25, "seed": 0})
    assert main(["sequence", str(path)]) == 0
    out = tmp_path / "seq"
    summary = json.loads((out / "summary.json").read_text())
    assert np.array(summary["matrix"]).shape == (3, 2) and summary["tasks"] == ["sums", "pairs"]
    assert {"acc", "bwt", "fwt", "forgetting"} <= set(summary) and "multitask" in summary
    assert (out / "heatmap.png").is_file() and "| after |" in (out / "summary.md").read_text()
    # stage 2 started from stage 1's weights, its AdamW state, and replayed stage 1's buffered examples
    stage2 = yaml.safe_load((out / "configs" / "2-pairs.yaml").read_text())
    assert stage2["model"]["name"] == str(out / "stages" / "1-sums" / "final")
    assert len((out / "replay" / "stage-2.jsonl").read_text().splitlines()) == 5
    assert stage2["mitigations"]["replay"]["file"] == str(out / "replay" / "stage-2.jsonl")
    import torch
    state = torch.load(out / "stages" / "2-pairs" / "optimizer.pt", weights_only=True)["state"]
    assert {int(s["step"]) for s in state.values()} == {8}  # 4 steps carried over + 4 of its own
    # online EWC and SI: stage 2 adds the importance on stage 1's task to what stage 1 had measured
    stage1 = out / "stages" / "1-sums"
    assert stage2["mitigations"]["ewc"]["fisher_in"] == str(stage1 / "fisher.pt")
    assert stage2["mitigations"]["si"]["importance_in"] == str(stage1 / "si_importance.pt")
    assert stage2["mitigations"]["ewc"]["file"] == stage2["mitigations"]["si"]["file"] == str(tmp_path / "sums.jsonl")
    before = torch.load(stage1 / "fisher.pt", weights_only=True)
    after = torch.load(out / "stages" / "2-pairs" / "fisher.pt", weights_only=True)
    assert all((after[n] >= before[n]).all() for n in before) and any((after[n] > before[n]).any() for n in before)

    # killed during stage 2, after its checkpoint at step 2: a rerun skips stage 1 and resumes stage 2
    first_final = (out / "stages" / "1-sums" / "final" / "model.safetensors").stat().st_mtime_ns
    (out / "eval" / "stage-2.json").unlink()
    import shutil
    shutil.rmtree(out / "stages" / "2-pairs" / "final")
    assert (out / "stages" / "2-pairs" / "checkpoints").is_dir()
    capsys.readouterr()
    assert main(["sequence", str(path)]) == 0
    printed = capsys.readouterr().out
    assert "[stage 1/2] sums: done already, skipped" in printed and "[stage 2/2] pairs: resuming" in printed
    assert (out / "stages" / "1-sums" / "final" / "model.safetensors").stat().st_mtime_ns == first_final
    assert json.loads((out / "summary.json").read_text())["matrix"] == summary["matrix"]  # same result


def test_sequence_file_is_strict(make_config, tmp_path, capsys):
    path = tiny_sequence(make_config, tmp_path, optimiser="reuse")  # a typo of `optimizer`
    assert main(["sequence", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "optimiser: unknown key" in err
    path = tiny_sequence(make_config, tmp_path)
    assert main(["sequence", str(path), "optimizer=sometimes"]) == 2
    assert "optimizer: 'sometimes' is not one of" in capsys.readouterr().err
    data = yaml.safe_load(path.read_text())
    data["stages"][1]["overides"] = {}  # a typo inside a stage
    path.write_text(yaml.safe_dump(data))
    assert main(["sequence", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "stages[1].overides: unknown key" in err


def test_shipped_sequences_build_valid_stage_configs(monkeypatch):
    from retain.studies.continual.plan import check_stage, load_sequence, raw_stage_config
    from retain.studies.continual.sequence import stage_task_names

    monkeypatch.chdir(REPO)  # sequences name their base config relative to the repository
    paths = sorted((REPO / "configs" / "sequences").glob("*.yaml"))
    sequences = [p for p in paths if "stages" in yaml.safe_load(p.read_text())]
    assert sequences
    for path in sequences:
        seq = load_sequence(path)
        assert len(seq.stages) >= 3
        for k in range(1, len(seq.stages) + 1):
            check_stage(raw_stage_config(seq, k, path), seq, k, path)
        assert len(set(stage_task_names(seq, path))) == len(seq.stages)


def test_isolated_adapters_are_scored_by_task_id_and_by_the_router(make_config, tmp_path):
    path = tiny_sequence(make_config, tmp_path, isolation={"lora": {"r": 2, "alpha": 4}}, suite="capital_recall",
                         limit=3)
    assert main(["sequence", str(path)]) == 0
    out = tmp_path / "seq"
    summary = json.loads((out / "summary.json").read_text())
    for k, name in ((1, "sums"), (2, "pairs")):  # every adapter is trained from the base, side by side after
        config = yaml.safe_load((out / "configs" / f"{k}-{name}.yaml").read_text())
        assert config["model"]["name"] == make_config()["model"]["name"] and "lora" in config["mitigations"]
        assert (out / "eval" / "adapters" / f"{name}.nll.json").is_file()
    base = json.loads((out / "eval" / "base.json").read_text())["tasks"]
    by_id = json.loads((out / "eval" / "stage-2.json").read_text())["tasks"]
    assert by_id["capital_recall"] == base["capital_recall"]  # no task id: the untouched base model
    routed = json.loads((out / "eval" / "stage-2.routed.json").read_text())["tasks"]
    assert {i["routed_to"] for t in routed.values() for i in t["items"]} <= {"base", "sums", "pairs"}
    assert set(summary["routing"]["per_task"]) == {"capital_recall", "sums", "pairs"}
    assert 0 <= summary["routing"]["sequence_tasks"] <= 1 and np.array(summary["routed"]["matrix"]).shape == (3, 2)
    # adapters leave the base weights alone: a task's score by task id never changes after its stage
    assert summary["matrix"][1][0] == summary["matrix"][2][0]
