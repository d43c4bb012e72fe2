"""retain's scorer against lm-evaluation-harness on the same model and task, in one run.

    python bench/eval_throughput.py [--task currency_choice]

Two measurements per side, items/s:
  end to end  loading the model from disk + scoring (what `retain eval` / `lm-eval run` cost a user)
  in memory   scoring only, the model already loaded (what an eval inside a training run costs)
The scores themselves are checked equal (the parity test asserts it to 1e-6).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def lm_eval_task_dir(task) -> Path:
    from retain.config import resolve_path

    d = Path(tempfile.mkdtemp())
    path = resolve_path(task.data.test)
    (d / "bench_task.yaml").write_text(
        f"task: bench_task\ndataset_path: json\ndataset_kwargs: {{data_files: {{test: {json.dumps(str(path))}}}}}\n"
        "test_split: test\noutput_type: multiple_choice\ndoc_to_text: '{{context}}'\n"
        "doc_to_choice: '{{choices}}'\ndoc_to_target: '{{gold}}'\nmetric_list:\n  - metric: acc\n  - metric: acc_norm\n")
    return d


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--task", default="currency_choice")
    args = parser.parse_args()

    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from retain.config import LAB_MODEL_DIR
    from retain.evaluation.runner import evaluate, evaluate_path
    from retain.evaluation.tasks import load_suite
    from retain.modeling import load_for_eval

    (task,) = load_suite(args.task)
    n = len(task.items("test"))
    task_dir = lm_eval_task_dir(task)

    start = time.perf_counter()
    ours = evaluate_path(str(LAB_MODEL_DIR), args.task, "test", progress=False)["tasks"][args.task]["metrics"]
    retain_e2e = time.perf_counter() - start
    start = time.perf_counter()
    theirs = lm_eval.simple_evaluate(model="hf", model_args=f"pretrained={LAB_MODEL_DIR},dtype=float32",
                                     tasks=["bench_task"], task_manager=TaskManager(include_path=str(task_dir)),
                                     device="cpu", batch_size=32)["results"]["bench_task"]
    lm_eval_e2e = time.perf_counter() - start

    model, tokenizer = load_for_eval(str(LAB_MODEL_DIR))
    start = time.perf_counter()
    evaluate(model, tokenizer, [task], "test", progress=False)
    retain_mem = time.perf_counter() - start
    manager = TaskManager(include_path=str(task_dir))
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=32)
    start = time.perf_counter()
    lm_eval.simple_evaluate(model=lm, tasks=["bench_task"], task_manager=manager)
    lm_eval_mem = time.perf_counter() - start

    print(f"task {args.task}: {n} items; acc retain {ours['acc']:.4f} / lm-eval {theirs['acc,none']:.4f}")
    print(f"end to end : retain {n / retain_e2e:7.1f} items/s ({retain_e2e:.1f} s)   "
          f"lm-eval {n / lm_eval_e2e:7.1f} items/s ({lm_eval_e2e:.1f} s)   ratio {lm_eval_e2e / retain_e2e:.1f}x")
    print(f"in memory  : retain {n / retain_mem:7.1f} items/s ({retain_mem:.1f} s)   "
          f"lm-eval {n / lm_eval_mem:7.1f} items/s ({lm_eval_mem:.1f} s)   ratio {lm_eval_mem / retain_mem:.1f}x")


if __name__ == "__main__":
    main()
