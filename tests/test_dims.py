"""Symbolic sizes: normal forms, provenance through arithmetic, guards, printing.

Values are checked against plain Python integer arithmetic (the independent
reference); expressions are checked by evaluating the printed Python.
"""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dslc.ir.dims import FloorDiv, Param, Poly, Size, Sym, SymbolicDecision, Var, plain, recording, to_python


def p(name, v):
    return Size.param(name, v)


def evaluate(size: Size, env: dict) -> int:
    """Evaluate the printed expression as Python: the expression must mean the value."""
    return eval(to_python(size.expr), {}, dict(env))  # noqa: S307 - our own printed arithmetic


def test_linear_combinations_normalize():
    h = p("h", 28)
    out = (h + 2 * 1 - 3) // 1 + 1
    assert to_python(out.expr) == "h" and plain(out) == 28


def test_floor_division_by_a_parameter_simplifies():
    image, patch = p("image", 224), p("patch", 16)
    n = (image - patch) // patch + 1
    assert to_python(n.expr) == "image // patch" and plain(n) == 14
    assert to_python(((image // patch) ** 2 + 1).expr) == "(image // patch) ** 2 + 1"


def test_constants_fold_to_plain_ints():
    assert type(p("a", 3) - p("a", 3)) is int


@given(a=st.integers(1, 60), b=st.integers(1, 12), c=st.integers(-5, 5), k=st.integers(1, 4))
def test_expressions_mean_their_values(a, b, c, k):
    A, Bp = p("a", a), p("b", b)
    exprs = [A + c, A * k + Bp, (A + c * Bp) // k, A // Bp, A % Bp, (A * Bp) // Bp, (A + Bp) ** 2 - c,
             k * A - Bp * 3]
    refs = [a + c, a * k + b, (a + c * b) // k, a // b, a % b, a, (a + b) ** 2 - c, k * a - b * 3]
    for e, r in zip(exprs, refs):
        assert plain(e) == r
        if isinstance(e, Size):
            assert evaluate(e, {"a": a, "b": b}) == r, to_python(e.expr)


def test_decisions_record_guards():
    with recording() as guards:
        s = p("stride", 1)
        assert (s != 1) is False
        assert p("dim", 768) == 768
    assert [g.to_python() for g in guards] == ["stride == 1", "dim == 768"]


def test_equal_expressions_need_no_guard():
    with recording() as guards:
        a = p("dim", 64)
        assert a == a * 1
    assert guards == []


def test_guards_outside_recording_are_dropped():
    assert p("x", 3) > 2  # nothing active: no error, nothing kept


def test_symbolic_dims():
    B, T = Sym.var("B"), Sym.var("T")
    assert str(B * T * 64) == "64 * B * T"
    assert (B * 64) // 64 == B
    assert str((T - 3) // 2 + 1) == "(T - 3) // 2 + 1"
    assert B != T
    with pytest.raises(SymbolicDecision):
        bool(B > 2)


def test_symbolic_times_parameter_keeps_both():
    T, dim = Sym.var("T"), p("dim", 64)
    assert str(T * dim) == "T * dim"


def test_floordiv_atoms_substitute():
    fd = Poly.atom(FloorDiv(Poly.atom(Param("image")), Poly.atom(Param("patch"))))
    out = fd.subst(lambda a: Poly.const(224) if a == Param("image") else
                   (Poly.const(16) if a == Param("patch") else None))
    assert out.is_const() and out.const_value() == 14


def test_var_atoms_print_as_names():
    assert to_python(Poly.atom(Var("B")) * Poly.const(3)) == "3 * B"


def test_the_ir_is_a_networkx_graph():
    import os

    import networkx as nx
    from support import ROOT

    import dslc
    g = dslc.load(os.path.join(ROOT, "examples", "language.dl")).graph("TwoTower")
    assert isinstance(g.nx, nx.MultiDiGraph)
    assert g.nx.number_of_nodes() == len(g.nodes)
    assert nx.is_directed_acyclic_graph(g.nx)
    g.verify()
    assert [n.id for n in g.topological()] == list(g.nodes)
