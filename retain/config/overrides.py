"""Dotted keys: `training.lr=1e-4` on the command line, `mitigations.lora.r: 16` in a sweep or tune file.

One setter for both, so a key that walks into a value (`training.lr.x`) is the same error everywhere.
"""

from __future__ import annotations

from typing import Any

from retain.core.errors import ConfigError
from retain.core.schema import parse_yaml


def set_dotted(data: dict, dotted: str, value: Any, where: str = "") -> None:
    """Set `data[a][b][c] = value` for dotted "a.b.c", creating absent or empty (`training:`) sections.

    ConfigError (prefixed with `where`) if a key is empty or a step of the path is a value, not a section.
    """
    prefix = f"{where}: " if where else ""
    keys = dotted.strip().split(".")
    if not all(keys):
        raise ConfigError(f"{prefix}{dotted!r}: empty key — write section.key, e.g. training.lr")
    node = data
    for depth, key in enumerate(keys[:-1]):
        if node.get(key) is None:
            node[key] = {}
        node = node[key]
        if not isinstance(node, dict):
            raise ConfigError(f"{prefix}{dotted!r}: {'.'.join(keys[:depth + 1])} is a value, not a section")
    node[keys[-1]] = value


def apply_overrides(data: dict, overrides: list[str] | tuple[str, ...]) -> dict:
    """Apply `a.b.c=value` strings (the value read as YAML) to a nested dict, in place; returns it."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key=value, e.g. training.lr=1e-4")
        dotted, raw = item.split("=", 1)
        set_dotted(data, dotted, parse_yaml(raw, f"override {item!r}", with_line=False), f"override {item!r}")
    return data
