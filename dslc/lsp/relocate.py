"""A block specialization made by an earlier check, moved to where its declarations are now.

A specialization (a block's graph for some arguments and input types) is a function of the
texts of the block and of the declarations it reaches; where they sit in the file only shows
in its spans. When an edit moves a block without changing it (an edit above it), the graph
made before is still right once each span is moved by as much as its declaration moved and
points at the new text. `relocated` makes that copy: the graphs, nodes, layer instances,
values and guards that hold spans are copied, everything else (types, sizes, ops) is shared, as
it is between the callers of one specialization within a check. A span outside the
declarations it should lie in, or a node of a kind it does not know, makes it give up
(None): the block is then specialized again, as a full check would.
"""
from __future__ import annotations

import bisect
from dataclasses import replace

from ..diagnostics import Span
from ..frontend.values import InitSpec
from ..ir.dims import GuardList, Real, Size, Sym
from ..ir.graph import Graph, Instance, Node
from ..ir.values import TensorValue


class Unmovable(Exception):
    """Something in the graph the move does not know how to place."""


def places(unit, names) -> dict:
    """Where the named declarations are: file name -> sorted [(start, end, name)]."""
    out: dict = {}
    for name in names:
        span = unit.decls[name].span
        out.setdefault(span.file.name, []).append((span.start, span.end, name))
    return {f: sorted(p) for f, p in out.items()}


def relocated(sub: Graph, before: dict, unit) -> Graph | None:
    """`sub`, made when its declarations were at `before` (`places`), with every span moved to
    where those declarations are in `unit` (the same texts); None when it cannot be moved."""
    try:
        return Mover(before, unit).graph(sub)
    except Unmovable:
        return None


class Mover:
    def __init__(self, before: dict, unit):
        self.unit = unit
        self.starts = {f: [p[0] for p in spots] for f, spots in before.items()}
        self.before = before
        self.memo: dict = {}   # id(old graph) -> its copy: a graph shared in `sub` stays shared

    def span(self, span):
        if span is None:
            return None
        if not isinstance(span, Span):
            raise Unmovable(span)
        spots = self.before.get(span.file.name)
        if spots is None:
            raise Unmovable(span)
        i = bisect.bisect_right(self.starts[span.file.name], span.start) - 1
        if i < 0 or span.end > spots[i][1]:
            raise Unmovable(span)   # not inside one of the declarations it was made from
        now = self.unit.decls[spots[i][2]].span
        delta = now.start - spots[i][0]
        copy = object.__new__(Span)
        copy.__dict__.update(file=now.file, start=span.start + delta, end=span.end + delta)
        return copy

    def graph(self, g: Graph) -> Graph:
        hit = self.memo.get(id(g))
        if hit is not None:
            return hit
        if g.failures or g._nx is not None:
            raise Unmovable(g)
        copy = object.__new__(Graph)
        copy.__dict__.update(g.__dict__)
        self.memo[id(g)] = copy
        copy.decl = self.decl(g.decl)
        copy.guards = GuardList([self.guard(x) for x in g.guards])
        copy.nodes = {k: self.node(n) for k, n in g.nodes.items()}
        copy.instances = {k: self.instance(i) for k, i in g.instances.items()}
        copy.list_loops = [self.list_loop(loop, copy.decl) for loop in g.list_loops]
        copy.named_conditions = {self.span(at): None if named is None else (named[0], self.guard(named[1]))
                                 for at, named in g.named_conditions.items()}
        return copy

    def list_loop(self, loop, decl):
        """A loop over a list parameter holds its statement: the same statement in the moved text."""
        span = self.span(loop.stmt.span)
        stmt = _statement_at(decl.body, span.start, span.end) if decl is not None else None
        if stmt is None:
            raise Unmovable(loop)
        return replace(loop, stmt=stmt, guard=self.guard(loop.guard))

    def guard(self, g):
        """A guard remembers where in the spec it comes from (`where`, outside what it compares), a
        loop count's guard its loop (`loop`, compared: ir/dims.py LoopCount), and a decision its
        condition (`at`, compared), the condition's operands theirs (`parts`) and the block a caller
        has it from (`origin`, a graph of this specialization: its copy)."""
        spans = {k: getattr(g, k, None) for k in ("where", "loop", "at")}
        parts, origin = getattr(g, "parts", None), getattr(g, "origin", None)
        if all(v is None for v in spans.values()) and parts is None and origin is None:
            return g
        copy = object.__new__(type(g))
        copy.__dict__.update(g.__dict__)
        for k, v in spans.items():
            if v is not None:
                copy.__dict__[k] = self.span(v)
        if parts is not None:
            copy.__dict__["parts"] = tuple(self.guard(p) for p in parts)
        if origin is not None:
            copy.__dict__["origin"] = self.graph(origin)
        return copy

    def decl(self, decl):
        if decl is None:
            return None
        now = self.unit.decls.get(getattr(decl, "name", None))
        if now is None or now.span.text != decl.span.text or now.span.file.name != decl.span.file.name:
            raise Unmovable(decl)
        return now

    def node(self, n: Node) -> Node:
        copy = object.__new__(Node)
        copy.__dict__.update(n.__dict__)
        copy.span = self.span(n.span)
        copy.args = self.value(n.args)
        return copy

    def instance(self, i: Instance) -> Instance:
        copy = object.__new__(Instance)
        copy.__dict__.update(i.__dict__)
        copy.span = self.span(i.span)
        copy.graph = self.graph(i.graph) if i.graph is not None else None
        copy.args = self.value(i.args)
        copy.inits = self.value(i.inits)
        copy.arg_spans = {k: self.span(v) for k, v in i.arg_spans.items()}
        return copy

    def value(self, v):
        """A node's or an instance's argument: values with spans copied, plain ones shared; any
        other kind of value (one that may know where it was written) makes the move give up."""
        if type(v) in _PLAIN:
            return v
        if type(v) is dict:
            return {k: self.value(x) for k, x in v.items()} if v else v
        if type(v) is list:
            return [self.value(x) for x in v]
        if type(v) is tuple:
            return tuple([self.value(x) for x in v])
        if type(v) is TensorValue:
            copy = object.__new__(TensorValue)
            copy.__dict__.update(ref=v.ref, type=v.type, span=self.span(v.span))
            return copy
        if type(v) is Graph:
            return self.graph(v)
        if type(v) is InitSpec:
            return InitSpec(v.init, self.value(v.args))
        raise Unmovable(v)


def _statement_at(stmts: tuple, start: int, end: int):
    """The `for` statement at [start, end) among `stmts` and the statements inside them, or None."""
    for s in stmts:
        if s.span is not None and (s.span.start, s.span.end) == (start, end):
            return s
        for inner in (getattr(s, "body", ()), getattr(s, "orelse", ())):
            found = _statement_at(inner, start, end)
            if found is not None:
                return found
    return None


_PLAIN = {int, bool, float, str, type(None), Size, Real, Sym}   # the values in graphs that hold no span


