"""Capability tasks and suites, from whichever source a `--suite` part names (SOURCES below).

A suite YAML lists tasks (paths relative to the suite file): `name: lab` and `tasks: [a.yaml, ...]`.
`--suite` takes comma-separated parts, each one of:
    a task or suite YAML path      retain's format, or an lm-evaluation-harness task YAML
    a bundled name                 retain/lab/tasks/NAME.yaml (lab, city_country, ...)
    mmlu, mmlu:SUBJECT[@K]         the MMLU test set (see retain.evaluation.tasks.mmlu), K-shot
    mmlu_cloze[:SUBJECT][@K]       the same in the cloze formulation (lm-eval's mmlu_continuation)
    lm-eval:NAME                   a task or group of lm-evaluation-harness's registry (local/cached data)
Every task is checked (files, fields) by `check_suite` before a model is loaded.

    retain_yaml.py        retain's own task YAML (Task, load_task) and the protocol every task meets
    mmlu.py               MMLU from the registry wheel's parquet, letter or cloze formulation, K-shot
    lm_eval_harness.py    lm-evaluation-harness task YAMLs and registry names, scored by lm-eval's definitions
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from retain.core.schema import ConfigError, decode_utf8
from retain.evaluation.tasks.lm_eval_harness import REGISTRY_PREFIX, load_lm_eval_tasks, looks_like_lm_eval_file
from retain.evaluation.tasks.mmlu import load_mmlu, names_mmlu
from retain.evaluation.tasks.retain_yaml import (BUNDLED_TASKS, CapabilityTask, Task, load_task, read_task_yaml,
                                                 task_from)


@dataclass(frozen=True)
class Source:
    name: str
    names: Callable[[str], bool]  # whether a --suite part (or, for a file source, the file it names) is this source's
    load: Callable[[str], list[CapabilityTask]]


# Parts that name a source by their spelling, tried first, in order; anything else is a file or a bundled name.
SOURCES = (
    Source("mmlu", names_mmlu, lambda part: [load_mmlu(part)]),
    Source("lm-eval registry", lambda part: part.startswith(REGISTRY_PREFIX), load_lm_eval_tasks),
)
# A file's format decides: lm-eval's task YAML (checked before a strict read: it may use `!function`), else retain's.
FILE_SOURCES = (
    Source("lm-eval YAML", looks_like_lm_eval_file, load_lm_eval_tasks),
)


def _locate(name: str) -> Path:
    path = Path(name)
    bundled = BUNDLED_TASKS / f"{name}.yaml"
    # a bundled name wins over a directory of that name in the working directory (./lab, ./english)
    if path.suffix in (".yaml", ".yml") or path.is_file() or (path.exists() and not bundled.exists()):
        return path
    if not bundled.exists():
        known = ", ".join(sorted(p.stem for p in BUNDLED_TASKS.glob("*.yaml")))
        raise ConfigError(f"suite or task {name!r}: not a file and not bundled (bundled: {known}; "
                          "also mmlu, mmlu:SUBJECT, mmlu_cloze, lm-eval:NAME)")
    return bundled


def _load_part(part: str, base: Path | None = None) -> list[CapabilityTask]:
    """The tasks one suite part names (see the module docstring); `base` resolves relative task paths."""
    source = next((s for s in SOURCES if s.names(part)), None)
    if source is not None:
        return source.load(part)
    path = base / part if base is not None and (base / part).suffix in (".yaml", ".yml") else _locate(part)

    if path.is_file():  # whatever its format, a byte that is not UTF-8 is named here, with its line
        decode_utf8(path.read_bytes(), path)
    source = next((s for s in FILE_SOURCES if s.names(path)), None)
    if source is not None:
        return source.load(path)
    data = read_task_yaml(path)
    if "tasks" in data:
        if not isinstance(data["tasks"], list):
            raise ConfigError(f"{path}: tasks: expected a list of task files or names")
        return [task for entry in data["tasks"] for task in _load_part(str(entry), path.parent)]
    return [task_from(path, data)]


def load_suite(spec: str) -> list[CapabilityTask]:
    """Tasks of `spec`: comma-separated suite or task names/paths, in order, without duplicates."""
    tasks: dict[str, CapabilityTask] = {}
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        for task in _load_part(part):
            tasks.setdefault(task.name, task)
    return list(tasks.values())


def check_suite(tasks: list[CapabilityTask], split: str) -> None:
    """Every task can be scored on `split`: files exist and parse. Call before loading a model."""
    for task in tasks:
        task.check(split)


__all__ = ["SOURCES", "CapabilityTask", "Task", "check_suite", "load_suite", "load_task"]
