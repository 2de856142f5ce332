"""Evaluating again only the models an edit can change.

A model that evaluated clean (a graph, no error, no warning, no lint) is not evaluated again
while the texts of it and of every declaration it refers to, directly or through others, stay
the same, and no declaration is added, removed or renamed: evaluation is deterministic in
those, so it would be clean again. What `dslc check` learns from evaluating it, the names it
reached (whose names `check_names` then leaves alone), is kept with it. Models with a problem
are always evaluated again, so their diagnostics are always new ones, in their current places;
the shapes of a model that was skipped are evaluated when a hover or an inlay hint asks.
"""
from __future__ import annotations

import weakref

from ..frontend.evaluator import Evaluator
from ..frontend.lints import lint_model
from ..frontend.loopvars import names_in


class ModelCache:
    """The models found clean by the last check, with what they depend on."""

    def __init__(self):
        self.clean: dict[str, tuple] = {}   # model name -> (its key, the names its evaluation reached)
        self.skipped: list[str] = []        # the models the last check did not evaluate
        self.mentions: dict[str, frozenset] = {}   # a declaration's text -> the names it mentions

    def evaluate(self, unit, reporter, models: list, graphs: dict) -> Evaluator:
        """check_unit's `evaluate`: each model evaluated unless it is known clean."""
        ev = _Recording(unit, reporter)
        keys = _Keys(unit, self.mentions)
        clean, self.skipped = {}, []
        for decl in models:
            key = keys.of(decl)
            seen = self.clean.get(decl.name)
            if seen is not None and seen[0] == key:
                ev.evaluated |= seen[1]
                clean[decl.name] = seen
                self.skipped.append(decl.name)
                continue
            before = len(reporter.diagnostics)
            graph, reached = ev.reaching(ev.model, decl)
            if graph is not None:
                lint_model(graph, reporter)
                graphs[decl.name] = graph
                if len(reporter.diagnostics) == before:
                    clean[decl.name] = (key, reached)
        self.clean = clean
        self.mentions = keys.mentions   # only the current declarations' texts
        return ev


class _Recording(Evaluator):
    """An evaluator that knows which declarations each evaluation reached, also through block
    specializations it took from its cache (made while evaluating another model)."""

    def __init__(self, unit, reporter):
        super().__init__(unit, reporter)
        self.reached: dict[int, tuple] = {}   # id(specialization) -> (it, the names it reached)
        self.cache = _Cache(self)

    def reaching(self, evaluate, *args):
        """`evaluate(*args)` and the names of the models and blocks it reached."""
        outer, self.evaluated = self.evaluated, set()
        try:
            result = evaluate(*args)
        finally:
            inner, self.evaluated = self.evaluated, outer | self.evaluated
        return result, frozenset(inner)

    def _specialize(self, *args, **kwargs):
        sub, inner = self.reaching(super()._specialize, *args, **kwargs)
        if sub is not None:
            self.reached[id(sub)] = (sub, inner)   # the graph kept with its id: ids are not reused
        return sub


class _Cache(dict):
    """The block specializations; taking one counts its names as reached. It knows its evaluator
    by a weak reference: a cycle would leave both, and every graph they hold, to the cyclic
    collector (dslc.lsp.heap)."""

    def __init__(self, ev: _Recording):
        super().__init__()
        self.ev = weakref.proxy(ev)

    def __getitem__(self, key):
        sub = super().__getitem__(key)
        if sub is not None:
            self.ev.evaluated |= self.ev.reached.get(id(sub), (None, frozenset()))[1]
        return sub


class _Keys:
    """What a model's evaluation depends on: the declarations' names and kinds, and the texts of
    the model and of every declaration it refers to, directly or not."""

    def __init__(self, unit, mentions: dict):
        self.unit = unit
        self.names = tuple(sorted((name, getattr(d, "kind", "")) for name, d in unit.decls.items()))
        self.refs: dict[str, frozenset] = {}
        self.known, self.mentions = mentions, {}   # the last check's mentions, and this one's

    def of(self, decl) -> tuple:
        closure, todo = {decl.name}, [decl.name]
        while todo:
            for name in self._refs(todo.pop()):
                if name not in closure:
                    closure.add(name)
                    todo.append(name)
        return self.names, tuple((n, _file_name(self.unit.decls[n]), self.unit.decls[n].span.text)
                                 for n in sorted(closure))

    def _refs(self, name: str) -> frozenset:
        if name not in self.refs:
            decl = self.unit.decls[name]
            text = decl.span.text
            found = self.known.get(text)
            if found is None:
                found = frozenset(names_in(decl))
            self.mentions[text] = found
            self.refs[name] = frozenset(n for n in found if n in self.unit.decls)
        return self.refs[name]


def _file_name(decl) -> str:
    return decl.span.file.name
