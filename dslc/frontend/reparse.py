"""Parsing a file again after an edit: only the declarations whose text changed.

A file is cut into the pieces `parse` recovers from one by one (each top-level declaration's
text). Each piece's syntax tree is kept by its text, parsed as a file of its own, and moved to
where the piece lies in the new text, so an edit inside one declaration parses that
declaration alone. A file with a syntax error is parsed whole, so its errors are `parse`'s.
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
        for start, end in _declaration_bounds(file.text):
            piece = file.text[start:end]
            parsed = kept.get(piece, self._pieces.get(piece))   # () for a piece of comments
            if parsed is None:
                try:
                    parsed = _parse_text(SourceFile(file.name, piece), piece).decls
                except _SyntaxError:
                    self._pieces = kept
                    return parse(file)   # every error, exactly as a whole parse reports them
            kept[piece] = parsed
            decls.extend(moved(d, file, start) for d in parsed)
        self._pieces = kept   # only the current pieces: memory stays the size of the file's trees
        return ast.Module(file, tuple(decls))


def moved(node, file: SourceFile, delta: int):
    """A copy of a syntax tree with every span `delta` characters later, in `file`."""
    if isinstance(node, Span):
        return Span(file, node.start + delta, node.end + delta)
    if isinstance(node, tuple):
        return tuple(moved(x, file, delta) for x in node)
    fields = _FIELDS.get(type(node))
    if fields is None:
        return node   # a name, a number, a string, None
    copy = object.__new__(type(node))
    for name in fields:
        object.__setattr__(copy, name, moved(getattr(node, name), file, delta))
    return copy


_FIELDS = {cls: tuple(f.name for f in dataclasses.fields(cls))
           for cls in vars(ast).values()
           if isinstance(cls, type) and dataclasses.is_dataclass(cls) and issubclass(cls, ast.Node)}
