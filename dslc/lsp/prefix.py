"""Evaluating a model again from the first statement an edit can change.

Typing inside a block changes its text on every keystroke, and every model that uses it is
evaluated again (dslc.lsp.incremental). The statements of such a model before its first use of
the block, directly or through other declarations, come out the same every time: evaluation is
deterministic in the model's text up to there, the texts of what those statements reach, and
the declarations' names and kinds. So when a check evaluates a model after an edit, it keeps the
model's state (its graph so far, the names bound, the loops begun, the steps spent and the names
reached) as it stood before the first statement that reaches a declaration the edit changed; the
next check whose key for that state is the same (the next keystroke in the same block) resumes
the model from there, the state moved to where the declarations are now (dslc.lsp.relocate).

A state is kept only where everything before it was clean (no diagnostic, no failed statement)
and holds only what the move knows (tensors, sizes, plain values, lists of them, graphs); a named
layer, a buffer or a layer held in a variable keeps none, and the model is evaluated whole.
"""
from __future__ import annotations

from ..frontend.containers import Loop
from ..frontend.loopvars import names_in
from .relocate import Mover, Unmovable, places

_DICTS = ("params", "param_types", "param_defaults", "atom_env", "containers")
_LISTS = ("inputs", "outputs", "failures", "dropped")


class Kept:
    """A model's state before its statement `count`, with the key it is valid for and where the
    declarations it was made from were."""

    def __init__(self, key: tuple, count: int, state: tuple, steps: int, reached: frozenset, where: dict, decl):
        self.key, self.count, self.state, self.steps, self.reached, self.places = key, count, state, steps, reached, where
        self.decl = decl   # the model as it was: its statements' ids are in the graph's loop regions


class Resuming:
    """One model's evaluation in a check: resumed from `kept` where its key holds, and its state
    kept before statement `boundary` (the first that reaches a declaration the edit changed)."""

    def __init__(self, decl, keys, kept: Kept | None, affected: set, said: dict):
        self.decl, self.keys, self.kept, self.said = decl, keys, kept, said
        self.boundary = self._boundary(affected - {decl.name})
        self.taken: Kept | None = None
        self.resumed = False

    def run(self, ev, stmts, ctx) -> None:
        start_steps, before = ev.steps, len(ev.reporter.diagnostics)
        start = self._resume(ev, ctx) if self.kept is not None else 0
        for i in range(start, len(stmts)):
            if i == self.boundary and i > start and not ctx.failed and len(ev.reporter.diagnostics) == before:
                self.taken = self._take(ev, ctx, i, ev.steps - start_steps)
            ev._statement(stmts[i], ctx, True)

    def _resume(self, ev, ctx) -> int:
        kept = self.kept
        if kept.count >= len(self.decl.body) or self._key(kept.count) != kept.key:
            return 0
        mover = _ModelMover(kept.places, self.keys.unit, self.decl, ev.moved)
        try:
            graph, scope, current, loops = _moved(mover, kept.state)
        except Unmovable:
            return 0
        ev.moved.update(mover.memo)   # the block graphs moved, for the next model's state that holds them
        _regions(graph, kept.decl.body[:kept.count], self.decl.body[:kept.count])
        _install(ctx.graph, graph)
        ctx.scope, ctx.current, ctx.loops = scope, current, loops
        ev.steps += kept.steps
        ev.evaluated |= kept.reached
        self.resumed = True
        return kept.count

    def _take(self, ev, ctx, count: int, steps: int) -> Kept | None:
        g = ctx.graph
        if ctx.layer_names or ctx.buffer_sources or ctx.outputs is not None or ctx.loop_depth or g.failures \
                or g.containers or g._nx is not None:
            return None
        key = self._key(count)
        where = places(self.keys.unit, {self.decl.name, *(n for n, _, _ in key[2])})
        try:
            state = _moved(_ModelMover(where, self.keys.unit, self.decl, None), (g, ctx.scope, ctx.current, ctx.loops))
        except Unmovable:
            return None
        return Kept(key, count, state, steps, frozenset(ev.evaluated), where, self.decl)


    def _boundary(self, affected: set) -> int | None:
        """The first top-level statement of the model that mentions a declaration the edit changed
        (or one that reaches such a one); None when none does."""
        if not affected:
            return None
        return next((i for i, stmt in enumerate(self.decl.body) if self._names(stmt) & affected), None)

    def _names(self, stmt) -> frozenset:
        """The names a statement mentions, known by its text (a statement parses alike wherever it is)."""
        text = stmt.span.text
        found = self.said.get(text)
        if found is None:
            found = self.said[text] = frozenset(names_in(stmt))
        return found

    def _key(self, count: int) -> tuple:
        """What the state before statement `count` depends on: the model's text up to there, and the
        texts of what its parameters and those statements reach, with the declarations' names."""
        decl, keys = self.decl, self.keys
        text = decl.span.file.text[decl.span.start:decl.body[count].span.start]
        mentioned = names_in(decl.params).union(*(self._names(stmt) for stmt in decl.body[:count]))
        names, texts = keys.texts_of({n for n in mentioned if n in keys.unit.decls and n != decl.name})
        return names, text, texts


def _moved(mover: Mover, state: tuple) -> tuple:
    """A copy of a state (graph, scope, running value, loops) with its spans moved: nothing in it
    is shared with `state` that evaluating on could change (the block graphs are not changed)."""
    graph, scope, current, loops = state
    copy = mover.graph(graph)
    for name in _DICTS:
        setattr(copy, name, dict(getattr(graph, name)))
    for name in _LISTS:
        setattr(copy, name, list(getattr(graph, name)))
    for node in copy.nodes.values():
        node.outputs, node.inputs = list(node.outputs), list(node.inputs)
    return copy, {k: mover.value(v) for k, v in scope.items()}, mover.value(current), [mover.loop(x) for x in loops]


def _regions(graph, before: tuple, now: tuple) -> None:
    """A node made in a loop knows the loop's iteration by the loop statement's id (diagrams draw
    alike iterations once): the ids of the statements before (`before`, alive with the kept state)
    become those of the same statements now, so no id of a freed statement stays in a graph."""
    ids = {id(a): id(b) for a, b in zip(_statements(before), _statements(now))}
    for node in graph.nodes.values():
        if node.region is not None and node.region[0] in ids:
            node.region = (ids[node.region[0]], *node.region[1:])


def _statements(body: tuple) -> list:
    """The statements of a body and of the bodies in it, in order."""
    out = []
    for stmt in body:
        out.append(stmt)
        for name in ("body", "orelse"):
            out += _statements(getattr(stmt, name, ()))
    return out


def _install(live, graph) -> None:
    """`graph`'s contents into the model's graph, whose guard list and atom values the evaluation
    records into (dslc.ir.dims.recording, atom_values): those two are filled in place."""
    guards, env = live.guards, live.atom_env
    live.__dict__.update(graph.__dict__)
    guards.clear()
    guards._set.clear()
    for g in graph.guards:
        guards.append(g)
    env.clear()
    env.update(graph.atom_env)
    live.guards, live.atom_env = guards, env


class _ModelMover(Mover):
    """The move of a model's state: its own declaration is taken as the model now is (only the
    text before the statement the state stops at has to be the same, and the key says it is).
    The graphs of the blocks it applied are never changed once made: a state keeps them as they
    are (`moved` None), and taking it up moves each once a check (`moved`: the copies made for
    the models resumed before, by the id of the graph they were made from)."""

    def __init__(self, before: dict, unit, decl, moved: dict | None):
        super().__init__(before, unit)
        self.model, self.moved, self.top = decl, moved, None

    def graph(self, g):
        if self.top is None:
            self.top = g
            return super().graph(g)
        if self.moved is None:
            return g
        return self.moved.get(id(g)) or super().graph(g)

    def decl(self, decl):
        if decl is not None and getattr(decl, "name", None) == self.model.name and decl.kind == self.model.kind:
            return self.model
        return super().decl(decl)

    def loop(self, loop: Loop) -> Loop:
        if type(loop) is not Loop:
            raise Unmovable(loop)
        return Loop(loop.kind, self.value(loop.count), [list(p) for p in loop.passes], loop.name,
                    self.span(loop.name_span), self.span(loop.span), loop.settled)

