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


def test_a_negated_floor_division_keeps_its_parentheses():
    # `-x // 2` is `(-x) // 2` in Python: -(x // 2) must say so (it differs for odd x)
    x = Poly.atom(Param("x"))
    src = to_python(-x.floordiv(Poly.const(2)) - Poly.const(1))
    assert src == "-(x // 2) - 1"
    assert all(eval(src, {"x": v}) == -(v // 2) - 1 for v in range(-5, 6))  # noqa: S307


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


# ---------------------------------------------------------------- float expressions of parameters

def _float_tree(draw, depth: int):
    """A random compile-time float expression over an int parameter `n` and a float parameter `s`."""
    from dslc.ir.dims import Real, math_function
    leaf = st.sampled_from(["n", "s", 0.5, 2.0, -1.5, 3, 7])
    if depth == 0 or draw(st.booleans()):
        v = draw(leaf)
        return v, v
    kind = draw(st.sampled_from(["+", "-", "*", "/", "**", "neg", "sqrt", "exp"]))
    a, a_src = _float_tree(draw, depth - 1)
    if kind == "neg":
        return ("neg", a_src), ("neg", a)
    if kind in ("sqrt", "exp"):
        return (kind, a_src), (kind, a)
    b, b_src = _float_tree(draw, depth - 1)
    del Real, math_function
    return (kind, a_src, b_src), (kind, a, b)


@st.composite
def float_trees(draw):
    return _float_tree(draw, 3)[0]


def _evaluate(tree, env):
    """The tree evaluated on `env`'s values (Size and Real, or plain numbers) as the evaluator does."""
    import math

    from dslc.ir.dims import math_function
    if isinstance(tree, str):
        return env[tree]
    if not isinstance(tree, tuple):
        return tree
    op, *args = tree
    vals = [_evaluate(a, env) for a in args]
    if op == "neg":
        return -vals[0]
    if op in ("sqrt", "exp"):
        plain_env = all(not isinstance(v, (Size,)) and type(v) in (int, float) for v in vals)
        return getattr(math, op)(vals[0]) if plain_env else math_function(op, vals[0])
    a, b = vals
    # a plain float left of a Size: the evaluator asks the size's reflected operator (as here)
    if type(a) is float and isinstance(b, Size):
        return {"+": b.__radd__, "-": b.__rsub__, "*": b.__rmul__, "/": b.__rtruediv__, "**": b.__rpow__}[op](a)
    return {"+": lambda: a + b, "-": lambda: a - b, "*": lambda: a * b, "/": lambda: a / b,
            "**": lambda: a ** b}[op]()


@given(float_trees(), st.integers(1, 40), st.floats(0.1, 4.0))
def test_a_float_expression_of_parameters_prints_python_that_computes_the_same_double(tree, n, s):
    """What the generated class computes from its own arguments is bit-equal to what dslc computed,
    at the compiled values and at others."""
    import math

    from dslc.ir.dims import Real, plain_float
    try:
        with recording() as guards:
            value = _evaluate(tree, {"n": Size.param("n", 8), "s": Real(1.25, Poly.atom(Param("s")))})
        if not isinstance(value, Real) or guards:
            return   # a number with no parameter in it, or one whose value had to be fixed
        src = to_python(value.expr)
        assert eval(src, {"math": math}, {"n": 8, "s": 1.25}) == plain_float(value)
        other = _evaluate(tree, {"n": n, "s": s})
    except (ZeroDivisionError, OverflowError, ValueError):
        return
    if isinstance(other, complex):
        return
    try:
        again = eval(src, {"math": math}, {"n": n, "s": s})
    except (ZeroDivisionError, OverflowError, ValueError):
        return
    assert again == other or (math.isnan(again) and math.isnan(other))


def test_divisibility_by_a_parameter_prints_as_a_remainder():
    """A reshape into `h` heads of `d // h` relies on `h * (d // h) == d`: written `d % h == 0`,
    as a hand-written check would, whichever side the compiler put it on; and the two
    sides' forms are one fact (one guard, not two)."""
    from dslc.ir.dims import Guard
    d, h = p("d", 64), p("h", 4)
    q = d // h
    forward = Guard((d - h * q).expr, "==", Poly.const(0))
    backward = Guard((h * q - d).expr, "==", Poly.const(0))
    assert forward.to_python() == backward.to_python() == "d % h == 0"
    assert Guard((h * q).expr, "==", d.expr).key() == forward.key() == backward.key()
    assert Guard((d - h * q).expr, "!=", Poly.const(0)).to_python() == "d % h != 0"
    for dv, hv in [(64, 4), (66, 4), (7, 7), (5, 3)]:   # the printed form means the polynomial
        env = {"d": dv, "h": hv}
        assert eval(forward.to_python().split(" == ")[0], {}, env) == dv - hv * (dv // hv)  # noqa: S307
    assert Guard((d - 4 * (d // 4)).expr, "==", Poly.const(0)).to_python() == "d % 4 == 0"
    assert Guard((d - 3 * (d // 4)).expr, "==", Poly.const(0)).to_python() == "d - 3 * (d // 4) == 0"


# ---------------------------------------------------------------- max and min of sizes

from dslc.frontend.builtins import BUILTINS, BuiltinError  # noqa: E402
from dslc.ir.dims import Guard, MinMax, least_value  # noqa: E402


def _max(*args):
    return BUILTINS["max"].fn(*args)


def _min(*args):
    return BUILTINS["min"].fn(*args)


@pytest.mark.parametrize("c", [1, 3, 4, 7, 16, 33])
def test_max_of_a_parameter_keeps_its_expression_and_records_nothing(c):
    with recording() as guards:
        s = _max(1, p("c", c) // 4)
    assert list(guards) == []
    assert plain(s) == max(1, c // 4)
    assert to_python(s.expr) == "max(1, c // 4)"
    for other in (1, 2, 5, 8, 100):   # the expression holds for every c, not only this one
        assert evaluate(s, {"c": other}) == max(1, other // 4)


def test_min_and_max_of_several_sizes_and_a_list():
    a, b = p("a", 5), p("b", 9)
    with recording() as guards:
        lo, hi = _min(a, b, 7), _max([a, b])
    assert list(guards) == []
    assert (plain(lo), plain(hi)) == (5, 9)
    assert to_python(lo.expr) == "min(7, a, b)" and to_python(hi.expr) == "max(a, b)"
    assert evaluate(lo, {"a": 8, "b": 9}) == 7


def test_max_normal_forms():
    c = Poly.atom(Param("c"))
    assert Poly.minmax("max", [c, c]) == c                                  # one argument left
    assert Poly.minmax("max", [c, c + Poly.const(1)]) == c + Poly.const(1)  # dominated by a constant
    assert Poly.minmax("min", [c, c + Poly.const(1)]) == c
    assert Poly.minmax("max", [Poly.const(2), Poly.const(5)]) == Poly.const(5)
    inner = Poly.minmax("max", [Poly.const(1), c])
    flat = Poly.minmax("max", [inner, Poly.const(3), Poly.atom(Param("d"))])   # nested maxes flatten
    assert to_python(flat) == "max(3, c, d)"
    assert isinstance(flat.single_atom(), MinMax)


def test_max_substitutes_and_folds():
    s = _max(1, p("c", 16) // 4)
    assert s.expr.subst(lambda a: Poly.const(2)) == Poly.const(1)   # c = 2: max(1, 0)
    bigger = s.expr.subst(lambda a: Poly.atom(Param("w")) * Poly.const(4))
    assert to_python(bigger) == "max(1, w)"


def test_arithmetic_on_a_max_prints_as_python_means_it():
    c = p("c", 6)
    s = 2 * _max(1, c // 4) + 3
    assert to_python(s.expr) == "2 * max(1, c // 4) + 3"
    for v in (1, 4, 6, 40):
        assert evaluate(s, {"c": v}) == 2 * max(1, v // 4) + 3


def test_a_max_with_a_constant_meets_its_bound():
    s = _max(1, p("c", 16) // 4)
    assert least_value(s.expr) == 1
    assert Guard(s.expr, ">", Poly.const(0)).is_trivial()
    assert not Guard(s.expr, ">", Poly.const(1)).is_trivial()
    with recording() as guards:
        assert s > 0
    assert list(guards) == []


def test_max_with_a_float_or_a_run_time_size_keeps_deciding():
    """A float compares (a guard on the size, as before); a run-time size is refused, as before."""
    with recording() as guards:
        assert _max(0.5, p("c", 3)) == 3
    assert guards
    with pytest.raises(BuiltinError, match="run-time size `T`"):
        _max(1, Sym.var("T"))
