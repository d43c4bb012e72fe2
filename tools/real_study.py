"""docs/real-model.md from the finished real-model sweep (configs/sweeps/real-smollm2.yaml), every strategy run with
several training seeds.

    python -m tools.real_study configs/sweeps/real-smollm2.yaml --out docs

Reads the sweep's base.json, results/<strategy>[.seed<S>].json, runs/*/metrics.jsonl and the study's start and end
times (<output>/start and <output>/end, unix seconds; or <output>/wall_seconds) and writes the study: the base
model's scores; per strategy and capability the change with the two-level (seeds, then items) 95% CI, each seed's
change, whether it is shown and its grade; the pooled retained change and the task gain; the target of issue 19
per recipe (retain.sweep.target); the Pareto plot; answers that changed; throughput and the machine. Every figure
comes from the files; nothing is typed in.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
from pathlib import Path

import torch

from retain.evaluation.compare import not_shown, retained_change
from retain.evaluation.results import load_results
from retain.evaluation.stats import Change
from retain.io import atomic_write_text
from retain.report.answers import answers_markdown, changed_answers
from retain.report.build import compare, write_report
from retain.report.render import format_change, format_relative
from retain.sweep import expand, load_sweep, result_files, run_name, strategy_configs
from retain.sweep.summary import markdown_table, summarize, write_sweep_report
from retain.sweep.target import judge_target
from retain.training.precision import choose_bf16, this_machine
from tools.report_screenshot import screenshot

REFERENCE = "unprotected"  # the run every recipe's target is judged against
LETTER_BIAS = 0.9  # a model whose top choice is one letter on this share of MMLU items is reading letters, not facts


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "CPU model not known"


def machine(sweep, sweep_path: Path, base: dict) -> str:
    """The machine this runs on (make real-study runs the study and this on the same one) and the precision."""
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    settings = {c.training.bf16 for c in strategy_configs(sweep, sweep_path).values()}
    hardware = this_machine()
    trained = sorted({"bf16 autocast" if choose_bf16(s, hardware) else "float32" for s in settings})
    return (f"{cpu_model()}, {os.cpu_count()} cores, {gpu}; torch {torch.__version__}; weights in "
            f"{base.get('dtype', 'float32')}, training in {' and '.join(trained)} "
            f"(training.bf16: {', '.join(sorted(map(str, settings)))}, as this machine resolves it)")


def wall_time(out: Path) -> str:
    start, end, seconds = out / "start", out / "end", out / "wall_seconds"
    if start.is_file() and end.is_file():
        total = int(end.read_text()) - int(start.read_text())
    elif seconds.is_file():
        total = int(seconds.read_text())
    else:
        return "not recorded"
    return f"{total // 3600} h {total % 3600 // 60:02d} min" if total >= 3600 else f"{total / 60:.0f} min"


def _per_seed(values, relative: bool) -> str:
    return ", ".join(format_relative(x) if relative else f"{100 * x:+.1f}" for x in values)


def _verdict(change: Change, shown_as: str) -> str:
    why = not_shown(change)
    return f"not shown ({why})" if why else f"supported ({shown_as})"


def _as_change(row: dict) -> Change:
    return Change(**{f.name: row[f.name] for f in dataclasses.fields(Change)})


def base_table(base: dict) -> list[str]:
    lines = ["| task | capability | metric | base score | chance | items |", "|---|---|---|---|---|---|"]
    for name, t in base["tasks"].items():
        value = t["metrics"][t["primary_metric"]]
        shown = f"{value:.1f}" if t["lower_is_better"] else f"{100 * value:.1f}"
        chance = "" if t.get("chance") is None else f"{100 * t['chance']:.1f}"
        lines.append(f"| {name} | {t['capability']} | {t['primary_metric']} | {shown} | {chance} | "
                     f"{len(t['items'])} |")
    return lines


def capability_table(comparisons: dict[str, dict]) -> list[str]:
    """Per strategy and capability: change [CI over seeds, then items], each seed's change, verdict, grade."""
    lines = ["| strategy | capability | items | change [95% CI] | per seed | verdict | grade |",
             "|---|---|---|---|---|---|---|"]
    for name, comparison in comparisons.items():
        for capability, r in comparison["capabilities"].items():
            change, low, high = format_change(r)
            unit = "" if r["relative"] else " pts"
            lines.append(f"| {name} | {capability} | {r['n']} | {change}{unit} [{low}, {high}] | "
                         f"{_per_seed(r['per_seed'], r['relative'])} | {_verdict(_as_change(r), r['verdict'])} | "
                         f"{r['severity']} |")
    return lines


def pooled_table(comparisons: dict[str, dict], retained: dict[str, Change], task: str) -> list[str]:
    lines = ["| strategy | task gain (pts) [95% CI] | per seed | verdict | retained change (pts) [95% CI] | per seed "
             "| verdict |", "|---|---|---|---|---|---|---|"]
    for name, comparison in comparisons.items():
        gain, kept = _as_change(comparison["tasks"][task]), retained[name]
        cells = []
        for c in (gain, kept):
            shown_as = "gain" if c.delta > 0 else "loss"
            cells += [f"{100 * c.delta:+.1f} [{100 * c.ci_low:+.1f}, {100 * c.ci_high:+.1f}]",
                      _per_seed(c.per_seed, False), _verdict(c, shown_as)]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def _percent(share: float | None) -> str:
    return "n/a" if share is None else f"{100 * share:.0f}%".replace("-0%", "0%")  # -1e-17 is 0%


def _share(value: float | None, ci: tuple[float, float] | None) -> str:
    return _percent(value) + ("" if ci is None or value is None else f" [{_percent(ci[0])}, {_percent(ci[1])}]")


def _seed_shares(criterion) -> str:
    return ", ".join(map(_percent, criterion.per_seed_share))


def outside_pool(comparison: dict) -> str:
    """The supported losses the target's forgetting leaves out (perplexities: not in the pooled score items)."""
    losses = [f"{c} {format_change(r)[0]} ({r['severity']})" for c, r in comparison["capabilities"].items()
              if r["relative"] and r["verdict"] == "worse"]
    return "; ".join(losses) or "none"


def target_table(targets: dict, comparisons: dict[str, dict]) -> list[str]:
    lines = ["| recipe | share of the task gain [95% CI] | per seed | share of the forgetting [95% CI] | per seed | "
             "gain margin (pts) [95% CI] | forgetting margin (pts) [95% CI] | target | losses outside the pool |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, t in targets.items():
        g, f = t.gain, t.forgetting
        margins = [f"{100 * c.margin:+.1f} [{100 * c.margin_ci[0]:+.1f}, {100 * c.margin_ci[1]:+.1f}]" for c in (g, f)]
        verdict = f"**{t.verdict}**" + (f": {t.reason}" if t.reason else "")
        lines.append(f"| {name} | {_share(g.share, g.share_ci)} | {_seed_shares(g)} | {_share(f.share, f.share_ci)} | "
                     f"{_seed_shares(f)} | {margins[0]} | {margins[1]} | {verdict} | "
                     f"{outside_pool(comparisons[name])} |")
    return lines


def matched_gain_lines(summary: dict) -> list[str]:
    """Forgetting at matched task gain, where the sweep's summary has it (a row's `matched_gain`: the fields of
    retain.sweep.matched_gain.MatchedForgetting)."""
    rows = {n: r["matched_gain"] for n, r in summary["rows"].items() if r.get("matched_gain")}
    if not rows:
        return ["Not measured in this study: the sweep keeps each run's final model only, and forgetting at matched "
                "task gain is read off a recipe's path (its checkpoints, or its WiSE-FT line toward the base; "
                "`retain.sweep.matched_gain`). The target above compares end points; a recipe that gains less than "
                "the unprotected run is judged at its own gain."]
    lines = ["| recipe | task gain matched (pts) | retained change there (pts) [95% CI] |", "|---|---|---|"]
    for name, m in rows.items():
        lines.append(f"| {name} | {100 * m['target']:+.1f} | {100 * m['retained_change']:+.1f} "
                     f"[{100 * m['ci_low']:+.1f}, {100 * m['ci_high']:+.1f}] |")
    return lines


def run_table(out: Path, names: list[str], runs: dict[str, str]) -> list[str]:
    """One row per strategy, from its run `runs[name]` (strategies whose run has no metrics.jsonl are left out)."""
    lines = ["| strategy | steps | mean step time (s) | tokens/s | final train loss |", "|---|---|---|---|---|"]
    for name in names:
        metrics = out / "runs" / runs[name] / "metrics.jsonl"
        lines_read = metrics.read_text().splitlines() if metrics.is_file() else []
        rows = [json.loads(line) for line in lines_read if line.strip()]
        train = [r for r in rows if "tokens_per_s" in r]
        if not train:
            continue
        step_time = sum(r["step_time_s"] for r in train) / len(train)
        tok_s = sum(r["tokens_per_s"] for r in train) / len(train)
        lines.append(f"| {name} | {train[-1]['step']} | {step_time:.2f} | {tok_s:.0f} | {train[-1]['loss']:.3f} |")
    return lines


def letter_choices(results: dict[str, dict]) -> list[str]:
    """For letter-choice tasks (MMLU): how often each model's top choice is each letter — a model that
    always answers "A" scores the share of A answers, whatever it knows."""
    lines, biased = [], []
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
            if max(counts) >= LETTER_BIAS * len(items):
                biased.append(f"{name} picks {'ABCD'[counts.index(max(counts))]} on {max(counts)} of {len(items)}")
    if not lines:
        return []
    warning = [f"**MMLU here measures letter bias, not knowledge**: {'; '.join(biased)} items, so its accuracy is the "
               "share of items whose answer is that letter and its changes say nothing about what the model knows.",
               ""] if biased else []
    return ["Which letter each model picks on MMLU (its highest-loglikelihood choice):", "",
            "| model | task | A | B | C | D | acc |", "|---|---|---|---|---|---|---|", *lines, "", *warning]


def report_section(out: Path, docs: Path, sweep, names: list[str], best: str, take_screenshot: bool) -> list[str]:
    shown = [n for n in (REFERENCE, best) if n in names]
    first = sweep.seeds[0]
    run_dirs = [d for d in (out / "runs" / run_name(sweep, n, first) for n in shown) if d.is_dir()]
    report = write_report([out / "base.json", *(f for n in shown for f in result_files(sweep, n))], out / "report",
                          run_dirs=run_dirs, labels=["base", *(n for n in shown for _ in sweep.seeds)])
    what = f"`retain report` of base, {' and '.join(shown)} ({len(sweep.seeds)} seeds each)"
    if take_screenshot and screenshot(report["html"], docs / "real-model-report.png"):
        body = f"{what}:\n\n![report](real-model-report.png)"
    else:
        body = f"{what} is in `{report['html']}`."
    return [body, "", "```", report["headline"], "```"]


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep")
    parser.add_argument("--out", default="docs")
    parser.add_argument("--note", default="", help="a sentence on how the run went (e.g. other load on the machine)")
    parser.add_argument("--no-screenshot", action="store_true", help="leave the report as HTML (no Chromium run)")
    parser.add_argument("--sweep-dir", help="where the sweep's files are, in place of its `output` (a copy, another "
                        "checkout's run); the summary, plot and report are written there too")
    args = parser.parse_args(argv)
    sweep_path = Path(args.sweep)
    sweep, docs = load_sweep(sweep_path), Path(args.out)
    if args.sweep_dir:
        sweep = dataclasses.replace(sweep, output=args.sweep_dir)
    out = Path(sweep.output)
    names = list(expand(sweep))
    if REFERENCE not in names:
        raise SystemExit(f"{sweep_path}: strategies: the study judges every recipe against `{REFERENCE}`; add it")
    # The summary again, with this build's report code (the sweep may have run on an older one).
    summary = summarize(out / "base.json", {n: result_files(sweep, n) for n in names}, Path(sweep.task).stem)
    write_sweep_report(summary, out)
    task = summary["task"]
    base = load_results(out / "base.json")
    seeds = {n: [load_results(p) for p in result_files(sweep, n)] for n in names}
    comparisons = {n: compare(base, runs) for n, runs in seeds.items()}
    retained = {n: retained_change(base, runs, task)[0] for n, runs in seeds.items()}
    targets = {n: judge_target(base, seeds[REFERENCE], runs, task) for n, runs in seeds.items() if n != REFERENCE}
    docs.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(out / "pareto.png", docs / "real-model-pareto.png")
    best = max((n for n in summary["pareto_front"] if n != REFERENCE),
               key=lambda n: summary["rows"][n]["gain"], default=names[-1])
    first = sweep.seeds[0]
    overrides = "\n".join(f"- `{n}`: " + (", ".join(f"`{k}: {json.dumps(v)}`" for k, v in o.items()) or "the base config")
                          for n, o in expand(sweep).items())
    met = [n for n, t in targets.items() if t.verdict == "met"]
    items = ", ".join(f"{name} {len(t['items'])}" for name, t in base["tasks"].items())
    answers = {n: changed_answers(base, seeds[n][0], per_task=2) for n in names}
    text = "\n".join([
        f"# A real pretrained model: {base.get('model', 'the base model')}", "",
        "Generated by `make real-study` (`retain sweep " + str(sweep_path) + "`, then `python -m tools.real_study "
        + str(sweep_path) + "`). Do not edit by hand.", "",
        f"One model: `{base.get('model')}`. Issue 19 asks for both real models (SmolLM2-135M-Instruct and "
        f"Gemma-3-270M); this study ran one. Training seeds {', '.join(map(str, sweep.seeds))} for every strategy.",
        "",
        f"Machine: {machine(sweep, sweep_path, base)}. Wall time of the study (`{out}/start` to `end`: its last "
        f"`make real-study`, install excluded): {wall_time(out)}.", *([args.note] if args.note else []),
        "", "## The target", "",
        f"Issue 19's target: a recipe keeps at least 95% of the {REFERENCE} run's task gain at no more than a tenth of "
        "its forgetting (the loss of the pooled retained capabilities below), judged on test with CIs over seeds and "
        f"items. Recipes that meet it: {', '.join(met) if met else 'none'}.", "",
        *target_table(targets, comparisons), "",
        f"Shares are the recipe's value over the {REFERENCE} run's (seed s against seed s, the same data order); the "
        "margins are how far past each line the recipe is, in points (gain: recipe − 0.95 × reference; forgetting: "
        "0.1 × reference − recipe; above 0 meets the line). Both come from one two-level bootstrap (seeds, then "
        "items or their clusters, the same draws for the recipe and the reference). **met**: both margins' 95% CIs "
        "lie above 0 and every seed meets both lines; **not met**: the estimate misses a line (by how much: the "
        "reason); **not shown**: the estimate meets both but a CI or a seed does not. The forgetting is the pooled "
        f"change of {', '.join(summary['retained_tasks'])} (the sweep summary's): a loss confined to one capability "
        "is diluted by the others (the per-capability table below shows each), and perplexities are not in the "
        "pool (their supported losses are in the last column).", "",
        "## What was run", "",
        f"The base model (`{base.get('model')}`) is fine-tuned on `{task}` from `{sweep.base}`; each strategy, "
        f"with training seeds {', '.join(map(str, sweep.seeds))}:", "", overrides, "",
        f"Every model is scored on up to {sweep.limit} test items of each task of `{sweep.suite}` plus the task; "
        f"items scored per task: {items}.", "",
        "## The base model", "", *base_table(base), "",
        "Perplexity is word perplexity (lower is better); every other score is in percent.", "",
        "## Change per capability", "",
        "The change against the base, the mean over seeds, with a 95% CI that resamples seeds and, within each, "
        "items (by cluster where items carry one); then each seed's change. A change is supported when its CI "
        "excludes 0 and every seed moved the same way; otherwise not shown, with the reason. Points for scores; "
        "perplexity as a relative change (lower is better). Grade: retain's forgetting grade of a supported loss.", "",
        *capability_table(comparisons), "",
        "## Task gain and pooled retained change", "",
        f"The retained capabilities pool the items of {', '.join(summary['retained_tasks'])}.", "",
        *pooled_table(comparisons, retained, task), "",
        "## New skill against forgetting", "", markdown_table(summary), "",
        f"Pareto front: {', '.join(summary['pareto_front'])}.", "", "![Pareto plot](real-model-pareto.png)", "",
        "## Forgetting at matched task gain", "", *matched_gain_lines(summary), "",
        f"## Answers that changed (training seed {first})", "",
        "Up to two items per generation task whose outcome changed from the base, losses first, as the model wrote "
        "them.", "",
        *(line.replace("## ", "### ", 1) if line.startswith("## ") else line
          for line in answers_markdown({"answers": answers})),
        *letter_choices({"base": base, **{f"{n} (seed {first})": s[0] for n, s in seeds.items()}}),
        f"## Training throughput (training seed {first})", "",
        *run_table(out, names, {n: run_name(sweep, n, first) for n in names}), "",
        "Step times and wall time vary between machines and with other load; the score changes do not depend on "
        "speed.", "",
        "## The report", "", *report_section(out, docs, sweep, names, best, not args.no_screenshot), ""])
    path = atomic_write_text(docs / "real-model.md", text)
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    main()
