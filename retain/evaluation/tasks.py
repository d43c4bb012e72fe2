"""Capability tasks and suites: small YAML files plus JSONL items (no templating, no code).

A task YAML:
    name: capital_recall
    capability: factual recall          # what the report groups by
    kind: generation                    # multiple_choice | perplexity | generation | diversity
    data: {dev: lab:suite/capital_recall.dev.jsonl, test: lab:suite/capital_recall.test.jsonl}
    until: [".", "\\n"]                  # generation: stop strings
    chance: 0.0                         # the score of guessing, shown beside the score

Item fields by kind (rename with `fields: {context: prompt, target: response}`):
    multiple_choice  {context, choices: [str], gold: int}   scored " " + choice after context
    generation       {context, target}                      greedy until a stop string
    perplexity       {text}                                 rolling loglikelihood of the document
    diversity        {context}                              sampled continuations

A suite YAML lists tasks (paths relative to the suite file): `name: lab` and `tasks: [a.yaml, ...]`.
Names without a path resolve to retain's bundled tasks and suites (retain/lab/tasks/NAME.yaml);
`--suite lab,city_country` joins several.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

from retain.config import PACKAGE_DIR, resolve_path
from retain.configs import ConfigError, build
from retain.data import read_jsonl

BUNDLED_TASKS = PACKAGE_DIR / "lab" / "tasks"
PRIMARY_METRIC = {"multiple_choice": "acc", "generation": "exact_match", "perplexity": "word_perplexity",
                  "diversity": "distinct_2"}
LOWER_IS_BETTER = {"word_perplexity", "byte_perplexity", "token_perplexity", "bits_per_byte", "repetition_rate",
                   "self_bleu"}
REQUIRED_FIELDS = {"multiple_choice": ("context", "choices", "gold"), "generation": ("context", "target"),
                   "perplexity": ("text",), "diversity": ("context",)}


@dataclass(frozen=True)
class TaskData:
    test: str
    dev: str | None = None


@dataclass(frozen=True)
class Task:
    name: str
    kind: Literal["multiple_choice", "perplexity", "generation", "diversity"]
    data: TaskData
    capability: str = ""
    description: str = ""
    fields: dict[str, str] = field(default_factory=dict)  # canonical name -> field in the JSONL
    target_delimiter: str = " "  # multiple_choice: between context and choice (lm-eval's default)
    until: tuple[str, ...] = ("\n",)  # generation: stop strings
    max_new_tokens: int = 16
    samples_per_prompt: int = 1  # diversity
    temperature: float = 1.0  # diversity
    metric: str | None = None  # the headline metric; default by kind
    chance: float | None = None

    def validate(self):
        if self.max_new_tokens < 1:
            yield "max_new_tokens", f"must be >= 1, got {self.max_new_tokens}"

    @property
    def primary_metric(self) -> str:
        return self.metric or PRIMARY_METRIC[self.kind]

    @property
    def group(self) -> str:
        return self.capability or self.name

    def items(self, split: str) -> list[dict]:
        """The split's items with canonical field names; a missing field names file and line."""
        source = self.data.test if split == "test" else self.data.dev
        if source is None:
            raise ConfigError(f"task {self.name}: no {split} split")
        path = resolve_path(source)
        items = []
        for lineno, record in read_jsonl(path):
            item = {"id": len(items)}
            for canonical in REQUIRED_FIELDS[self.kind]:
                name = self.fields.get(canonical, canonical)
                if name not in record:
                    raise ConfigError(f"{path}:{lineno}: field '{name}': missing (task {self.name})")
                item[canonical] = record[name]
            items.append(item)
        return items


def _load_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: not found") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping")
    return data


def load_task(path: Path) -> Task:
    try:
        return build(Task, _load_yaml(path))
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def _locate(name: str) -> Path:
    path = Path(name)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return path
    bundled = BUNDLED_TASKS / f"{name}.yaml"
    if not bundled.exists():
        known = ", ".join(sorted(p.stem for p in BUNDLED_TASKS.glob("*.yaml")))
        raise ConfigError(f"suite or task {name!r}: not a file and not bundled (bundled: {known})")
    return bundled


def load_suite(spec: str) -> list[Task]:
    """Tasks of `spec`: comma-separated suite or task names/paths, in order, without duplicates."""
    tasks: dict[str, Task] = {}
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        path = _locate(part)
        data = _load_yaml(path)
        if "tasks" in data:
            for rel in data["tasks"]:
                task = load_task(path.parent / rel)
                tasks.setdefault(task.name, task)
        else:
            task = load_task(path)
            tasks.setdefault(task.name, task)
    return list(tasks.values())
