"""`dslc check`: everything that can be checked without running anything.

Every model whose parameters all have defaults is evaluated (shapes
included); every declaration's names are resolved, so an unused block or a
model that needs arguments still gets its typos reported; plans are checked
against their models and data.
"""
from __future__ import annotations

from .diagnostics import Reporter
from .frontend.evaluate import Evaluator
from .frontend.loader import Unit


def check_unit(unit: Unit) -> dict:
    """Raise DslcError with every problem; return the model graphs that were built."""
    reporter = Reporter()
    ev = Evaluator(unit, reporter)
    graphs = {}
    for decl in unit.of_kind("model"):
        if all(p.default is not None for p in decl.params):
            g = ev.model(decl)
            if g is not None:
                graphs[decl.name] = g
    from .frontend.plans import check_plans
    checker = check_plans(unit, ev, reporter)
    from .frontend.names import check_names
    check_names(unit, reporter, skip=ev.evaluated | checker)
    reporter.raise_if_errors()
    return graphs
