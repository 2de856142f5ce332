"""The parser: precedence and associativity agree with Python's (an independent reference),
spans point at the right text, and any input gives a diagnostic, never a traceback."""
from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dslc.diagnostics import DslcError, SourceFile
from dslc.frontend import ast
from dslc.frontend.context import Ctx
from dslc.frontend.evaluator import Evaluator
from dslc.frontend.loader import Unit, load_text
from dslc.frontend.parser import parse, parse_expression
from dslc.ir.graph import Graph


def evaluate(text: str):
    f = SourceFile("expr", text)
    expr = parse_expression(f, text)
    return Evaluator(Unit(f))._expr(expr, Ctx(Graph("e", "block"), None, "block"))


ints = st.integers(-6, 9).map(str)
ARITH = ["+", "-", "*", "//", "%", "**"]
COMPARE = ["==", "!=", "<", "<=", ">", ">="]


@st.composite
def int_exprs(draw, depth=3):
    """Integer expressions (bool arithmetic is an error in dslc, so the two are kept apart)."""
    if depth == 0 or draw(st.booleans()):
        return draw(ints)
    kind = draw(st.sampled_from(["bin", "bin", "neg", "paren", "cond"]))
    if kind == "neg":
        return f"-{draw(int_exprs(depth - 1))}"
    if kind == "paren":
        return f"({draw(int_exprs(depth - 1))})"
    if kind == "cond":
        return f"({draw(int_exprs(depth - 1))} if {draw(bool_exprs(depth - 1))} else {draw(int_exprs(depth - 1))})"
    return f"{draw(int_exprs(depth - 1))} {draw(st.sampled_from(ARITH))} {draw(int_exprs(depth - 1))}"


@st.composite
def bool_exprs(draw, depth=3):
    kind = draw(st.sampled_from(["cmp", "chain", "in", "not", "logic", "paren"] if depth else ["cmp"]))
    if kind == "cmp" or depth == 0:
        return f"{draw(int_exprs(1))} {draw(st.sampled_from(COMPARE))} {draw(int_exprs(1))}"
    if kind == "chain":
        return " ".join([draw(int_exprs(0)), draw(st.sampled_from(COMPARE)), draw(int_exprs(0)),
                         draw(st.sampled_from(COMPARE)), draw(int_exprs(0))])
    if kind == "in":
        items = ", ".join(draw(st.lists(ints, max_size=3)))
        return f"{draw(int_exprs(1))} {draw(st.sampled_from(['in', 'not in']))} [{items}]"
    if kind == "not":
        return f"not {draw(bool_exprs(depth - 1))}"
    if kind == "paren":
        return f"({draw(bool_exprs(depth - 1))})"
    return f"{draw(bool_exprs(depth - 1))} {draw(st.sampled_from(['and', 'or']))} {draw(bool_exprs(depth - 1))}"


expressions = lambda: st.one_of(int_exprs(), bool_exprs())  # noqa: E731


@settings(max_examples=300)
@given(expressions())
def test_precedence_matches_python(text):
    # A power tower (`9 ** 9 ** 9`) would take Python (and dslc) hours as integers: in floats every
    # intermediate value stays below 1.8e308 or raises OverflowError at once, so that run bounds them.
    try:
        eval(re.sub(r"\d+", lambda m: m.group() + ".0", text))  # noqa: S307 - literals and operators only
        want = eval(text)  # noqa: S307 - integer literals and operators only
    except (ZeroDivisionError, OverflowError, ValueError):
        return
    if isinstance(want, complex):
        return
    if isinstance(want, int) and abs(want) > 10 ** 12:
        return
    try:
        got = evaluate(text)
    except DslcError as e:  # division by zero inside `x ** -1`-like corners is reported, not crashed
        assert e.codes[0] in ("E0308", "E0307"), (text, e)
        return
    assert got == want and type(got) is type(want), text


@pytest.mark.parametrize("text,want", [
    ("not 1 == 2", True), ("not 0 and 0", False), ("1 < 2 < 3", True), ("3 > 2 > 2", False),
    ("-2 ** 2", -4), ("2 ** -1", 0.5), ("2 ** 3 ** 2", 512), ("10 - 3 - 2", 5), ("7 // 2 * 2", 6),
    ("1 if 0 else 2 if 1 else 3", 2), ("[1, 2] + [3]", [1, 2, 3]),
    ("1 in [1, 2]", True), ("3 not in [1, 2]", True), ("not 1 in [2]", True), ('"b" in "abc"', True),
    ("1 in [1] == True", False), ("1 < 2 in [True]", False), ('"a" in {a: 1}', True), ("2 not  in (1, 2)", False),
])
def test_known_expressions(text, want):
    assert evaluate(text) == want


def test_spans_cover_the_text():
    src = "model M {\n    input x: [B, 4]\n    y = x -> Linear(3) as fc\n    output y\n}\n"
    f = SourceFile("m.dl", src)
    m = parse(f)
    stmt = m.decls[0].body[1]
    assert isinstance(stmt, ast.AssignStmt)
    assert stmt.span.text == "y = x -> Linear(3) as fc"
    pipe = stmt.value
    assert pipe.stages[1].span.text == "Linear(3) as fc"
    assert pipe.stages[1].value.span.text == "Linear(3)"
    assert (stmt.span.line, stmt.span.col) == (3, 5)


def test_line_continuation_in_brackets_and_after_arrows():
    src = ("model M {\n    input x: [B,\n              4]\n    y = x ->\n        Linear(3)\n"
           "    output concat([y,\n        y], dim=1)\n}\n")
    m = parse(SourceFile("m.dl", src))
    assert len(m.decls[0].body) == 3


source_text = st.lists(st.sampled_from(list("{}()[]=->:,.# \n\"'xyzB0123+*/@") +
                                      ["model ", "input ", "output ", "Linear", "block ", "for ", " in ", " as ",
                                       "true", "repeat ", "not ", "\u00e9", "\t"]),
                      max_size=60).map("".join)


@settings(max_examples=300)
@given(source_text)
def test_fuzzed_source_never_crashes(text):
    f = SourceFile("fuzz.dl", text)
    try:
        load_text(f, "/nonexistent/fuzz.dl")
    except DslcError as e:
        assert e.diagnostics and all(d.render() for d in e.diagnostics)


@settings(max_examples=150)
@given(st.data())
def test_mutated_contract_never_crashes(data):
    import os

    from support import ROOT
    with open(os.path.join(ROOT, "examples", "language.dl"), encoding="utf-8") as fh:
        text = fh.read()
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(text) - 1))
        j = data.draw(st.integers(i, min(len(text), i + 8)))
        text = text[:i] + data.draw(st.sampled_from(["", "(", ")", "]", "{", "}", ",", "->", "0", "x", "\n",
                                                     "Linear(3)", "-1", "as y"])) + text[j:]
    f = SourceFile("mutant.dl", text)
    from dslc.frontend.check import check_unit
    try:
        check_unit(load_text(f, os.path.join(ROOT, "examples", "mutant.dl")))
    except DslcError as e:
        assert all(d.render() for d in e.diagnostics)


@pytest.mark.parametrize("written,dtype", [("long", "int64"), ("int64", "int64"), ("float", "float32"),
                                           ("half", "float16")])
def test_a_dtype_after_a_shape_without_of_says_where_it_goes(written, dtype):
    """A PyTorch user writes `[B, T] long`; the language spells it `[B, T] of int64`."""
    text = f"model M {{\n    input idx: [B, 3] {written}\n    Embedding(27, 10)\n}}\n"
    with pytest.raises(DslcError) as e:
        parse(SourceFile("m.dl", text))
    d = e.value.diagnostics[0]
    assert d.code == "E0101" and d.help == f"a dtype follows the shape after `of`: `[...] of {dtype}`"
    assert (d.span.line, d.span.col) == (2, 23)


def test_an_unrelated_name_after_a_shape_gets_no_dtype_hint():
    with pytest.raises(DslcError) as e:
        parse(SourceFile("m.dl", "model M {\n    input idx: [B, 3] banana\n}\n"))
    assert "dtype" not in (e.value.diagnostics[0].help or "")
