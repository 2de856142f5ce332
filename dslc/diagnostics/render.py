"""Render a diagnostic the rustc/Elm way.

    specs/cnn.dl:7:5: error[E0402]: `Conv2d` expects a 4-d input, got [B, 784]
       |
     6 |     Flatten()
       |     --------- this makes the tensor 2-d
     7 |     Conv2d(32, 3)
       |     ^^^^^^^^^^^^^ expects [N, C, H, W]
       = help: move `Flatten()` after the convolutions

The first line is grep-friendly (`FILE:LINE:COL: error[CODE]: message`).
Tabs are expanded so carets line up with what a terminal shows.

Nothing from the user reaches the terminal raw: control characters in source
lines, file names and quoted text (an ESC that would start a terminal escape
sequence, a carriage return that would overwrite the line, C1 controls, and the
bidirectional overrides that reorder what is shown) print as `\x1b` or
`\u202e`, and carets are placed on the escaped text.
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING

from .source import Span

if TYPE_CHECKING:  # annotations only: diagnostic.py imports this module
    from .diagnostic import Diagnostic

TAB = 4
WIDTH = 100  # longer source lines are cropped around the caret


# C0 controls but tab and newline, DEL, C1 controls, and the bidirectional embeddings,
# overrides and isolates (the "Trojan Source" characters).
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """`text` with every character that could drive or mislead a terminal written as an escape.

    Newlines and tabs are kept: messages may span lines, and tabs are expanded where it matters."""
    return _UNSAFE.sub(_escape, text)


def _escape(m: re.Match) -> str:
    code = ord(m.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def render(d: Diagnostic) -> str:
    head = f"{d.severity}[{d.code}]: {d.message}"
    if d.span is not None:
        head = f"{d.span}: {head}"
    elif d.file_name:
        head = f"{d.file_name}: {head}"
    marks = _marks(d)
    lines = [printable(head)]
    if marks:
        lines += _snippet(marks, d.span)
    gutter = " " * (_gutter_width(marks) + 1)
    for note in d.notes:
        lines.append(printable(f"{gutter}= note: {note}"))
    if d.help:
        lines.append(printable(f"{gutter}= help: {d.help}"))
    return "\n".join(lines)


def _marks(d: Diagnostic) -> list[tuple[Span, str, str]]:
    """(span, underline character, text) for the primary and each secondary label."""
    marks = []
    if d.span is not None:
        marks.append((d.span, "^", d.label))
    for lab in d.labels:
        marks.append((lab.span, "-", lab.text))
    return marks


def _gutter_width(marks) -> int:
    if not marks:
        return 1
    return max(len(str(span.file.line_col(span.end)[0])) for span, _, _ in marks)


def _display(text: str) -> str:
    """Source text as printed: controls escaped, then tabs expanded (after escaping, so tab
    stops fall where the printed text puts them)."""
    return printable(text).expandtabs(TAB)


def _display_col(line: str, col: int) -> int:
    """0-based display column of the 1-based character column `col`."""
    return len(_display(line[:col - 1]))


def _snippet(marks, primary: Span | None) -> list[str]:
    width = _gutter_width(marks)
    pad = " " * width
    out = [f"{pad} |"]
    # Marks on other files get their own header; same-file marks sort by line.
    primary_file = primary.file if primary is not None else marks[0][0].file
    ordered = sorted(marks, key=lambda m: (m[0].file is not primary_file, m[0].file.name, m[0].start))
    current_file = primary_file
    last_line = None
    for span, ch, text in ordered:
        if span.file is not current_file:
            out.append(printable(f"{pad}--> {span}"))
            current_file, last_line = span.file, None
        line_no, col = span.file.line_col(span.start)
        src = span.file.line_text(line_no)
        src = src[:-1] if src.endswith("\r") else src  # the CR of a CRLF line end is no character to show
        end_line, end_col = span.file.line_col(span.end)
        start = _display_col(src, col)
        stop = _display_col(src, end_col) if end_line == line_no else len(_display(src))
        shown, shift = _crop(_display(src), start)
        if line_no != last_line:
            if last_line is not None and line_no > last_line + 1:
                out.append(f"{pad}...")
            out.append(f"{str(line_no).rjust(width)} | {shown}".rstrip())
        start, stop = start - shift, min(stop - shift, len(shown))
        under = ch * max(1, stop - start)
        label = f" {printable(text)}" if text else ""
        out.append(f"{pad} | {' ' * start}{under}{label}".rstrip())
        last_line = line_no
    return out


def _crop(line: str, col: int) -> tuple[str, int]:
    """A window of a very long line around `col`: (text, how many characters were cut on the left)."""
    if len(line) <= WIDTH:
        return line, 0
    left = max(0, min(col - WIDTH // 2, len(line) - WIDTH))
    text = line[left:left + WIDTH]
    if left > 0:
        text = "..." + text[3:]
    if left + WIDTH < len(line):
        text = text[:-3] + "..."
    return text, left
