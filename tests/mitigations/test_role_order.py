"""The role order is written once (retain.mitigations.roles.ORDER); the loop's docstring and docs/contributing.md show it."""


import pytest

import retain.training.loop as loop
from retain.mitigations import MITIGATIONS
from retain.mitigations.roles import (DUTIES, ORDER, ROLE_METHODS, LossTerm, Setup, check_roles, describe_order,
                                     implements)
from conftest import REPO_ROOT

CONTRIBUTING = REPO_ROOT / "docs" / "contributing.md"


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


def test_each_mitigation_declares_in_its_header_the_roles_it_plays():
    # the class header says what the loop will call: `class KLToBase(Setup, LossTerm)`, checked when the table loads
    for name, (_options, cls) in MITIGATIONS.items():
        assert {r.protocol for r in ORDER + DUTIES if r.protocol in cls.__mro__} == \
            {r.protocol for r in ORDER + DUTIES if implements(cls, r)}, name
    from retain.mitigations.budget import RetentionBudget
    from retain.mitigations.distill import KLToBase
    assert [b.__name__ for b in KLToBase.__bases__] == ["Setup", "LossTerm"]
    assert {b.__name__ for b in RetentionBudget.__bases__} == {"Setup", "Monitor", "Stateful", "WritesFiles"}


def test_a_role_declared_but_not_implemented_or_implemented_but_not_declared_is_refused():
    class Undeclared:  # plays LossTerm without saying so
        def loss_term(self, model, batch, step):
            return None

    class Empty(Setup, LossTerm):  # says Setup, implements only loss_term: setup would be the protocol's stub
        def loss_term(self, model, batch, step):
            return None

    class Declared(LossTerm):
        def loss_term(self, model, batch, step):
            return None

    for cls, match in ((Undeclared, r"declares the roles \[\] in its header but implements \['LossTerm'\]"),
                       (Empty, r"declares the roles \['LossTerm', 'Setup'\].*implements \['LossTerm'\]")):
        with pytest.raises(TypeError, match=match):
            check_roles(cls)
    check_roles(Declared)
