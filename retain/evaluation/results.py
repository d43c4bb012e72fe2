"""The results file `retain eval` writes, typed, and its one reader: what the report, the retention budget,
sweeps, tuning and continual learning all read.

    Results, TaskResults                       the JSON's shape (TypedDicts: the file is plain JSON, unchanged)
    load_results(path) -> Results              the file, checked: every field a reader uses is there
    check_comparable(paths, results) -> None   the same tasks, split, limit and items in every file
    relative(metric) -> bool                   a perplexity: compared as after / before, not after - before
    primary_value(task) -> float               a task's headline value (its primary metric)
    shared_tasks(before, afters) -> [name]     the tasks every results file scored, in the base's order

A comparison pairs item i of the base with item i of each fine-tune. That is only meaningful when every file
scored the same items: the same tasks on the same split with the same --limit (and, for perplexity, the same
BOS rule). Anything else is a ResultsError that names the file and says what differs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TypedDict

from retain.core.errors import ResultsError

# The per-item count a perplexity divides the summed log-likelihood by (retain.evaluation.metrics.perplexity_item
# records all three); a perplexity's change is relative (after / before - 1), every other metric's a difference.
PERPLEXITY_DENOMINATOR = {"word_perplexity": "words", "byte_perplexity": "bytes", "token_perplexity": "tokens"}

Item = dict[str, Any]  # {"id", its metrics ("acc": 1.0, or "loglikelihood" and "words"...), "cluster"?, text...}


class _TaskRequired(TypedDict):
    capability: str
    primary_metric: str
    lower_is_better: bool
    metrics: dict[str, float]  # the task-level value of each metric
    items: list[Item]  # one record per item, in the order scored: what paired statistics pair


class TaskResults(_TaskRequired, total=False):
    """One task's entry under "tasks"."""

    kind: str  # multiple_choice | perplexity | generation | diversity | loglikelihood
    chance: float | None  # the score of guessing (None: not known)
    n: int  # len(items)
    seconds: float
    bos: str  # perplexity: the BOS rule documents were scored with


class Results(TypedDict, total=False):
    """A results file: {model, suite, limit, dtype, split, tasks: {name: TaskResults}, groups?}."""

    model: str
    suite: str
    limit: int | None
    dtype: str
    split: str
    tasks: dict[str, TaskResults]
    groups: dict[str, dict]  # lm-eval group scores (retain.evaluation.groups), when a task is in one


REWRITE = "write it again with `retain eval MODEL --suite SUITE --out FILE`"
TASK_FIELDS = {"capability": str, "primary_metric": str, "lower_is_better": bool, "metrics": dict, "items": list}


def relative(metric: str) -> bool:
    """Whether `metric` is a perplexity: its change is after / before - 1 and its value is not a mean of items."""
    return metric in PERPLEXITY_DENOMINATOR


def primary_value(task: TaskResults) -> float:
    """The task's value of its primary metric, as `retain eval` aggregated it."""
    return task["metrics"][task["primary_metric"]]


def shared_tasks(before: Results, afters: list[Results]) -> list[str]:
    """The tasks of `before` that every one of `afters` scored too, in the base's order."""
    return [t for t in before["tasks"] if all(t in a["tasks"] for a in afters)]


def load_results(path: Path) -> Results:
    """A results file of `retain eval`; ResultsError naming the file (and line, key or item) if unusable."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ResultsError(f"{path}: results file not found — {REWRITE}") from None
    except IsADirectoryError:
        raise ResultsError(f"{path}: is a directory, not a results file — give the JSON file `retain eval --out` "
                           "wrote") from None
    try:
        results = json.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError as e:
        raise ResultsError(f"{path}: not a results file (byte {e.start} is not UTF-8) — {REWRITE}") from None
    except json.JSONDecodeError as e:
        cut = " (the file ends early: cut off while it was written or copied?)" if e.pos >= len(raw.rstrip()) else ""
        raise ResultsError(f"{path}:{e.lineno}: not valid JSON: {e.msg}{cut} — {REWRITE}") from None
    check_results(results, path)
    return results


def check_results(results, path: Path) -> None:
    """Every field a reader uses, present and of the right type; ResultsError naming it if not."""
    if not isinstance(results, dict) or not isinstance(results.get("tasks"), dict):
        raise ResultsError(f"{path}: not a results file of `retain eval` (no 'tasks' mapping) — {REWRITE}")
    if not results["tasks"]:
        raise ResultsError(f"{path}: no tasks were scored — {REWRITE}")
    for name, task in results["tasks"].items():
        where = f"{path}: tasks.{name}"
        if not isinstance(task, dict):
            raise ResultsError(f"{where}: expected a mapping — {REWRITE}")
        for key, kind in TASK_FIELDS.items():
            if not isinstance(task.get(key), kind):
                raise ResultsError(f"{where}.{key}: missing or not a {kind.__name__} (an incomplete or edited file?) "
                                   f"— {REWRITE}")
        items = task["items"]
        if not items:
            raise ResultsError(f"{where}.items: empty — {REWRITE}")
        if isinstance(task.get("n"), int) and task["n"] != len(items):
            raise ResultsError(f"{where}.items: {len(items)} items, but n says {task['n']} (an incomplete file?) "
                               f"— {REWRITE}")
        metric = task["primary_metric"]
        needed = ("loglikelihood", PERPLEXITY_DENOMINATOR[metric]) if relative(metric) else (metric,)
        for i, item in enumerate(items):
            if not isinstance(item, dict) or "id" not in item:
                raise ResultsError(f"{where}.items[{i}]: no 'id' — {REWRITE}")
            for key in needed:
                value = item.get(key)
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise ResultsError(f"{where}.items[{i}].{key}: missing or not a number — {REWRITE}")


def _item_ids(task: TaskResults) -> list:
    return [json.dumps(item["id"]) for item in task["items"]]


def check_comparable(paths: list[Path], results: list[Results]) -> None:
    """ResultsError unless every results file scored exactly the items the first (the base) scored."""
    base_path, base = Path(paths[0]), results[0]
    seen = {}
    for k, path in enumerate(paths):
        key = Path(path).resolve()
        if key in seen:
            raise ResultsError(f"{path}: given twice (results {seen[key] + 1} and {k + 1}) — a report compares "
                               "different results: the base model's first, then each fine-tune's")
        seen[key] = k
    for path, other in zip(paths[1:], results[1:]):
        differ = f"{path}: not comparable with the base results {base_path}"
        again = "evaluate both the same way (retain eval ... --suite S --split X --limit N)"
        if other.get("split") != base.get("split"):
            raise ResultsError(f"{differ}: scored on the {other.get('split')} split, the base on the "
                               f"{base.get('split')} split — {again}")
        if other.get("limit") != base.get("limit"):
            raise ResultsError(f"{differ}: scored with --limit {other.get('limit')}, the base with --limit "
                               f"{base.get('limit')} — {again}")
        only_base = [t for t in base["tasks"] if t not in other["tasks"]]
        only_other = [t for t in other["tasks"] if t not in base["tasks"]]
        if only_base or only_other:
            parts = ([f"only in the base: {', '.join(only_base)}"] if only_base else []) + \
                    ([f"only here: {', '.join(only_other)}"] if only_other else [])
            suites = f" (suites {base.get('suite')!r} and {other.get('suite')!r})" if base.get("suite") else ""
            raise ResultsError(f"{differ}: different tasks{suites}; {'; '.join(parts)} — {again}")
        for name, task in base["tasks"].items():
            theirs = other["tasks"][name]
            if _item_ids(theirs) != _item_ids(task):
                raise ResultsError(f"{differ}: task {name} scored different items ({len(theirs['items'])} here, "
                                   f"{len(task['items'])} in the base) — {again}, and the same task data")
            if theirs["primary_metric"] != task["primary_metric"] or theirs.get("bos") != task.get("bos"):
                what = ("metric" if theirs["primary_metric"] != task["primary_metric"]
                        else "BOS rule (--rolling-bos)")
                raise ResultsError(f"{differ}: task {name} was scored with a different {what} — {again}")
