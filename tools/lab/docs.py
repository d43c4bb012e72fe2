"""docs/mitigations.md and docs/claims.md, generated from finished lab sweeps.

    retain sweep configs/sweeps/lab.yaml && retain sweep configs/sweeps/lab-gentle.yaml
    python -m tools.lab docs configs/sweeps/lab.yaml configs/sweeps/lab-gentle.yaml --out docs

Each strategy is described by its exact overrides from the sweep file, so the docs cannot drift
from what was run. docs/mitigations.md ends with how well the early warnings the runs logged predict their
forgetting (tools.lab.warnings_vs_forgetting); claims.md keeps the block another generator wrote between
BEGIN_KEPT and END_KEPT.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

from retain.core.files import atomic_write_text
from retain.evaluation.stats import Change
from retain.evaluation.compare import claim_verdict, retained_change, verdict
from retain.evaluation.results import load_results
from retain.studies.sweep.summary import LEGEND, markdown_table
from retain.studies.sweep import SweepConfig, expand, load_sweep, result_files, run_name
from retain.studies.sweep.line import line_path
from retain.studies.sweep.matched_gain import matched_difference as matched_difference_of
from tools.real_study import machine, wall_time
from tools.lab.warnings_vs_forgetting import load_runs
from tools.lab.warnings_vs_forgetting import section as warnings_section

BASELINE = "unprotected"
# claims.md keeps what another generator wrote between these lines (the preference/RL claims) when regenerated
BEGIN_KEPT, END_KEPT = "<!-- BEGIN preference-claims -->", "<!-- END preference-claims -->"
# (claim from the seeds, run A, run B, +1 if B should retain more than A, -1 if less[, only in this sweep])
CLAIMS = [
    ("A higher learning rate makes the model forget more", "unprotected", "lr_3e-4", -1, "sweep-lab-gentle"),
    ("A higher learning rate makes the model forget more", "lr_1e-4", "unprotected", -1),
    ("Training longer (more epochs) makes the model forget more", "epochs_2", "unprotected", -1),
    ("Training longer (more epochs) makes the model forget more", "unprotected", "epochs_12", -1),
    ("Smaller, narrower fine-tuning data makes the model forget more", "unprotected", "small_data", -1),
    ("Low learning rate with warmup forgets less", "unprotected", "lr_1e-4_cosine_warmup", +1),
    ("LoRA (parameter-efficient tuning) forgets less than full fine-tuning", "unprotected", "lora", +1),
    ("Replaying general data forgets less", "unprotected", "replay_15", +1),
    ("Distilling from the base (KL) forgets less", "unprotected", "kl_1", +1),
    ("EWC forgets less", "unprotected", "ewc", +1),
    ("L2-SP forgets less", "unprotected", "l2sp", +1),
    ("Freezing layers forgets less", "unprotected", "freeze_embed_2_blocks", +1),
    ("Weight interpolation after training forgets less", "unprotected", "wise_ft_0.5", +1),
    ("PEFT's benchmark: a low-LR full fine-tune forgets less than LoRA", "lora", "lr_1e-4", +1),
    # the row above compares LoRA at lr 1e-3 with full fine-tuning at 1e-4: this one at one learning rate
    ("At one learning rate (1e-4), a full fine-tune forgets less than LoRA", "lora_low_lr_1e-4", "lr_1e-4", +1,
     "sweep-lab"),
    ("Self-distillation (SDFT) forgets less", "unprotected", "self_distill", +1),
]


def pts(x: float) -> str:
    return f"{100 * x:+.1f}"


def overrides_text(sweep: SweepConfig, name: str) -> str:
    overrides = expand(sweep)[name]
    return "baseline" if not overrides else ", ".join(f"`{k}: {json.dumps(v)}`" for k, v in overrides.items())


def seed_results(sweep: SweepConfig, name: str) -> list[dict] | None:
    """The results of a strategy's runs, one per seed (None while any is missing)."""
    files = result_files(sweep, name)
    return [load_results(f) for f in files] if all(f.is_file() for f in files) else None


def seeds_text(sweep: SweepConfig) -> str:
    return f"seed {sweep.seeds[0]}" if len(sweep.seeds) == 1 else f"seeds {', '.join(map(str, sweep.seeds))}"


def sweep_section(sweep: SweepConfig, path: Path, summary: dict) -> list[str]:
    out = Path(sweep.output)
    baseline = seed_results(sweep, BASELINE)
    common = ", ".join(f"`{k}: {json.dumps(v)}`" for k, v in sweep.common.items()) or "none"
    lines = [f"## `{path}`", "",
             f"Every run starts from `{sweep.base}` (overrides for all: {common}), fine-tunes retain-tiny on "
             f"{summary['task']} (211 optimizer steps, batch 16, unless a row changes it; each strategy with "
             f"{seeds_text(sweep)}) and is scored on the "
             f"test split. Base model: task {100 * summary['base_task_score']:.1f}, retained capabilities "
             f"{100 * summary['base_retained_score']:.1f} (items pooled over {', '.join(summary['retained_tasks'])}).",
             "", f"Wall time: {wall_time(out)}, on {machine(sweep, path, json.loads((out / 'base.json').read_text()))} "
             "(of its last `make lab-study`: a resumed sweep's counts the runs it had left; it varies with the machine "
             "and what else runs on it).",
             "", "### Against the base model", "", markdown_table(summary), "", LEGEND, "",
             "### Against the unprotected run of this sweep (same data and steps)", "",
             "Retained-capability score of the strategy minus that of the unprotected run, on the same items: "
             "positive means it forgot less.", "",
             "| strategy | overrides | retained vs unprotected (pts) [95% CI] | task gain (pts) | verdict |",
             "|---|---|---|---|---|"]
    for name, row in summary["rows"].items():
        if name == BASELINE:
            continue
        c, _ = retained_change(baseline, seed_results(sweep, name), summary["task"])
        word = {"better": "forgot less", "worse": "forgot more"}.get(verdict(c, lower_is_better=False),
                                                                     "no significant difference")
        lines.append(f"| {name} | {overrides_text(sweep, name)} | {pts(c.delta)} [{pts(c.ci_low)}, {pts(c.ci_high)}] "
                     f"| {pts(row['gain'])} | {word} |")
    image = f"pareto-{out.name}.png"
    lines += ["", f"Pareto front (most task gain for the least forgetting): {', '.join(summary['pareto_front'])}.",
              "", f"![gain vs forgetting, {out.name}]({image})", ""]
    return lines


def claims_rows(sweep: SweepConfig, summary: dict) -> list[str]:
    out = Path(sweep.output)
    rows = []
    for claim, a, b, sign, *only in CLAIMS:
        if only and only[0] != out.name:
            continue  # the run names mean something else in other sweeps (e.g. which lr is the baseline)
        ra, rb = seed_results(sweep, a), seed_results(sweep, b)
        if ra is None or rb is None:
            continue
        c, _ = retained_change(ra, rb, summary["task"])
        result = claim_verdict(c, sign)
        gains = f"{pts(summary['rows'][a]['gain'])} / {pts(summary['rows'][b]['gain'])}"
        rows.append(f"| {claim} | {out.name} | {a} | {b} | {pts(c.delta)} [{pts(c.ci_low)}, {pts(c.ci_high)}] | "
                    f"{gains} | {matched_difference(sweep, a, b, sign)} | {result} |")
    return rows


def matched_difference(sweep: SweepConfig, a: str, b: str, sign: int) -> str:
    """B − A in retained change at matched task gain (retain.studies.sweep.matched_gain.matched_difference: each run
    where its WiSE-FT line reaches 95% of the unprotected run's gain, seed s against seed s), the mean with its CI
    and each seed's, judged as the claim is (`sign`: +1 if B should retain more); '—' where a line was not scored or
    some seed's line never gets there."""
    out = Path(sweep.output)
    if not sweep.line or BASELINE not in expand(sweep):
        return "—"

    def paths(name: str) -> list[list[Path]]:
        return [line_path(out / "base.json", out, run_name(sweep, name, s), f, sweep.line)
                for s, f in zip(sweep.seeds, result_files(sweep, name))]

    found = matched_difference_of(out / "base.json", paths(a), paths(b), paths(BASELINE), Path(sweep.task).stem)
    if found is None:
        return "—"
    seeds = " / ".join(pts(d) for d in found["per_seed"])
    judged = claim_verdict(Change(math.nan, math.nan, found["delta"], *found["ci"], None, 0, False,
                                  tuple(found["per_seed"])), sign)
    return f"{pts(found['delta'])} [{pts(found['ci'][0])}, {pts(found['ci'][1])}] ({seeds}): {judged}"


def kept_span(lines: list[str]) -> slice | None:
    """Where the block from BEGIN_KEPT to END_KEPT (both included) is in `lines`: claims another generator writes
    into claims.md (tools.lab.preference_claims). None if there is no complete block."""
    if BEGIN_KEPT not in lines or END_KEPT not in lines[lines.index(BEGIN_KEPT):]:
        return None
    start = lines.index(BEGIN_KEPT)
    return slice(start, lines.index(END_KEPT, start) + 1)


def preserved_block(previous: str) -> list[str]:
    """The kept block of the claims.md being replaced ([] if there is no complete block)."""
    lines = previous.splitlines()
    span = kept_span(lines)
    return lines[span] if span else []


def write_docs(sweep_paths: list[Path], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    command = " && ".join(f"retain sweep {p}" for p in sweep_paths)
    command += f" && python -m tools.lab docs {' '.join(map(str, sweep_paths))}"
    mitigations = ["# Mitigations on the lab, measured", "",
                   f"Generated by `{command}`. Points are "
                   "percentage points of exact match / accuracy, the mean over each strategy's training seeds; 95% "
                   "CIs resample the seeds, then the same items within each (the items about one country together; "
                   "2,000 resamples).", ""]
    claims = ["# The seeds' causal claims, tested on the lab", "",
              f"Generated by `{command}`. Each claim compares "
              "two runs of one sweep that differ in one thing; the measure is the retained-capability score "
              "(exact match / accuracy pooled over the lab's fact, choice and arithmetic tasks, test split) of run B "
              "minus run A on the same items, with a 95% CI that resamples the training seeds (seed s of B against "
              "seed s of A) and then, within each, the items, drawing the items about one country together. A claim "
              "is supported only when that CI excludes 0 and every seed moved the same way; otherwise it is not shown, "
              "and the row says why.", "",
              "B − A at matched gain compares the two where each run's WiSE-FT line toward the base reaches 95% of "
              "the unprotected run's task gain, seed s against seed s (the mean with its 95% CI over seeds, then "
              "items; then each seed's): a recipe that learns less is not credited for forgetting less. — where a "
              "run's line never gets there (it gains less than that even at its end). A WiSE-FT run "
              "(`mitigations.interpolate`) is itself a point of its unprotected twin's line, so the two lines cross "
              "the target at the same weights and B − A there is exactly 0: interpolation moves a run along the "
              "trade-off, it does not improve it.", "",
              "| claim | sweep | run A | run B | B − A retained (pts) [95% CI] | task gain A / B (pts) | "
              "B − A at matched gain (pts) | result |",
              "|---|---|---|---|---|---|---|---|"]
    runs = []
    for path in sweep_paths:
        sweep = load_sweep(path)
        summary = json.loads((Path(sweep.output) / "summary.json").read_text())
        mitigations += sweep_section(sweep, path, summary)
        claims += claims_rows(sweep, summary)
        runs += load_runs(sweep, summary)
        shutil.copyfile(Path(sweep.output) / "pareto.png", out / f"pareto-{Path(sweep.output).name}.png")
    mitigations += warnings_section(runs, command)
    # the preference claims' block, from the claims.md being replaced, or else from the repo's (docs into another --out)
    previous = next((p for p in (out / "claims.md", Path("docs") / "claims.md") if p.is_file()), None)
    kept = preserved_block(previous.read_text()) if previous else []
    claims += ["", *kept, *([""] if kept else []), "Strategy definitions: docs/mitigations.md and the sweep files.", ""]
    atomic_write_text(out / "mitigations.md", "\n".join(mitigations))
    atomic_write_text(out / "claims.md", "\n".join(claims))
