"""Name resolution for declarations that evaluation does not reach.

A block that no checked model uses, or a model that needs arguments, is
not evaluated by `dslc check`; its names are still resolved here, flow-
insensitively: a name is fine if the declaration binds it anywhere or it is
global. So typos in unused code are reported without false alarms.
"""
from __future__ import annotations

import dataclasses

from ..diagnostics import Diagnostic, Reporter, did_you_mean
from ..diagnostics.diagnostic import MAX_SHOWN
from ..ops import REGISTRY
from ..ops.init import INITS
from . import ast
from .binding import Arg, bind, convert, pack_rest
from .builtins import BUILTINS, CONSTANTS
from .errors import EvalError
from .torch_names import TORCH_ONLY, TORCH_PREFIXES, torch_only_help


def check_names(unit, reporter: Reporter, skip: set) -> None:
    globals_ = set(unit.decls) | {n for n, op in REGISTRY.items() if not op.internal} | set(BUILTINS) | set(CONSTANTS)
    for decl in unit.decls.values():
        if decl.name in skip or decl.kind not in ("model", "block", "loss"):
            continue
        bound = _bound_names(decl) if decl.kind != "loss" else {"out", "batch"}
        callees = _callees(decl)
        for name in _references(decl):
            if name.id not in bound and name.id not in globals_:
                _report(name, bound | globals_, reporter, called=id(name) in callees)
        if decl.kind == "loss":
            check_calls(decl.value, reporter)


def check_shadowing(unit, reporter: Reporter) -> None:
    """A declaration named like a library layer, function or loss hides it (the file's own names come
    first): allowed, as in Python, so a layer the library adds later breaks no spec, but never silent."""
    for decl in unit.decls.values():
        op = REGISTRY.get(decl.name)
        if op is None or op.internal or decl.kind in ("train", "sweep"):  # a plan is never a value: it hides nothing
            continue
        reporter.add(Diagnostic("W0201", f"the {decl.kind} `{decl.name}` hides the library {op.kind} "
                                f"`{op.name}`", decl.name_span, label=f"`{decl.name}` means this {decl.kind}",
                                severity="warning",
                                help=f"`{decl.name}` is this {decl.kind} in this file and in the files that import "
                                     f"it; to use the library's too, rename it (`{_renamed(decl.name)}`)"))


def _renamed(name: str) -> str:
    return f"My{name}" if name[:1].isupper() else f"my_{name}"


def check_calls(expr, reporter: Reporter) -> None:
    """Arguments of library calls, checked without running anything: counts, keywords, and
    the values of literal arguments (`reduction="summ"` is caught before any plan uses the loss)."""
    for node in _walk(expr):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in REGISTRY):
            continue
        op = REGISTRY[node.func.id]
        try:
            given = bind([p.name for p in op.params], pack_rest(op.params, [Arg(a, a.span) for a in node.args]),
                         [(k.name, Arg(k.value, k.value.span, k.span)) for k in node.kwargs], op.name, node.span)
            for p in op.params:
                arg = given.get(p.name)
                if arg is not None and isinstance(arg.value, ast.Const) and not p.is_tensor:
                    convert(p, arg.value.value, arg.span, op.name)
            missing = [p.name for p in op.params if p.required and p.name not in given]
            if missing:
                raise EvalError("E0303", f"`{op.name}` is missing the argument{'s' if len(missing) > 1 else ''} "
                                + ", ".join(f"`{m}`" for m in missing), node.span, label="called here")
        except EvalError as e:
            reporter.add(e.diagnostic)


def _bound_names(decl) -> set:
    out = {p.name for p in decl.params}
    for node in _walk(decl.body):
        if isinstance(node, ast.InputStmt):
            out.add(node.name)
            if isinstance(node.shape, ast.ListExpr):
                out |= {i.id for i in node.shape.items if isinstance(i, ast.Name)}
        elif isinstance(node, (ast.ParamStmt, ast.BufferStmt)):
            out.add(node.name)
        elif isinstance(node, ast.ForStmt):
            out |= set(node.names)
        elif isinstance(node, ast.AssignStmt):
            for t in node.targets:
                out |= {n.id for n in _walk(t) if isinstance(n, ast.Name)}
        elif isinstance(node, ast.AsName) and not node.template:
            out.add(node.name)
    return out


def _callees(decl) -> set:
    root = decl.value if decl.kind == "loss" else decl.body
    return {id(n.func) for n in _walk(root) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}


def _references(decl) -> list:
    if decl.kind == "loss":
        return [n for n in _walk(decl.value) if isinstance(n, ast.Name)]
    refs = []
    for node in _walk(decl.body):   # _walk leaves initializers' own names out
        if isinstance(node, ast.Name):
            refs.append(node)
    for p in decl.params:
        if p.default is not None:
            refs += [n for n in _walk(p.default) if isinstance(n, ast.Name)]
    return refs


def _init_operands(expr) -> list:
    """The expressions inside an `init=` value that name things: the initializers' arguments."""
    if isinstance(expr, ast.DictExpr):
        return [x for v in expr.values for x in _init_operands(v)]
    if isinstance(expr, ast.Call) and isinstance(expr.func, ast.Name) and expr.func.id in INITS:
        return list(expr.args) + [k.value for k in expr.kwargs]
    if isinstance(expr, ast.Name) and expr.id in INITS:
        return []
    return [expr]


def _walk(node):
    """Every AST node under `node` (a node or a tuple of nodes), skipping param initializers' names."""
    stack = list(node) if isinstance(node, tuple) else [node]
    while stack:
        n = stack.pop()
        if n is None:
            continue
        yield n
        if isinstance(n, ast.ParamStmt):
            stack += [n.shape]
            if isinstance(n.init, ast.Call):
                stack += list(n.init.args) + [k.value for k in n.init.kwargs]
            continue
        if isinstance(n, ast.Keyword) and n.name == "init":  # a layer's `init=`: initializers are not names
            stack += _init_operands(n.value)
            continue
        if not dataclasses.is_dataclass(n):
            continue
        for f in dataclasses.fields(n):
            v = getattr(n, f.name)
            if isinstance(v, tuple):
                stack += [x for x in v if dataclasses.is_dataclass(x)]
            elif dataclasses.is_dataclass(v) and not isinstance(v, type):
                stack.append(v)


def _report(name: ast.Name, pool: set, reporter: Reporter, called: bool = False) -> None:
    if name.id in TORCH_ONLY:
        reporter.error("E0202", f"`{name.id}` is a torch.nn layer that dslc does not have", name.span,
                       label="not in dslc's library", help=torch_only_help(name.id))
        return
    if name.id in TORCH_PREFIXES:
        reporter.error("E0201", f"`{name.id}` is not defined", name.span, label="unknown name",
                       help="dslc's layers and functions are named without a module: `Linear`, not `nn.Linear`")
        return
    if name.id[:1].isupper():
        code, what, label = "E0202", f"unknown layer `{name.id}`", "not a layer or block"
    elif called:
        code, what, label = "E0203", f"unknown function `{name.id}`", "not a function"
        pool = {n for n in pool if n[:1].islower()}
    else:
        code, what, label = "E0201", f"`{name.id}` is not defined", "unknown name"
    # Suggestions for the diagnostics that will be shown only: each looks at every name in scope.
    guess = did_you_mean(name.id, pool) if len(reporter.diagnostics) < MAX_SHOWN else None
    reporter.error(code, what, name.span, label=label, help=f"did you mean `{guess}`?" if guess else None)
