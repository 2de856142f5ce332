"""Source files and spans.

A `Span` is a half-open byte range [start, end) of one `SourceFile`'s text.
Line and column numbers are 1-based and computed on demand, so spans stay
cheap to create (the parser makes one per node).
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass, field


@dataclass(eq=False)
class SourceFile:
    """The text of one `.dl` file and the name diagnostics show for it."""

    name: str
    text: str
    _line_starts: list[int] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        starts, find, i = [0], self.text.find, self.text.find("\n")
        while i >= 0:   # str.find, not a loop over every character: the language server makes one a keystroke
            starts.append(i + 1)
            i = find("\n", i + 1)
        self._line_starts = starts

    def line_col(self, offset: int) -> tuple[int, int]:
        """1-based (line, column) of a character offset."""
        offset = max(0, min(offset, len(self.text)))
        line = bisect.bisect_right(self._line_starts, offset) - 1
        return line + 1, offset - self._line_starts[line] + 1

    def line_text(self, line: int) -> str:
        """The text of a 1-based line, without its newline."""
        start = self._line_starts[line - 1]
        end = self.text.find("\n", start)
        return self.text[start:] if end < 0 else self.text[start:end]

    @property
    def line_count(self) -> int:
        return len(self._line_starts)


@dataclass(frozen=True)
class Span:
    """A range of characters in a source file."""

    file: SourceFile
    start: int
    end: int

    def __post_init__(self) -> None:
        if self.end < self.start:
            raise ValueError("span ends before it starts")

    @property
    def line(self) -> int:
        return self.file.line_col(self.start)[0]

    @property
    def col(self) -> int:
        return self.file.line_col(self.start)[1]

    @property
    def text(self) -> str:
        return self.file.text[self.start:self.end]

    def to(self, other: "Span | None") -> "Span":
        """The span from the start of this one to the end of `other`."""
        if other is None or other.file is not self.file:
            return self
        return Span(self.file, min(self.start, other.start), max(self.end, other.end))

    def __str__(self) -> str:
        return f"{self.file.name}:{self.line}:{self.col}"

    def __hash__(self) -> int:
        return hash((id(self.file), self.start, self.end))

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Span) and other.file is self.file
                and other.start == self.start and other.end == self.end)
