"""Parsing a file again after an edit: only the declarations whose text changed.

A file is cut into the pieces `parse` recovers from one by one (each top-level declaration's
text). Each piece's syntax tree is kept by its text, parsed as a file of its own, and moved to
where the piece lies in the new text, so an edit inside one declaration parses that
declaration alone. A file with a syntax error is parsed as `parse` parses it, so its errors are `parse`'s (the
pieces known to parse on their own are not parsed again to find them).
The language server parses each document this way on every change.
"""
from __future__ import annotations

import dataclasses

from ..diagnostics import SourceFile, Span
from . import ast
from .parser import _declaration_bounds, _parse_text, _SyntaxError, parse


class Reparser:
    """Parses successive texts of one file, reusing the trees of the pieces that did not change."""

    def __init__(self):
        self._pieces: dict[str, tuple] = {}   # a piece's text -> its declarations, parsed at offset 0

    def parse(self, file: SourceFile) -> ast.Module:
        kept: dict[str, tuple] = {}
        decls: list = []
        bounds = _declaration_bounds(file.text)
        for start, end in bounds:
            piece = file.text[start:end]
            parsed = kept.get(piece, self._pieces.get(piece))   # () for a piece of comments
            if parsed is None:
                try:
                    parsed = _parse_text(SourceFile(file.name, piece), piece).decls
                except _SyntaxError:
                    # every error, exactly as a whole parse reports them; the pieces known to
                    # parse (those of the text still) are kept, and not parsed again to find them
                    pieces = {file.text[s:e] for s, e in bounds}
                    self._pieces = {p: d for p, d in self._pieces.items() if p in pieces} | kept
                    return parse(file, self._pieces.keys())
            kept[piece] = parsed
            decls.extend(moved(d, file, start) for d in parsed)
        self._pieces = kept   # only the current pieces: memory stays the size of the file's trees
        return ast.Module(file, tuple(decls))


def moved(node, file: SourceFile, delta: int):
    """A copy of a syntax tree with every span `delta` characters later, in `file`."""
    move = _MOVERS.get(type(node))
    return node if move is None else move(node, file, delta)   # a name, a number, a string, None


def _moved_span(span: Span, file: SourceFile, delta: int) -> Span:
    copy = _new(Span)
    copy.__dict__.update(file=file, start=span.start + delta, end=span.end + delta)   # a valid span, moved
    return copy


def _moved_tuple(items: tuple, file: SourceFile, delta: int) -> tuple:
    get = _MOVERS.get
    return tuple([x if (move := get(type(x))) is None else move(x, file, delta) for x in items]) if items else items


def _mover(cls) -> object:
    """The function that moves a node of `cls`: its fields one by one, written out (a language
    server moves every declaration after an edit, some 10,000 nodes a keystroke)."""
    lines = [f"def move_{cls.__name__}(node, file, delta):",
             "    src = node.__dict__",
             "    copy = new(cls)",
             "    d = copy.__dict__"]
    for f in dataclasses.fields(cls):
        lines += [f"    x = src[{f.name!r}]",
                  f"    d[{f.name!r}] = x if (move := get(type(x))) is None else move(x, file, delta)"]
    lines.append("    return copy")
    scope = {"new": _new, "cls": cls, "get": _MOVERS.get}
    exec("\n".join(lines), scope)   # noqa: S102 - the source is the fields' names, written above
    return scope[f"move_{cls.__name__}"]


_new = object.__new__
_MOVERS: dict = {Span: _moved_span, tuple: _moved_tuple}
_MOVERS.update({cls: _mover(cls) for cls in vars(ast).values()
                if isinstance(cls, type) and dataclasses.is_dataclass(cls) and issubclass(cls, ast.Node)})
