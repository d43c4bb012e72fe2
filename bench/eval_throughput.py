"""retain's scorer against lm-evaluation-harness on the same model and task, in one run.

    python bench/eval_throughput.py [--task currency_choice]      # retain-tiny, a lab task
    python bench/eval_throughput.py --mmlu 500                   # SmolLM2-135M-Instruct, 500 MMLU questions
                                                                  # (needs `make real-model`)
    python bench/eval_throughput.py --mmlu-fewshot astronomy,virology,marketing --per-subject 32
                                  # mmlu:SUBJECT@5 on SmolLM2-135M-Instruct: `retain eval` against `lm-eval run`,
                                  # each a process of its own, float32, and bf16 too where it is native here

Two measurements per side, items/s:
  end to end  loading the model from disk + scoring (what `retain eval` / `lm-eval run` cost a user)
  in memory   scoring only, the model already loaded (what an eval inside a training run costs)
The scores themselves are checked equal (the parity test asserts it to 1e-6).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def lm_eval_task_dir(task) -> Path:
    from retain.core.paths import resolve_path

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

    from retain.model.loading import ModelConfig
    from retain.evaluation.runner import evaluate_path
    from retain.evaluation.tasks import load_suite
    from retain.model.loading import model_source

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


def mmlu_fewshot_tasks(subjects: list[str], shots: int, d: Path) -> dict[str, str]:
    """lm-eval's own mmlu_SUBJECT tasks over the questions `mmlu:SUBJECT@K` scores ({retain task: lm-eval task}):
    test holds the scored questions and dev the shots, both in file order; lm-eval's first_n sampler then
    writes the same prompts, question for question."""
    import lm_eval

    from retain.evaluation.tasks import mmlu

    names = {}
    for subject in subjects:
        rows = mmlu.subject_rows(subject)
        shot = mmlu.shot_indices(subject, len(rows), shots)
        for split, keep in (("test", lambda i: i not in shot), ("dev", lambda i: i in shot)):
            lines = [json.dumps(mmlu.lm_eval_row(r, subject)) + "\n" for i, r in enumerate(rows) if keep(i)]
            (d / f"{subject}.{split}.jsonl").write_text("".join(lines))
        own = Path(lm_eval.__file__).parent / "tasks" / "mmlu" / "default" / f"mmlu_{subject}.yaml"
        data = {split: str(d / f"{subject}.{split}.jsonl") for split in ("test", "dev")}
        (d / f"bench_{subject}.yaml").write_text(
            f"include: {json.dumps(str(own))}\ntask: bench_{subject}\ntag: null\ndataset_path: json\n"
            f"dataset_name: null\ndataset_kwargs: {{data_files: {json.dumps(data)}}}\n")
        names[f"mmlu:{subject}@{shots}"] = f"bench_{subject}"
    return names


def timed(argv: list[str]) -> float:
    """Wall seconds of one command, run as a user would run it (its own process)."""
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:4])} ... failed:\n{proc.stderr[-3000:]}")
    return time.perf_counter() - start


def lm_eval_outputs(out: Path, task: str) -> tuple[dict, list[dict]]:
    """lm-eval's results for `task` and its logged samples, from an --output_path directory."""
    (results,) = out.glob("**/results_*.json")
    (samples,) = out.glob(f"**/samples_{task}_*.jsonl")
    rows = [json.loads(line) for line in samples.read_text().splitlines()]
    return json.loads(results.read_text())["results"][task], sorted(rows, key=lambda r: r["doc_id"])


def bench_mmlu_fewshot(subjects: list[str], per_subject: int, shots: int, batch_size: int, precision: str) -> None:
    """`retain eval` vs `lm-eval run` on SmolLM2-135M-Instruct, mmlu:SUBJECT@K: the first `per_subject` scored
    questions of each subject, both end to end (process start, model load, scoring), same prompts and items."""
    from retain.model.loading import ModelConfig, model_source
    from retain.model.precision import choose_bf16, this_machine

    model_dir = model_source(ModelConfig(name="smollm2-135m-instruct"))  # converted once, before any timing
    tmp = Path(tempfile.mkdtemp())
    names = mmlu_fewshot_tasks(subjects, shots, tmp)
    native = choose_bf16("auto", this_machine())
    dtypes = {"float32": ["float32"], "bf16": ["bfloat16"],
              "native": ["float32", "bfloat16"] if native else ["float32"]}[precision]
    print(f"mmlu@{shots}, SmolLM2-135M-Instruct, {len(subjects)} subjects x {per_subject} questions "
          f"({', '.join(subjects)}); batch {batch_size}; this machine does bf16 natively: {'yes' if native else 'no'}")
    for dtype in dtypes:
        ours_file, theirs_dir = tmp / f"retain-{dtype}.json", tmp / f"lm-eval-{dtype}"
        retain_s = timed([sys.executable, "-m", "retain", "eval", str(model_dir), "--suite", ",".join(names),
                          "--limit", str(per_subject), "--dtype", dtype, "--batch-size", str(batch_size),
                          "--device", "cpu", "--out", str(ours_file)])
        lm_eval_s = timed([sys.executable, "-m", "lm_eval", "run", "--model", "hf",
                           "--model_args", f"pretrained={model_dir},dtype={dtype}", "--tasks", ",".join(names.values()),
                           "--num_fewshot", str(shots), "--limit", str(per_subject), "--include_path", str(tmp),
                           "--device", "cpu", "--batch_size", str(batch_size), "--output_path", str(theirs_dir),
                           "--log_samples"])
        ours = json.loads(ours_file.read_text())
        n = correct = correct_theirs = flips = 0
        worst = 0.0
        for name, task in names.items():
            theirs, samples = lm_eval_outputs(theirs_dir, task)
            records = ours["tasks"][name]["items"]
            assert len(records) == len(samples) == per_subject, (name, len(records), len(samples))
            for record, sample in zip(records, samples):
                lls = [float(resp[0][0]) for resp in sample["resps"]]  # logged as strings
                worst = max(worst, max(abs(a - b) for a, b in zip(lls, record["loglikelihoods"])))
                flips += record["acc"] != sample["acc"]
                correct_theirs += sample["acc"]
            correct += sum(r["acc"] for r in records)
            n += len(records)
        print(f"{ours['dtype']:>8} (retain) vs {dtype} (lm-eval): acc retain {correct / n:.4f} / lm-eval "
              f"{correct_theirs / n:.4f} ({flips} of {n} items differ); max |loglikelihood difference| {worst:.2g}")
        print(f"{'':>8} end to end: retain {retain_s:.1f} s, lm-eval {lm_eval_s:.1f} s, ratio "
              f"{lm_eval_s / retain_s:.2f}x ({n / retain_s:.2f} vs {n / lm_eval_s:.2f} items/s)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--task", default="currency_choice")
    parser.add_argument("--mmlu", type=int, default=0, help="bench N MMLU questions on SmolLM2 instead")
    parser.add_argument("--batch-size", type=int, default=32, help="both tools (--mmlu, --mmlu-fewshot)")
    parser.add_argument("--mmlu-fewshot", default="", help="comma-separated MMLU subjects: bench mmlu:SUBJECT@K")
    parser.add_argument("--shots", type=int, default=5, help="--mmlu-fewshot: K")
    parser.add_argument("--per-subject", type=int, default=32, help="--mmlu-fewshot: questions scored per subject")
    parser.add_argument("--precision", choices=["float32", "bf16", "native"], default="native",
                        help="--mmlu-fewshot: native: float32, then bf16 too where this machine does bf16 natively")
    args = parser.parse_args()
    if args.mmlu:
        bench_mmlu(args.mmlu, args.batch_size)
        return
    if args.mmlu_fewshot:
        bench_mmlu_fewshot(args.mmlu_fewshot.split(","), args.per_subject, args.shots, args.batch_size, args.precision)
        return

    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from retain.core.paths import LAB_MODEL_DIR
    from retain.evaluation.runner import evaluate, evaluate_path
    from retain.evaluation.tasks import load_suite
    from retain.model.loading import load_for_eval

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
