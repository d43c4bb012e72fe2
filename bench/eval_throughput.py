"""retain's scorer against lm-evaluation-harness on the same model and task, in one run.

    python bench/eval_throughput.py [--task currency_choice]      # retain-tiny, a lab task
    python bench/eval_throughput.py --mmlu 500                   # SmolLM2-135M-Instruct, 500 MMLU questions
                                                                  # (needs `make real-model`)

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
    from retain.paths import resolve_path

    d = Path(tempfile.mkdtemp())
    path = resolve_path(task.data.test)
    (d / "bench_task.yaml").write_text(
        f"task: bench_task\ndataset_path: json\ndataset_kwargs: {{data_files: {{test: {json.dumps(str(path))}}}}}\n"
        "test_split: test\noutput_type: multiple_choice\ndoc_to_text: '{{context}}'\n"
        "doc_to_choice: '{{choices}}'\ndoc_to_target: '{{gold}}'\nmetric_list:\n  - metric: acc\n  - metric: acc_norm\n")
    return d


def mmlu_task_dir(items: list[dict]) -> Path:
    """lm-eval's own MMLU template over the same questions (cais/mmlu's schema), one task for all subjects:
    its description is a Jinja field per document, so every question keeps its subject's sentence."""
    import lm_eval

    d = Path(tempfile.mkdtemp())
    rows = []
    for it in items:
        question = it["context"].split("\n\n")[-1]  # 0-shot: the description, then the question block
        lines = question.split("\n")
        rows.append({"question": "\n".join(lines[:-5]), "subject": it["subject"], "answer": it["gold"],
                     "choices": [line[3:] for line in lines[-5:-1]]})
    data = d / "mmlu.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    template = Path(lm_eval.__file__).parent / "tasks" / "mmlu" / "default" / "_default_template_yaml"
    (d / "bench_mmlu.yaml").write_text(
        f"include: {json.dumps(str(template))}\ntask: bench_mmlu\ndataset_path: json\ndataset_name: null\n"
        # lm-eval's MMLU template builds its few-shot sampler from a dev split even at 0 shots
        f"dataset_kwargs: {{data_files: {{test: {json.dumps(str(data))}, dev: {json.dumps(str(data))}}}}}\n"
        "description: \"The following are multiple choice questions (with answers) about "
        "{{subject.replace('_', ' ')}}.\\n\\n\"\n")
    return d


def bench_mmlu(n: int, batch_size: int) -> None:
    """SmolLM2-135M-Instruct on the first n questions of `mmlu` (spread across subjects), both tools end to end."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    from retain.modeling import ModelConfig
    from retain.evaluation.runner import evaluate_path
    from retain.evaluation.tasks import load_suite
    from retain.modeling import model_source

    (task,) = load_suite("mmlu")
    items = task.items("test")[:n]
    model_dir = model_source(ModelConfig(name="smollm2-135m-instruct"))  # converted once, cached
    task_dir = mmlu_task_dir(items)
    start = time.perf_counter()
    ours = evaluate_path("smollm2-135m-instruct", "mmlu", "test", limit=n, progress=False,
                         batch_size=batch_size)["tasks"]["mmlu"]["metrics"]
    retain_e2e = time.perf_counter() - start
    start = time.perf_counter()
    theirs = lm_eval.simple_evaluate(model="hf", model_args=f"pretrained={model_dir},dtype=float32",
                                     tasks=["bench_mmlu"], task_manager=TaskManager(include_path=str(task_dir)),
                                     device="cpu", batch_size=batch_size)["results"]["bench_mmlu"]
    lm_eval_e2e = time.perf_counter() - start
    print(f"mmlu, SmolLM2-135M-Instruct: {n} questions; acc retain {ours['acc']:.4f} / lm-eval {theirs['acc,none']:.4f}")
    print(f"end to end : retain {n / retain_e2e:7.2f} items/s ({retain_e2e:.1f} s)   "
          f"lm-eval {n / lm_eval_e2e:7.2f} items/s ({lm_eval_e2e:.1f} s)   ratio {lm_eval_e2e / retain_e2e:.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--task", default="currency_choice")
    parser.add_argument("--mmlu", type=int, default=0, help="bench N MMLU questions on SmolLM2 instead")
    parser.add_argument("--batch-size", type=int, default=32, help="both tools (--mmlu)")
    args = parser.parse_args()
    if args.mmlu:
        bench_mmlu(args.mmlu, args.batch_size)
        return

    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from retain.paths import LAB_MODEL_DIR
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
