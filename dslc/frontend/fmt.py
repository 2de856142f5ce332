"""`dslc fmt`: one canonical layout for `.dl` files.

The formatter works on tokens, not on the syntax tree, so that comments stay where they were
and new syntax needs no new rule. Each statement is written on one line with canonical
spacing when it fits in WIDTH columns; otherwise its first bracket that crosses the limit is
filled with one item after another, continuation lines aligned after the bracket (or, for a
pipe, broken after `->`). Bodies are indented by four spaces; in a `train` body (and its
`phase` and `step` bodies) the `=` of `field = value` lines is aligned, as the docs write
plans. A statement with a comment inside it keeps its line breaks. Blank lines: at most one
in a row, none after `{` or before `}`.

`format_source` checks its own work: the formatted text must parse to the same syntax tree
(spans aside), else it refuses (FormatError).
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

from ..diagnostics import SourceFile
from . import ast
from .parser import keywords, parse

WIDTH = 100
INDENT = "    "

# The lexical pieces of `.dl`, as grammars/dl.lark spells them; the highlighters
# (backends/highlight.py, the VS Code grammar) read them here too.
STRING = r'"[^"\\\n]*(?:\\.[^"\\\n]*)*"|' + r"'[^'\\\n]*(?:\\.[^'\\\n]*)*'"
FLOAT = r"(?:\d+\.\d*|\.\d+)(?:[eE][+-]?\d+)?|\d+[eE][+-]?\d+"
OPERATORS = r"->|\*\*|//|==|!=|<=|>=|[-+*/%@&|^~<>=]"
PUNCTUATION = r"[()\[\]{},.:;]"

_TOKEN = re.compile("|".join([
    r"(?P<NL>\r?\n)", r"(?P<WS>[ \t\f\r]+)", r"(?P<COMMENT>\#[^\n]*)", f"(?P<STRING>{STRING})",
    f"(?P<FLOAT>{FLOAT})", r"(?P<INT>\d+)", r"(?P<NAME>[A-Za-z_][A-Za-z0-9_]*)",
    f"(?P<OP>{OPERATORS}|{PUNCTUATION})"]))

# Words that are operators or start a statement: a `(` or `[` after them opens a group, not a call.
KEYWORDS = keywords() - {"true", "false", "none", "True", "False", "None"}   # values, not words
_BINARY_OPS = {"->", "**", "//", "==", "!=", "<=", ">=", "<", ">", "*", "/", "%", "@", "&", "|", "^", "="}
# after these a `+` or `-` is a sign, not an operator
_BEFORE_SIGN = _BINARY_OPS | {"(", "[", "{", ",", ":", "+", "-", "~"} | KEYWORDS
_PLAN_BODIES = {"train", "phase", "step"}


class FormatError(Exception):
    """The file cannot be formatted safely (a character no token starts with, or a result that
    would read differently); the file is left as it was."""


@dataclass
class Tok:
    kind: str        # NL, COMMENT, STRING, FLOAT, INT, NAME, INDEX (`.0` of a path), OP
    text: str
    col: int         # 0-based column in its source line
    role: str = ""   # for brackets: call, params, group, index, list, dict, body; for +/-: sign


# ---------------------------------------------------------------- tokens

def tokenize(text: str) -> list[Tok]:
    out, pos, line_start = [], 0, 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise FormatError(f"cannot read {text[pos]!r} at offset {pos}")
        kind = m.lastgroup
        if kind != "WS":
            out.append(Tok(kind, m.group(), pos - line_start))
        pos = m.end()
        if kind == "NL":
            line_start = pos
    _mark_indexes(out)
    _mark_roles(out)
    return out


def _mark_indexes(toks: list[Tok]) -> None:
    """`.0` written against a name (`freeze model.features.0`) is a path's numbered layer, as the
    grammar's INDEX reads it, not the float 0.0: it keeps to the name."""
    for prev, t in zip(toks, toks[1:]):
        if t.kind == "FLOAT" and re.fullmatch(r"\.\d+", t.text) and prev.kind in ("NAME", "INDEX") \
                and t.col == prev.col + len(prev.text):
            t.kind = "INDEX"


def _mark_roles(toks: list[Tok]) -> None:
    """What each bracket opens (a call's arguments, a declaration's parameters, an index, a dict,
    a body, ...) and which `+`/`-` are signs: spacing depends on both."""
    stack: list[Tok] = []
    code = [t for t in toks if t.kind not in ("NL", "COMMENT")]
    for i, t in enumerate(code):
        prev = code[i - 1] if i else None
        before = code[i - 2] if i > 1 else None
        if t.kind != "OP":
            continue
        if t.text in "([{":
            t.role = _open_role(t.text, prev, before)
            stack.append(t)
        elif t.text in ")]}":
            if stack:
                t.role = stack.pop().role
        elif t.text in "+-" and (prev is None or prev.text in _BEFORE_SIGN and not _ends_value(prev)
                                 and prev.kind != "STRING"):
            t.role = "sign"


def _ends_value(t: Tok) -> bool:
    return t.kind in ("NAME", "INT", "FLOAT", "STRING") and t.text not in KEYWORDS or \
        t.kind == "OP" and t.text in ")]}"


def _open_role(ch: str, prev: Tok | None, before: Tok | None) -> str:
    if ch == "{":
        if prev is not None and prev.kind == "OP" and prev.text in _BINARY_OPS | {"(", "[", ",", ":", "{", "+", "-"}:
            return "dict"
        return "body"
    called = prev is not None and (_ends_value(prev) and prev.kind != "INT" and prev.kind != "FLOAT"
                                   or prev.text == "buffer")
    if ch == "[":
        return "index" if called else "list"
    if not called:
        return "group"
    if prev.kind == "NAME" and before is not None and before.kind == "NAME" and before.text in ("model", "block"):
        return "params"
    return "call"


# ---------------------------------------------------------------- spacing

def _space(a: Tok, b: Tok, inside: str) -> str:
    """The space between the tokens a and b on one line; `inside` is the innermost open bracket's role."""
    if b.kind == "OP" and b.text in ")]}":
        return " " if b.role == "body" else ""
    if a.kind == "OP" and a.text in "([{":
        return " " if a.role == "body" else ""
    if b.text in ",;":
        return ""
    if a.text in ",;":
        return " "
    if a.role == "sign" or a.text == "~":
        return ""
    if a.text == "=" or b.text == "=":
        return "" if inside == "call" else " "
    if b.text == "." or a.text == "." or b.kind == "INDEX":
        return ""
    if b.kind == "OP" and b.text in "([":
        return "" if b.role in ("call", "params", "index") else " "
    if b.kind == "OP" and b.text == "{":
        return " "
    if b.text == ":":
        return ""
    if a.text == ":":
        return "" if inside == "index" else " "
    return " "


def _nesting(t: Tok) -> int:
    """1 for a bracket that opens a group (a body's `{` aside), -1 for one that closes it, else 0."""
    if t.kind != "OP" or t.role == "body":
        return 0
    return 1 if t.text in "([{" else -1 if t.text in ")]}" else 0


def _track(t: Tok, stack: list[str]) -> None:
    step = _nesting(t)
    if step > 0:
        stack.append(t.role)
    elif step < 0 and stack:
        stack.pop()


# ---------------------------------------------------------------- statements

@dataclass
class Line:
    """A logical line: a statement (its tokens, with the NL tokens inside it), a comment alone on
    its line, or a blank line."""
    toks: list
    depth: int = 0
    comment: Tok | None = None   # a comment after the statement, on its last line
    blank: bool = False
    plan_field: bool = False     # `name = value` directly in a train/phase/step body
    align: int = 0               # the width the field names are padded to


def _lines(toks: list[Tok]) -> list[Line]:
    splitter = _Splitter()
    for t in toks:
        splitter.take(t)
    splitter.close()
    return splitter.lines


class _Splitter:
    """Cuts the tokens into logical lines: a newline ends a statement unless a bracket is open or
    the line ends with `->`, as the parser reads it."""

    def __init__(self):
        self.lines: list[Line] = []
        self.cur: list[Tok] = []
        self.brackets = 0       # open brackets other than bodies
        self.depth = 0          # open bodies
        self.start = 0          # the depth the current statement starts at
        self.newlines = 0       # newlines in a row since a line ended (-1: a comment line's own)

    def take(self, t: Tok) -> None:
        if t.kind == "NL":
            self._newline(t)
        elif t.kind == "COMMENT" and not self.cur:
            self.lines.append(Line([], self.depth, comment=t))
            self.newlines = -1
        else:
            self._code(t)

    def _newline(self, t: Tok) -> None:
        last = _last_code(self.cur)
        if self.brackets or (last is not None and last.text == "->"):
            self.cur.append(t)
        elif self.cur:
            self.close()
            self.newlines = 0
        else:
            self.newlines += 1
            if self.newlines == 1:
                self.lines.append(Line([], self.depth, blank=True))

    def _code(self, t: Tok) -> None:
        if not self.cur:
            self.start = self.depth - (1 if t.role == "body" and t.text == "}" else 0)
        self.newlines = 0
        if t.kind == "OP" and t.text in "([{":
            if t.role == "body":
                self.depth += 1
            else:
                self.brackets += 1
        elif t.kind == "OP" and t.text in ")]}":
            if t.role == "body":
                self.depth = max(0, self.depth - 1)
            else:
                self.brackets = max(0, self.brackets - 1)
        self.cur.append(t)

    def close(self) -> None:
        cur = self.cur
        while cur and cur[-1].kind == "NL":
            cur.pop()
        if cur:
            ln = Line(cur, self.start)
            if cur[-1].kind == "COMMENT":   # after the statement, on its last line
                ln.comment = cur.pop()
                while cur and cur[-1].kind == "NL":
                    cur.pop()
            self.lines.append(ln)
        self.cur = []


def _last_code(toks: list[Tok]) -> Tok | None:
    for t in reversed(toks):
        if t.kind not in ("NL", "COMMENT"):
            return t
    return None


def _mark_fields(lines: list[Line]) -> None:
    """`name = value` lines directly in a plan body: their names are padded to the longest."""
    groups: dict = {}
    stack: list = []   # one list of field lines per open body
    for ln in lines:
        code = [t for t in ln.toks if t.kind not in ("NL", "COMMENT")]
        if not code:
            continue
        if code[0].kind == "OP" and code[0].text == "}" and code[0].role == "body" and stack:
            stack.pop()
        in_plan = bool(stack) and stack[-1] is not None
        if in_plan and len(code) > 2 and code[0].kind == "NAME" and code[1].text == "=":
            ln.plan_field = True
            stack[-1].append(ln)
        opens = sum(1 for t in code if t.role == "body" and t.text == "{") - \
            sum(1 for t in code[1:] if t.role == "body" and t.text == "}")
        for _ in range(max(0, opens)):
            key = code[0].text if code[0].text != "}" else (code[1].text if len(code) > 1 else "")
            group: list | None = [] if key in _PLAN_BODIES else None
            stack.append(group)
            if group is not None:
                groups[id(group)] = group
    for group in groups.values():
        width = max((len(ln.toks[0].text) for ln in group), default=0)
        for ln in group:
            ln.align = width


# ---------------------------------------------------------------- writing

def _write_line(ln: Line) -> list[str]:
    indent = INDENT * ln.depth
    if ln.blank:
        return [""]
    if not ln.toks:
        return [indent + ln.comment.text]
    if any(t.kind == "COMMENT" for t in ln.toks):
        out = _keep_breaks(ln, indent)
    else:
        out = _fit([t for t in ln.toks if t.kind != "NL"], indent, ln.align if ln.plan_field else 0)
    if ln.comment is not None:
        last = out[-1]
        col = max(ln.comment.col, len(last) + 2)
        out[-1] = last + " " * (col - len(last)) + ln.comment.text
    return out


def _head(toks: list[Tok], align: int) -> tuple[str, list[Tok]]:
    """`name      = ` for an aligned plan field, and the tokens after it."""
    if not align:
        return "", toks
    return toks[0].text.ljust(align) + " = ", toks[2:]


def _fit(toks: list[Tok], indent: str, align: int = 0) -> list[str]:
    head, rest = _head(toks, align)
    line = indent + head + _segment_text(rest, None, [], 0)[0]
    if len(line) <= WIDTH:
        return [line]
    return _wrap(rest, indent, head)


def _wrap(toks: list[Tok], indent: str, head: str) -> list[str]:
    """A statement too long for one line, broken where Python would break it: after a comma of
    a bracket (continuing after the bracket) or after `->` (continuing four further in, or after
    the bracket it is in). Breaks at the outermost level are tried first, deeper ones only if a
    line is still too long; what cannot be broken stays long."""
    best = None
    for level in (1, 2, 3, 4):
        lines = _broken(toks, indent, head, _break_points(toks, level))
        if best is None or _overflow(lines) < _overflow(best):
            best = lines
        if _overflow(lines) == 0:
            break
    return best


def _overflow(lines: list[str]) -> int:
    return sum(max(0, len(line) - WIDTH) for line in lines)


def _break_points(toks: list[Tok], level: int) -> dict:
    """Index -> rank of the tokens a line may end after: a comma inside d <= `level` brackets
    ranks d, an arrow inside d < `level` ranks d + 0.5 (a break at a lower rank reads better)."""
    out, d = {}, 0
    for i, t in enumerate(toks):
        d += _nesting(t)
        if t.text == "," and 0 < d <= level:
            out[i] = d
        elif t.text == "->" and d < level:
            out[i] = d + 0.5
    return out


def _broken(toks: list[Tok], indent: str, head: str, points: dict) -> list[str]:
    """The tokens on lines ending only at `points`: each line takes what fits in WIDTH, and
    ends at the lowest-ranked point among those (the last of equals)."""
    segs, cur = [], []
    for i, t in enumerate(toks):
        cur.append(t)
        if i in points:
            segs.append((cur, points[i]))
            cur = []
    if cur:
        segs.append((cur, 99))
    lines: list[str] = []
    state = _LineState(indent + head, [], [], None)
    pos = 0
    while pos < len(segs):
        n = 1
        while pos + n < len(segs) and len(state.text(segs[pos:pos + n + 1])) <= WIDTH:
            n += 1
        if pos + n == len(segs):
            lines.append(state.text(segs[pos:]).rstrip())
            break
        end = min(range(pos, pos + n), key=lambda j: (segs[j][1], -j))
        lines.append(state.text(segs[pos:end + 1]).rstrip())
        state = state.after(segs[pos:end + 1], indent)
        pos = end + 1
    return lines


@dataclass
class _LineState:
    """Where a line starts: its indentation, the brackets open before it (roles, and the column
    after each), and the token before it."""
    start: str
    stack: list
    cols: list
    prev: Tok | None

    def text(self, segs: list) -> str:
        return self.start + _segment_text([t for seg, _ in segs for t in seg], self.prev, self.stack,
                                          len(self.start))[0]

    def after(self, segs: list, indent: str) -> "_LineState":
        toks = [t for seg, _ in segs for t in seg]
        _, opened = _segment_text(toks, self.prev, self.stack, len(self.start))
        stack = list(self.stack)
        for t in toks:
            _track(t, stack)
        cols = _update_cols(self.cols, opened)
        start = " " * cols[-1] if cols else indent + INDENT
        return _LineState(start, stack, cols, None)


def _segment_text(segment: list[Tok], prev: Tok | None, stack: list[str], col: int) -> tuple[str, list]:
    """The segment's text after `prev` on a line at column `col`, and the columns after the
    brackets it opens (None for each it closes)."""
    text, opened = "", []
    inner = list(stack)
    for t in segment:
        if prev is not None:
            text += _space(prev, t, inner[-1] if inner else "")
        text += t.text
        if _nesting(t):
            opened.append(col + len(text) if _nesting(t) > 0 else None)
        _track(t, inner)
        prev = t
    return text, opened


def _update_cols(cols: list, opened: list) -> list:
    cols = list(cols)
    for c in opened:
        if c is None:
            if cols:
                cols.pop()
        else:
            cols.append(c)
    return cols


def _keep_breaks(ln: Line, indent: str) -> list[str]:
    """A statement with a comment inside: its lines as they were, each spaced canonically and
    indented after the bracket it continues (or by four more after `->`)."""
    head, toks = _head(list(ln.toks), ln.align if ln.plan_field else 0)
    out = []
    state = _LineState(indent + head, [], [], None)
    for row, comment in _rows(toks):
        segs = [(row, 0)]
        text = state.text(segs) if row else state.start
        if comment is not None:
            text = text + " " * max(2, comment.col - len(text)) + comment.text if row else text + comment.text
        out.append(text.rstrip())
        state = state.after(segs, indent)
    return out


def _rows(toks: list[Tok]) -> list[tuple[list, Tok | None]]:
    """The statement's source lines: (tokens, the comment ending the line)."""
    rows, row, comment = [], [], None
    for t in toks:
        if t.kind == "NL":
            rows.append((row, comment))
            row, comment = [], None
        elif t.kind == "COMMENT":
            comment = t
        else:
            row.append(t)
    rows.append((row, comment))
    return [r for r in rows if r[0] or r[1] is not None]


# ---------------------------------------------------------------- the file

def format_text(text: str) -> str:
    """The canonical layout of `text` (no check that it parses: see format_source)."""
    toks = tokenize(text.replace("\r\n", "\n"))
    lines = _lines(toks)
    _mark_fields(lines)
    out: list[str] = []
    for i, ln in enumerate(lines):
        if ln.blank and (not out or out[-1] == "" or _opens(out[-1]) or _next_closes(lines, i)):
            continue
        out += _write_line(ln)
    while out and out[-1] == "":
        out.pop()
    return "\n".join(line.rstrip() for line in out) + "\n" if out else ""


def _opens(line: str) -> bool:
    code = line.split("#", 1)[0].rstrip()
    return code.endswith("{")


def _next_closes(lines: list[Line], i: int) -> bool:
    for ln in lines[i + 1:]:
        if ln.blank:
            continue
        return bool(ln.toks) and ln.toks[0].text == "}" and ln.toks[0].role == "body"
    return True


def format_source(text: str, name: str = "<text>") -> str:
    """`text` formatted, after checking that both parse to the same tree (the file's own syntax
    errors are raised as DslcError by the parser; a meaning changed is a FormatError)."""
    before = parse(SourceFile(name, text))
    formatted = format_text(text)
    after = parse(SourceFile(name, formatted))
    if shape(before) != shape(after):
        raise FormatError(f"{name}: formatting would change what the file means; left as it was")
    return formatted


def shape(node):
    """A syntax tree without its spans: what the text means, not where it stands."""
    if isinstance(node, ast.Node) or dataclasses.is_dataclass(node) and not isinstance(node, type):
        return (type(node).__name__,) + tuple(
            (f.name, shape(getattr(node, f.name))) for f in dataclasses.fields(node)
            if f.name not in ("span", "file") and not f.name.endswith("_span") and not f.name.endswith("_spans"))
    if isinstance(node, (list, tuple)):
        return tuple(shape(x) for x in node)
    if isinstance(node, dict):
        return tuple((k, shape(v)) for k, v in node.items())
    return node
