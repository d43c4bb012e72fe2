"""The role order is written once (retain.mitigations.roles.ORDER); the loop's docstring and docs/contributing.md show it."""

from pathlib import Path

import retain.training.loop as loop
from retain.mitigations import MITIGATIONS
from retain.mitigations.roles import DUTIES, ORDER, ROLE_METHODS, describe_order

CONTRIBUTING = Path(__file__).resolve().parents[1] / "docs" / "contributing.md"


def indented(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines())


def test_the_loop_docstring_and_the_contributor_doc_show_the_one_order():
    order = describe_order()
    assert indented(order) in loop.__doc__
    assert order in CONTRIBUTING.read_text(encoding="utf-8")


def test_every_role_method_is_named_by_the_order_and_every_mitigation_plays_a_role():
    assert len(set(ROLE_METHODS)) == len(ROLE_METHODS) == sum(len(r.methods) for r in ORDER + DUTIES)
    for name, (_options, cls) in MITIGATIONS.items():
        assert any(callable(getattr(cls, m, None)) for r in ORDER for m in r.methods), f"{name} plays no role"
