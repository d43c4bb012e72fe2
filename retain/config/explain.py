"""`retain config --explain KEY`: what a config key means, from the help string each field carries.

    retain config --explain                     the sections of a run config
    retain config --explain training            a section: its keys, one a line, with their defaults
    retain config --explain training.lr         one key: its type, default and help
    retain config --explain mitigations         every mitigation in the table, one line each
    retain config --explain mitigations.lora    a mitigation's options; mitigations.lora.r one of them

Nothing is written here twice: the sections and their keys are RunConfig's dataclass fields, walked;
the mitigations are the table in retain.mitigations, each described by its class docstring's first line.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import sys
import types
import typing
from typing import Literal, Union

import yaml

from retain.config.schema import RunConfig
from retain.core.errors import ConfigError
from retain.mitigations import MITIGATIONS
from retain.core.schema import to_dict

# The order a config file is written in; RunConfig's own order is forced by which sections have defaults.
SECTIONS = ("model", "data", "training", "mitigations", "output")


def help_of(field: dataclasses.Field) -> str:
    return field.metadata.get("help", "")


def section_help() -> dict[str, str]:
    """Section name -> its one-line description (the help of RunConfig's field), in SECTIONS order."""
    fields = {f.name: f for f in dataclasses.fields(RunConfig)}
    return {name: help_of(fields[name]) for name in SECTIONS}


def sections_text(indent: str = "  ") -> str:
    """The sections of a run config, one line each (for `retain train --help` and `--explain` alone)."""
    described = section_help()
    width = max(map(len, described))
    return "\n".join(f"{indent}{name + ':':<{width + 1}}  {text}" for name, text in described.items())


def first_line(cls: type) -> str:
    """The first line of `cls`'s own docstring (not a base class's), else of its module's."""
    doc = cls.__dict__.get("__doc__") or sys.modules[cls.__module__].__doc__ or ""
    return doc.strip().splitlines()[0].strip() if doc.strip() else ""


def type_name(tp) -> str:
    """An annotation as a YAML author reads it: `str | null`, `cosine | linear | constant`, `list of str`."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return " | ".join(type_name(arg) for arg in typing.get_args(tp))
    if origin is Literal:
        return " | ".join(yaml_value(arg) for arg in typing.get_args(tp))
    if origin in (list, tuple):
        return f"list of {type_name(typing.get_args(tp)[0])}" if typing.get_args(tp) else "list"
    if origin is dict or tp is dict:
        return "mapping"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def yaml_value(value) -> str:
    """`value` as it would be written in a YAML config: null, true, 2.0e-05, [k_proj, v_proj]."""
    value = to_dict(value)
    if isinstance(value, str) and not value.isprintable():  # a newline: YAML would fold it over lines
        return json.dumps(value)
    lines = yaml.safe_dump(value, default_flow_style=True, width=sys.maxsize).strip().splitlines()
    return " ".join(line for line in lines if line != "...")  # "..." ends a bare scalar's document


def default_text(field: dataclasses.Field) -> str | None:
    """The field's default as YAML, or None if the key is required."""
    if field.default is not dataclasses.MISSING:
        return yaml_value(field.default)
    if field.default_factory is not dataclasses.MISSING:
        return yaml_value(field.default_factory())
    return None


def field_text(key: str, field: dataclasses.Field, tp) -> str:
    default = default_text(field)
    given = "required" if default is None else f"default {default}"
    return f"{key}: {type_name(tp)} ({given})\n  {help_of(field)}"


def fields_table(cls: type, key: str, title: str) -> str:
    """A section: `KEY: title`, then its keys one a line (name = default, help)."""
    rows = []
    for field in dataclasses.fields(cls):
        default = default_text(field)
        rows.append((field.name + (" (required)" if default is None else f" = {default}"), help_of(field)))
    if not rows:  # a mitigation without options (dft): `dft: {}` or `dft: true`
        return f"{key}: {title}\n  (no options: `{key.rsplit('.', 1)[-1]}: {{}}`)"
    width = max(len(left) for left, _ in rows)
    lines = [f"{key}: {title}", *(f"  {left:<{width}}  {text}" for left, text in rows)]
    return "\n".join([*lines, f"(retain config --explain {key}.KEY: a key's type and default)"])


def explanations() -> dict[str, str]:
    """Every dotted key a run config has -> what `--explain` prints for it ("" -> the sections)."""
    out = {"": "the sections of a run config:\n" + sections_text()
               + "\n(retain config --explain SECTION: its keys)"}
    described = section_help()
    hints = typing.get_type_hints(RunConfig)
    for name in SECTIONS:
        if name == "mitigations":
            out.update(mitigation_explanations(described[name]))
            continue
        cls = hints[name]
        out[name] = fields_table(cls, name, described[name])
        out.update(walk(cls, name))
    return out


def nested(tp) -> type | None:
    """The dataclass a field holds: the annotation itself, or X in `X | None` and `list of X`; else None."""
    if dataclasses.is_dataclass(tp):
        return tp
    return next((arg for arg in typing.get_args(tp) if dataclasses.is_dataclass(arg)), None)


def walk(cls: type, prefix: str) -> dict[str, str]:
    """`prefix.KEY` -> its explanation, for every field of dataclass `cls`."""
    hints = typing.get_type_hints(cls)
    out = {f"{prefix}.{f.name}": field_text(f"{prefix}.{f.name}", f, hints[f.name]) for f in dataclasses.fields(cls)}
    for f in dataclasses.fields(cls):  # a nested section (training.dpo, a sequence's stages): its keys too
        if nested(hints[f.name]) is not None:
            out.update(walk(nested(hints[f.name]), f"{prefix}.{f.name}"))
    return out


def mitigation_explanations(title: str) -> dict[str, str]:
    """`mitigations`, `mitigations.NAME` and `mitigations.NAME.KEY`, from the table."""
    width = max(map(len, MITIGATIONS))
    rows = [f"  {name:<{width}}  {first_line(cls)}" for name, (_, cls) in MITIGATIONS.items()]
    out = {"mitigations": "\n".join([f"mitigations: {title}", *rows,
                                     "(retain config --explain mitigations.NAME: its options)"])}
    for name, (options, cls) in MITIGATIONS.items():
        key = f"mitigations.{name}"
        out[key] = fields_table(options, key, first_line(cls))
        out.update(walk(options, key))
    return out


def explain(key: str, known: dict[str, str] | None = None) -> str:
    """What `retain config --explain KEY` prints from `known` (default: the run config's explanations());
    ConfigError (with close matches) for an unknown key."""
    key = key.strip()
    known = explanations() if known is None else known
    if key in known:
        return known[key]
    leaf = key.rsplit(".", 1)[-1]
    # `lr` or `r` alone: offer every key that ends so, as well as the keys spelled alike
    close = [*difflib.get_close_matches(key, known, n=3, cutoff=0.6),
             *(k for k in known if k.rsplit(".", 1)[-1] == leaf)]
    listing = "retain config --explain lists the sections"
    hint = f"did you mean {', '.join(dict.fromkeys(close))}? ({listing})" if close else listing
    raise ConfigError(f"{key!r}: no such config key — {hint}")
