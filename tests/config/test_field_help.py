"""Every config key carries a one-line help, and `retain config --explain KEY` prints it."""

import dataclasses
import typing

import pytest

from retain.cli import main, parser
from retain.config import RunConfig
from retain.config.explain import SECTIONS, first_line
from retain.mitigations import MITIGATIONS


def config_dataclasses() -> list[type]:
    """RunConfig, its section dataclasses (and any nested in them), and every options class of the table."""
    found, todo = [], [RunConfig, *(options for options, _ in MITIGATIONS.values())]
    while todo:
        cls = todo.pop()
        if cls in found:
            continue
        found.append(cls)
        todo += [tp for tp in typing.get_type_hints(cls).values() if dataclasses.is_dataclass(tp)]
    return found


CLASSES = config_dataclasses()


@pytest.mark.parametrize("cls", CLASSES, ids=lambda cls: cls.__name__)
def test_every_config_field_has_a_one_line_help(cls):
    missing = [f.name for f in dataclasses.fields(cls) if not str(f.metadata.get("help", "")).strip()]
    assert not missing, f"{cls.__name__}: fields without metadata={{'help': ...}}: {', '.join(missing)}"
    multiline = [f.name for f in dataclasses.fields(cls) if "\n" in f.metadata["help"]]
    assert not multiline, f"{cls.__name__}: a help is one line: {', '.join(multiline)}"


def test_the_walk_covers_every_section_and_every_options_class():
    names = {cls.__name__ for cls in CLASSES}
    assert {"RunConfig", "ModelConfig", "DataConfig", "TrainingConfig", "OutputConfig"} <= names
    assert {options.__name__ for options, _ in MITIGATIONS.values()} <= names
    assert set(SECTIONS) == {f.name for f in dataclasses.fields(RunConfig)}


def explain(capsys, key: str) -> tuple[int, str, str]:
    code = main(["config", "--explain", key])
    out, err = capsys.readouterr()
    return code, out, err


def help_of(cls: type, name: str) -> str:
    return next(f for f in dataclasses.fields(cls) if f.name == name).metadata["help"]


@pytest.mark.parametrize("key, cls, name, type_and_default", [
    ("training.lr", "TrainingConfig", "lr", "float (default 2.0e-05)"),
    ("mitigations.lora.r", "LoraOptions", "r", "int (default 8)"),
    ("model.gguf_file", "ModelConfig", "gguf_file", "str | null (default null)"),
    ("output.dir", "OutputConfig", "dir", "str (required)"),
])
def test_explain_a_key_prints_its_type_default_and_help(capsys, key, cls, name, type_and_default):
    code, out, _ = explain(capsys, key)
    assert code == 0
    assert out.splitlines()[0] == f"{key}: {type_and_default}"
    assert out.splitlines()[1].strip() == help_of(next(c for c in CLASSES if c.__name__ == cls), name)


def test_explain_a_section_lists_its_keys_one_a_line(capsys):
    from retain.config import TrainingConfig

    code, out, _ = explain(capsys, "training")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("training: ")
    for field in dataclasses.fields(TrainingConfig):
        (line,) = [line for line in lines if line.split()[0] == field.name]
        assert line.endswith(field.metadata["help"])
    assert "lr = 2.0e-05" in out


def test_explain_mitigations_lists_the_table_with_each_class_first_docstring_line(capsys):
    code, out, _ = explain(capsys, "mitigations")
    assert code == 0
    rows = {line.split()[0]: line.split(None, 1)[1] for line in out.splitlines()[1:-1]}
    assert list(rows) == list(MITIGATIONS)
    for name, (_, cls) in MITIGATIONS.items():
        assert rows[name] == first_line(cls) != ""


def test_explain_an_unknown_key_is_a_user_error_with_close_matches(capsys):
    code, out, err = explain(capsys, "training.lrr")
    assert code == 2 and out == ""
    assert "training.lrr" in err and "did you mean training.lr" in err
    code, _, err = explain(capsys, "mitigations.lora.rank")
    assert code == 2 and "mitigations.lora.r" in err


def test_train_help_lists_the_sections_and_points_to_explain(capsys):
    with pytest.raises(SystemExit) as exit_:
        parser().parse_args(["train", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for name in SECTIONS:
        assert f"  {name}:" in out
    assert "retain config --explain KEY" in out
