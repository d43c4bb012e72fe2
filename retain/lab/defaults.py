"""What the lab supplies: the one module that knows which settings retain-tiny's runs may leave out.

retain-tiny (retain/lab/model) ships with its own general text and capability tasks, so a lab config may leave
out the general data of replay, EWC, SI and the early warnings, and the retention budget's suite: they fill in
from the lab's files (`lab:` paths, retain.core.paths). For any other model the lab's data say nothing about what
it knew, so an unset one is a ConfigError naming the option (retain.config.fill_lab_defaults).
"""

from __future__ import annotations

from pathlib import Path

from retain.core.paths import LAB_MODEL_DIR

GENERAL_DATA = "lab:general.jsonl"  # glosses of the lab's world, in the words retain-tiny was pretrained on
# the capabilities the lab's budget keeps: facts asked both ways, a choice, arithmetic and plain English
BUDGET_SUITE = "capital_recall,capital_reverse,currency_choice,continent_choice,addition,english"

# mitigation -> option -> the lab's value, filled in when a retain-tiny run leaves it unset
FILLS = {
    "replay": {"file": GENERAL_DATA},
    "ewc": {"file": GENERAL_DATA},
    "si": {"file": GENERAL_DATA},
    "early_warnings": {"general": GENERAL_DATA},
    "retention": {"suite": BUDGET_SUITE},
}


def lab_fills(name: str, options) -> dict[str, str]:
    """The options of mitigation `name` that the lab fills when unset (replay's file only when it replays a file:
    `source: self` writes its own)."""
    if name == "replay" and getattr(options, "source", "file") == "self":
        return {}
    return FILLS.get(name, {})


def uses_lab_model(model) -> bool:
    """Whether a `model:` section (retain.model.loading.ModelConfig) names retain-tiny, by alias or by its folder."""
    if model.name == "retain-tiny":
        return True
    path = Path(model.name).expanduser()
    return path.is_dir() and path.resolve() == LAB_MODEL_DIR.resolve()
