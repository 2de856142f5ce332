"""Diagnostics: what went wrong, where, and what to do about it.

Every phase collects `Diagnostic`s into a `Reporter` instead of stopping at
the first one; a phase that reported errors raises `DslcError` carrying all of
them, sorted by position.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .render import render
from .source import Span


@dataclass(frozen=True)
class Label:
    """A secondary pointer into the source, drawn with `-` under the text."""

    span: Span
    text: str


@dataclass(frozen=True)
class Diagnostic:
    code: str
    message: str
    span: Span | None = None
    label: str = ""                      # text beside the primary caret
    labels: tuple[Label, ...] = ()
    notes: tuple[str, ...] = ()
    help: str | None = None
    severity: str = "error"
    file_name: str | None = None         # for errors about a file with no span (missing, binary)

    def __post_init__(self) -> None:
        letter = "W" if self.severity == "warning" else "E"   # W0201: a warning, which stops nothing
        if not (len(self.code) == 5 and self.code[0] == letter and self.code[1:].isdigit()):
            raise ValueError(f"bad {self.severity} code {self.code!r}")

    def sort_key(self) -> tuple:
        if self.span is None:
            return (self.file_name or "", 0, 0)
        return (self.span.file.name, self.span.start, self.code)

    def render(self) -> str:
        return render(self)


MAX_SHOWN = 200  # diagnostics of one error; past them, one E0707 says how many more there were


class DslcError(Exception):
    """A user error: one or more diagnostics, rendered as the message."""

    def __init__(self, diagnostics: list[Diagnostic] | Diagnostic):
        if isinstance(diagnostics, Diagnostic):
            diagnostics = [diagnostics]
        self.diagnostics = sorted(dedupe(diagnostics), key=Diagnostic.sort_key)
        super().__init__(self.render())

    def render(self) -> str:
        return "\n".join(d.render() for d in _shown(self.diagnostics))

    @property
    def codes(self) -> list[str]:
        return [d.code for d in self.diagnostics]


def _shown(diagnostics: list[Diagnostic]) -> list[Diagnostic]:
    """The first MAX_SHOWN diagnostics, and a last one counting the rest (as rustc and gcc stop)."""
    if len(diagnostics) <= MAX_SHOWN:
        return diagnostics
    rest = len(diagnostics) - MAX_SHOWN
    last = diagnostics[MAX_SHOWN - 1]
    file_name = last.span.file.name if last.span is not None else last.file_name
    return diagnostics[:MAX_SHOWN] + [Diagnostic(
        "E0707", f"{rest:,} more error{'s' if rest > 1 else ''} not shown", file_name=file_name,
        help="fix the errors above and check again")]


def dedupe(diagnostics: list[Diagnostic]) -> list[Diagnostic]:
    """Drop exact repeats (a block unrolled twice reports its error once)."""
    seen, out = set(), []
    for d in diagnostics:
        key = (d.code, d.message, d.span)
        if key not in seen:
            seen.add(key)
            out.append(d)
    return out


@dataclass
class Reporter:
    """Collects the diagnostics of one phase."""

    diagnostics: list[Diagnostic] = field(default_factory=list)

    def error(self, code: str, message: str, span: Span | None = None, **kw) -> Diagnostic:
        d = Diagnostic(code, message, span, **kw)
        self.diagnostics.append(d)
        return d

    def add(self, d: Diagnostic) -> None:
        self.diagnostics.append(d)

    def extend(self, ds: list[Diagnostic]) -> None:
        self.diagnostics.extend(ds)

    @property
    def has_errors(self) -> bool:
        return any(d.severity == "error" for d in self.diagnostics)

    @property
    def warnings(self) -> list[Diagnostic]:
        return sorted(dedupe([d for d in self.diagnostics if d.severity == "warning"]), key=Diagnostic.sort_key)

    def raise_if_errors(self) -> None:
        if self.has_errors:
            raise DslcError(self.diagnostics)
