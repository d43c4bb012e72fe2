"""`retain sequence SEQ.yaml`: train a sequence of tasks stage by stage, score every task after every stage.

    run_sequence(path, overrides=()) -> seed -> summary (also <output>/summary.json, summary.md, the figures;
                                        with several `seeds`, one sequence each in <output>/seed<S>/)

    read SEQ.yaml strictly; build and check every stage's run config and the evaluation suite
    (the capability suite + each stage's task) — every user error surfaces before any training
    score the base model                                        eval/base.json          (row 0)
    for stage k = 1..T:
        its run config (retain.studies.continual.plan): chained to stage k-1, online EWC/SI, replay buffer,
        or an isolated adapter from the base                    configs/<k>-<name>.yaml
        train it (retain.training.loop.train)                   stages/<k>-<name>/
        score it on every task                                  eval/stage-k.json       (row k)
    multitask: train once on the union of the stages' data      multitask/, eval/multitask.json
    summary: the accuracy matrix, ACC/BWT/FWT/forgetting with CIs, per-stage capability curves

Resumable at two grains. A stage whose results file exists is finished and skipped; a stage whose
final/ exists is only scored; a stage that has checkpoints (training.save_every) resumes from the
newest, as `retain train --resume` does; anything else trains that stage from step 0. A finished
stage trained under another config than the sequence now gives is an error, not silently reused.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from retain.config import RunConfig, config_from_dict, config_to_yaml, resolve_path
from retain.studies.continual.buffer import reservoir_sample
from retain.studies.continual.plan import (SequenceConfig, check_stage, explicit_lab_defaults, load_sequence,
                                   raw_stage_config, seed_sequences, stage_dir, uses_peft)
from retain.core.errors import ConfigError
from retain.core.files import atomic_write_text
from retain.studies.common import announce, evaluate_into, score_base
from retain.core.files import atomic_write_json
from retain.data import read_jsonl
from retain.evaluation.tasks import check_suite, load_suite
from retain.studies.continual.isolation import assemble_rows, score_new_adapter
from retain.studies.continual.summary import summarize_sequence, write_sequence_report
from retain.training.checkpoint import latest_checkpoint
from retain.config import total_steps_for
from retain.training.loop import train
from retain.training.rundir import config_changes

EWC_FILES = {"ewc": ("fisher_in", "fisher.pt"), "si": ("importance_in", "si_importance.pt")}


def eval_suite(seq: SequenceConfig) -> str:
    """What every row scores, as `retain eval --suite` takes it: the capability suite, then each stage's task."""
    return ",".join(([seq.suite] if seq.suite else []) + [s.task for s in seq.stages])


def stage_task_names(seq: SequenceConfig, where: Path) -> list[str]:
    """Each stage's task, as the results name it; a stage's `task` must be exactly one task."""

    names = []
    for i, stage in enumerate(seq.stages):
        tasks = load_suite(stage.task)
        if len(tasks) != 1:
            raise ConfigError(f"{where}: stages[{i}].task: {stage.task!r} is {len(tasks)} tasks — name one task")
        names.append(tasks[0].name)
    return names


def train_rows(source: str) -> list[dict]:
    """The records of a stage's JSONL training file (for the replay buffer and the multi-task union)."""

    path = resolve_path(source)
    if path.suffix != ".jsonl":
        raise ConfigError(f"data.train: {source}: the replay buffer and the multi-task reference read JSONL "
                          "training files only")
    return [record for _, record in read_jsonl(path)]


def jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def previous_model(seq: SequenceConfig, k: int) -> str:
    """What stage k starts from: stage k-1's final weights (their merged export after a PEFT stage)."""
    final = stage_dir(seq, k - 1) / "final"
    return str((final / "merged") if (final / "adapter_config.json").is_file() else final)


def stage_config(seq: SequenceConfig, k: int, raws: list[dict], checked: list[RunConfig], where: Path) -> RunConfig:
    """Stage k's final run config: the changes listed in retain.studies.continual.plan, checked again."""
    data = explicit_lab_defaults(checked[k - 1])
    mitigations = data.setdefault("mitigations", {}) or {}
    data["mitigations"] = mitigations
    if seq.isolation is not None:
        if not uses_peft(data):
            mitigations["lora"] = dict(seq.isolation.lora)
    else:
        if uses_peft(data):  # the next stage starts from merged weights, not from an adapter
            data["output"]["merged_export"] = True
        if k > 1:
            data["model"] = {**data["model"], "name": previous_model(seq, k), "gguf_file": None, "revision": None}
    if k > 1:
        previous = stage_dir(seq, k - 1)
        for name, (key_in, file_name) in EWC_FILES.items():
            if name not in mitigations:
                continue
            if (previous / file_name).is_file():  # online: what earlier stages found important, carried on
                mitigations[name][key_in] = str(previous / file_name)
            if seq.importance_on == "previous_task":  # ... plus the importance for the task just learned
                mitigations[name]["file"] = raws[k - 2]["data"]["train"]
        if seq.replay_buffer is not None:
            buffer = seq.replay_buffer
            rows = reservoir_sample((train_rows(raw["data"]["train"]) for raw in raws[:k - 1]), buffer.size,
                                    buffer.seed)
            file = atomic_write_text(Path(seq.output) / "replay" / f"stage-{k}.jsonl", jsonl(rows))
            mitigations["replay"] = {"ratio": buffer.ratio, "file": str(file), "seed": buffer.seed}
    try:
        return config_from_dict(data)
    except ConfigError as e:
        raise ConfigError(f"{where}: stages[{k - 1}] ({seq.stages[k - 1].name}): {e}") from None


def optimizer_carry(seq: SequenceConfig, k: int) -> tuple[Path | None, bool]:
    """(the optimizer state stage k starts from, whether stage k saves its own): reset or reuse."""
    if seq.optimizer == "reset":
        return None, False
    return (stage_dir(seq, k - 1) / "optimizer.pt" if k > 1 else None), True


def check_unchanged(config: RunConfig, directory: Path, where: Path, name: str) -> None:
    """A finished stage is reused only if the sequence still asks for the config it was trained with."""

    saved = directory / "config.yaml"
    if not saved.is_file():
        return
    changes = config_changes(yaml.safe_load(saved.read_text(encoding="utf-8")), config)
    if changes:
        shown = "; ".join(f"{key}: {change}" for key, change in list(changes.items())[:3])
        raise ConfigError(f"{where}: stage {name} in {directory} was trained with another config ({shown}) — "
                          "restore the sequence file, or delete that stage's directory and the later ones")


def run_stage(seq: SequenceConfig, k: int, config: RunConfig, where: Path, progress: bool) -> Path:
    """Train stage k (or resume it, or reuse it when finished); returns its final/ directory."""

    directory = stage_dir(seq, k)
    name = seq.stages[k - 1].name
    configs_dir = Path(seq.output) / "configs"
    atomic_write_text(configs_dir / f"{k}-{name}.yaml", config_to_yaml(config))
    if (directory / "final").is_dir():
        check_unchanged(config, directory, where, name)
        announce(k, len(seq.stages), name, "trained already", "stage")
        return directory / "final"
    state_in, save_state = optimizer_carry(seq, k)
    resume = latest_checkpoint(directory) is not None
    announce(k, len(seq.stages), name, f"{'resuming' if resume else 'training'} ({directory})", "stage")
    run = train(config, resume=resume, overwrite=not resume, progress=progress, optimizer_state_in=state_in,
                save_optimizer_state=save_state)
    return run.final_dir


def multitask_config(seq: SequenceConfig, raws: list[dict], checked: list[RunConfig]) -> RunConfig:
    """Stage 1's config on the union of every stage's data, for as many steps as the stages together."""

    out = Path(seq.output) / "multitask"
    rows, steps = [], 0
    for raw, config in zip(raws, checked):
        stage_rows = train_rows(raw["data"]["train"])
        rows += stage_rows
        steps += total_steps_for(config, len(stage_rows), 1)
    union = atomic_write_text(out / "union.jsonl", jsonl(rows))
    data = explicit_lab_defaults(checked[0])
    data["data"]["train"] = str(union)
    data["training"]["max_steps"] = steps
    data["output"]["dir"] = str(out / "run")
    if seq.isolation is not None and not uses_peft(data):
        data.setdefault("mitigations", {})["lora"] = dict(seq.isolation.lora)
    return config_from_dict(data)


def run_sequence(path: Path, overrides: list[str] | tuple[str, ...] = (), progress: bool = True) -> dict[int, dict]:
    """Run the sequence once per training seed in its `seeds` (retain.studies.continual.plan.seed_sequences); returns
    seed -> that sequence's summary."""
    path = Path(path)
    return {seed: run_one_sequence(seq, path, progress)
            for seed, seq in seed_sequences(load_sequence(path, overrides)).items()}


def run_one_sequence(seq: SequenceConfig, path: Path, progress: bool = True) -> dict:
    """The sequence with one training seed (seq.seeds[0]), into seq.output; returns its summary."""

    out, T = Path(seq.output), len(seq.stages)
    raws = [raw_stage_config(seq, k, path) for k in range(1, T + 1)]
    checked = [check_stage(raw, seq, k, path) for k, raw in enumerate(raws, 1)]
    task_names = stage_task_names(seq, path)
    suite = eval_suite(seq)
    tasks = load_suite(suite)
    check_suite(tasks, seq.split)
    base_model = checked[0].model.name

    eval_dir = out / "eval"
    score_base(base_model, suite, eval_dir / "base.json", seq, seq.split, progress)
    routing = {}
    for k in range(1, T + 1):
        result = eval_dir / f"stage-{k}.json"
        name = seq.stages[k - 1].name
        if result.is_file():  # written last: the stage is trained and scored
            announce(k, T, name, "done already, skipped", "stage")
        else:
            final = run_stage(seq, k, stage_config(seq, k, raws, checked, path), path, progress)
            if seq.isolation is None:
                evaluate_into(result, str(final), suite, seq, seq.split, progress)
            else:
                adapters = {s.name: stage_dir(seq, j) / "final" for j, s in enumerate(seq.stages[:k], 1)}
                score_new_adapter(base_model, adapters, tasks, eval_dir, seq.split, seq.limit, seq.batch_size,
                                  seq.device, progress)
        if seq.isolation is not None:  # cheap, from the cached per-adapter records
            oracle, routed, routing[k] = assemble_rows(eval_dir / "base.json", eval_dir,
                                                       [s.name for s in seq.stages], task_names, k)
            atomic_write_json(eval_dir / f"stage-{k}.routed.json", routed)
            atomic_write_json(result, oracle)
    if seq.multitask and not (eval_dir / "multitask.json").is_file():
        print("multi-task reference: one run on the union of the stages' data")

        config = multitask_config(seq, raws, checked)
        resume = (Path(config.output.dir) / "checkpoints").is_dir()
        final = Path(config.output.dir) / "final"
        if not final.is_dir():
            final = train(config, resume=resume, overwrite=not resume, progress=progress).final_dir
        evaluate_into(eval_dir / "multitask.json", str(final), suite, seq, seq.split, progress)
    summary = summarize_sequence(seq, task_names, eval_dir, routing)
    atomic_write_json(out / "summary.json", summary)
    write_sequence_report(summary, out)
    return summary

