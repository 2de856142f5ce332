"""Name templates: `as "denselayer{i + 1}"` names the layer or block each pass of a loop makes, as
torchvision names them with `add_module(f"denselayer{i + 1}", ...)` or an OrderedDict built in a loop.

A template is a quoted name with expressions in braces, each a compile-time int or string. Each pass
computes its name, which is checked as any `as` name (an identifier, a valid attribute, unique in its
model or block). In a loop kept as a list (frontend/containers.py) the names are the list's keys
(`layers.encoder_layer_0`); in a loop that unrolls they are attributes (`denseblock1`).

The parser checks the braces (parser.template_problem); the expressions are parsed when first
evaluated (`pieces`), since the parser that made the AST is not re-entrant.
"""
from __future__ import annotations

from dataclasses import replace

from ..diagnostics import DslcError
from .errors import EvalError
from .parser import parse_expression

_PARSED: dict = {}   # id(AsName) -> (the node, its pieces): the node is kept so its id stays its own


def pieces(e) -> tuple:
    """The template of `e` (an ast.AsName) as text and expressions: ("denselayer", <i + 1>)."""
    hit = _PARSED.get(id(e))
    if hit is not None and hit[0] is e:
        return hit[1]
    out, text, at = [], e.name, 0
    start = e.name_span.start + 1          # after the opening quote
    while at < len(text):
        brace = text.find("{", at)
        if brace < 0:
            out.append(text[at:])
            break
        if brace > at:
            out.append(text[at:brace])
        close = text.index("}", brace)
        # the expression at its own place in the file, so that its spans point into the template
        try:
            out.append(parse_expression(e.name_span.file, " " * (start + brace + 1) + text[brace + 1:close]))
        except DslcError as error:   # the parser's words speak of a file: say what is wrong here
            wrapped = EvalError("E0101", str(error))
            wrapped.diagnostic = replace(error.diagnostics[0], message=f"this name template's "
                                         f"`{text[brace:close + 1]}` is not a whole expression")
            raise wrapped from None
        at = close + 1
    _PARSED[id(e)] = (e, tuple(out))
    return _PARSED[id(e)][1]


def fill(e, evaluate) -> tuple[str, tuple]:
    """The name one pass computes from the template of `e`, and its parts (text, and each
    expression's value), from which a list's generated code writes the names of every count."""
    parts = []
    for piece in pieces(e):
        if isinstance(piece, str):
            parts.append(piece)
            continue
        v = evaluate(piece)
        if isinstance(v, bool) or not isinstance(v, (int, str)):
            raise EvalError("E0301", "a name template takes ints and strings in its braces", piece.span,
                            label="not an int or a string")
        if hasattr(v, "_lose"):
            v._lose("a layer's name")   # a name made of a parameter's value fixes that value
        parts.append(int(v) if isinstance(v, int) else v)
    return "".join(str(p) for p in parts), tuple(parts)
