"""`retain demo`: the lab end to end, on the bundled model and task.

    1. evaluate retain-tiny on its capabilities and on the task (test split)
    2. fine-tune it twice on city -> country: unprotected, and protected by the recipe `retain tune` found
       for the lab (docs/tune.md) (DEMO_CONFIGS/*.yaml)
    3. evaluate both, write the report comparing all three, print each run's changes, then one verdict line
       per run (how bad, whether to ship) and where the report is
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from retain.config import load_config
from retain.mitigations.retention_options import DEFAULT_SUITE
from retain.paths import PACKAGE_DIR

# package data, so that an installed retain runs the demo; configs/demo/ in the repository links here
DEMO_CONFIGS = PACKAGE_DIR / "lab" / "configs"
SUITE = "lab,city_country"
# Retention checks that only measure: every capability `ignore`d (20 dev items each, every 50 steps; recorded, never
# a breach), so each run ends with the weights its training reached; the report draws them as forgetting over training
CHECKS = "mitigations.retention=" + json.dumps({"limit": 20,
                                                 "tasks": dict.fromkeys(DEFAULT_SUITE.split(","), "ignore")})


def run_demo(out: Path, quick: bool = False) -> dict:
    import retain
    from retain.evaluation.runner import evaluate_path
    from retain.report.build import write_report

    start = time.perf_counter()
    limit = 40 if quick else None
    overrides = [CHECKS] + (["training.max_steps=6"] if quick else [])
    results = [out / "base.json"]
    print(f"[1/4] evaluating the base model retain-tiny on {SUITE}")
    evaluate_path("retain-tiny", SUITE, "test", results[0], limit=limit)
    run_dirs = []
    for k, name in enumerate(("unprotected", "protected"), start=2):
        config = load_config(DEMO_CONFIGS / f"{name}.yaml", overrides + [f"output.dir={out / name}"])
        protection = [m for m in config.mitigations if m != "retention"]  # the checks protect nothing
        print(f"[{k}/4] fine-tuning: {name} ({', '.join(protection) or 'full fine-tuning'}, "
              f"lr {config.training.lr:g})")
        run = retain.train(config, overwrite=True)
        run_dirs.append(run.output_dir)
        results.append(out / f"{name}.json")
        evaluate_path(str(run.final_dir), SUITE, "test", results[-1], limit=limit)
    print("[4/4] writing the report")
    paths = write_report(results, out / "report", run_dirs=run_dirs, labels=["base", "unprotected", "protected"])
    print()
    print(paths["headline"])
    print()
    print(paths["verdicts"])
    print(f"report: {paths['html']}  ({time.perf_counter() - start:.0f} s)")
    return paths
