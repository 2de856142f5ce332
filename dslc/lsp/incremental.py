"""Evaluating again only the models an edit can change.

A model that evaluated clean (a graph, no error, no warning, no lint) is not evaluated again
while the texts of it and of every declaration it refers to, directly or through others, are
the same, and so are the declarations' names and kinds: evaluation is deterministic in those,
so it would be clean again. Each model keeps the last KEEP such keys it was clean with, so an
edit undone (a typo typed and deleted) finds the model clean again without evaluating it.
What `dslc check` learns from evaluating it, the names it reached (whose names `check_names`
then leaves alone), is kept with it. Models with a problem
are always evaluated again, so their diagnostics are always new ones, in their current places;
the shapes of a model that was skipped are evaluated when a hover or an inlay hint asks.

The models that are evaluated (an edit in a block every model uses evaluates them all) take
the block specializations they need from the last checks where they can: a specialization
that was clean (no diagnostic) is made again only when the texts of its block or of what the
block reaches, or the declarations' names and kinds, are none the document had in the last
KEEP checks (while an edit breaks a block, its clean specializations wait for the undo); one whose block only moved
is moved with it (dslc.lsp.relocate). It counts the steps it took when it was made, as a full
check would spend them again; a document whose last check came near the step limit
(a tenth of it) reuses none, so the limit is reported where a full check reports it.
"""
from __future__ import annotations

import weakref

from ..frontend.apply import caller_terms_key, specialization_key
from ..frontend.evaluator import Evaluator
from ..frontend.lints import lint_model
from ..frontend.loopvars import names_in
from ..frontend.plans import PlanChecker
from ..ir.dims import Real, Size, Sym
from ..ir.limits import MAX_STEPS
from .prefix import Kept, Resuming
from .relocate import places, relocated

REUSE_STEPS = MAX_STEPS // 10   # a last check that ran more steps than this reuses no specialization
SAID = 20_000   # statement texts whose names are kept (then forgotten, and found again as needed)
KEEP = 4   # a model's clean texts, and the specializations of texts, kept from this many checks back


class ModelCache:
    """The models found clean by the last check, with what they depend on."""

    def __init__(self):
        self.clean: dict[str, list] = {}    # model name -> [(a key, the names its evaluation reached)], newest first
        self.skipped: list[str] = []        # the models the last check did not evaluate
        self.mentions: dict[str, frozenset] = {}   # a declaration's text -> the names it mentions
        self.blocks: dict[tuple, _Kept] = {}       # the clean specializations of the last check
        self.steps = 0                              # the steps the last check ran
        self.reused = 0                             # the specializations the last check took from earlier ones
        self.checks = 0                             # the checks run
        self.texts: dict[str, tuple] = {}           # the last check's declarations: name -> (file, text)
        self.prefixes: dict[str, Kept] = {}         # a model's state before a statement (dslc.lsp.prefix)
        self.resumed = 0                            # the models the last check resumed
        self.said: dict[str, frozenset] = {}        # a statement's text -> the names it mentions
        self.models = None                          # the last check's models' evaluator (a weak reference)
        self.plans: PlanChecker | None = None       # the last check's plans' checker

    def evaluate(self, unit, reporter, models: list, graphs: dict) -> Evaluator:
        """check_unit's `evaluate`: each model evaluated unless it is known clean."""
        if self.plans is not None:   # the steps the last check ran are its plans' too
            self.steps, self.plans = max(self.steps, self.plans.steps), None
        keys = _Keys(unit, self.mentions)
        ev = _Recording(unit, reporter, keys, self.blocks if self.steps <= REUSE_STEPS else {})
        affected = self._affected(keys)
        clean, self.skipped = {}, []
        for decl in models:
            key, seen = keys.of(decl), self.clean.get(decl.name, [])
            hit = next((entry for entry in seen if entry[0] == key), None)
            if hit is not None:
                ev.evaluated |= hit[1]
                clean[decl.name] = [hit] + [entry for entry in seen if entry is not hit]
                self.skipped.append(decl.name)
                continue
            clean[decl.name] = seen   # a model with a problem keeps its clean texts: an undo finds them
            before = len(reporter.diagnostics)
            graph, reached = self._model(ev, keys, decl, affected)
            if graph is not None:
                lint_model(graph, reporter)
                graphs[decl.name] = graph
                if len(reporter.diagnostics) == before:
                    clean[decl.name] = [(key, reached)] + seen[:KEEP - 1]
        self.clean = clean
        self.mentions = keys.mentions   # only the current declarations' texts
        self._keep_blocks(ev, keys)
        self.steps, self.reused, self.models = ev.steps, ev.reused, weakref.ref(ev)
        return ev

    def plan_checker(self, unit, reporter) -> PlanChecker:
        """check_unit's `plans`: the plans' checker of the check `evaluate` began."""
        self.plans = _Plans(unit, reporter, self.models())
        return self.plans

    def _model(self, ev: _Recording, keys: _Keys, decl, affected: set) -> tuple:
        """The model evaluated (resumed where its kept state holds, its state before the first
        statement the edit reaches kept), and the names it reached."""
        kept = self.prefixes.get(decl.name) if self.steps <= REUSE_STEPS else None
        ev.resuming = r = Resuming(decl, keys, kept, affected, self.said)
        try:
            graph, reached = ev.reaching(ev.model, decl)
        finally:
            ev.resuming = None
        if r.taken is not None:
            self.prefixes[decl.name] = r.taken
        self.resumed += r.resumed
        return graph, reached

    def _affected(self, keys: _Keys) -> set:
        """The declarations whose texts differ from the last check's, and those that reach them
        (none at the first check: no edit says where the next one will be)."""
        texts = {name: (_file_name(d), d.span.text) for name, d in keys.unit.decls.items()}
        changed = {n for n, t in texts.items() if self.texts.get(n) != t} if self.texts else set()
        self.texts = texts
        self.resumed = 0
        if len(self.said) > SAID:
            self.said = {}
        return {n for n, d in keys.unit.decls.items() if any(m in changed for m, _, _ in keys.of(d)[1])}

    def _keep_blocks(self, ev: _Recording, keys: _Keys) -> None:
        """The specializations this check made or took, those of earlier checks it did not reach
        (a model stopped before them) while their texts are the document's, and those of texts
        the document had in the last KEEP checks (an undone edit finds them)."""
        self.checks += 1
        for kept in ev.kept.values():
            kept.seen = self.checks
        for k, kept in ev.previous.items():
            if k in ev.kept:
                continue
            if keys.current(k):
                kept.seen = self.checks
            if self.checks - kept.seen < KEEP:
                ev.kept[k] = kept
        self.blocks = ev.kept


class _Reusing:
    """The block specializations of an evaluator (a mixin): taken from the last checks where
    they can be, and those it makes kept for the next, with the names each reached."""

    def _share(self, keys: _Keys, previous: dict, kept: dict, kept_by_id: dict, reached: dict) -> None:
        self.keys, self.previous, self.kept = keys, previous, kept   # the last checks' clean specializations, this one's
        self.kept_by_id = kept_by_id   # id(specialization) -> its entry in `kept`
        self.reached = reached         # id(specialization) -> (it, the names it reached)
        self.reused = 0

    def reaching(self, evaluate, *args):
        """`evaluate(*args)` and the names of the models and blocks it reached."""
        outer, self.evaluated = self.evaluated, set()
        try:
            result = evaluate(*args)
        finally:
            inner, self.evaluated = self.evaluated, outer | self.evaluated
        return result, frozenset(inner)

    def _specialize(self, spec, inputs, *args):
        key = _reusable_key(spec, inputs, self.keys)
        sub = self._reused(key) if key is not None else None
        if sub is not None:
            return sub
        steps, before = self.steps, len(self.reporter.diagnostics)
        sub, inner = self.reaching(super()._specialize, spec, inputs, *args)
        if sub is not None:
            self.reached[id(sub)] = (sub, inner)   # the graph kept with its id: ids are not reused
            if key is not None and len(self.reporter.diagnostics) == before:
                self._keep(key, _Kept(sub, inner, self.steps - steps, places(self.unit, key[-1])))
        return sub

    def _keep(self, key: tuple, kept: _Kept) -> None:
        self.kept[key] = self.kept_by_id[id(kept.sub)] = kept

    def _in_caller_terms(self, sub, spec, inputs, f):
        """The results of a kept specialization in its callers' terms are kept with it too: they
        are types (no spans), a function of the specialization and of `caller_terms_key`. Those
        with guards (which hold spans) are substituted again each time."""
        kept = self.kept_by_id.get(id(sub))
        if kept is None:
            return super()._in_caller_terms(sub, spec, inputs, f)
        key = caller_terms_key(spec, inputs)
        out_types = kept.terms.get(key)
        if out_types is None:
            out_types, guards = super()._in_caller_terms(sub, spec, inputs, f)
            if guards:
                return out_types, guards
            kept.terms[key] = out_types
        return out_types, []

    def _reused(self, key: tuple):
        """The last check's specialization for `key`, moved to where its declarations are now
        and counted as reached; None when there is none (or it cannot be moved)."""
        kept = self.previous.get(key)
        if kept is None or self.runaway or self.steps + kept.steps > MAX_STEPS:
            return None
        sub = relocated(kept.sub, kept.places, self.unit)
        if sub is None:
            return None
        self.steps += kept.steps
        self.reused += 1
        self.evaluated |= kept.reached
        self.reached[id(sub)] = (sub, kept.reached)
        self._keep(key, _Kept(sub, kept.reached, kept.steps, places(self.unit, key[-1]), kept.terms))
        return sub


class _Recording(_Reusing, Evaluator):
    """The models' evaluator: it knows which declarations each evaluation reached, also through
    block specializations it took from its cache (made while evaluating another model), and
    resumes a model from its kept state (dslc.lsp.prefix)."""

    def __init__(self, unit, reporter, keys: _Keys, kept: dict):
        super().__init__(unit, reporter)
        self._share(keys, kept, {}, {}, {})
        self.cache = _Cache(self)
        self.resuming: Resuming | None = None     # the model being evaluated, resumable (dslc.lsp.prefix)
        self.moved: dict = {}                     # id(a kept state's block graph) -> its copy moved here

    def _run_body(self, stmts, ctx, top: bool = False) -> None:
        r = self.resuming
        if r is None or not top or stmts is not r.decl.body or ctx.decl is not r.decl or len(ctx.stack) != 1:
            return super()._run_body(stmts, ctx, top)
        self.resuming = None   # the model's own body only, not a use of it inside itself
        r.run(self, stmts, ctx)


class _Plans(_Reusing, PlanChecker):
    """The plans' checker: the models a plan evaluates (with the plan's arguments, every check)
    take their block specializations from this check's models and the last checks' plans and
    models, and keep those they make for the next check."""

    def __init__(self, unit, reporter, models: _Recording):
        super().__init__(unit, reporter)
        self._share(models.keys, models.previous, models.kept, models.kept_by_id, models.reached)


class _Kept:
    """A clean specialization, with the names it reached, the steps it took, where the
    declarations it was made from were (relocate.places), its results in its callers' terms
    and when it was last of the document."""

    def __init__(self, sub, reached: frozenset, steps: int, where: dict, terms: dict | None = None):
        self.sub, self.reached, self.steps, self.places = sub, reached, steps, where
        self.terms = {} if terms is None else terms   # caller_terms_key -> its output types in the caller's terms
        self.seen = 0   # the last check whose text it was of (ModelCache.checks)


def _reusable_key(spec, inputs, keys: _Keys) -> tuple | None:
    """What a specialization depends on, as values that mean the same in the next check (its
    declarations' texts, plain arguments, input types); None when an argument is not plain
    (a layer, a tensor: known by identity, which the next check does not share)."""
    if keys.unit.decls.get(spec.decl.name) is not spec.decl or not all(_plain(a.value) for a in spec.args.values()):
        return None
    names, texts = keys.of(spec.decl)
    return specialization_key(spec, inputs), names, texts, tuple(n for n, _, _ in texts)


def _plain(v) -> bool:
    if isinstance(v, (list, tuple)):
        return all(_plain(x) for x in v)
    return v is None or isinstance(v, (bool, int, float, str, Size, Real, Sym))


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
        self.closures: dict[str, tuple] = {}   # a declaration's name -> its key
        self.known, self.mentions = mentions, {}   # the last check's mentions, and this one's

    def of(self, decl) -> tuple:
        if decl.name not in self.closures:
            self.closures[decl.name] = self._of(decl)
        return self.closures[decl.name]

    def _of(self, decl) -> tuple:
        return self.texts_of({decl.name})

    def texts_of(self, names: set) -> tuple:
        """The declarations' names and kinds, and the texts of `names` and of what they reach."""
        closure, todo = set(names), list(names)
        while todo:
            for name in self._refs(todo.pop()):
                if name not in closure:
                    closure.add(name)
                    todo.append(name)
        return self.names, tuple((n, _file_name(self.unit.decls[n]), self.unit.decls[n].span.text)
                                 for n in sorted(closure))

    def current(self, key: tuple) -> bool:
        """Whether a specialization's key (`_reusable_key`) is of these declarations."""
        return key[1] == self.names and all(
            name in self.unit.decls and _file_name(self.unit.decls[name]) == file and self.unit.decls[name].span.text == text
            for name, file, text in key[2])

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
