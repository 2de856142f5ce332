"""Where a model or block declaration makes its unnamed layers: the call sites of its body, in
source order, in every branch whether a specialization takes it or not.

Naming (ir/naming.py) numbers a stem by these sites, so that a layer's attribute name comes from
its place in the source and not from the branches one specialization took: in

    main = x -> Conv2d(out, 3) -> BatchNorm2d()
    skip = (x -> Conv2d(out, 1) -> BatchNorm2d()) if stride != 1 else x

the projection is `conv2`/`bn2` in every Residual and the main path `conv1`/`bn1` even where the
projection is not built, as torchvision's BasicBlock names them; one generated class can then serve
both (`self.conv2 = None`).
"""
from __future__ import annotations

import dataclasses

from ..ir.naming import snake
from ..ops.registry import REGISTRY
from . import ast


def call_sites(decl, unit, skip=frozenset()) -> dict[tuple, tuple[str, int, int]]:
    """(file, offset) of each call site making an unnamed layer or block -> (its stem, its number
    among the stem's sites, how many the stem has on the longest path). The two arms of an `if`
    are alternatives, numbered from the same point: the post-norm arm's `norm1` is the pre-norm
    arm's `norm1`, and what follows the `if` goes on from the longer arm. `skip`: the ids of the
    `repeat` statements whose bodies became blocks of their own (frontend/bodyblocks.py)."""
    params = {p.name for p in decl.params}
    walk = _Numbering(lambda f: _stem(f, params, unit), skip)
    walk.visit(decl.body)
    return {site: (stem, n, walk.counts[stem]) for site, (stem, n) in walk.numbered.items()}


def _stem(func, params: set, unit) -> str | None:
    if not isinstance(func, ast.Name) or func.id in params:
        return None
    decl = unit.decls.get(func.id)
    if decl is not None:
        return (snake(decl.name).lstrip("_") or "block") if decl.kind in ("block", "model") else None
    op = REGISTRY.get(func.id)
    return op.stem if op is not None and op.kind == "layer" and not op.internal else None


class _Numbering:
    """Counts the calls that make an instance where they stand: not one named with `as` or bound to
    a name (`lin = Linear(8)`: the user's name), nor a layer passed as an argument (made in the callee)."""

    def __init__(self, stem_of, skip=frozenset()):
        self.stem_of, self.skip = stem_of, skip
        self.counts: dict[str, int] = {}
        self.numbered: dict[tuple, tuple[str, int]] = {}

    def visit(self, node) -> None:
        if isinstance(node, tuple):
            for x in node:
                self.visit(x)
        elif isinstance(node, ast.Call):
            self._count(node)
            self._inside(node)
        elif isinstance(node, (ast.AsName, ast.AssignStmt)) and isinstance(node.value, ast.Call):
            self._inside(node.value)
        elif isinstance(node, (ast.IfStmt, ast.Cond)):
            self._arms(node)
        elif isinstance(node, ast.RepeatStmt) and id(node) in self.skip:
            self.visit(node.count)   # its layers are its block's
        elif dataclasses.is_dataclass(node):
            for f in dataclasses.fields(node):
                self.visit(getattr(node, f.name))

    def _count(self, call: ast.Call) -> None:
        stem = self.stem_of(call.func)
        if stem is not None:
            self.counts[stem] = self.counts.get(stem, 0) + 1
            self.numbered[(call.span.file.name, call.span.start)] = (stem, self.counts[stem])

    def _inside(self, call: ast.Call) -> None:
        """A call's callee (`Linear(8)(x)` applies the inner one) and arguments; an argument that is
        itself a call is a value passed along, so only what is inside it counts."""
        self.visit(call.func)
        for arg in call.args + tuple(k.value for k in call.kwargs):
            if isinstance(arg, ast.Call):
                self._inside(arg)
            else:
                self.visit(arg)

    def _arms(self, node) -> None:
        self.visit(node.cond)
        arms = (node.body, node.orelse) if isinstance(node, ast.IfStmt) else (node.then, node.orelse)
        start, longest = self.counts, dict(self.counts)
        for arm in arms:
            self.counts = dict(start)
            self.visit(arm)
            for stem, n in self.counts.items():
                longest[stem] = max(longest.get(stem, 0), n)
        self.counts = longest
