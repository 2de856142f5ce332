"""Spans, diagnostics and their rendering (file:line:col, source line, caret)."""
from .codes import EXPLANATIONS, explain
from .diagnostic import Diagnostic, DslcError, Label, Reporter
from .source import SourceFile, Span
from .suggest import did_you_mean

__all__ = ["Diagnostic", "DslcError", "EXPLANATIONS", "Label", "Reporter", "SourceFile",
           "Span", "did_you_mean", "explain"]
