"""`retain config --explain` for study files, beside the run config's keys (retain.config.explain).

    retain config --explain sweep                  a study kind: its keys, one a line, with their defaults
    retain config --explain tune.seeds             one key: its type, default and help
    retain config --explain configs/sweeps/lab.yaml    a study file: checked strictly, then each key's value
                                                   (given or default) and help

The kinds are the table below; their keys are the dataclass fields of each study config, walked as the run
config's are, so that nothing is written twice.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from retain.config import explain as run_config
from retain.studies.continual.plan import SequenceConfig
from retain.core.schema import ConfigError, read_yaml
from retain.studies.common import load_study
from retain.studies.sweep.run import SweepConfig
from retain.studies.tune.space import TuneConfig

# kind -> (its config, the command that runs it, the key that tells a file of this kind from the others)
STUDIES = {"sweep": (SweepConfig, "retain sweep", ("strategies", "grid")),
           "tune": (TuneConfig, "retain tune", ("space",)),
           "sequence": (SequenceConfig, "retain sequence", ("stages",))}
SHOWN = 60  # characters of a value shown for a file's key; a longer one is cut


def study_explanations() -> dict[str, str]:
    """`KIND` and `KIND.KEY` -> what `--explain` prints, for every study kind."""
    out = {}
    for kind, (cls, command, _) in STUDIES.items():
        out[kind] = run_config.fields_table(cls, kind, f"`{command} FILE.yaml`: {run_config.first_line(cls)}")
        out.update(run_config.walk(cls, kind))
    return out


def study_kind(data: dict, path: Path) -> str:
    """The kind of study file `data` is, by the key only that kind has."""
    for kind, (_, _, marks) in STUDIES.items():
        if any(mark in data for mark in marks):
            return kind
    hint = "; ".join(f"{kind}: {' or '.join(marks)}" for kind, (_, _, marks) in STUDIES.items())
    raise ConfigError(f"{path}: not a study file: none of the keys that name one ({hint}) — a run config's keys "
                      "are explained by section: retain config --explain training")


def shown(value) -> str:
    text = run_config.yaml_value(value)
    if len(text) <= SHOWN:
        return text
    count = f" ({len(value)} entries)" if isinstance(value, (dict, list, tuple)) else ""
    return text[:SHOWN - 3] + "..." + count


def explain_file(path: Path) -> str:
    """A study file, checked as its command checks it, then each key: its value (or default) and help."""
    data = read_yaml(path, "study file")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of a study file's keys at the top level")
    kind = study_kind(data, path)
    cls, command, _ = STUDIES[kind]
    study = load_study(cls, path, f"{kind} file")
    rows = [(f"{f.name} = {shown(getattr(study, f.name))}" + ("" if f.name in data else " (default)"),
             run_config.help_of(f)) for f in dataclasses.fields(cls)]
    width = max(len(left) for left, _ in rows)
    return "\n".join([f"{path}: a {kind} file (`{command} {path}`), valid", *(f"  {a:<{width}}  {b}" for a, b in rows),
                      f"(retain config --explain {kind}.KEY: a key's type and default)"])


def explain(key: str) -> str:
    """What `retain config --explain KEY` prints: a run config's key, a study kind or key, or a study file."""
    key = key.strip()
    if key.endswith((".yaml", ".yml")):
        return explain_file(Path(key))
    known = {**run_config.explanations(), **study_explanations()}
    known[""] += ("\nstudy files: " + ", ".join(STUDIES)
                  + " (retain config --explain sweep: its keys; retain config --explain FILE.yaml: a file's values)")
    return run_config.explain(key, known)
