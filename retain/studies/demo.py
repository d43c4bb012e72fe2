"""`retain demo`: the lab end to end, on the bundled model and task.

    1. evaluate retain-tiny on its capabilities and on the task (test split)
    2. fine-tune it twice on city -> country: unprotected, and protected by the recipe `retain tune` found
       for the lab (docs/tune.md) (DEMO_CONFIGS/*.yaml)
    3. evaluate both, write the report comparing all three, print each run's changes, then one verdict line
       per run (how bad, whether to ship) and where the report is

A study with fixed files (retain.studies.common's skeleton), except that nothing is skipped: each demo
starts afresh in its directory.
"""

from __future__ import annotations

import time
from pathlib import Path

from retain.lab.defaults import BUDGET_SUITE
from retain.core.paths import PACKAGE_DIR
from retain.report.build import write_report
from retain.studies.common import StudyConfig, checked_run, evaluate_into, plan_run, read_base
from retain.studies.common import train_and_evaluate

# package data, so that an installed retain runs the demo; configs/demo/ in the repository links here
DEMO_CONFIGS = PACKAGE_DIR / "lab" / "configs"
SUITE = "lab,city_country"
RUNS = ("unprotected", "protected")
# Retention checks that only measure: every capability `ignore`d (20 dev items each, every 50 steps; recorded, never
# a breach), so each run ends with the weights its training reached; the report draws them as forgetting over training
CHECKS = {"mitigations.retention": {"limit": 20, "tasks": dict.fromkeys(BUDGET_SUITE.split(","), "ignore")}}


def run_demo(out: Path, quick: bool = False) -> dict:
    start = time.perf_counter()
    study = StudyConfig(output=str(out), common={**CHECKS, **({"training.max_steps": 6} if quick else {})}, seeds=[0],
                        limit=40 if quick else None)
    results = [out / "base.json"]
    print(f"[1/4] evaluating the base model retain-tiny on {SUITE}")
    evaluate_into(results[0], "retain-tiny", SUITE, study)
    run_dirs = []
    for k, name in enumerate(RUNS, start=2):
        source = DEMO_CONFIGS / f"{name}.yaml"
        config = checked_run(plan_run(read_base(str(source), str(source)), study.common, out / name, str(source)),
                             str(source))
        protection = [m for m in config.mitigations if m != "retention"]  # the checks protect nothing
        print(f"[{k}/4] fine-tuning: {name} ({', '.join(protection) or 'full fine-tuning'}, "
              f"lr {config.training.lr:g})")
        results.append(out / f"{name}.json")
        run_dirs.append(train_and_evaluate(config, results[-1], SUITE, study).output_dir)
    print("[4/4] writing the report")
    paths = write_report(results, out / "report", run_dirs=run_dirs, labels=["base", *RUNS])
    print()
    print(paths["headline"])
    print()
    print(paths["verdicts"])
    print(f"report: {paths['html']}  ({time.perf_counter() - start:.0f} s)")
    return paths
