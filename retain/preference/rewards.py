"""Composite rewards for GRPO: a weighted sum of named terms, each logged under its own name.

    training.grpo.rewards:
      template:  {kind: format, weight: 0.5, pattern: 'ANSWER\\(.+\\)'}   # the answer's shape
      facts:     {kind: knowledge, weight: 1.0, facts: lab:tasks/qa_format/facts.jsonl}
      stay_near: {kind: similarity_to_base, weight: 0.3}                 # agree with the base's greedy answer

A term's name is the key (logged as reward/NAME); its kind defaults to the name (`format: {pattern: ...}`).
The kinds, one small pure function each (`completion -> float`, most in [0, 1]):

    format              1 if the stripped completion matches `pattern` (whole, or anywhere with match: search)
    keyword             the share of `keywords` the completion contains
    length              1 − |characters − target_chars| / target_chars, floored at 0
    knowledge           1 if the completion contains the answer of the fact (a JSONL of {subject, answer})
                        whose subject the prompt names (the longest that it names); 0 otherwise
    similarity_to_base  word F1 between the completion and the base model's greedy completion of the prompt
    function            your own: `module:function` or `path/to/file.py:function`, called as TRL calls a reward
                        function, fn(prompts=[...], completions=[...], reference=[...]) -> [float, ...]

Why composite: practitioners' accounts of forgetting in RL tuning warn that a reward for the template alone lets the model drop what it knew (any
answer in the right shape scores); a knowledge term makes the facts pay, and similarity to the base is a
leash on the outputs, beside the KL leash on the distribution.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

from retain.core.errors import ConfigError
from retain.core.paths import resolve_path
from retain.core.schema import build


@dataclass(frozen=True)
class RewardInput:
    """What a term sees of one completion."""

    prompt: str
    completion: str
    reference: str | None = None  # the record's response, when the prompt file has one
    base_answer: str | None = None  # the base model's greedy completion (similarity_to_base)


@dataclass(frozen=True)
class FormatOptions:
    weight: float = field(default=1.0, metadata={"help": "this term's weight in the total reward"})
    pattern: str = field(default="", metadata={"help": "a Python regular expression the completion must match"})
    match: Literal["full", "search"] = field(default="full", metadata={
        "help": "full: the whole stripped completion must match; search: anywhere in it"})

    def validate(self):
        if not self.pattern:
            yield "pattern", "required: the regular expression a well-formed completion matches"
            return
        try:
            re.compile(self.pattern)
        except re.error as e:
            yield "pattern", f"not a valid regular expression: {e}"


@dataclass(frozen=True)
class KeywordOptions:
    weight: float = field(default=1.0, metadata={"help": "this term's weight in the total reward"})
    keywords: list[str] = field(default_factory=list, metadata={"help": "words the completion should contain"})
    case_sensitive: bool = field(default=False, metadata={"help": "match the keywords' case exactly"})

    def validate(self):
        if not self.keywords:
            yield "keywords", "required: a non-empty list of strings"


@dataclass(frozen=True)
class LengthOptions:
    weight: float = field(default=1.0, metadata={"help": "this term's weight in the total reward"})
    target_chars: int = field(default=40, metadata={"help": "the completion length (characters) that scores 1"})

    def validate(self):
        if self.target_chars < 1:
            yield "target_chars", f"must be >= 1, got {self.target_chars}"


@dataclass(frozen=True)
class KnowledgeOptions:
    weight: float = field(default=1.0, metadata={"help": "this term's weight in the total reward"})
    facts: str = field(default="", metadata={
        "help": "a JSONL of {subject, answer}: a completion to a prompt naming the subject must contain the answer"})

    def validate(self):
        if not self.facts:
            yield "facts", "required: a JSONL file of {subject, answer} records"
        elif not resolve_path(self.facts).is_file():
            yield "facts", f"file not found: {resolve_path(self.facts)}"


@dataclass(frozen=True)
class SimilarityOptions:
    weight: float = field(default=1.0, metadata={"help": "this term's weight in the total reward"})


@dataclass(frozen=True)
class FunctionOptions:
    weight: float = field(default=1.0, metadata={"help": "this term's weight in the total reward"})
    function: str = field(default="", metadata={
        "help": "module:function or path/to/file.py:function, called fn(prompts=, completions=, reference=)"})

    def validate(self):
        if ":" not in self.function:
            yield "function", f"expected module:function or file.py:function, got {self.function!r}"


# --- the terms: pure functions of one completion (function: of the whole batch) ---

def format_reward(o: FormatOptions, x: RewardInput) -> float:
    text = x.completion.strip()
    found = re.fullmatch(o.pattern, text) if o.match == "full" else re.search(o.pattern, text)
    return float(found is not None)


def keyword_reward(o: KeywordOptions, x: RewardInput) -> float:
    text = x.completion if o.case_sensitive else x.completion.lower()
    words = o.keywords if o.case_sensitive else [k.lower() for k in o.keywords]
    return sum(k in text for k in words) / len(words)


def length_reward(o: LengthOptions, x: RewardInput) -> float:
    return max(0.0, 1.0 - abs(len(x.completion.strip()) - o.target_chars) / o.target_chars)


def word_f1(a: str, b: str) -> float:
    """F1 of the words two strings share (SQuAD's token F1, lower-cased); 1 for two empty strings."""
    wa, wb = re.findall(r"\w+", a.lower()), re.findall(r"\w+", b.lower())
    if not wa or not wb:
        return float(wa == wb)
    common = sum(min(wa.count(w), wb.count(w)) for w in set(wa))
    if common == 0:
        return 0.0
    precision, recall = common / len(wa), common / len(wb)
    return 2 * precision * recall / (precision + recall)


def similarity_reward(o: SimilarityOptions, x: RewardInput) -> float:
    if x.base_answer is None:
        raise RuntimeError("similarity_to_base: the base model's answers were not computed (objective setup)")
    return word_f1(x.completion, x.base_answer)


def load_facts(path: str) -> list[tuple[str, str]]:
    """(subject, answer) pairs, longest subject first (so 'Niger' does not claim a prompt about 'Nigeria')."""
    facts = []
    file = resolve_path(path)
    for i, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{file}:{i}: not JSON: {e}") from None
        if not (isinstance(row, dict) and isinstance(row.get("subject"), str) and isinstance(row.get("answer"), str)):
            raise ConfigError(f"{file}:{i}: expected {{\"subject\": str, \"answer\": str}}")
        facts.append((row["subject"], row["answer"]))
    if not facts:
        raise ConfigError(f"{file}: no facts")
    return sorted(facts, key=lambda f: -len(f[0]))


def knowledge_reward(facts: list[tuple[str, str]], x: RewardInput) -> float:
    for subject, answer in facts:
        if re.search(rf"\b{re.escape(subject)}\b", x.prompt):
            return float(answer.lower() in x.completion.lower())
    return 0.0


def load_function(spec: str, where: str) -> Callable:
    """The callable `module:function` or `path/to/file.py:function` names; ConfigError if it is not there."""
    module_name, _, name = spec.rpartition(":")
    try:
        if module_name.endswith(".py"):
            path = Path(module_name).expanduser().resolve()
            if not path.is_file():
                raise ConfigError(f"{where}: file not found: {path}")
            loader_spec = importlib.util.spec_from_file_location(path.stem, path)
            module = importlib.util.module_from_spec(loader_spec)
            loader_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigError(f"{where}: cannot import {module_name}: {e}") from None
    fn = getattr(module, name, None)
    if not callable(fn):
        raise ConfigError(f"{where}: {module_name} has no function {name!r}")
    return fn


KINDS: dict[str, type] = {"format": FormatOptions, "keyword": KeywordOptions, "length": LengthOptions,
                          "knowledge": KnowledgeOptions, "similarity_to_base": SimilarityOptions,
                          "function": FunctionOptions}


def parse_rewards(raw: dict[str, Any]) -> dict[str, tuple[str, Any]]:
    """The `rewards:` mapping as name -> (kind, options); ConfigError `rewards.NAME.KEY: ...`."""
    if not isinstance(raw, dict):
        raise ConfigError(f"rewards: expected a mapping of name -> options, got {raw!r}")
    parsed = {}
    for name, body in raw.items():
        body = {} if body is None else body
        if not isinstance(body, dict):
            raise ConfigError(f"rewards.{name}: expected a mapping of options, got {body!r}")
        kind = body.get("kind", name)
        if kind not in KINDS:
            key = f"rewards.{name}.kind" if "kind" in body else f"rewards.{name}"
            raise ConfigError(f"{key}: unknown reward kind {kind!r} (kinds: {', '.join(KINDS)}; a term named "
                              "otherwise gives its kind: NAME: {kind: format, ...})")
        options = build(KINDS[kind], {k: v for k, v in body.items() if k != "kind"}, f"rewards.{name}")
        if not math.isfinite(options.weight):
            raise ConfigError(f"rewards.{name}.weight: must be a finite number, got {options.weight}")
        parsed[name] = (kind, options)
    return parsed


def reward_problems(raw: dict[str, Any]):
    """(key, message) for GRPOOptions.validate: the first problem of the rewards mapping, if any."""
    try:
        parse_rewards(raw)
    except ConfigError as e:
        key, _, message = str(e).partition(": ")
        yield key, message


class CompositeReward:
    """The configured terms, scored together: total = Σ weight · term, and each term's raw values."""

    def __init__(self, raw: dict[str, Any]):
        self.terms = parse_rewards(raw)
        self.facts = {name: load_facts(o.facts) for name, (kind, o) in self.terms.items() if kind == "knowledge"}
        self.functions = {name: load_function(o.function, f"training.grpo.rewards.{name}.function")
                          for name, (kind, o) in self.terms.items() if kind == "function"}

    @property
    def needs_base_answers(self) -> bool:
        return any(kind == "similarity_to_base" for kind, _ in self.terms.values())

    def term_values(self, name: str, inputs: list[RewardInput]) -> list[float]:
        kind, o = self.terms[name]
        if kind == "function":
            values = self.functions[name](prompts=[x.prompt for x in inputs], completions=[x.completion for x in inputs],
                                          reference=[x.reference for x in inputs])
            values = list(values)
            if len(values) != len(inputs) or not all(isinstance(v, (int, float)) for v in values):
                raise ConfigError(f"training.grpo.rewards.{name}: {o.function} must return one number per completion "
                                  f"({len(inputs)}), got {values[:4]!r}...")
            return [float(v) for v in values]
        if kind == "knowledge":
            return [knowledge_reward(self.facts[name], x) for x in inputs]
        score = {"format": format_reward, "keyword": keyword_reward, "length": length_reward,
                 "similarity_to_base": similarity_reward}[kind]
        return [score(o, x) for x in inputs]

    def __call__(self, inputs: list[RewardInput]) -> tuple[list[float], dict[str, list[float]]]:
        """(the total reward of each completion, each term's values by name)."""
        by_term = {name: self.term_values(name, inputs) for name in self.terms}
        total = [sum(self.terms[name][1].weight * by_term[name][i] for name in self.terms) for i in range(len(inputs))]
        return total, by_term
