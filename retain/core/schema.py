"""Strict loading of frozen config dataclasses from YAML dicts.

`build(cls, data, where)` turns a mapping into `cls`, checking every key and type; an unknown
key, a wrong type or a value a section's `validate()` rejects raises ConfigError naming the
dotted key and the file. Sections live beside the code they configure; this module only
knows how to read them.

`read_yaml(path)` reads any of retain's YAML files (run configs, sweeps, tasks, suites) the same
strict way: UTF-8 (a BOM is fine), a key given twice in one mapping is an error, and every
problem names the file and line.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from retain.core.errors import ConfigError

__all__ = ["ConfigError", "build", "coerce", "parse_yaml", "read_yaml", "to_dict"]


class DuplicateKeyError(yaml.constructor.ConstructorError):
    pass


class StrictLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last silently)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            first_line: dict = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor` may be overridden, by design
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    seen = key in first_line
                except TypeError:  # an unhashable key: SafeLoader reports it itself
                    continue
                if seen:
                    raise DuplicateKeyError(None, None, f"key {key!r} given twice (first on line "
                                            f"{first_line[key] + 1}) — keep one", key_node.start_mark)
                first_line[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


def parse_yaml(text: str, where: str, with_line: bool = True) -> Any:
    """YAML text, strictly (no duplicate keys); ConfigError `WHERE:LINE: ...` for a syntax error."""
    try:
        return yaml.load(text, Loader=StrictLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = f":{mark.line + 1}" if mark is not None and with_line else ""
        if isinstance(e, DuplicateKeyError):
            raise ConfigError(f"{where}{line}: {e.problem}") from None
        problem = " ".join(x for x in (e.context, e.problem) if x)
        raise ConfigError(f"{where}{line}: not valid YAML: {problem}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{where}: not valid YAML: {e}") from None


def read_yaml(path: str | Path, what: str = "file") -> Any:
    """The YAML document at `path`: UTF-8 (a BOM is fine), no duplicate keys.

    Every problem is a ConfigError naming the file (and the line where there is one).
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: {what} not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a {what}") from None
    return parse_yaml(decode_utf8(raw, path), str(path))


def decode_utf8(raw: bytes, path: str | Path) -> str:
    """`raw` as text (a leading UTF-8 BOM dropped); ConfigError naming the line of a byte that is not UTF-8."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        column = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        raise ConfigError(f"{path}:{line}: not UTF-8 text (byte 0x{raw[e.start]:02x} at column {column}) — "
                          "save the file as UTF-8") from None


def _type_name(tp) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def coerce(value: Any, tp, key: str) -> Any:
    """Check `value` against the annotation `tp` (YAML already gives ints, floats, bools, lists)."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return coerce(value, option, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{key}: {value!r} is not {_type_name(tp)}")
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(repr, allowed))}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        (item_tp, *_) = typing.get_args(tp) or (Any,)
        return tuple(coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        return build(tp, value, key)
    if tp is Any:
        return value
    if tp is float:
        # YAML reads `1e-4` as a string (YAML 1.1); accept ints and numeric strings for floats.
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config annotation {tp!r} at {key}")


def build(cls, data: Any, key: str = ""):
    """Build dataclass `cls` from mapping `data`, strictly. `key` is the dotted prefix for errors."""
    prefix = f"{key}." if key else ""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{key or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{prefix}{unknown[0]}: unknown key (known: {', '.join(sorted(fields))})")
    values = {}
    for name, field in fields.items():
        if name in data:
            values[name] = coerce(data[name], hints[name], prefix + name)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{prefix}{name}: required key is missing")
    obj = cls(**values)
    validate = getattr(obj, "validate", None)
    if validate is not None:
        for bad_key, message in validate():
            raise ConfigError(f"{prefix}{bad_key}: {message}")
    return obj


def to_dict(obj) -> Any:
    """A plain-data copy of a config (tuples become lists) for writing back to YAML."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    return obj


def field_help(options, key: str) -> str:
    """The help text of field `key` of a dataclass (an instance or the class): what the option takes."""
    return next((f.metadata.get("help", key) for f in dataclasses.fields(options) if f.name == key), key)
