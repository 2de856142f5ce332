"""What the editor asks about a place in a document: hovers, definitions, symbols, completions,
references and inlay hints.

Each works on an Analysis and a character offset into its text, and answers in plain data
(markdown, spans, tuples); dslc.lsp.server turns those into the protocol's types. Shapes come
from the graphs `dslc check` evaluated (a block's from every place a model calls it); names
from the syntax tree, so a model that does not evaluate still has definitions and symbols.
"""
from __future__ import annotations

import dataclasses
import re

from .. import catalog
from ..backends.summary import count_params
from ..diagnostics import Span
from ..frontend import ast
from ..ir.types import format_shape
from ..ops import REGISTRY
from ..ops.registry import signature
from .analysis import Analysis

WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def word_at(text: str, offset: int) -> tuple[str, int, int] | None:
    """The identifier under (or just before) the cursor, with its start and end."""
    start = offset
    while start > 0 and (text[start - 1].isalnum() or text[start - 1] == "_"):
        start -= 1
    m = WORD.match(text, start)
    if m is None or m.end() < offset:
        return None
    return m.group(), m.start(), m.end()


def walk(node):
    """Every syntax-tree node under `node` (itself included), in source order."""
    if isinstance(node, (tuple, list)):
        for item in node:
            yield from walk(item)
        return
    if not isinstance(node, (ast.Node, ast.Module)):
        return
    yield node
    for f in dataclasses.fields(node):
        if f.name not in ("span", "file"):
            yield from walk(getattr(node, f.name))


def enclosing_decl(analysis: Analysis, offset: int):
    module = analysis.module
    if module is None:
        return None
    return next((d for d in module.decls if d.span.start <= offset <= d.span.end and not isinstance(d, ast.Import)),
                None)


def bindings(decl) -> list[tuple[str, Span, object]]:
    """(name, the span naming it, what it binds: an expression, a statement or a parameter) of each
    name a declaration binds, in source order."""
    found = []
    for p in getattr(decl, "params", ()):
        found.append((p.name, Span(p.span.file, p.span.start, p.span.start + len(p.name)), p))
    for node in walk(getattr(decl, "body", ()) or ()):
        if isinstance(node, (ast.InputStmt, ast.ParamStmt, ast.BufferStmt, ast.StepStmt, ast.PhaseStmt)):
            found.append((node.name, node.name_span, node))
        elif isinstance(node, ast.ForStmt):
            found += [(n, s, node) for n, s in zip(node.names, node.name_spans)]
        elif isinstance(node, ast.AssignStmt):
            found += [(t.id, t.span, node.value) for t in walk(node.targets) if isinstance(t, ast.Name)]
        elif isinstance(node, ast.AsName) and not node.template:   # a template's names are keys
            found.append((node.name, node.name_span, node.value))
    return sorted(found, key=lambda b: b[1].start)


def binding_at(decl, name: str, offset: int):
    """The binding of `name` in force at `offset`: the last one before it (the one being made, for
    an assignment's target), else the first."""
    named = [b for b in bindings(decl) if b[0] == name]
    if not named:
        return None
    here = [b for b in named if b[1].start <= offset <= b[1].end]
    if here:
        return here[0]
    before = [b for b in named if b[1].start < offset]
    return before[-1] if before else named[0]


def definition(analysis: Analysis, offset: int) -> Span | None:
    """Where the name under the cursor is declared: a model, block or loss, or a name in scope."""
    found = word_at(analysis.text, offset)
    if found is None or analysis.unit is None:
        return None
    word = found[0]
    decl = enclosing_decl(analysis, offset)
    local = binding_at(decl, word, offset) if decl is not None else None
    if local is not None:
        return local[1]
    target = analysis.unit.decls.get(word)
    return target.name_span if target is not None else None


def symbols(analysis: Analysis) -> list[tuple[str, str, Span, Span, str]]:
    """(name, kind, whole span, name span, detail) of each declaration of the document."""
    module = analysis.module
    if module is None:
        return []
    return [(d.name, d.kind, d.span, d.name_span, decl_signature(d)) for d in module.decls if not isinstance(d, ast.Import)]


def decl_signature(decl) -> str:
    if isinstance(decl, (ast.ModelDecl, ast.BlockDecl)):
        return f"{decl.kind} {decl.name}({', '.join(param_text(p) for p in decl.params)})"
    if isinstance(decl, ast.LossDecl):
        return f"loss {decl.name} = {decl.value.span.text}"
    return f"train {decl.name}"


def param_text(p: ast.ParamDecl) -> str:
    text = p.name + (f": {p.type}" if p.type is not None else "")
    return text + (f" = {p.default.span.text}" if p.default is not None else "")


# ---- hovers ----

def hover(analysis: Analysis, offset: int) -> tuple[str, Span | None] | None:
    """Markdown about what is under the cursor, and the span it is about (None: the word)."""
    found = word_at(analysis.text, offset)
    if found is None:
        shapes = shapes_within(analysis, _smallest_node_span(analysis, offset))
        return (_shape_lines(shapes), None) if shapes else None
    word, start, end = found
    decl = enclosing_decl(analysis, offset)
    local = binding_at(decl, word, offset) if decl is not None else None
    if local is not None:
        return _binding_hover(analysis, local), local[1] if local[1].start <= offset <= local[1].end else None
    if analysis.unit is not None and word in analysis.unit.decls and analysis.unit.decls[word].kind != "train":
        return _decl_hover(analysis, analysis.unit.decls[word], _call_span(analysis, start)), None
    if word in REGISTRY and not REGISTRY[word].internal:
        shapes = shapes_within(analysis, _call_span(analysis, start))
        return _op_hover(REGISTRY[word]) + ("\n\n" + _shape_lines(shapes) if shapes else ""), None
    if word in catalog.ALL_NAMES:
        entry = catalog.ALL_NAMES[word]
        return f"```\n{signature(word, entry.params)}\n```\n\n{entry.kind}: {entry.doc}", None
    return None


def _op_hover(op) -> str:
    text = f"```\n{signature(op.name, op.params)}\n```\n\n{op.kind} ({op.family}): {op.doc}"
    params = [f"- `{p.name}`: {p.doc}" for p in op.params if p.doc]
    return text + ("\n\n" + "\n".join(params) if params else "")


def _decl_hover(analysis: Analysis, decl, call: Span | None) -> str:
    """A declaration's signature; a model's parameter count and types; a block's outputs at this
    call, or at every call (at its declaration)."""
    text = f"```\n{decl_signature(decl)}\n```"
    graph = analysis.graphs.get(decl.name)
    here = shapes_within(analysis, call)
    if here:
        text += "\n\n" + _shape_lines(here, "output here:")
    elif decl.name in analysis.partial:
        text += "\n\ndoes not evaluate: shapes are shown up to its first error"
    elif graph is not None:
        ins = ", ".join(f"{n}: {_type_text(t)}" for n, t in graph.input_types().items())
        outs = ", ".join(_type_text(t) for t in graph.output_types().values())
        text += f"\n\n{count_params(graph):,} parameters (as declared)\n\ninputs {ins}; output {outs}"
    elif decl.kind == "block":
        shapes = shapes_within(analysis, decl.span, calls_of=decl.name)
        text += ("\n\n" + _shape_lines(shapes, "called with outputs")) if shapes else ""
    return text


def _binding_hover(analysis: Analysis, binding) -> str:
    name, _, what = binding
    if isinstance(what, ast.ParamDecl):
        return f"```\n{param_text(what)}\n```\n\nparameter"
    span = what.span
    if isinstance(what, ast.ForStmt):
        return f"`{name}`: loop variable over `{what.iterable.span.text}`"
    shapes = shapes_within(analysis, span)
    return f"`{name}`" + (": " + _shape_lines(shapes) if shapes else "")


def _type_text(t) -> str:
    return f"{format_shape(t.shape)} {t.dtype}"


def _shape_lines(shapes: list[str], lead: str = "") -> str:
    text = ", ".join(f"`{s}`" for s in shapes[:6]) + (f" (and {len(shapes) - 6} more)" if len(shapes) > 6 else "")
    return (lead + " " if lead else "") + text


def all_nodes(analysis: Analysis):
    """Every node of every evaluated graph: the models', and each block specialization's, once."""
    seen, todo = set(), list(analysis.graphs.values())
    while todo:
        g = todo.pop()
        if id(g) in seen:
            continue
        seen.add(id(g))
        for node in g:
            yield g, node
        todo += [inst.graph for inst in g.instances.values() if inst.kind == "block" and inst.graph is not None]


def shapes_within(analysis: Analysis, span: Span | None, calls_of: str | None = None) -> list[str]:
    """The output types of the node that computes the value of `span` (the last, outermost one
    inside it), over every graph; `calls_of`: a block's outputs wherever it is called."""
    if span is None:
        return []
    best: dict = {}
    for g, node in all_nodes(analysis):
        s = node.span
        if calls_of is not None:
            inst = g.instances.get(node.instance) if node.instance else None
            if node.kind == "call" and inst is not None and inst.graph is not None and inst.graph.name == calls_of:
                best.setdefault(0, []).append(node)
            continue
        if s is None or s.file.name != span.file.name or not (span.start <= s.start and s.end <= span.end):
            continue
        if node.kind in ("weight",):
            continue
        best.setdefault((s.end, s.end - s.start), []).append(node)
    if not best:
        return []
    nodes = best[max(best)]
    return list(dict.fromkeys(" ".join(_type_text(t) for t in n.outputs) for n in nodes if n.outputs))


def _smallest_node_span(analysis: Analysis, offset: int) -> Span | None:
    spans = [n.span for _, n in all_nodes(analysis)
             if n.span is not None and n.span.start <= offset < n.span.end and analysis.paths.get(n.span.file.name) == analysis.path]
    return min(spans, key=lambda s: s.end - s.start, default=None)


def _call_span(analysis: Analysis, start: int) -> Span | None:
    """The span of the call whose callee starts at `start` (its node's span starts there)."""
    spans = [n.span for _, n in all_nodes(analysis) if n.span is not None and n.span.start == start
             and n.kind in ("op", "call") and analysis.paths.get(n.span.file.name) == analysis.path]
    return max(spans, key=lambda s: s.end - s.start, default=None)


# ---- completions ----

def completions(analysis: Analysis, offset: int, fallback: Analysis | None = None) -> list[tuple[str, str, str, str]]:
    """(label, kind, detail, documentation) of what may be written at the cursor: the keyword
    arguments of the call it is in, a plan's fields at the start of a plan's line, else layer,
    function and loss names, the file's declarations and the names in scope. Mid-edit the text
    often does not parse: the declarations then come from `fallback`, the last check that parsed."""
    text = analysis.text
    known = analysis if analysis.module is not None or fallback is None else fallback
    callee = _open_call(text, offset)
    if callee is not None:
        keywords = keyword_completions(known, callee)
        if keywords:
            return keywords
    kind, name = _decl_at(text, offset)
    line_start = text.rfind("\n", 0, offset) + 1
    if kind == "train" and WORD.fullmatch(text[line_start:offset].strip() or "_") and text[line_start:offset][:1].isspace():
        return [(f.name, "field", f.kind, f.doc) for f in catalog.FIELDS.values()]
    decl = known.unit.decls.get(name) if known.unit is not None and name else None
    return name_completions(known, decl, offset if known is analysis else len(known.text), kind == "train")


def _decl_at(text: str, offset: int) -> tuple[str | None, str | None]:
    """The kind and name of the declaration the cursor is in, read from the text (which need not
    parse): the last line before it that starts one."""
    found = None
    for m in DECL_LINE.finditer(text, 0, offset):
        found = m
    return (found.group(1), found.group(2)) if found else (None, None)


DECL_LINE = re.compile(r"^(model|block|loss|train)\s+([A-Za-z_][A-Za-z0-9_]*)", re.M)


def _open_call(text: str, offset: int) -> str | None:
    """The name of the call whose parentheses hold the cursor (`Conv2d(64, |`), if any."""
    depth, i, stop = 0, offset - 1, max(0, offset - 2000)
    while i >= stop:
        ch = text[i]
        if ch in ")]}":
            depth += 1
        elif ch in "([{":
            if depth == 0:
                if ch != "(":
                    return None
                m = re.search(r"([A-Za-z_][A-Za-z0-9_]*)\s*$", text[max(0, i - 100):i])
                return m.group(1) if m else None
            depth -= 1
        elif ch == "\n" and depth == 0 and text[i + 1:offset].strip().startswith(("model", "block", "train")):
            return None
        i -= 1
    return None


def keyword_completions(analysis: Analysis, callee: str) -> list[tuple[str, str, str, str]]:
    decl = analysis.unit.decls.get(callee) if analysis.unit is not None else None
    if isinstance(decl, (ast.ModelDecl, ast.BlockDecl)):
        return [(f"{p.name}=", "keyword", param_text(p), f"parameter of {decl.kind} `{decl.name}`") for p in decl.params]
    entry = REGISTRY.get(callee) or catalog.ALL_NAMES.get(callee)
    if entry is None:
        return []
    return [(f"{p.name}=", "keyword", signature(callee, entry.params), p.doc) for p in entry.params
            if not p.rest and not p.is_tensor]


def name_completions(analysis: Analysis, decl, offset: int, in_plan: bool) -> list[tuple[str, str, str, str]]:
    items = [(op.name, op.kind, signature(op.name, op.params), op.doc) for op in REGISTRY.values() if not op.internal]
    if in_plan:
        items += [(e.name, e.kind, signature(e.name, e.params), e.doc) for e in catalog.ALL_NAMES.values()]
    if analysis.unit is not None:
        items += [(d.name, d.kind, decl_signature(d), "") for d in analysis.unit.decls.values() if d.kind != "train"]
    if decl is not None:
        local = {b[0]: b for b in bindings(decl) if b[1].start < offset}
        items += [(name, "variable", "", "") for name in local]
    return items


# ---- references, renaming, inlay hints ----

def references(analysis: Analysis, offset: int) -> list[Span]:
    """Every place the name under the cursor stands for the same thing: a name in scope within
    its declaration, or a model, block or loss across the files of the unit."""
    found = word_at(analysis.text, offset)
    if found is None or analysis.unit is None:
        return []
    word = found[0]
    decl = enclosing_decl(analysis, offset)
    if decl is not None and binding_at(decl, word, offset) is not None:
        return _local_references(decl, word)
    target = analysis.unit.decls.get(word)
    if target is None:
        return []
    spans = [target.name_span]
    for module in analysis.unit.modules:
        for d in module.decls:
            if not isinstance(d, ast.Import) and not any(b[0] == word for b in bindings(d)):
                spans += [n.span for n in walk(d) if isinstance(n, ast.Name) and n.id == word]
    return spans


def _local_references(decl, word: str) -> list[Span]:
    spans = {b[1].start: b[1] for b in bindings(decl) if b[0] == word}
    spans.update({n.span.start: n.span for n in walk(getattr(decl, "body", ()) or ()) if isinstance(n, ast.Name) and n.id == word})
    for p in getattr(decl, "params", ()):
        spans.update({n.span.start: n.span for n in walk(p.default) if isinstance(n, ast.Name) and n.id == word})
    return [spans[k] for k in sorted(spans)]


def inlay_hints(analysis: Analysis, start: int, end: int) -> list[tuple[int, str]]:
    """(offset, label): the output shape at the end of each statement of a model or block body
    that computes a tensor, for the statements between `start` and `end`."""
    module = analysis.module
    if module is None or not analysis.graphs:
        return []
    hints = []
    for decl in module.decls:
        if not isinstance(decl, (ast.ModelDecl, ast.BlockDecl)) or decl.span.end < start or decl.span.start > end:
            continue
        for stmt in walk(decl.body):
            if isinstance(stmt, (ast.AssignStmt, ast.ExprStmt)) and start <= stmt.span.end <= end:
                shapes = [s.rsplit(" ", 1)[0] if s.endswith(" float32") else s for s in shapes_within(analysis, stmt.span)]
                if shapes:
                    hints.append((stmt.span.end, " " + " | ".join(shapes[:3]) + (" | ..." if len(shapes) > 3 else "")))
    return hints
