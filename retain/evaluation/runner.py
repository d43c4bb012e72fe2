"""Run a suite on a model: per-task metrics plus per-item records (for paired statistics)."""

from __future__ import annotations

import time
from pathlib import Path

import torch
from tqdm import tqdm

from retain.core.schema import ConfigError
from retain.evaluation.groups import group_scores
from retain.evaluation.lm import LM
from retain.evaluation.tasks import CapabilityTask, check_suite, load_suite
from retain.core.files import atomic_write_json
from retain.model.loading import load_for_eval
from retain.model.precision import choose_bf16, this_machine

DEFAULT_BATCH_SIZE = 64
ROLLING_BOS_NOTE = {
    "lm-eval": "as lm-eval: a tokenizer that adds BOS itself gets a second one before each document",
    "single": "one BOS before each document",
}


def evaluate(model, tokenizer, tasks: list[CapabilityTask], split: str = "test", limit: int | None = None,
             batch_size: int = DEFAULT_BATCH_SIZE, seed: int = 0, progress: bool = True,
             rolling_bos: str = "lm-eval") -> dict:
    """Score every task on `split` (the first `limit` items of each) with the model as it is.

    Returns {"split", "tasks": {name: metrics and per-item records}}, plus "groups" when a task is in an lm-eval
    group or is retain's all-subjects mmlu: the group's score as lm-eval aggregates it (retain.evaluation.groups).
    """
    model.eval()
    lm = LM(model, tokenizer, batch_size=batch_size, rolling_bos=rolling_bos)
    results = {}
    for task in tqdm(tasks, desc=f"eval ({split})", disable=not progress, dynamic_ncols=True):
        start = time.perf_counter()
        with torch.no_grad():
            aggregate, records = task.score(lm, split, limit=limit, seed=seed)
        results[task.name] = {
            "kind": task.kind, "capability": task.group, "primary_metric": task.primary_metric,
            "lower_is_better": task.lower_is_better, "chance": task.chance, "n": len(records),
            "seconds": round(time.perf_counter() - start, 3), "metrics": aggregate, "items": records,
        }
        if task.kind == "perplexity":
            results[task.name]["bos"] = ROLLING_BOS_NOTE[rolling_bos]
    groups = group_scores(tasks, results)  # lm-eval's group means, beside the items the report pools
    return {"split": split, "tasks": results, **({"groups": groups} if groups else {})}


def eval_dtype(dtype: str) -> str:
    """The dtype to load the model in: `auto` is bfloat16 where this machine does bf16 natively (see
    retain.model.precision; RETAIN_NATIVE_BF16 answers for the probe), float32 elsewhere."""
    if dtype != "auto":
        return dtype
    return "bfloat16" if choose_bf16("auto", this_machine()) else "float32"


def pick_device(device: str | None, key: str = "--device") -> torch.device:
    """`auto`/None: the accelerator when there is one, else the CPU. A device this machine does not have is a
    ConfigError naming `key`, before any model loads."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"{key} {device}: not a device — use auto, cpu, cuda, or cuda:N (N: a GPU's index)"
                          ) from None
    if chosen.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(f"{key} {device}: this machine has no CUDA GPU (torch {torch.__version__} sees none: "
                              "a CPU-only torch, or no NVIDIA driver) — use cpu, or auto (the GPU when there is one)")
        if chosen.index is not None and chosen.index >= count:
            raise ConfigError(f"{key} {device}: this machine has {count} CUDA GPU{'s' if count > 1 else ''} "
                              f"(cuda:0{f' to cuda:{count - 1}' if count > 1 else ''}) — choose one of those")
    elif chosen.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"{key} {device}: this machine has no Apple GPU (MPS) — use cpu, or auto")
    return chosen


def check_output_file(out: Path) -> None:
    """ConfigError now, not after the whole evaluation, if the results file cannot be written at `out`."""
    if out.is_dir():
        raise ConfigError(f"--out {out}: a directory — give the results file's path, e.g. {out / 'results.json'}")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(f"--out {out}: {parent} is a file, not a directory — choose another path")
            break


def evaluate_path(model_path: str, suite: str, split: str, out: Path | None = None, limit: int | None = None,
                  dtype: str = "float32", progress: bool = True, batch_size: int = DEFAULT_BATCH_SIZE,
                  device: str | None = None, rolling_bos: str = "lm-eval") -> dict:
    """Load a model (full, adapter, GGUF, or an alias), evaluate `suite`, write results JSON to `out`.

    `dtype` is the weights' dtype, or "auto" (`eval_dtype`); the results record the one used. The suite
    is loaded and every task's data checked first: a bad task fails in seconds, not after a model load.
    """

    if out is not None:
        check_output_file(Path(out))
    tasks = load_suite(suite)
    check_suite(tasks, split)
    dtype = eval_dtype(dtype)
    target = pick_device(device)  # a device this machine lacks is an error before the model loads
    model, tokenizer = load_for_eval(model_path, dtype=dtype)
    model.to(target)
    results = evaluate(model, tokenizer, tasks, split, limit=limit, progress=progress, batch_size=batch_size,
                       rolling_bos=rolling_bos)
    results = {"model": str(model_path), "suite": suite, "limit": limit, "dtype": dtype, **results}
    if out is not None:
        atomic_write_json(out, results)
    return results
