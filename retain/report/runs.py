"""What the report reads from the training runs behind its results: which run made a results file, and what
`retain doctor` advises for its config.

    run_of(results, run_dirs) -> Path | None     the run whose final/ (or checkpoint) a results file scored
    load_run_file(path) -> Any                    a JSON file a run wrote (retention.json), or a ResultsError
    next_steps(run_dir) -> dict | None            `retain doctor`'s findings and recipe for the run's config

A results file records the model it scored (`model`: the path given to `retain eval`); a run's final/ sits in
its output.dir beside config.yaml and metrics.jsonl (retain.report.doctor.other_run finds it). Runs given with --run
are matched to results files that way too; a results file whose model is not a run (the base, a hub id, a path
scored from another directory) has no run, and the report leaves out what would need one.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

from retain.config import load_config
from retain.core.errors import ResultsError
from retain.report.doctor import diagnose, other_run


def load_run_file(path: Path):
    """A JSON file a training run wrote (e.g. its retention.json); ResultsError naming it if unreadable."""
    try:
        return json.loads(Path(path).read_bytes().decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ResultsError(f"{path}: not valid JSON ({e}) — a run cut off while writing it? leave out its --run, "
                           "or run it again") from None


def run_of(results: dict, run_dirs: list[Path] = ()) -> Path | None:
    """The run dir whose final/ or checkpoints/step-N/ `results` scored: one of `run_dirs` if it is that run,
    else the one found beside the model path; None if the model is not a run's output (or is not here)."""

    model = results.get("model")
    found = other_run(model) if isinstance(model, str) else None
    if found is None:
        return None
    for given in run_dirs:
        if Path(given).resolve() == found.resolve():
            return Path(given)
    return found


def next_steps(run_dir: Path | None) -> dict | None:
    """`retain doctor`'s diagnosis of the run's config.yaml (no probe: the report does not run the base model on
    the task): {config, findings: [{cause, evidence, fix}], command, placeholders}; {config, error} if the config
    no longer loads here (its data or model moved); None without a config."""

    path = Path(run_dir or "") / "config.yaml"
    if run_dir is None or not path.is_file():
        return None
    try:
        diagnosis = diagnose(load_config(path), probe=0).to_json()
    except (ValueError, OSError) as e:  # ConfigError is a ValueError: a data file or model no longer there
        return {"config": str(path), "error": str(e).splitlines()[0]}
    return {"config": str(path), "findings": diagnosis["findings"], "placeholders": diagnosis["placeholders"],
            "command": " ".join(["retain train", str(path)] + diagnosis["recipe"])}


def next_steps_markdown(report: dict) -> list[str]:
    lines = []
    for label, advice in report.get("next_steps", {}).items():
        lines += [f"## {label}: what to try next", ""]
        if "error" in advice:
            lines += [f"`retain doctor {advice['config']}` could not read the run's config here: {advice['error']}", ""]
            continue
        lines += [f"From `retain doctor {advice['config']}`:", ""]
        lines += [f"- **{f['cause']}**: {f['evidence']}. Set: `{f['fix']}`" for f in advice["findings"]]
        lines += ["", "All of it at once:", "", f"    {advice['command']}", ""]
        lines += [f"({name}: {what})" for name, what in advice["placeholders"].items()]
        lines += ["See docs/mitigations.md for what each protection costs and keeps.", ""]
    return lines


def next_steps_html(report: dict) -> list[str]:
    esc = html.escape
    parts = []
    for label, advice in report.get("next_steps", {}).items():
        parts.append(f"<div class='next'><h2>{esc(label)}: what to try next</h2>")
        if "error" in advice:
            parts.append(f"<p><code>retain doctor {esc(advice['config'])}</code> could not read the run's config "
                         f"here: {esc(advice['error'])}</p></div>")
            continue
        parts.append(f"<p>From <code>retain doctor {esc(advice['config'])}</code>:</p><ul>")
        parts += [f"<li><b>{esc(f['cause'])}</b>: {esc(f['evidence'])}. Set: <code>{esc(f['fix'])}</code></li>"
                  for f in advice["findings"]]
        parts.append(f"</ul><p>All of it at once:</p><pre>{esc(advice['command'])}</pre>")
        parts += [f"<p><small>{esc(name)}: {esc(what)}</small></p>" for name, what in advice["placeholders"].items()]
        parts.append("<p>See docs/mitigations.md for what each protection costs and keeps.</p></div>")
    return parts
