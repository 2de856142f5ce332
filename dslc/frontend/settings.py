"""`--set K=V`: overrides from the command line, where V is a `.dl` literal.

Each setting is parsed as its own little source file named `--set`, so a bad
value gets the usual diagnostic with a caret.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace

from .. import catalog
from ..diagnostics import Diagnostic, DslcError, Reporter, SourceFile, Span, did_you_mean
from ..ir.graph import Graph
from . import ast
from .binding import Arg
from .context import Ctx
from .errors import EvalError, Poisoned
from .evaluator import Evaluator
from .loader import Unit
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


def literal_value(expr, file: SourceFile):
    """The value of a literal expression of `file` (a command-line option's text); E0301 otherwise."""
    ev = Evaluator(Unit(file), Reporter())
    return _literal(ev, expr, Ctx(Graph("--set", "block"), None, "block"))


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


# ---------------------------------------------------------------------- training plans

_PLAN_CALL_FIELDS = ("model", "optimizer", "schedule", "data")


def apply_plan_sets(decl, settings: dict[str, Setting]):
    """The plan declaration with `--set` applied, as if the user had written it so: `epochs=3`
    replaces (or adds) a field; `optimizer.lr=1e-4` replaces (or adds) one argument of the call a
    field holds; `early_stopping.patience=2` one of a plan call's; `STEP.optimizer.lr` and
    `PHASE.epochs` reach into a step or a phase. The checker then validates the values as usual."""
    reporter = Reporter()
    body = list(decl.body)
    for key, s in settings.items():
        parts = key.split(".")
        try:
            body = _set_in(body, parts, s, decl, catalog)
        except EvalError as e:
            reporter.add(e.diagnostic)
    reporter.raise_if_errors()
    return replace(decl, body=tuple(body))


def _set_in(body: list, parts: list, s: Setting, decl, catalog) -> list:
    head = parts[0]
    nested = {st.name: st for st in body if isinstance(st, (ast.StepStmt, ast.PhaseStmt))}
    if head in nested and len(parts) > 1:
        inner = nested[head]
        new = replace(inner, body=tuple(_set_in(list(inner.body), parts[1:], s, decl, catalog)))
        return [new if st is inner else st for st in body]
    calls = {st.value.func.id: st for st in body if isinstance(st, ast.ExprStmt) and isinstance(st.value, ast.Call)
             and isinstance(st.value.func, ast.Name) and st.value.func.id in catalog.CALLS}
    if head in catalog.CALLS and len(parts) == 2:
        stmt = calls.get(head)
        call = stmt.value if stmt else ast.Call(s.key_span, ast.Name(s.key_span, head), (), ())
        new = ast.ExprStmt(stmt.span if stmt else s.key_span, _with_keyword(call, parts[1], s))
        return [new if st is stmt else st for st in body] if stmt else body + [new]
    fields = {st.targets[0].id: st for st in body if isinstance(st, ast.AssignStmt) and len(st.targets) == 1
              and isinstance(st.targets[0], ast.Name)}
    if head not in catalog.FIELDS:
        known = list(catalog.FIELDS) + list(catalog.CALLS) + list(nested)
        guess = did_you_mean(head, known)
        raise EvalError("E0305", f"the plan `{decl.name}` has no field `{head}`", s.key_span,
                        help=f"did you mean `{guess}`?" if guess else "fields: " + ", ".join(catalog.FIELDS))
    stmt = fields.get(head)
    if len(parts) == 1:
        value = s.expr
    elif len(parts) == 2 and head in _PLAN_CALL_FIELDS:
        if stmt is None or not isinstance(stmt.value, ast.Call):
            raise EvalError("E0305", f"`{head}` is not set to a call in the plan `{decl.name}`, so "
                            f"`{parts[1]}` cannot be set", s.key_span, help=f"set the whole field: --set {head}=...")
        value = _with_keyword(stmt.value, parts[1], s)
    else:
        raise EvalError("E0305", f"`{'.'.join(parts)}` cannot be set", s.key_span,
                        help="keys are FIELD, FIELD.ARG (model, optimizer, schedule, data), CALL.ARG, "
                             "STEP.FIELD... or PHASE.FIELD...")
    if stmt is None:
        return body + [ast.AssignStmt(s.key_span, (ast.Name(s.key_span, head),), value)]
    return [replace(st, value=value) if st is stmt else st for st in body]


def _with_keyword(call, name: str, s: Setting):
    kwargs = [k for k in call.kwargs if k.name != name] + [ast.Keyword(s.key_span, name, s.expr)]
    return replace(call, kwargs=tuple(kwargs))
