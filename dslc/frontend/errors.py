"""Errors raised during evaluation and caught per statement."""
from __future__ import annotations

from ..diagnostics import Diagnostic


class EvalError(Exception):
    """A user error at a known place; the statement that raised it is abandoned."""

    def __init__(self, code: str, message: str, span=None, **kw):
        super().__init__(message)
        self.diagnostic = Diagnostic(code, message, span, **kw)


class Poisoned(Exception):
    """An earlier error's value was used; nothing more is reported."""
