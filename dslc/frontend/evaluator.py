"""AST -> IR: the compile-time evaluator of a unit's models and blocks.

`Evaluator.model` binds a model's parameters and runs its body into a graph; the work is
in its mixins: statements (`statements.py`), expressions (`expressions.py`), names
(`lookup.py`), calls and pipes (`calls.py`) and applying layers, functions and blocks
(`apply.py`), where the registry's shape rules give every value a static type.
"""
from __future__ import annotations

import sys
from contextlib import contextmanager
from contextvars import ContextVar

from ..diagnostics import Diagnostic, Label, Reporter, did_you_mean
from ..ir.dims import Item, Param, Poly, Real, Size, atom_values, int_list, plain, plain_float, recording
from ..ir.graph import Graph
from ..ir.limits import LimitError
from ..ir.naming import name_instances
from ..ops.ptypes import describe, is_int, is_number
from . import ast
from .apply import LayerApplication
from .binding import unknown_keyword
from .buffers import BufferEvaluation
from .calls import CallEvaluation
from .conditions import ConditionEvaluation
from .context import Ctx
from .errors import EvalError, Poisoned
from .expressions import ExpressionEvaluation
from .lookup import NameLookup
from .scan import ScanEvaluation
from .sites import call_sites
from .statements import StatementEvaluation
from .values import POISON

# Evaluation recurses on blocks (about 9 frames a level, MAX_NESTING levels), bodies and
# expressions (both bounded at parse time); the default limit of 1000 frames is too tight for that.
if sys.getrecursionlimit() < 4000:
    sys.setrecursionlimit(4000)


class Evaluator(StatementEvaluation, BufferEvaluation, ExpressionEvaluation, ConditionEvaluation, NameLookup, CallEvaluation,
                LayerApplication, ScanEvaluation):
    """Evaluates one unit's models (`model`), specializing each block once per arguments and input types."""

    def __init__(self, unit, reporter: Reporter | None = None):
        self.unit = unit
        self.reporter = reporter or Reporter()
        self.cache: dict = {}       # block specializations by (name, args, input types)
        self.evaluated: set = set()  # names of the models and blocks evaluation reached
        self.subst_cache: dict = {}  # block results in callers' terms, see LayerApplication._in_caller_terms
        self._fresh_sym = 0
        self.steps = 0               # statements and loop iterations run (bounded by MAX_STEPS)
        self.runaway = False         # a limit on the total work was reached: evaluate nothing more
        self.measured: dict = {}     # id -> (list, tuple or dict, items, nesting): see _collection
        self.sites: dict = {}        # id(declaration) -> its layers' call sites (frontend/sites.py)
        self.body_blocks: dict = {}  # id(repeat statement) -> the block made of its body (frontend/bodyblocks.py)
        self.body_block_names: set = set()   # those blocks' names, in the whole program

    # ------------------------------------------------------------------ entry points

    def model(self, decl, args: dict | None = None, call_span=None, partial: bool = False) -> Graph | None:
        """The IR of a model with the given parameter values (name -> Arg).

        With errors it is None, unless `partial`: then the graph as far as it got, with its
        `failures` (for a diagram that shows where it stopped)."""
        given = dict(args or {})
        if self.runaway:
            return None
        self.evaluated.add(decl.name)
        graph = Graph(decl.name, "model", decl=decl)
        ctx = Ctx(graph, decl, "model", stack=(decl.name,))
        before = len(self.reporter.diagnostics)
        with recording(graph.guards), atom_values(graph.atom_env):
            try:
                self._bind_params(decl, given, ctx, call_span or decl.name_span)
            except EvalError as e:
                self.reporter.add(e.diagnostic)
                return None
            except LimitError as e:
                self.reporter.add(Diagnostic(e.code, e.message, decl.name_span, help=e.help))
                return None
            except Poisoned:
                return None
            self._run_body(decl.body, ctx, top=True)
            self._finish_outputs(ctx)
        failed = len(self.reporter.diagnostics) > before or ctx.failed
        if failed and not partial:
            return None
        self.name_instances(graph, decl)
        return graph

    def name_instances(self, graph: Graph, decl) -> None:
        """The attribute names of a graph's layers, numbered by their call sites in `decl`."""
        blocks = frozenset(k for k, (_, made) in self.body_blocks.items() if made is not None)
        key = (id(decl), blocks)
        if key not in self.sites:
            self.sites[key] = (decl, call_sites(decl, self.unit, blocks))   # the decl kept: its id stays its own
        name_instances(graph, self.sites[key][1])

    # ------------------------------------------------------------------ parameters

    def _bind_params(self, decl, given: dict, ctx: Ctx, call_span) -> None:
        names = [p.name for p in decl.params]
        for name, arg in given.items():
            if name not in names:
                raise unknown_keyword(decl.name, name, names, arg.name_span or arg.span, label="unknown parameter")
        missing = []
        for p in decl.params:
            if p.name in given:
                value, span = given[p.name].value, given[p.name].span
            elif p.default is not None:
                value, span = self._expr(p.default, ctx), p.default.span
            else:
                missing.append(p.name)
                continue
            if value is POISON:
                raise Poisoned()
            value = self._check_param_type(p, value, span, decl)
            # A given value is in the caller's terms: inside, the parameter is its own name, so
            # only its value is kept. A default is in this block's terms (`4 * dim`): kept whole.
            ctx.graph.params[p.name] = _plain_value(value) if p.name in given else value
            ctx.graph.param_types[p.name] = str(p.type) if p.type else None
            ctx.scope[p.name] = fresh(p.name, value)
            if is_int(value):
                ctx.graph.atom_env[Param(p.name)] = plain(value)
            elif _ITEMS.get() and int_list(value):
                ctx.graph.atom_env.update({Item(p.name, i): plain(v) for i, v in enumerate(value)})
        if missing:
            quoted = ", ".join(f"`{m}`" for m in missing)
            raise EvalError("E0303", f"`{decl.name}` is missing the argument{'s' if len(missing) > 1 else ''} "
                            f"{quoted}", call_span, label="called here",
                            help=f"pass {quoted}, or give {'them defaults' if len(missing) > 1 else 'it a default'} "
                                 f"in the declaration of `{decl.name}`",
                            labels=(Label(decl.name_span, f"`{decl.name}` is declared here"),)
                            if call_span is not decl.name_span else ())

    def _check_param_type(self, p: ast.ParamDecl, value, span, decl):
        if p.type is None:
            return value
        expected = _type_ok(p.type, value)
        if expected is None:
            return value
        if expected == "unknown":
            known = ["int", "float", "bool", "str", "list"]
            guess = did_you_mean(p.type.name, known)
            raise EvalError("E0301", f"unknown parameter type `{p.type}`", p.type.span,
                            help=f"did you mean `{guess}`?" if guess else "types are int, float, bool, str and list[...]")
        raise EvalError("E0301", f"parameter `{p.name}` of `{decl.name}` is declared `{p.type}`, "
                        f"but got {describe(value)}", span, label=f"expected {expected}",
                        labels=(Label(p.type.span, "declared here"),))


_ITEMS: ContextVar = ContextVar("list_items", default=False)


@contextmanager
def list_items(on: bool = True):
    """While on, a list parameter's items are sizes named by their place (`hidden[4]`, ir/dims.py
    Item), as the generated class reads them from its argument; off, they are numbers, as every
    other backend needs them."""
    token = _ITEMS.set(on)
    try:
        yield
    finally:
        _ITEMS.reset(token)


def fresh(name: str, value):
    """A parameter's value as seen inside its model or block: it remembers its name."""
    if is_int(value):
        return Size.param(name, plain(value))
    if isinstance(value, float):
        return Real(plain_float(value), Poly.atom(Param(name)))
    if _ITEMS.get() and int_list(value):
        return [Size(plain(v), Poly.atom(Item(name, i))) for i, v in enumerate(value)]
    return value


def _plain_value(v):
    """A value without the parameter expressions it carries."""
    if isinstance(v, Size):
        return plain(v)
    if isinstance(v, Real):
        return plain_float(v)
    if isinstance(v, list):
        return [_plain_value(x) for x in v]
    if isinstance(v, tuple):
        return tuple(_plain_value(x) for x in v)
    return v


def _type_ok(t: ast.TypeExpr, v) -> str | None:
    """None when `v` fits the declared type, else what was expected ("unknown" for a bad type)."""
    if t.name == "int" and t.arg is None:
        return None if is_int(v) else "an int"
    if t.name == "float" and t.arg is None:
        return None if is_number(v) else "a number"
    if t.name == "bool" and t.arg is None:
        return None if isinstance(v, bool) else "a bool"
    if t.name == "str" and t.arg is None:
        return None if isinstance(v, str) else "a string"
    if t.name == "list":
        if not isinstance(v, (list, tuple)):
            return f"a {t}"
        if t.arg is None:
            return None
        for item in v:
            inner = _type_ok(t.arg, item)
            if inner == "unknown":
                return inner
            if inner is not None:
                return f"a {t}"
        return None
    return "unknown"
