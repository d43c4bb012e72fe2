"""Scoring a sequence of isolated adapters: each adapter once, then every stage's rows from those records.

    score_new_adapter(...)   after stage k: load base + adapters 1..k side by side; score adapter k on
                             every task (eval/adapters/<name>.json) and the prompts' perplexity under
                             it (…/<name>.nll.json), and under the base once (base.nll.json)
    assemble_rows(...)       stage k's two results files, in `retain eval`'s format:
                               stage-k.json         task id picks the adapter: a stage's task -> its
                                                    adapter once trained; everything else -> the base
                               stage-k.routed.json  the router picks among the base and adapters 1..k
                             and the routing accuracy per task

Why this is exact: a LoRA adapter does not change the base weights, so adapter j's outputs are the
same at every later stage, and each item is scored on its own (see retain.studies.continual.routing).
"""

from __future__ import annotations

import json
from pathlib import Path

from retain.evaluation.runner import evaluate, pick_device
from retain.studies.continual.routing import (BASE, load_adapter_set, prompt_nll, route, routed_records, routing_accuracy,
                                      routing_texts, use_adapter)
from retain.core.files import atomic_write_json
from retain.evaluation.stats import statistic


def adapter_files(eval_dir: Path, name: str) -> tuple[Path, Path]:
    return eval_dir / "adapters" / f"{name}.json", eval_dir / "adapters" / f"{name}.nll.json"


def score_new_adapter(base_model: str, adapters: dict[str, Path], tasks: list, eval_dir: Path, split: str,
                      limit: int | None, batch_size: int, device: str | None, progress: bool) -> None:
    """Score the last adapter of `adapters` (name -> final dir) on `tasks`, and its router perplexities."""

    name = list(adapters)[-1]
    results_file, nll_file = adapter_files(eval_dir, name)
    model, tokenizer = load_adapter_set(base_model, adapters)
    model.to(pick_device(device))
    texts = {task.name: routing_texts(task, split, limit, tokenizer) for task in tasks}

    def nll_of_every_task():
        return {task: prompt_nll(model, tokenizer, t, batch_size).tolist() for task, t in texts.items()}

    base_nll = adapter_files(eval_dir, BASE)[1]
    if not base_nll.is_file():
        with use_adapter(model, BASE):
            atomic_write_json(base_nll, nll_of_every_task())
    with use_adapter(model, name):
        results = evaluate(model, tokenizer, tasks, split, limit=limit, batch_size=batch_size, progress=progress)
        nll = nll_of_every_task()
    atomic_write_json(results_file, {"model": str(adapters[name]), "limit": limit, **results})
    atomic_write_json(nll_file, nll)  # written last: its presence means the adapter is scored


def read(path: Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def with_records(task_result: dict, records: list[dict]) -> dict:
    """A task's result with other item records; its headline metric recomputed from them."""
    metric = task_result["primary_metric"]
    return {**task_result, "items": records, "n": len(records), "metrics": {metric: statistic(records, metric)}}


def assemble_rows(base_results: Path, eval_dir: Path, stage_names: list[str], stage_tasks: list[str],
                  k: int) -> tuple[dict, dict, dict]:
    """(task-id results, routed results, routing accuracy per task) after stage k (1-based)."""
    base = read(base_results)
    trained = stage_names[:k]
    per_adapter = {name: read(adapter_files(eval_dir, name)[0]) for name in trained}
    candidates = [BASE, *trained]
    nll = {name: read(adapter_files(eval_dir, name)[1]) for name in candidates}
    oracle, routed, accuracy = {}, {}, {}
    for task, result in base["tasks"].items():
        owner = trained[stage_tasks.index(task)] if task in stage_tasks[:k] else BASE
        oracle[task] = per_adapter[owner]["tasks"][task] if owner != BASE else result
        records = {BASE: result["items"], **{n: per_adapter[n]["tasks"][task]["items"] for n in trained}}
        choice = route({n: nll[n][task] for n in candidates})
        routed[task] = with_records(result, routed_records(records, choice))
        # the right candidate: the task's adapter for a sequence task (once trained), else the base
        accuracy[task] = routing_accuracy(choice, owner)
    header = {key: base[key] for key in base if key != "tasks"}
    return ({**header, "model": f"isolated adapters 1..{k}, picked by task id", "tasks": oracle},
            {**header, "model": f"isolated adapters 1..{k}, picked by the router", "tasks": routed}, accuracy)
