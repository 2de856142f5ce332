"""`dslc check`: everything that can be checked without running anything.

Every model whose parameters all have defaults is evaluated (shapes
included); every declaration's names are resolved, so an unused block or a
model that needs arguments still gets its typos reported; plans are checked
against their models and data.

Models are independent once the file is parsed, so a large file's models are
checked in two processes (a forked child takes half and returns its
diagnostics): the machines dslc runs on have at least two cores, and a
10,000-line spec then checks in about half the time. Anything unexpected in
the child falls back to checking everything here.
"""
from __future__ import annotations

import os
import pickle

from ..diagnostics import Reporter
from .evaluator import Evaluator
from .lints import lint_model
from .loader import Unit
from .names import check_names, check_shadowing
from .plans import check_plans
from .pynames import check_parameter_names
from .sweeps import check_sweeps

PARALLEL_LINES = 3000  # below this, a second process costs more than it saves


def check_unit(unit: Unit, jobs: int | None = None, graphs: dict | None = None, evaluate=None, plans=None) -> list:
    """Raise DslcError with every problem in the unit; return its warnings (Diagnostics).
    `graphs`, when given, receives each model graph evaluated here (name -> Graph; the language
    server's hovers read shapes from them); a forked child's graphs stay in the child.
    `evaluate(unit, reporter, models, graphs)`, when given, evaluates the models instead (in
    this process) and returns its Evaluator: the language server's skips those it knows are clean.
    `plans(unit, reporter)`, when given, makes the plans' checker (a PlanChecker)."""
    reporter = Reporter()
    models = [d for d in unit.of_kind("model") if all(p.default is not None for p in d.params)]
    if evaluate is not None:
        ev = evaluate(unit, reporter, models, graphs if graphs is not None else {})
        return _check_rest(unit, ev, reporter, plans)
    ev = Evaluator(unit, reporter)
    if jobs is None:
        jobs = 2 if _lines(unit) >= PARALLEL_LINES and (os.cpu_count() or 1) > 1 else 1
    if jobs > 1 and hasattr(os, "fork") and len(models) > 1:
        mine, theirs = _halves(models)
        child = _start_child(unit, theirs)
        _models(ev, mine, reporter, graphs)
        if not _join_child(child, reporter, ev):
            _models(ev, theirs, reporter, graphs)
    else:
        _models(ev, models, reporter, graphs)
    return _check_rest(unit, ev, reporter)


def _check_rest(unit: Unit, ev: Evaluator, reporter: Reporter, plans=None) -> list:
    """Everything after the models: plans, sweeps and the names of what evaluation did not reach."""
    evaluated_by_plans = check_plans(unit, ev, reporter, plans)
    check_sweeps(unit, reporter)
    check_names(unit, reporter, skip=ev.evaluated | evaluated_by_plans)
    check_parameter_names(unit, reporter)
    check_shadowing(unit, reporter)
    reporter.raise_if_errors()
    return reporter.warnings


def _models(ev: Evaluator, decls: list, reporter: Reporter, graphs: dict | None = None) -> None:
    """Evaluate each model, and lint those that evaluate."""
    for decl in decls:
        graph = ev.model(decl)
        if graph is not None:
            lint_model(graph, reporter)
            if graphs is not None:
                graphs[decl.name] = graph


def _lines(unit: Unit) -> int:
    return sum(m.file.line_count for m in unit.modules)


def _halves(models: list) -> tuple[list, list]:
    """Two groups of about equal source size (a model's size stands for its work)."""
    mine, theirs, a, b = [], [], 0, 0
    for decl in sorted(models, key=lambda d: d.span.end - d.span.start, reverse=True):
        size = decl.span.end - decl.span.start
        if a <= b:
            mine.append(decl)
            a += size
        else:
            theirs.append(decl)
            b += size
    return mine, theirs


def _start_child(unit: Unit, decls: list):
    """Fork a child that evaluates `decls` and writes (diagnostics, evaluated names) to a pipe."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        os.close(r)
        try:
            rep = Reporter()
            ev = Evaluator(unit, rep)
            _models(ev, decls, rep)
            data = pickle.dumps((rep.diagnostics, ev.evaluated))
            with os.fdopen(w, "wb") as f:
                f.write(data)
            os._exit(0)
        except BaseException:  # noqa: BLE001 - the parent redoes the work
            os._exit(1)
    os.close(w)
    return pid, r


def _join_child(child, reporter: Reporter, ev: Evaluator) -> bool:
    pid, r = child
    with os.fdopen(r, "rb") as f:
        data = f.read()
    _, status = os.waitpid(pid, 0)
    if status != 0 or not data:
        return False
    diagnostics, evaluated = pickle.loads(data)
    reporter.extend(diagnostics)
    ev.evaluated |= evaluated
    return True


class gc_paused:
    """Pause the cyclic garbage collector while building ASTs and IR.

    Compilation allocates many long-lived objects and few cycles; the collector's
    repeated scans of them cost about a third of `dslc check`'s time. It resumes
    (and collects) as soon as the block ends."""

    def __enter__(self):
        import gc
        self._was = gc.isenabled()
        gc.disable()

    def __exit__(self, *exc):
        import gc
        if self._was:
            gc.enable()
