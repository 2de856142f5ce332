"""Parameter names that Python must take as they are.

A model's parameters are its generated class's constructor keywords
(`MnistMLP(hidden=64)`, `build(name, **params)`), so the PyTorch backend
keeps the user's names there rather than renaming them. A name Python cannot
take as a constructor argument (a keyword, `self`, a mangled `__name`) or that
would hide what the constructor uses (`torch`, `super`, a helper) is refused
here, once per declaration, with E0211. Blocks follow the same rule: a model
can be used as a block, and a block may become a model.
"""
from __future__ import annotations

from ..diagnostics import Reporter, Span
from ..ir.naming import parameter_problem
from ..ops.registry import HELPERS


def check_parameter_names(unit, reporter: Reporter) -> None:
    for decl in unit.decls.values():
        if decl.kind not in ("model", "block"):
            continue
        for p in decl.params:
            problem = parameter_problem(p.name, HELPERS, renamed=decl.kind == "block")
            if problem:
                reporter.error("E0211", f"`{p.name}` cannot name a parameter: {problem}", _name_span(p),
                               label="an argument of the generated class's constructor",
                               help="choose another name")


def _name_span(p) -> Span:
    """The parameter's name: its declaration starts with it."""
    return Span(p.span.file, p.span.start, p.span.start + len(p.name))
