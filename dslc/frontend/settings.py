"""`--set K=V`: overrides from the command line, where V is a `.dl` literal.

Each setting is parsed as its own little source file named `--set`, so a bad
value gets the usual diagnostic with a caret.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from ..diagnostics import Diagnostic, DslcError, Reporter, SourceFile, Span
from . import ast
from .binding import Arg
from .errors import EvalError, Poisoned
from .parser import parse_expression

_KEY = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)\s*=")


@dataclass
class Setting:
    key: str
    key_span: Span
    expr: object   # the value's AST
    file: SourceFile


def parse_sets(items) -> dict[str, Setting]:
    out: dict[str, Setting] = {}
    errors = []
    for item in items:
        file = SourceFile("--set", item)
        m = _KEY.match(item)
        if not m:
            errors.append(Diagnostic("E0101", "a setting is written KEY=VALUE", Span(file, 0, len(item)),
                                     help="for example --set hidden=256"))
            continue
        key = m.group(1)
        blank = " " * m.end() + item[m.end():]
        try:
            expr = parse_expression(file, blank)
        except DslcError as e:
            errors += e.diagnostics
            continue
        if key in out:
            errors.append(Diagnostic("E0306", f"`{key}` is set twice", Span(file, m.start(1), m.end(1))))
            continue
        out[key] = Setting(key, Span(file, m.start(1), m.end(1)), expr, file)
    if errors:
        raise DslcError(errors)
    return out


def literal_args(settings: dict[str, Setting]) -> dict[str, Arg]:
    """Model parameter overrides: literal values only (numbers, strings, bools, lists)."""
    from .evaluate import Ctx, Evaluator
    from .loader import Unit
    from ..ir.graph import Graph
    reporter = Reporter()
    out = {}
    for key, s in settings.items():
        if "." in key:
            reporter.error("E0305", f"`{key}` is not a model parameter", s.key_span,
                           help="dotted keys set training-plan fields (`dslc train --set optimizer.lr=...`)")
            continue
        ev = Evaluator(Unit(s.file), reporter)
        ctx = Ctx(Graph("--set", "block"), None, "block")
        try:
            value = _literal(ev, s.expr, ctx)
        except EvalError as e:
            reporter.add(e.diagnostic)
            continue
        except Poisoned:
            continue
        out[key] = Arg(value, s.expr.span, s.key_span)
    reporter.raise_if_errors()
    return out


def _literal(ev, expr, ctx):
    for node in _names(expr):
        raise EvalError("E0301", f"`{node.id}` is not a literal", node.span,
                        help=f'strings need quotes: --set key="{node.id}"')
    return ev._expr(expr, ctx)


def _names(expr):
    stack = [expr]
    while stack:
        e = stack.pop()
        if isinstance(e, ast.Name):
            yield e
        elif isinstance(e, (ast.ListExpr, ast.TupleExpr)):
            stack += list(e.items)
        elif isinstance(e, ast.UnaryOp):
            stack.append(e.operand)
        elif isinstance(e, ast.BinOp):
            stack += [e.left, e.right]
        elif isinstance(e, (ast.Call, ast.Index, ast.Attr, ast.Pipe, ast.AsName, ast.DictExpr, ast.Cond)):
            raise EvalError("E0301", "a setting's value must be a literal", e.span)
