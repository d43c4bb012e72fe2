"""The objectives table (retain.objectives): every row implements the declared Objective protocol, and the loop
asks the objective instead of branching on which one it is."""

import ast
import inspect
import typing

import pytest

from retain.config import config_from_dict
from retain.config.schema import TrainingConfig
from retain.objectives import OBJECTIVES, SFT, Objective, make_objective
from retain.objectives.protocol import FACTS, METHODS
from conftest import REPO_ROOT

TRAINING = REPO_ROOT / "retain" / "training"


def arity(member) -> int:
    """The arguments a caller passes to a class's method, staticmethod or classmethod (self and cls aside)."""
    if isinstance(member, staticmethod):
        return len(inspect.signature(member.__func__).parameters)
    function = member.__func__ if isinstance(member, classmethod) else member
    return len(inspect.signature(function).parameters) - 1


def unimplemented(cls: type) -> list[str]:
    """The protocol's methods that `cls` does not define itself (inheriting the protocol's stub does not count), or
    defines taking another number of arguments."""
    problems = []
    for name in METHODS:
        owner = next((c for c in cls.__mro__ if name in c.__dict__), None)
        if owner is None or owner is Objective:
            problems.append(name)
        elif arity(owner.__dict__[name]) != arity(vars(Objective)[name]):
            problems.append(f"{name}: takes {arity(owner.__dict__[name])} arguments")
    return problems


def undeclared(cls: type) -> list[str]:
    """What `cls` leaves to chance: not saying it is an Objective in its header, or a fact (name, supervised,
    plain_next_token_loss) that no class of its own sets (the protocol only annotates them)."""
    problems = [] if Objective in cls.__mro__[1:] else ["does not subclass Objective"]
    for fact in FACTS:
        owner = next((c for c in cls.__mro__ if fact in c.__dict__), None)
        if owner is None or owner is Objective:
            problems.append(fact)
    return problems


def test_the_protocol_is_declared_and_lists_what_the_loop_calls():
    assert getattr(Objective, "_is_protocol", False) and typing.Protocol in Objective.__mro__
    declared = {k for k, v in vars(Objective).items() if callable(v) or isinstance(v, classmethod)} - set(dir(object))
    assert declared - {k for k in declared if k.startswith("_")} == set(METHODS)
    assert set(typing.get_type_hints(Objective)) == set(FACTS)


def test_the_table_is_the_schemas_choice():
    choices = typing.get_args(typing.get_type_hints(TrainingConfig)["objective"])
    assert list(OBJECTIVES) == list(choices) and list(OBJECTIVES)[0] == "sft"  # sft first: the default


def test_the_checker_finds_a_missing_or_misnamed_method():
    class Partial(SFT):
        pass

    assert unimplemented(Partial) == []  # inherited from an implementation: fine

    class Stub(Objective):
        name, supervised, plain_next_token_loss = "stub", True, True

        def count(self, batch, pad_id):  # one argument too many
            return 0

    assert unimplemented(Stub)[0] == "from_config" and "count: takes 2 arguments" in unimplemented(Stub)

    # every method, but matched by name only: not declared in its header, and no facts
    Undeclared = type("Undeclared", (), {name: vars(SFT)[name] for name in METHODS})
    assert unimplemented(Undeclared) == []
    assert undeclared(Undeclared) == ["does not subclass Objective", *FACTS]
    assert undeclared(Stub) == [] and undeclared(Partial) == []


@pytest.mark.parametrize("name", list(OBJECTIVES))
def test_each_row_implements_the_protocol(name, make_config):
    cls = OBJECTIVES[name]
    assert cls.name == name
    assert undeclared(cls) == []
    assert unimplemented(cls) == []
    training = {"objective": name}
    if name == "grpo":
        training["grpo"] = {"rewards": {"digits": {"kind": "format", "pattern": r".*\d.*"}}}
    objective = make_objective(config_from_dict(make_config(training=training)), [])
    assert type(objective) is cls and isinstance(objective, Objective)
    assert all(isinstance(getattr(objective, fact), bool) for fact in FACTS[1:])
    assert objective.supervised is (name == "sft")


def test_sft_declares_itself_and_takes_the_token_weights(make_config):
    from retain.mitigations import build_mitigations

    config = config_from_dict(make_config(mitigations={"dft": {}, "l2sp": {"weight": 0.1}}))
    mitigations = build_mitigations(config.mitigations)
    sft = make_objective(config, mitigations)
    assert [type(m).__name__ for m in sft.token_weights] == ["DFT"]
    assert not sft.plain_next_token_loss  # DFT changes the loss's scale: the collapse watch stands down
    assert make_objective(config_from_dict(make_config())).plain_next_token_loss


def test_the_loop_does_not_branch_on_the_objective_being_none():
    for path in TRAINING.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Compare) and any(isinstance(op, (ast.Is, ast.IsNot)) for op in node.ops):
                sides = [node.left, *node.comparators]
                named = [s for s in sides if isinstance(s, (ast.Name, ast.Attribute))
                         and (getattr(s, "id", None) or getattr(s, "attr", None)) == "objective"]
                assert not named, f"{path.name}:{node.lineno}: a branch on the objective; ask the Objective instead"
