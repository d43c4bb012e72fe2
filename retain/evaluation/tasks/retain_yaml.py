"""retain's own task format: a small YAML file plus JSONL items (no templating, no code).

A task YAML (retain's own format):
    name: capital_recall
    capability: factual recall          # what the report groups by
    kind: generation                    # multiple_choice | perplexity | generation | diversity
    data: {dev: capital_recall.dev.jsonl, test: capital_recall.test.jsonl}   # relative to this YAML
    until: [".", "\\n"]                  # generation: stop strings
    chance: 0.0                         # the score of guessing, shown beside the score
    chat: true                          # optional: render the context through the model's chat template
    system: "Answer briefly."           #   ... with this system prompt
    metric: contains                    # the headline metric (exact_match | contains | regex_match, ...)
    answer_regex: "capital is (\\w+)"   # generation: regex_match compares its match with the target
    cluster: country                    # optional: the item field naming what the item is about; items that
                                        #   share it (in any task of a capability) are resampled together

Item fields by kind (rename with `fields: {context: prompt, target: response}`):
    multiple_choice  {context, choices: [str], gold: int | choice text}  scored target_delimiter + choice
    generation       {context, target}                      greedy until a stop string
    perplexity       {text}                                 rolling loglikelihood of the document
    diversity        {context}                              sampled continuations
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal, Protocol

from retain.core.paths import PACKAGE_DIR, resolve_path
from retain.core.schema import ConfigError, build, read_yaml
from retain.data import DataError, read_jsonl
from retain.evaluation import scoring

BUNDLED_TASKS = PACKAGE_DIR / "lab" / "tasks"
PRIMARY_METRIC = {"multiple_choice": "acc", "generation": "exact_match", "perplexity": "word_perplexity",
                  "diversity": "distinct_2"}
METRICS = {"multiple_choice": ("acc", "acc_norm"), "generation": ("exact_match", "contains", "regex_match"),
           "perplexity": ("word_perplexity", "byte_perplexity", "bits_per_byte", "token_perplexity"),
           "diversity": ("distinct_1", "distinct_2", "repetition_rate", "self_bleu")}
LOWER_IS_BETTER = {"word_perplexity", "byte_perplexity", "token_perplexity", "bits_per_byte", "repetition_rate",
                   "self_bleu"}
REQUIRED_FIELDS = {"multiple_choice": ("context", "choices", "gold"), "generation": ("context", "target"),
                   "perplexity": ("text",), "diversity": ("context",)}


class CapabilityTask(Protocol):
    """What the runner and the report need of a task, whatever format it was written in."""

    name: str
    kind: str
    description: str

    @property
    def group(self) -> str: ...
    @property
    def primary_metric(self) -> str: ...
    @property
    def lower_is_better(self) -> bool: ...
    @property
    def chance(self) -> float | None: ...

    def check(self, split: str) -> None:
        """Raise ConfigError/DataError if `split` can't be scored; runs before any model loads."""

    def score(self, lm, split: str = "test", limit: int | None = None, seed: int = 0) -> tuple[dict, list[dict]]:
        """(aggregate metrics, per-item records with a stable "id")."""


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
    chat: bool = False  # render each context as a user turn through the tokenizer's chat template
    system: str | None = None  # with chat: a system turn before it
    answer_regex: str | None = None  # generation: regex_match extracts the answer with it
    # the item field naming the entity an item is about (a country): the report's bootstrap draws the items that
    # share it together, in this task and in others pooled with it, since they are not independent evidence
    cluster: str | None = None

    def validate(self):
        if self.max_new_tokens < 1:
            yield "max_new_tokens", f"must be >= 1, got {self.max_new_tokens}"
        if self.metric is not None and self.metric not in METRICS[self.kind]:
            yield "metric", f"{self.metric!r} is not a {self.kind} metric ({', '.join(METRICS[self.kind])})"
        if self.metric == "regex_match" and not self.answer_regex:
            yield "answer_regex", "required by metric: regex_match"
        if self.answer_regex:
            try:
                re.compile(self.answer_regex)
            except re.error as e:
                yield "answer_regex", f"not a valid regular expression: {e}"
        if self.system is not None and not self.chat:
            yield "system", "needs chat: true"

    @property
    def primary_metric(self) -> str:
        return self.metric or PRIMARY_METRIC[self.kind]

    @property
    def lower_is_better(self) -> bool:
        return self.primary_metric in LOWER_IS_BETTER

    @property
    def group(self) -> str:
        return self.capability or self.name

    def source(self, split: str) -> Path:
        source = self.data.test if split == "test" else self.data.dev
        if source is None:
            raise ConfigError(f"task {self.name}: no {split} split")
        return resolve_path(source)

    def items(self, split: str) -> list[dict]:
        """The split's items with canonical field names; a missing or bad field names file and line."""
        path = self.source(split)
        if not path.is_file():
            raise ConfigError(f"task {self.name}: {split} data file not found: {path}")
        items = []
        for lineno, record in read_jsonl(path):
            item = {"id": len(items)}
            for canonical in REQUIRED_FIELDS[self.kind]:
                name = self.fields.get(canonical, canonical)
                if name not in record:
                    raise DataError(f"{path}:{lineno}: field '{name}': missing (task {self.name})")
                item[canonical] = record[name]
            if self.kind == "multiple_choice":
                item["gold"] = _check_choice(item, f"{path}:{lineno}", self.fields)
            if self.cluster is not None:
                if not isinstance(record.get(self.cluster), (str, int)) or isinstance(record[self.cluster], bool):
                    raise DataError(f"{path}:{lineno}: field '{self.cluster}' (the task's cluster): missing or not a "
                                    f"string or integer (task {self.name})")
                item["cluster"] = record[self.cluster]
            items.append(item)
        return items

    def check(self, split: str) -> None:
        self.items(split)

    def render(self, context: str, tokenizer) -> str:
        if not self.chat:
            return context
        if not getattr(tokenizer, "chat_template", None):
            raise ConfigError(f"task {self.name}: chat: true, but the model's tokenizer has no chat template")
        messages = ([{"role": "system", "content": self.system}] if self.system else []) + \
            [{"role": "user", "content": context}]
        try:
            return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        except Exception as e:  # templates raise their own errors, e.g. "system role not supported"
            raise ConfigError(f"task {self.name}: the model's chat template rejected the prompt: {e}") from None

    def score(self, lm, split: str = "test", limit: int | None = None, seed: int = 0) -> tuple[dict, list[dict]]:
        """(metrics, per-item records); a record carries its item's "cluster" where the task names one."""
        items = self.items(split)[:limit]
        metrics, records = self._score(lm, items, seed)
        if self.cluster is not None:
            records = [{**record, "cluster": item["cluster"]} for record, item in zip(records, items, strict=True)]
        return metrics, records

    def _score(self, lm, items: list[dict], seed: int) -> tuple[dict, list[dict]]:
        if "context" in REQUIRED_FIELDS[self.kind]:
            items = [{**it, "context": self.render(it["context"], lm.tokenizer)} for it in items]
        if self.kind == "multiple_choice":
            return scoring.score_multiple_choice(lm, items, self.target_delimiter)
        if self.kind == "perplexity":
            return scoring.score_perplexity(lm, items)
        if self.kind == "generation":
            return scoring.score_generation(lm, items, self.until, self.max_new_tokens, self.answer_regex)
        return scoring.score_diversity(lm, items, self.until, self.max_new_tokens, self.samples_per_prompt,
                                       self.temperature, seed)


def _check_choice(item: dict, where: str, fields: dict) -> int:
    """The gold index: an int in range, or (as lm-eval accepts) the text of one of the choices."""
    choices, gold = item["choices"], item["gold"]
    if not isinstance(choices, list) or not choices or not all(isinstance(c, str) for c in choices):
        raise DataError(f"{where}: field '{fields.get('choices', 'choices')}': expected a non-empty list of strings, "
                        f"got {choices!r}")
    if isinstance(gold, str) and gold in choices:
        return choices.index(gold)
    if isinstance(gold, bool) or not isinstance(gold, int) or not 0 <= gold < len(choices):
        raise DataError(f"{where}: field '{fields.get('gold', 'gold')}': expected an index in 0..{len(choices) - 1} "
                        f"or the text of a choice, got {gold!r}")
    return gold


def read_task_yaml(path: Path) -> dict:
    data = read_yaml(path, "task or suite file")  # strict: UTF-8, no duplicate keys, errors name file and line
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping (a task: name, kind, data, ...; a suite: name, tasks)")
    return data


def _relative_to(path: Path, data_path: str | None) -> str | None:
    """A task's data paths are relative to the task YAML (`lab:` and absolute paths stay as they are)."""
    if data_path is None or data_path.startswith("lab:") or Path(data_path).expanduser().is_absolute():
        return data_path
    return str(path.parent / data_path)


def task_from(path: Path, data: dict) -> Task:
    try:
        task = build(Task, data)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    return replace(task, data=TaskData(test=_relative_to(path, task.data.test), dev=_relative_to(path, task.data.dev)))


def load_task(path: Path) -> Task:
    return task_from(Path(path), read_task_yaml(Path(path)))
