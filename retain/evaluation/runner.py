"""Run a suite on a model: per-task metrics plus per-item records (for paired statistics)."""

from __future__ import annotations

import time
from pathlib import Path

import torch
from tqdm import tqdm

from retain.evaluation import metrics as M
from retain.evaluation.lm import LM
from retain.evaluation.tasks import LOWER_IS_BETTER, Task, load_suite
from retain.io import atomic_write_json


def score_task(lm: LM, task: Task, items: list[dict], seed: int = 0) -> tuple[dict, list[dict]]:
    """(aggregate metrics, per-item records) for one task's items."""
    if task.kind == "multiple_choice":
        requests = [(it["context"], task.target_delimiter + c) for it in items for c in it["choices"]]
        lls = iter(ll for ll, _ in lm.loglikelihood(requests))
        records = []
        for it in items:
            item_lls = [next(lls) for _ in it["choices"]]
            records.append({"id": it["id"], **M.multiple_choice_item(item_lls, it["choices"], it["gold"]),
                            "loglikelihoods": item_lls})
        return M.mean_aggregate(records, ("acc", "acc_norm")), records
    if task.kind == "perplexity":
        scored = lm.loglikelihood_rolling([it["text"] for it in items])
        records = [{"id": it["id"], **M.perplexity_item(ll, n, it["text"])} for it, (ll, n) in zip(items, scored)]
        return M.perplexity_aggregate(records), records
    if task.kind == "generation":
        predictions = lm.generate_until([(it["context"], task.until, task.max_new_tokens) for it in items])
        records = [{"id": it["id"], **M.generation_item(p, it["target"]), "prediction": p}
                   for it, p in zip(items, predictions)]
        return M.mean_aggregate(records, ("exact_match", "contains")), records
    # diversity: several sampled continuations per prompt, seeded
    k = task.samples_per_prompt
    requests = [(it["context"], task.until, task.max_new_tokens) for it in items for _ in range(k)]
    samples = lm.generate_until(requests, sample=True, temperature=task.temperature, seed=seed)
    records = [{"id": it["id"], **M.diversity_item(samples[i * k:(i + 1) * k]), "samples": samples[i * k:(i + 1) * k]}
               for i, it in enumerate(items)]
    return M.diversity_aggregate(samples), records


def evaluate(model, tokenizer, tasks: list[Task], split: str = "test", limit: int | None = None,
             batch_size: int = 64, seed: int = 0, progress: bool = True) -> dict:
    model.eval()
    lm = LM(model, tokenizer, batch_size=batch_size)
    results = {}
    for task in tqdm(tasks, desc=f"eval ({split})", disable=not progress, dynamic_ncols=True):
        items = task.items(split)[:limit]
        start = time.perf_counter()
        with torch.no_grad():
            aggregate, records = score_task(lm, task, items, seed=seed)
        results[task.name] = {
            "kind": task.kind, "capability": task.group, "primary_metric": task.primary_metric,
            "lower_is_better": task.primary_metric in LOWER_IS_BETTER, "chance": task.chance, "n": len(items),
            "seconds": round(time.perf_counter() - start, 3), "metrics": aggregate, "items": records,
        }
    return {"split": split, "tasks": results}


def evaluate_path(model_path: str, suite: str, split: str, out: Path | None = None, limit: int | None = None,
                  dtype: str = "float32", progress: bool = True) -> dict:
    """Load a model (full, adapter, or retain-tiny), evaluate `suite`, write results JSON to `out`."""
    from retain.modeling import load_for_eval

    model, tokenizer = load_for_eval(model_path, dtype=dtype)
    results = evaluate(model, tokenizer, load_suite(suite), split, limit=limit, progress=progress)
    results = {"model": str(model_path), "suite": suite, **results}
    if out is not None:
        atomic_write_json(out, results)
    return results
