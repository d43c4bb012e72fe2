"""docs/real-model.md from the real-model sweeps (configs/sweeps/real-smollm2.yaml, configs/sweeps/real-gemma.yaml:
one per real model), every strategy run with several training seeds.

    python -m tools.real_study configs/sweeps/real-smollm2.yaml configs/sweeps/real-gemma.yaml --out docs
    python -m tools.real_study A.yaml B.yaml --sweep-dir /copy/of/A --sweep-dir /copy/of/B --out docs

`--sweep-dir` (repeatable) reads a sweep's files from a folder in place of its `output`; given once per sweep, in
the order of the sweeps. `--tune DIR` (repeatable) adds the recipe a `retain tune` study on a real model
recommended, judged by the same target on test over its training seeds (its summary.json; `make real-tune`). Per
sweep this reads base.json, results/<strategy>[.seed<S>].json, runs/*/metrics.jsonl and the study's wall time
(<output>/wall_seconds, each sitting's added by tools.timed) and writes one document: first issue 19's target per
model and recipe (retain.studies.sweep.target) with a sentence per model, then one section per model: the base
model's scores; per strategy and capability the change with the two-level (seeds, then items) 95% CI, each seed's
change, whether it is shown and its grade; the pooled retained change and the task gain; the target in full; the
Pareto plot (docs/real-model-<sweep file stem>-pareto.png); answers that changed; throughput and the machine. A
sweep with no base.json or no results is stated as not run; a strategy with fewer results files than the sweep's
seeds is left out of its model's section, with a sentence that says so. Every figure comes from the files; nothing
is typed in but `--note`'s paragraph on how the study ran (other load on the machine, sittings), printed as given."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
from pathlib import Path

import torch

from retain.evaluation.results import load_results
from retain.evaluation.stats import Change
from retain.core.files import atomic_write_text
from retain.report.answers import answers_markdown, changed_answers
from retain.report.build import write_report
from retain.report.render import format_change
from retain.studies.common import read_base
from retain.studies.sweep import (SweepConfig, expand, load_sweep, result_files, run_name, strategy_configs,
                                  summarize_sweep)
from retain.studies.sweep.line import line_file
from retain.studies.sweep.summary import (Compared, as_change, capability_table, compare_runs, markdown_table,
                                          per_seed_cell, verdict_cell, write_sweep_report)
from retain.studies.sweep.target import judge_target
from retain.model.precision import choose_bf16, this_machine
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
    """The study's wall time from <out>/wall_seconds (tools.timed adds each sitting's; the gaps between sittings
    are left out)."""
    seconds = out / "wall_seconds"
    if not seconds.is_file():
        return "not recorded"
    total, source = round(float(seconds.read_text())), f"`{seconds}`: its sittings added up"
    text = f"{total // 3600} h {total % 3600 // 60:02d} min" if total >= 3600 else f"{total / 60:.0f} min"
    return f"{text} ({source})"


def base_table(base: dict) -> list[str]:
    lines = ["| task | capability | metric | base score | chance | items |", "|---|---|---|---|---|---|"]
    for name, t in base["tasks"].items():
        value = t["metrics"][t["primary_metric"]]
        shown = f"{value:.1f}" if t["lower_is_better"] else f"{100 * value:.1f}"
        chance = "" if t.get("chance") is None else f"{100 * t['chance']:.1f}"
        lines.append(f"| {name} | {t['capability']} | {t['primary_metric']} | {shown} | {chance} | "
                     f"{len(t['items'])} |")
    return lines


def pooled_table(comparisons: dict[str, dict], retained: dict[str, Change], task: str) -> list[str]:
    lines = ["| strategy | task gain (pts) [95% CI] | per seed | verdict | retained change (pts) [95% CI] | per seed "
             "| verdict |", "|---|---|---|---|---|---|---|"]
    for name, comparison in comparisons.items():
        gain, kept = as_change(comparison["tasks"][task]), retained[name]
        cells = []
        for c in (gain, kept):
            shown_as = "gain" if c.delta > 0 else "loss"
            cells += [f"{100 * c.delta:+.1f} [{100 * c.ci_low:+.1f}, {100 * c.ci_high:+.1f}]",
                      per_seed_cell(c.per_seed, False), verdict_cell(c, shown_as)]
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
    """Forgetting at matched task gain, where the sweep scored its runs' WiSE-FT lines (summary.json's
    `matched_gain`: retain.studies.sweep.matched_gain.matched_rows)."""
    rows = summary.get("matched_gain") or {}
    if not rows:
        return ["Not measured in this study: forgetting at matched task gain is read off each run's WiSE-FT line "
                "toward the base, which a sweep scores when it sets `line` (e.g. `line: [0.25, 0.5, 0.75]`: one more "
                "evaluation of every capability per point and run). The target above compares end points; a recipe "
                "that gains less than the unprotected run is judged at its own gain."]
    share = next(iter(rows.values()))["share"]
    lines = [f"The retained change where each run's line first reaches {share:.0%} of the unprotected run's task gain "
             "(seed s against its seed s), with that seed's 95% CI over items; the mean where every seed gets there.",
             "", "| recipe | mean (pts) [95% CI: seeds, then items] | per seed (pts) [95% CI] |", "|---|---|---|"]
    for name, m in rows.items():
        seeds = "; ".join("never reached" if s is None else
                          f"{100 * s['change']:+.1f} [{100 * s['ci'][0]:+.1f}, {100 * s['ci'][1]:+.1f}]"
                          for s in m["per_seed"])
        mean = ("—" if m["mean"] is None
                else f"{100 * m['mean']:+.1f} [{100 * m['ci'][0]:+.1f}, {100 * m['ci'][1]:+.1f}]")
        lines.append(f"| {name} | {mean} | {seeds} |")
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
            if (t["kind"] != "multiple_choice" or not items or "loglikelihoods" not in items[0]
                    or not task.startswith("mmlu")):
                continue
            counts = [0, 0, 0, 0]
            for it in items:
                lls = it["loglikelihoods"]
                counts[max(range(len(lls)), key=lls.__getitem__)] += 1
            lines.append(f"| {name} | {task} | " + " | ".join(map(str, counts))
                         + f" | {100 * t['metrics']['acc']:.1f} |")
            if max(counts) >= LETTER_BIAS * len(items):
                biased.append(f"{name} picks {'ABCD'[counts.index(max(counts))]} on {max(counts)} of {len(items)}")
    if not lines:
        return []
    warning = [f"**MMLU here measures letter bias, not knowledge**: {'; '.join(biased)} items, so its accuracy is the "
               "share of items whose answer is that letter and its changes say nothing about what the model knows.",
               ""] if biased else []
    return ["Which letter each model picks on MMLU (its highest-loglikelihood choice):", "",
            "| model | task | A | B | C | D | acc |", "|---|---|---|---|---|---|---|", *lines, "", *warning]


def report_section(study: Study, docs: Path, best: str, take_screenshot: bool) -> list[str]:
    sweep, out, names = study.sweep, study.out, study.names
    shown = list(dict.fromkeys(n for n in (REFERENCE, best) if n in names))  # best may be the reference itself
    first = sweep.seeds[0]
    run_dirs = [d for d in (out / "runs" / run_name(sweep, n, first) for n in shown) if d.is_dir()]
    report = write_report([out / "base.json", *(f for n in shown for f in result_files(sweep, n))], out / "report",
                          run_dirs=run_dirs, labels=["base", *(n for n in shown for _ in sweep.seeds)])
    what = f"`retain report` of base, {' and '.join(shown)} ({len(sweep.seeds)} seeds each)"
    png = f"real-model-{study.path.stem}-report.png"
    if take_screenshot and screenshot(report["html"], docs / png):
        body = f"{what}:\n\n![report]({png})"
    else:
        body = f"{what} is in `{report['html']}`."
    return [body, "", "```", report["headline"], "```"]


@dataclasses.dataclass
class Study:
    """One model's sweep as read from its files. `base` None: not run; `summary` None: the reference is incomplete."""

    path: Path
    sweep: SweepConfig
    out: Path
    model: str
    base: dict | None = None
    names: list[str] = dataclasses.field(default_factory=list)  # the strategies with every seed's results
    partial: dict[str, int] = dataclasses.field(default_factory=dict)  # the others: name -> results files found
    summary: dict | None = None
    seeds: dict[str, list[dict]] = dataclasses.field(default_factory=dict)
    comparisons: dict[str, dict] = dataclasses.field(default_factory=dict)
    retained: dict[str, Change] = dataclasses.field(default_factory=dict)
    targets: dict = dataclasses.field(default_factory=dict)
    line: dict[str, Compared] = dataclasses.field(default_factory=dict)  # "<name> at alpha <a>": its line points


def read_study(sweep_path: Path, sweep_dir: str | None) -> Study:
    sweep = load_sweep(sweep_path)
    if sweep_dir:
        sweep = dataclasses.replace(sweep, output=sweep_dir)
    out, every = Path(sweep.output), list(expand(sweep))
    if REFERENCE not in every:
        raise SystemExit(f"{sweep_path}: strategies: the study judges every recipe against `{REFERENCE}`; add it")
    model = read_base(sweep.base, f"{sweep_path}: base").get("model", {}).get("name", sweep_path.stem)
    study = Study(sweep_path, sweep, out, model)
    # result_files names every seed's file whether it exists or not, and summarize reads each: count them first
    found = {n: sum(p.is_file() for p in result_files(sweep, n)) for n in every}
    if not (out / "base.json").is_file() or not any(found.values()):
        return study
    study.base = load_results(out / "base.json")
    study.model = study.base.get("model") or model
    study.names = [n for n in every if found[n] == len(sweep.seeds)]
    study.partial = {n: k for n, k in found.items() if k < len(sweep.seeds)}
    if REFERENCE not in study.names:
        return study
    # The summary again, with this build's report code (the sweep may have run on an older one).
    compared = compare_runs(study.base, {n: result_files(sweep, n) for n in study.names}, Path(sweep.task).stem)
    study.summary = summarize_sweep(sweep, study.names, compared=compared)
    write_sweep_report(study.summary, out)
    study.seeds = {n: c.runs for n, c in compared.items()}
    study.comparisons = {n: c.comparison for n, c in compared.items()}
    study.retained = {n: c.retained for n, c in compared.items()}
    study.targets = {n: judge_target(study.base, study.seeds[REFERENCE], runs, Path(sweep.task).stem)
                     for n, runs in study.seeds.items() if n != REFERENCE}
    points = {f"{n} at alpha {a:g}": [line_file(out, run_name(sweep, n, s), a) for s in sweep.seeds]
              for n in study.names for a in sweep.line}
    study.line = compare_runs(study.base, {k: files for k, files in points.items() if all(f.is_file() for f in files)},
                              Path(sweep.task).stem)
    return study


def line_lines(study: Study, task: str) -> list[str]:
    """Each run's WiSE-FT line points as scored: weights (1 - alpha)·base + alpha·run, every seed."""
    if not study.line:
        return ["Not scored in this study (a sweep scores them when it sets `line`)."]
    comparisons = {n: c.comparison for n, c in study.line.items()}
    return ["The runs' weights moved back toward the base after training, (1 − α)·base + α·run, scored like the runs "
            "(every seed; CIs over seeds, then items): the points the matched-gain table reads.", "",
            *pooled_table(comparisons, {n: c.retained for n, c in study.line.items()}, task), "",
            "Per capability, perplexities included (they are not in the pooled change):", "",
            *capability_table(comparisons)]


def _names(names) -> str:
    names = [f"`{n}`" for n in names]
    return " and ".join(names) if len(names) < 3 else ", ".join(names[:-1]) + " and " + names[-1]


def left_out(study: Study) -> str:
    """One sentence on the strategies with fewer results files than the sweep has seeds (empty when none)."""
    if not study.partial:
        return ""
    n = len(study.sweep.seeds)
    each = "; ".join(f"`{name}` has results for {k} of its {n} training seeds" for name, k in study.partial.items())
    return f"Left out here (fewer results files than training seeds): {each}."


def not_run(study: Study) -> str:
    missing = "results" if (study.out / "base.json").is_file() else "base.json"
    return f"Not run: `{study.out}` has no {missing} (`retain sweep {study.path}` writes them)."


def verdict_sentence(study: Study) -> str:
    """Which recipes of one model met issue 19's target and which did not, from its judged targets."""
    if study.base is None:
        return f"{study.model} (`{study.path}`): not run."
    if study.summary is None:
        k = study.partial.get(REFERENCE, 0)
        return (f"{study.model}: not judged: the reference `{REFERENCE}` has results for {k} of "
                f"{len(study.sweep.seeds)} training seeds.")
    by_verdict: dict[str, list[str]] = {}
    for name, t in study.targets.items():
        by_verdict.setdefault(t.verdict, []).append(name)
    met = by_verdict.pop("met", [])
    parts = [f"{_names(met)} met the target" if met else "no recipe met the target"]
    parts += [f"{_names(names)}: {verdict}" for verdict, names in by_verdict.items()]
    extra = f" ({', '.join(f'{n}: {k} of {len(study.sweep.seeds)} seeds' for n, k in study.partial.items())} " \
            "left out)" if study.partial else ""
    judged = f"{len(study.targets)} recipe{'s' if len(study.targets) != 1 else ''}"
    return f"{study.model}: of {judged} judged{extra}, {'; '.join(parts)}."


def overview_table(studies: list[Study]) -> list[str]:
    lines = ["| model | recipe | target | share of the task gain [95% CI] | share of the forgetting [95% CI] |",
             "|---|---|---|---|---|"]
    for study in studies:
        for name, t in study.targets.items():
            verdict = f"**{t.verdict}**" + (f": {t.reason}" if t.reason else "")
            lines.append(f"| {study.model} | {name} | {verdict} | {_share(t.gain.share, t.gain.share_ci)} | "
                         f"{_share(t.forgetting.share, t.forgetting.share_ci)} |")
    return lines


def ran_sentence(studies: list[Study]) -> str:
    ran = [s for s in studies if s.base is not None]
    count = "both" if len(ran) == len(studies) == 2 else {0: "none", 1: "one", 2: "two"}.get(len(ran), str(len(ran)))
    said = f"this study ran {count}" + (f": {', '.join(f'{s.model} (`{s.path}`)' for s in ran)}" if ran else "")
    missing = [s for s in studies if s.base is None]
    if missing:
        said += f"; not run: {', '.join(f'{s.model} (`{s.path}`)' for s in missing)}"
    return f"Issue 19 asks for both real models (SmolLM2-135M-Instruct and Gemma-3-270M); {said}."


def model_section(study: Study, docs: Path, take_screenshot: bool) -> list[str]:
    """The section of one model: every heading of today's single-model document one level down."""
    sweep, out, base, names = study.sweep, study.out, study.base, study.names
    heading = [f"## {study.model} (`{study.path.stem}`)", ""]
    if base is None:
        return [*heading, not_run(study), ""]
    head = [*heading, f"Sweep `{study.path}`; training seeds {', '.join(map(str, sweep.seeds))} for every strategy.",
            *([left_out(study)] if study.partial else []), "",
            f"Machine: {machine(sweep, study.path, base)}. Wall time of the study, install excluded: "
            f"{wall_time(out)}.", ""]
    summary = study.summary
    if summary is None:
        return [*head, verdict_sentence(study), ""]
    task, seeds, comparisons, targets = summary["task"], study.seeds, study.comparisons, study.targets
    pareto = f"real-model-{study.path.stem}-pareto.png"
    shutil.copyfile(out / "pareto.png", docs / pareto)
    best = max((n for n in summary["pareto_front"] if n != REFERENCE),
               key=lambda n: summary["rows"][n]["gain"], default=names[-1])
    first = sweep.seeds[0]
    strategies = expand(sweep)
    overrides = "\n".join(f"- `{n}`: " + (", ".join(f"`{k}: {json.dumps(v)}`" for k, v in strategies[n].items())
                                           or "the base config") for n in names)
    items = ", ".join(f"{name} {len(t['items'])}" for name, t in base["tasks"].items())
    answers = {n: changed_answers(base, seeds[n][0], per_task=2) for n in names}
    return [
        *head, "### The target", "", *target_table(targets, comparisons), "",
        f"The forgetting is the pooled change of {', '.join(summary['retained_tasks'])} (the sweep summary's): a loss "
        "confined to one capability is diluted by the others (the per-capability table below shows each), and "
        "perplexities are not in the pool (their supported losses are in the last column).", "",
        "### What was run", "",
        f"The base model (`{base.get('model')}`) is fine-tuned on `{task}` from `{sweep.base}`; each strategy, "
        f"with training seeds {', '.join(map(str, sweep.seeds))}:", "", overrides, "",
        f"Every model is scored on up to {sweep.limit} test items of each task of `{sweep.suite}` plus the task; "
        f"items scored per task: {items}.", "",
        "### The base model", "", *base_table(base), "",
        "Perplexity is word perplexity (lower is better); every other score is in percent.", "",
        "### Change per capability", "",
        "The change against the base, the mean over seeds, with a 95% CI that resamples seeds and, within each, "
        "items (by cluster where items carry one); then each seed's change. A change is supported when its CI "
        "excludes 0 and every seed moved the same way; otherwise not shown, with the reason. Points for scores; "
        "perplexity as a relative change (lower is better). Grade: retain's forgetting grade of a supported loss.", "",
        *capability_table(comparisons), "",
        "### Task gain and pooled retained change", "",
        f"The retained capabilities pool the items of {', '.join(summary['retained_tasks'])}.", "",
        *pooled_table(comparisons, study.retained, task), "",
        "### New skill against forgetting", "", markdown_table(summary), "",
        f"Pareto front: {', '.join(summary['pareto_front'])}.", "", f"![Pareto plot]({pareto})", "",
        "### Forgetting at matched task gain", "", *matched_gain_lines(summary), "",
        "### The WiSE-FT line as scored", "", *line_lines(study, task), "",
        f"### Answers that changed (training seed {first})", "",
        "Up to two items per generation task whose outcome changed from the base, losses first, as the model wrote "
        "them.", "",
        *(line.replace("## ", "#### ", 1) if line.startswith("## ") else line
          for line in answers_markdown({"answers": answers})),
        *letter_choices({"base": base, **{f"{n} (seed {first})": s[0] for n, s in seeds.items()}}),
        f"### Training throughput (training seed {first})", "",
        *run_table(out, names, {n: run_name(sweep, n, first) for n in names}), "",
        "Step times and wall time vary between machines and with other load; the score changes do not depend on "
        "speed.", "",
        "### The report", "", *report_section(study, docs, best, take_screenshot), ""]


def tune_lines(tune_dirs: list[Path]) -> list[str]:
    """Issue 19's target for the recipe `retain tune` recommended on each real model (its summary.json's
    `against_reference`: chosen on dev, judged on test over the study's training seeds by the same rule)."""
    if not tune_dirs:
        return []
    lines = ["## The recipe `retain tune` found, per model", "",
             "Each study chose its recipe on the dev split, then ran it and its reference (the unprotected base "
             "config) with every training seed and judged it on test by the rule above (seed s against seed s).", "",
             "| study | model | recommended recipe (searched values) | target | share of the task gain [95% CI] | "
             "per seed | share of the forgetting [95% CI] | per seed | gain margin (pts) [95% CI] | "
             "forgetting margin (pts) [95% CI] |", "|---|---|---|---|---|---|---|---|---|---|"]
    for out in tune_dirs:
        summary_path = out / "summary.json"
        if not summary_path.is_file():
            lines.append(f"| `{out}` | | not run (`retain tune` writes `{summary_path}`) | | | | | | | |")
            continue
        tune = json.loads(summary_path.read_text())["tune"]
        base = out / "test" / "base.json"
        model = json.loads(base.read_text()).get("model", "") if base.is_file() else ""
        a, chosen = tune.get("against_reference"), tune.get("recommended")
        if not a or not chosen:
            lines.append(f"| `{out}` | {model} | no trial finished | | | | | | | |")
            continue
        g, f = a["gain"], a["forgetting"]
        verdict = f"**{a['verdict']}**" + (f": {a['reason']}" if a["reason"] else "")
        searched = ", ".join(f"`{k}: {json.dumps(v)}`" for k, v in tune["trials"][chosen]["overrides"].items())
        cells = [f"`{out}`", model, f"{chosen} ({searched})", verdict]
        for side in (g, f):
            cells += [_share(side["share"], side["share_ci"]), ", ".join(map(_percent, side["per_seed_share"]))]
        cells += [f"{d['margin']:+.1f} [{d['margin_ci'][0]:+.1f}, {d['margin_ci'][1]:+.1f}]" for d in (g, f)]
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweeps", nargs="+", help="the sweep configs, one per model")
    parser.add_argument("--out", default="docs")
    parser.add_argument("--note", default="", help="a sentence on how the run went (e.g. other load on the machine)")
    parser.add_argument("--no-screenshot", action="store_true", help="leave the report as HTML (no Chromium run)")
    parser.add_argument("--tune", action="append", default=[], type=Path,
                        help="a `retain tune` study's output on a real model (repeatable): its recommended recipe's "
                        "target verdict is reported with the sweeps' (make real-tune writes runs/tune-smollm2)")
    parser.add_argument("--sweep-dir", action="append", default=[],
                        help="where a sweep's files are, in place of its `output` (a copy, another checkout's run); "
                        "once per sweep, in the order of the sweeps; the summary, plot and report are written there")
    args = parser.parse_args(argv)
    if args.sweep_dir and len(args.sweep_dir) != len(args.sweeps):
        parser.error(f"--sweep-dir: {len(args.sweep_dir)} given for {len(args.sweeps)} sweeps; give one per sweep")
    paths = [Path(p) for p in args.sweeps]
    studies = [read_study(p, d) for p, d in zip(paths, args.sweep_dir or [None] * len(paths))]
    docs = Path(args.out)
    docs.mkdir(parents=True, exist_ok=True)
    met = [f"{n} ({s.model})" for s in studies for n, t in s.targets.items() if t.verdict == "met"]
    text = "\n".join([
        "# Real pretrained models: " + ", ".join(s.model for s in studies), "",
        "Generated by `make real-study` (" + ", ".join(f"`retain sweep {p}`" for p in paths)
        + ", then `python -m tools.real_study " + " ".join([*map(str, paths), *(f"--tune {t}" for t in args.tune)])
        + ("`, with `--note` giving the text on how it ran that follows the next sentence" if args.note else "`")
        + "). Do not edit by hand.", "",
        ran_sentence(studies), *([args.note] if args.note else []), "",
        "## The target, per model", "",
        f"Issue 19's target: a recipe keeps at least 95% of the {REFERENCE} run's task gain at no more than a tenth of "
        "its forgetting (the loss of the model's pooled retained capabilities), judged on test with CIs over seeds "
        f"and items. Recipes that meet it: {', '.join(met) if met else 'none'}.", "",
        *overview_table(studies), "",
        *(f"- {verdict_sentence(s)}" for s in studies), "",
        f"Shares are the recipe's value over the {REFERENCE} run's (seed s against seed s, the same data order); each "
        "model's section gives them per seed with the margins: how far past each line the recipe is, in points "
        "(gain: recipe − 0.95 × reference; forgetting: 0.1 × reference − recipe; above 0 meets the line). Both come "
        "from one two-level bootstrap (seeds, then items or their clusters, the same draws for the recipe and the "
        "reference). **met**: both margins' 95% CIs lie above 0 and every seed meets both lines; **not met**: the "
        "estimate misses a line (by how much: the reason); **not shown**: the estimate meets both but a CI or a seed "
        "does not.", "",
        *tune_lines(args.tune),
        *(line for s in studies for line in model_section(s, docs, not args.no_screenshot))])
    path = atomic_write_text(docs / "real-model.md", text)
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    main()
