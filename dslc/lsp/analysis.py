"""Checking the documents open in an editor, as `dslc check` checks files.

The text checked is the editor's, saved or not, for the document and for the files it
imports that are open too. Each file's parse is kept by its text's hash, so a change to
one document parses that document again and reuses every imported file's module; and the
document is parsed again piece by piece (dslc.frontend.reparse): only the declarations whose
text changed are parsed, the others' trees are moved to their new places.

A model known clean whose text and dependencies did not change is not evaluated again
(dslc.lsp.incremental). What the diagnostics need is done at once; the shapes of the models
not evaluated and of those that stopped at an error (for hovers and inlay hints, not for
diagnostics) are evaluated only when a request asks for them.
Nothing here knows the protocol: dslc.lsp.server turns an Analysis into messages.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from ..diagnostics import Diagnostic, DslcError, Reporter, SourceFile
from ..frontend import ast
from ..frontend.check import check_unit, gc_paused
from ..frontend.evaluator import Evaluator
from ..frontend.loader import Reading, Unit, display_name, load_partly
from ..frontend.reparse import Reparser
from ..ir.limits import MAX_SOURCE_BYTES
from .incremental import ModelCache


@dataclass
class Analysis:
    """One check of one document: its diagnostics (every file's), the unit as far as it loaded,
    the graphs of the models that evaluated, and each file's absolute path (by display name)."""
    path: str
    text: str
    diagnostics: list[Diagnostic]
    unit: Unit | None = None
    graphs: dict = field(default_factory=dict)
    paths: dict = field(default_factory=dict)
    partial: set = field(default_factory=set)   # models in `graphs` evaluated only up to an error
    skipped: list = field(default_factory=list)   # models known clean, not evaluated: see `finish`
    unfinished: bool = False   # `graphs` lacks the skipped models and those that stopped at an error
    pause: object = None       # the collector's pause around evaluation (the checker's; gc_paused when None)

    def finish(self) -> None:
        """Evaluate the models the check skipped, and those that stopped at an error as far as
        they go (`graphs`, `partial`)."""
        if self.unfinished:
            with self.pause or gc_paused():
                ev = Evaluator(self.unit, Reporter())
                for name in self.skipped:
                    graph = ev.model(self.unit.decls[name])
                    if graph is not None:
                        self.graphs[name] = graph
                self.partial = _partial_graphs(self.unit, self.graphs)
            self.unfinished = False

    @property
    def module(self) -> ast.Module | None:
        """The document's own parsed module (None when it does not parse)."""
        if self.unit is None:
            return None
        return next((m for m in self.unit.modules if self.paths.get(m.file.name) == self.path), None)


class Checker:
    """Checks documents; `open` holds the editor's text of every open document by absolute path.
    `pause`: the context manager each check runs in (a reusable one, as dslc.lsp.heap's), by
    default frontend.check.gc_paused."""

    def __init__(self, pause=None):
        self.open: dict[str, str] = {}
        self.pause = pause
        self._parsed: dict[str, tuple[bytes, object]] = {}   # display name -> (text digest, Module or DslcError)
        self._reparsers: dict[str, Reparser] = {}            # display name -> its pieces' trees
        self._models: dict[str, ModelCache] = {}             # document path -> its clean models

    def check(self, path: str, text: str) -> Analysis:
        if len(text.encode("utf-8", "surrogatepass")) > MAX_SOURCE_BYTES:
            return Analysis(path, text, [Diagnostic("E0704", f"the document is larger than {MAX_SOURCE_BYTES >> 20} MiB",
                                                    file_name=display_name(path))])
        reading = Reading(open_text=self.open.get, parse=self._parse)
        with self.pause or gc_paused():
            unit, reporter = load_partly(SourceFile(display_name(path), text), path, reading)
            paths = {f.name: p for f, p in reading.paths.items()}
            graphs: dict = {}
            diagnostics = list(reporter.diagnostics)
            models = self._models.setdefault(path, ModelCache())
            models.skipped = []
            if not reporter.has_errors:
                diagnostics = _checked(unit, graphs, models)
            unfinished = bool(models.skipped) or any(d.severity == "error" for d in diagnostics)
        return Analysis(path, text, diagnostics, unit, graphs, paths, skipped=list(models.skipped),
                        unfinished=unfinished, pause=self.pause)

    def _parse(self, file: SourceFile) -> ast.Module:
        """The file's module, parsed again only when its text changed."""
        digest = hashlib.blake2b(file.text.encode("utf-8", "surrogatepass"), digest_size=16).digest()
        seen = self._parsed.get(file.name)
        if seen is None or seen[0] != digest:
            try:
                seen = (digest, self._reparsers.setdefault(file.name, Reparser()).parse(file))
            except DslcError as e:
                seen = (digest, e)
            self._parsed[file.name] = seen
        if isinstance(seen[1], DslcError):
            raise seen[1]
        return seen[1]


def _checked(unit: Unit, graphs: dict, models: ModelCache) -> list[Diagnostic]:
    """What `dslc check` reports on a loaded unit: its errors and warnings. One process (a server
    with threads must not fork)."""
    try:
        return check_unit(unit, jobs=1, graphs=graphs, evaluate=models.evaluate, plans=models.plan_checker)
    except DslcError as e:
        return e.diagnostics


def _partial_graphs(unit: Unit, graphs: dict) -> set:
    """Each model that did not evaluate, as far as it got (`dslc render` draws the same), so the
    shapes above an error still show while it is being fixed. Their names."""
    partial = set()
    for decl in unit.of_kind("model"):
        if decl.name in graphs or any(p.default is None for p in decl.params):
            continue
        graph = Evaluator(unit, Reporter()).model(decl, {}, partial=True)
        if graph is not None:
            graphs[decl.name] = graph
            partial.add(decl.name)
    return partial
