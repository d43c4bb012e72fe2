"""What a study found, decided on the dev split and reported on the test split.

    trials/*.json       every trial's dev gain and forgetting (whichever backend ran it)
    -> the dev Pareto front (gain up, forgetting down) and the recommended recipe: the most dev gain within the
       budget (none within it: the best penalised; no budget: the most gain minus forgetting)
    -> the recommended recipe and the reference run re-run with every training seed in `seeds` (the trial
       itself for the seed it was trained with; <name>.seed<S> for the others: trial.seed_runs)
    -> the front, those runs and the base scored on the test split; retain.studies.sweep.summary gives the paired CIs
       (over the seeds where there are several; no choice is made on test: its numbers only report the
       dev-chosen recipes), and the recommended recipe against the reference, seed s against seed s
    -> summary.json, summary.md + pareto.png (test), report.md, trials.png (dev), importance.json,
       recommended.yaml (a run config, ready for `retain train`)
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from retain.evaluation.compare import retained_change
from retain.evaluation.stats import seed_paired_bootstrap
from retain.core.files import atomic_write_json, atomic_write_text
from retain.report.plots import COLORS, _png, plt
from retain.evaluation.results import load_results
from retain.studies.sweep.summary import (capability_table, compare_runs, markdown_table, pareto_front,
                                          summarize_compared, write_sweep_report)
from retain.studies.common import evaluate_into
from retain.studies.sweep.target import FORGETTING_SHARE, Criterion, Target, judge_target
from retain.studies.tune.trial import REFERENCE, Tuning, read_json, seed_runs


def load_records(out: Path) -> list[dict]:
    """Every trial's record but the reference's, in the order they finished."""
    paths = sorted((out / "trials").glob("*.json"), key=lambda p: p.stat().st_mtime)
    return [read_json(p) for p in paths if p.stem != REFERENCE]


def recommend(records: list[dict], budget: float | None, penalty: float) -> str | None:
    """The recipe to use, on dev numbers only. Ties go to less forgetting, so the choice is on the front."""
    done = [r for r in records if r["state"] == "complete"]
    if not done:
        return None
    if budget is None:
        return max(done, key=lambda r: (r["gain"] - r["forgetting"], -r["forgetting"]))["name"]
    within = [r for r in done if r["forgetting"] <= budget]
    if within:
        return max(within, key=lambda r: (r["gain"], -r["forgetting"]))["name"]
    return max(done, key=lambda r: (r["gain"] - penalty * (r["forgetting"] - budget), -r["forgetting"]))["name"]


def importances(tuning: Tuning, records: list[dict]) -> dict:
    """Optuna's importance of each searched key for the dev gain, the dev forgetting (and the objective), from the
    finished trials (fANOVA, seeded, when scikit-learn is there; else Optuna's default evaluator)."""
    import optuna

    done = [r for r in records if r["state"] == "complete"]
    targets = {"dev gain": lambda r: r["gain"], "dev forgetting": lambda r: r["forgetting"]}
    if tuning.tune.objective.kind == "constrained":
        targets["objective"] = lambda r: r["value"]
    by_key = {p.key: p for p in tuning.space.params}

    if importlib.util.find_spec("sklearn") is not None:  # fANOVA's random forest
        evaluator, name = optuna.importance.FanovaImportanceEvaluator(seed=tuning.tune.seed), "fANOVA"
    else:
        evaluator, name = None, "Optuna's default"
    out: dict = {"evaluator": name, "trials": len(done)}
    if len(done) < 3:
        return {**out, **{target: {"error": "too few complete trials"} for target in targets}}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for target, get in targets.items():
        study = optuna.create_study(direction="maximize")
        for r in done:
            study.add_trial(optuna.trial.create_trial(
                params=r["params"], value=get(r),
                distributions={k: by_key[k].distribution() for k in r["params"]}))
        try:
            out[target] = optuna.importance.get_param_importances(study, evaluator=evaluator)
        except (ValueError, RuntimeError) as e:  # too few trials, or none that vary
            out[target] = {"error": str(e)}
    return out


def score_on_test(tuning: Tuning, names: list[str]) -> dict[str, Path]:
    """Test results of the base model and of each run in `names` (cached at the same test_limit: a rerun scores
    nothing twice)."""
    t, out = tuning.tune, tuning.out
    paths = {}
    for name in ["base", *names]:
        path = out / "test" / f"{name}.json"
        if not path.is_file() or read_json(path).get("limit") != t.test_limit:
            model = (read_json(out / "dev" / "base.json")["model"] if name == "base"
                     else str(out / "runs" / name / "final"))
            print(f"scoring {name} on the test split")
            evaluate_into(path, model, tuning.suite, t, "test", tuning.progress, limit=t.test_limit)
        paths[name] = path
    return paths


def against_reference(tuning: Tuning, base_path: Path, seeded: dict[str, list[Path]], name: str) -> dict:
    """The recipe vs the reference run on the same test items, both over the study's seeds (seed s against seed
    s): the target's verdict (retain.studies.sweep.target: at least 95% of the reference's task gain at no more
    than the budget's share of its forgetting, a tenth unless the objective gives `max_forgetting_share`), with
    each side's share, margin and per-seed values, and the paired differences (two-level bootstrap 95% CIs) of
    task score and pooled retained score."""
    task = tuning.task
    base = read_json(base_path)
    ref, rec = ([read_json(p) for p in seeded[n]] for n in (REFERENCE, name))
    metric = ref[0]["tasks"][task]["primary_metric"]
    task_diff = seed_paired_bootstrap(*([r["tasks"][task]["items"] for r in runs] for runs in (ref, rec)), metric)
    retained_diff, _ = retained_change(ref, rec, task)
    share = tuning.tune.objective.max_forgetting_share
    target = judge_target(base, ref, rec, task, forgetting_share=FORGETTING_SHARE if share is None else share)
    return {"seeds": list(tuning.tune.seeds), **target_record(target),
            "task_vs_reference": [100 * task_diff.delta, 100 * task_diff.ci_low, 100 * task_diff.ci_high],
            "retained_vs_reference": [100 * retained_diff.delta, 100 * retained_diff.ci_low,
                                      100 * retained_diff.ci_high]}


def target_record(target: Target) -> dict:
    """A judged target for summary.json: its verdict and reason, each side in points (shares as fractions)."""
    return {"verdict": target.verdict, "reason": target.reason,
            **{c.name: _criterion(c) for c in (target.gain, target.forgetting)}}


def _criterion(c: Criterion) -> dict:
    return {"line": c.line, "reference": 100 * c.reference, "recipe": 100 * c.recipe, "share": c.share,
            "share_ci": None if c.share_ci is None else list(c.share_ci), "margin": 100 * c.margin,
            "margin_ci": [100 * x for x in c.margin_ci], "per_seed_share": list(c.per_seed_share),
            "per_seed_margin": [100 * x for x in c.per_seed_margin]}


def write_report(tuning: Tuning) -> dict:
    out, t = tuning.out, tuning.tune
    records = load_records(out)
    done = {r["name"]: r for r in records if r["state"] == "complete"}
    front = pareto_front({n: (r["gain"], r["forgetting"]) for n, r in done.items()})
    chosen = recommend(records, tuning.budget, t.objective.penalty)
    shown = [REFERENCE, *front, *([chosen] if chosen and chosen not in front else [])]
    # the reference and the recommended recipe over every training seed: what the report compares them on
    replicated = {n: seed_runs(tuning, n) for n in dict.fromkeys([REFERENCE, *([chosen] if chosen else [])])}
    paths = score_on_test(tuning, list(dict.fromkeys([*shown, *(r for runs in replicated.values() for r in runs)])))
    seeded = {n: [paths[r] for r in runs] for n, runs in replicated.items()}
    base = load_results(paths["base"])
    compared = compare_runs(base, {n: seeded.get(n, paths[n]) for n in shown}, tuning.task)
    summary = summarize_compared(base, paths["base"], compared, tuning.task)
    summary["pareto_front"] = front  # the dev front: test numbers report it, they do not choose it
    reference = read_json(out / "trials" / f"{REFERENCE}.json")
    summary["tune"] = {
        "recommended": chosen, "budget_points": tuning.budget, "objective": t.objective.kind,
        "report_dir": str(out),
        "reference_dev": {"gain": reference["gain"], "forgetting": reference["forgetting"]},
        "trials": {r["name"]: {k: r.get(k) for k in ("state", "reason", "gain", "forgetting", "value", "overrides")}
                   for r in records},
        "importance": importances(tuning, records),
        "against_reference": against_reference(tuning, paths["base"], seeded, chosen) if chosen else None}
    atomic_write_json(out / "summary.json", summary)
    write_sweep_report(summary, out)
    atomic_write_json(out / "importance.json", summary["tune"]["importance"])
    if chosen:
        write_recommended(tuning, done[chosen])
    (out / "trials.png").write_bytes(trials_plot(tuning, records, front, chosen, reference))
    comparisons = {n: compared[n].comparison for n in seeded}
    atomic_write_text(out / "report.md", report_markdown(tuning, summary, records, comparisons))
    return summary


def write_recommended(tuning: Tuning, record: dict) -> Path:
    text = Path(record["config"]).read_text().replace(str(tuning.out / "runs" / record["name"]),
                                                      str(tuning.out / "recommended"))
    header = (f"# Recommended by `retain tune` ({tuning.out}): trial {record['name']}, dev gain "
              f"{record['gain']:+.1f} points, dev forgetting {record['forgetting']:.1f} points.\n"
              f"# Searched: {json.dumps(record['overrides'])}\n")
    return atomic_write_text(tuning.out / "recommended.yaml", header + text)


def _points(share: float | None) -> str:
    return "n/a" if share is None else f"{100 * share:.0f}%"


def _shown(overrides: dict) -> str:
    """The searched values, floats to 3 significant digits."""
    return json.dumps({k: float(f"{v:.3g}") if isinstance(v, float) else v for k, v in overrides.items()})


def _seeds(seeds: list[int]) -> str:
    return f"training seed {seeds[0]}" if len(seeds) == 1 else f"means over training seeds {', '.join(map(str, seeds))}"


def _margin(side: dict) -> str:
    per_seed = ", ".join(f"{m:+.1f}" for m in side["per_seed_margin"])
    return f"{side['margin']:+.1f} [{side['margin_ci'][0]:+.1f}, {side['margin_ci'][1]:+.1f}] (per seed {per_seed})"


def _ci(change: list[float]) -> str:
    return f"{change[0]:+.1f} [{change[1]:+.1f}, {change[2]:+.1f}]"


def report_markdown(tuning: Tuning, summary: dict, records: list[dict], comparisons: dict[str, dict]) -> str:
    """The report: the dev front and the reference on test, the recommended recipe against the reference by the
    target's rule, each capability's change under both (`comparisons`: name -> retain.report.build.compare over
    its training seeds), every trial and the knobs' importance."""
    tune = summary["tune"]
    lines = [f"# Tuning on {summary['task']}", "",
             f"{len(records)} trials ({sum(r['state'] == 'complete' for r in records)} complete, "
             f"{sum(r['state'] == 'pruned' for r in records)} pruned), decided on the dev split; objective "
             f"{tune['objective']}, dev forgetting budget "
             + ("none" if tune["budget_points"] is None else f"{tune['budget_points']:.1f} points")
             + f" (the reference run forgot {tune['reference_dev']['forgetting']:.1f}, gained "
             f"{tune['reference_dev']['gain']:+.1f} on dev).", "",
             "## The dev front and the reference, on the test split", "", markdown_table(summary), "",
             "★: on the dev front (chosen on dev; the test split only reports it).", ""]
    rec = tune["recommended"]
    if rec:
        a = tune["against_reference"]
        g, f = a["gain"], a["forgetting"]
        verdict = f"**{a['verdict']}**" + (f" ({a['reason']})" if a["reason"] else "")
        lines += [f"Recommended: **{rec}** (`recommended.yaml`), searched values "
                  f"`{_shown(tune['trials'][rec]['overrides'])}`.", "",
                  f"Against the reference run on test ({_seeds(a['seeds'])}): keeps {_points(g['share'])} of its task "
                  f"gain ({g['recipe']:+.1f} of {g['reference']:+.1f} points; paired difference "
                  f"{_ci(a['task_vs_reference'])}) and forgets {_points(f['share'])} as much "
                  f"({f['recipe']:.1f} of {f['reference']:.1f} points; retained score vs the "
                  f"reference {_ci(a['retained_vs_reference'])}).", "",
                  f"The target, at least {100 * g['line']:.0f}% of the reference's task gain at no more than "
                  f"{100 * f['line']:.0f}% of its forgetting: {verdict}. By how much each line is passed (points; "
                  "above 0 meets it), 95% CI over seeds, then items: gain "
                  f"{_margin(g)}, forgetting {_margin(f)} (retain.studies.sweep.target).", "",
                  "## Each capability, the reference and the recommended recipe (test split)", "",
                  f"The change against the base ({_seeds(a['seeds'])}), with a 95% CI over seeds, then items; "
                  "each seed's change. Points for scores, perplexity as a relative change (lower is better).", "",
                  *capability_table(comparisons), ""]
    lines += ["## Every trial (dev split)", "", "| trial | state | dev gain | dev forgetting | searched values |",
              "|---|---|---|---|---|"]
    for r in sorted(records, key=lambda r: -(r.get("gain") or -1e9)):
        gain = "" if r.get("gain") is None else f"{r['gain']:+.1f}"
        loss = "" if r.get("forgetting") is None else f"{r['forgetting']:.1f}"
        state = r["state"] + (f" ({r['reason']})" if r["state"] != "complete" else "")
        lines.append(f"| {r['name']} | {state} | {gain} | {loss} | `{_shown(r['overrides'])}` |")
    imp = tune["importance"]
    lines += ["", f"## Importance of each knob ({imp['evaluator']}, {imp['trials']} complete trials)", ""]
    for target in ("dev gain", "dev forgetting", "objective"):
        if target in imp:
            shown = (imp[target]["error"] if "error" in imp[target]
                     else ", ".join(f"{k} {v:.2f}" for k, v in imp[target].items()))
            lines.append(f"- {target}: {shown}")
    lines += ["", "![test split: the front and the reference](pareto.png)", "",
              "![dev split: every trial](trials.png)", ""]
    return "\n".join(lines)


def trials_plot(tuning: Tuning, records: list[dict], front: list[str], chosen: str | None, reference: dict) -> bytes:
    fig, ax = plt.subplots(figsize=(8, 5.5))
    done = [r for r in records if r["state"] == "complete"]
    ax.scatter([r["forgetting"] for r in done], [r["gain"] for r in done], color=COLORS[7], label="trial")
    pts = sorted((r["forgetting"], r["gain"]) for r in done if r["name"] in front)
    if pts:
        ax.plot(*zip(*pts), "o-", color=COLORS[0], label="Pareto front")
    ax.scatter([reference["forgetting"]], [reference["gain"]], marker="s", color=COLORS[3], label="reference")
    if chosen:
        r = next(r for r in done if r["name"] == chosen)
        ax.scatter([r["forgetting"]], [r["gain"]], marker="*", s=200, color=COLORS[2], label="recommended", zorder=3)
    if tuning.budget is not None:
        ax.axvline(tuning.budget, color="black", linestyle="--", linewidth=0.8, label="budget")
    ax.set_xlabel("dev forgetting (pts of the pooled retained score; left is better)")
    ax.set_ylabel(f"dev gain on {tuning.task} (pts)")
    ax.set_title("Every finished trial, dev split")
    ax.legend()
    return _png(fig)
