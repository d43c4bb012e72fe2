"""The WiSE-FT line of a sweep's finished runs: each run's final weights interpolated toward the base at every α
of the sweep's `line`, scored on the test split as the run itself is, into <output>/line/<run>/alpha-<α>.json.

With the base (α = 0, base.json) and the run (α = 1, results/<run>.json) these are the points of the path on which
retain.studies.sweep.matched_gain reads a recipe's forgetting at a reference's task gain: a method that learns less
also forgets less, and the line says what the run would forget had it learned only as much as the reference.
A point already scored is skipped, so a sweep run again scores only the points it lacks. A run of soft prompts
(prompt tuning, prefix tuning) has no line: it changes none of the base's weights.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from retain.model.loading import is_soft_prompt_dir
from retain.model.weights import interpolate
from retain.studies.common import StudyConfig, announce, evaluate_into
from retain.studies.merge import BaseWeights


def line_file(output: Path, run: str, alpha: float) -> Path:
    return Path(output) / "line" / run / f"alpha-{alpha:g}.json"


def line_path(base: Path, output: Path, run: str, result: Path, alphas: list[float]) -> list[Path]:
    """The path's results files from the base to the run, in order of α (0, the line's, 1)."""
    return [base, *(line_file(output, run, a) for a in sorted(alphas)), result]


def score_lines(base_model: str, runs: dict[str, Path], alphas: list[float], suite: str, study: StudyConfig,
                progress: bool = True) -> None:
    """Score the line points each finished run (name -> its run dir, holding final/) still lacks."""
    output = Path(study.output)
    finished = {run: Path(run_dir) / "final" for run, run_dir in runs.items() if (Path(run_dir) / "final").is_dir()}
    soft = sorted(run for run, final in finished.items() if is_soft_prompt_dir(final))
    if soft:  # their matched-gain rows stay empty: retain.studies.sweep.matched_gain leaves unscored paths out
        print(f"no WiSE-FT line for {', '.join(soft)}: soft prompts change none of the base's weights")
    pending = {run: [a for a in alphas if not line_file(output, run, a).is_file()]
               for run in finished if run not in soft}
    pending = {run: todo for run, todo in pending.items() if todo}
    base = BaseWeights(base_model) if pending else None  # loaded once: each run is loaded once for all its points
    for k, (run, todo) in enumerate(pending.items(), 1):
        announce(k, len(pending), run, f"the WiSE-FT line toward the base at alpha {', '.join(f'{a:g}' for a in todo)}",
                 "line")
        tuned = base.tuned(str(finished[run]))
        with tempfile.TemporaryDirectory(prefix="retain-line-") as tmp:
            for alpha in todo:
                point = base.write(interpolate(base.state, tuned, alpha), Path(tmp) / f"alpha-{alpha:g}")
                evaluate_into(line_file(output, run, alpha), str(point), suite, study, progress=progress)
                shutil.rmtree(point)
