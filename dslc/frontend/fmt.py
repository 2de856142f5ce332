"""`dslc fmt`: one canonical layout for `.dl` files.

The formatter works on tokens, not on the syntax tree, so that comments stay where they were
and new syntax needs no new rule. Each statement is written on one line with canonical
spacing when it fits in WIDTH columns; otherwise it is broken at its shallowest level first
(see _Layout): items filled onto lines aligned after their bracket, a pipe broken after `->`,
a conditional before its `if` and `else`, a sum after its operator (in parentheses the
formatter adds when the expression has none). Bodies are indented by four spaces; in `train`,
`phase`, `sweep` and `space` bodies the `=` of `field = value` lines is aligned, as the docs
write plans. A statement with a comment inside it keeps its line breaks. Blank lines: at most
one in a row, none after `{` or before `}`.

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
# bodies of settings, whose `=` are aligned as the docs write them (a `step` body computes
# tensors: its assignments are code, not aligned)
_PLAN_BODIES = {"train", "phase", "sweep", "space"}
# The docs' column: a field name of at most _LONGEST characters (`batch_size`, a sweep space's
# `optimizer.lr`) sets it, a longer one (`clip_grad_norm`) keeps one space; a `train` body's
# `=` stand at least at `batch_size`'s column, set or not, so that plans line up.
_LONGEST = 12
_TRAIN_COLUMN = len("batch_size")


class FormatError(Exception):
    """The file cannot be formatted safely (a character no token starts with, or a result that
    would read differently); the file is left as it was."""


@dataclass
class Tok:
    kind: str        # NL, COMMENT, STRING, FLOAT, INT, NAME, INDEX (`.0` of a path), OP
    text: str
    col: int         # 0-based column in its source line
    role: str = ""   # for brackets: call, params, group, index, list, dict, body; for +/-: sign
    synthetic: bool = False   # a parenthesis the formatter added (see _wrapped)


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
    # `buffer(persistent=false)`, and a plan's `model(x)`: a declaration names itself first
    called = prev is not None and (_ends_value(prev) and prev.kind != "INT" and prev.kind != "FLOAT"
                                   or prev.text in ("buffer", "model"))
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
    field: int = 0               # `name = value` directly in a plan body: the name's tokens
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
        if in_plan and _field_name(code):
            ln.field = _field_name(code)
            stack[-1].append(ln)
        opens = sum(1 for t in code if t.role == "body" and t.text == "{") - \
            sum(1 for t in code[1:] if t.role == "body" and t.text == "}")
        for _ in range(max(0, opens)):
            key = code[0].text if code[0].text != "}" else (code[1].text if len(code) > 1 else "")
            group: list | None = [] if key in _PLAN_BODIES else None
            stack.append(group)
            if group is not None:
                groups[id(group)] = (key, group)
    for key, group in groups.values():
        width = max((n for n in (len(_name(ln.toks, ln.field)) for ln in group) if n <= _LONGEST),
                    default=0)
        for ln in group:
            ln.align = max(width, _TRAIN_COLUMN) if key == "train" else width


def _field_name(code: list[Tok]) -> int:
    """How many tokens `name` or `name.attr...` before `= value` take (0: not a field)."""
    n = 1
    while n + 1 < len(code) and code[n].text == "." and code[n + 1].kind == "NAME":
        n += 2
    ok = code[0].kind == "NAME" and n + 1 < len(code) and code[n].kind == "OP" and code[n].text == "="
    return n if ok else 0


def _name(toks: list[Tok], n: int) -> str:
    return "".join(t.text for t in toks[:n])


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
        out = _fit([t for t in ln.toks if t.kind != "NL"], indent, ln.align, ln.field)
    if ln.comment is not None:
        last = out[-1]
        col = max(ln.comment.col, len(last) + 2)
        out[-1] = last + " " * (col - len(last)) + ln.comment.text
    return out


def _head(toks: list[Tok], align: int, field: int) -> tuple[str, list[Tok]]:
    """`name      = ` for an aligned plan field, and the tokens after it."""
    if not field:
        return "", toks
    return _name(toks, field).ljust(align) + " = ", toks[field + 1:]


def _fit(toks: list[Tok], indent: str, align: int = 0, field: int = 0) -> list[str]:
    head, rest = _head(toks, align, field)
    at = _At(indent + head, (), (), len(indent))
    line = at.text(rest)
    if len(line) <= WIDTH:
        return [line]
    return _Layout(rest, at, expression_from=0 if field else None).best().lines


# Where a line may break, by kind: a lower kind breaks first at the same depth (a comma before
# a conditional's `if`/`else`, before `->`, before `or`, ... before `*`), as Python's precedence
# reads the expression.
_COMMA, _CONDITIONAL, _ARROW = 0, 1, 2
# brackets whose items may start on the next line (a declaration's parameters stay after `(`)
_HANGING = {"call", "index", "list", "dict"}
_OPERATOR_KINDS = {"or": 3, "and": 4, "==": 5, "!=": 5, "<": 5, ">": 5, "<=": 5, ">=": 5, "in": 5,
                   "|": 6, "^": 6, "&": 6, "+": 7, "-": 7, "*": 8, "/": 8, "//": 8, "%": 8, "@": 8}


@dataclass(frozen=True)
class _At:
    """Where a line starts: its text so far (indentation, an aligned plan field's head), the
    brackets open before it with the column each one's continuation lines start at, and the
    statement's indentation (a pipe continues four further in)."""
    start: str
    open: tuple = ()
    cols: tuple = ()
    indent: int = 0

    def text(self, toks: list[Tok]) -> str:
        return _run(self, toks)[0]

    def after(self, toks: list[Tok], hang: bool = False) -> "_At":
        """The start of the line after the one that holds `toks`; `hang`: that line ends with an
        opening bracket whose items continue four spaces in from the line, not after it."""
        text, stack, cols = _run(self, toks)
        if hang:
            cols[-1] = len(text) - len(text.lstrip(" ")) + len(INDENT)
        start = " " * (cols[-1] if cols else self.indent + len(INDENT))
        return _At(start, tuple(stack), tuple(cols), self.indent)

    def key(self) -> tuple:
        return self.start, tuple(map(id, self.open)), self.cols


def _run(at: _At, toks: list[Tok]) -> tuple[str, list, list]:
    """The line's text, and the brackets open at its end with their continuation columns."""
    text, stack, cols, prev = at.start, list(at.open), list(at.cols), None
    for t in toks:
        if prev is not None:
            text += _space(prev, t, stack[-1].role if stack else "")
        text += t.text
        step = _nesting(t)
        if step > 0:
            stack.append(t)
            cols.append(len(text))
        elif step < 0 and stack:
            stack.pop()
            cols.pop()
        prev = t
    return text, stack, cols


@dataclass
class _Lay:
    """Lines for some tokens, the breaks that made them (_Point.rank each), and where the line
    after them would start."""
    lines: list
    breaks: list
    end: _At
    hangs: int = 0

    def cost(self) -> tuple:
        """Fewest columns past the limit, then the shallowest deepest break (the parentheses the
        formatter added do not count; at one depth, the lowest kind), then fewest lines, then
        shallow, low breaks all along, then the fewest breaks among the arguments of a call that
        is called in turn (`Block(a,` / `b)(x)`), then the fewest items moved to the next line."""
        return (sum(max(0, len(line) - WIDTH) for line in self.lines), max(self.breaks, default=(-1, -1)),
                len(self.lines), sum(b[0] for b in self.breaks), sum(b[1] for b in self.breaks),
                sum(b[2] for b in self.breaks), self.hangs)

    def __add__(self, other: "_Lay") -> "_Lay":
        return _Lay(self.lines + other.lines, self.breaks + other.breaks, other.end,
                    self.hangs + other.hangs)


@dataclass
class _Point:
    index: int     # the line may end after this token
    depth: int     # brackets open there (the statement's own, those the formatter added aside)
    kind: int
    group: int     # the index of the bracket it is directly inside (-1: opened on an earlier line)
    chained: bool  # that bracket is a call's, called or indexed in turn

    def rank(self) -> tuple:
        return self.depth, self.kind, int(self.chained)


class _Layout:
    """A statement too long for one line. Each way of breaking it is tried: at every place of
    one depth and kind (the shallowest three), the items filled onto lines aligned after their
    bracket, or after `->` four spaces in; the same with the bracket's items starting on the next
    line, four spaces in (a long head before them); and, for an assignment or `output` whose
    expression has operators but no top-level `->`, the expression put in parentheses so that
    it can break at its own operators. The cheapest wins (see _Lay.cost); a part still too long
    is broken the same way, and what cannot be broken stays long."""

    def __init__(self, toks: list[Tok], at: _At, expression_from: int | None = None):
        self.toks, self.at, self.expression_from = toks, at, expression_from
        self.memo: dict = {}

    def best(self) -> _Lay:
        options = [self._lay(self.toks, self.at)]
        wrapped = _wrapped(self.toks, self.expression_from)
        if wrapped is not None:
            options.append(_Layout(wrapped, self.at).best())
        return min(options, key=_Lay.cost)

    def _lay(self, toks: list[Tok], at: _At) -> _Lay:
        key = (id(toks[0]), id(toks[-1]), len(toks), at.key())
        if key not in self.memo:
            self.memo[key] = self._choose(toks, at)
        return self.memo[key]

    def _choose(self, toks: list[Tok], at: _At) -> _Lay:
        line = at.text(toks)
        if len(line) <= WIDTH:
            return _Lay([line], [], at.after(toks))
        points = _points(toks, at)
        options = []
        # a very long statement (generated, fuzzed) tries only its shallowest level: the search
        # grows faster than the statement
        tries = 3 if len(line) <= 4 * WIDTH else 1
        for depth, kind in sorted({(p.depth, p.kind) for p in points})[:tries]:
            level = [p for p in points if (p.depth, p.kind) == (depth, kind)]
            options.append(self._fill(toks, at, level))
            groups = [p.group for p in level if p.group >= 0 and toks[p.group].role in _HANGING]
            if groups:
                options.append(self._hang(toks, at, [p for p in level if p.group == groups[-1]]))
        return min(options, key=_Lay.cost) if options else _Lay([line], [], at.after(toks))

    def _fill(self, toks: list[Tok], at: _At, level: list[_Point]) -> _Lay:
        """Items onto lines, as many as fit on each (a conditional's `if` and `else` start a
        line each); an item too long for a line alone is broken further."""
        ends = {p.index: p for p in level}
        items, cur = [], []
        for i, t in enumerate(toks):
            cur.append(t)
            if i in ends:
                items.append((cur, ends[i]))
                cur = []
        items.append((cur, None))
        every = level[0].kind == _CONDITIONAL
        out, pos = None, 0
        while pos < len(items):
            n = 1
            while not every and pos + n < len(items) and \
                    len(at.text(_flat(items[pos:pos + n + 1]))) <= WIDTH:
                n += 1
            chunk = _flat(items[pos:pos + n])
            lay = self._lay(chunk, at)
            point = items[pos + n - 1][1]
            if point is not None:
                lay = _Lay(lay.lines, lay.breaks + [point.rank()], lay.end, lay.hangs)
            out = lay if out is None else out + lay
            at = lay.end
            pos += n
        return out

    def _hang(self, toks: list[Tok], at: _At, level: list[_Point]) -> _Lay:
        """The bracket's items from the next line on, four spaces in."""
        g = level[0].group
        head = toks[:g + 1]
        first = _Lay([at.text(head)], [level[0].rank()], at.after(head, hang=True), 1)
        shift = [dataclasses.replace(p, index=p.index - g - 1) for p in level]
        return first + self._fill(toks[g + 1:], first.end, shift)


def _flat(items: list) -> list[Tok]:
    return [t for toks, _ in items for t in toks]


def _points(toks: list[Tok], at: _At) -> list[_Point]:
    """The places the line may break: inside brackets after a comma or a binary operator, or
    before a conditional's `if` and `else`; anywhere after `->` (the parser reads on after it)."""
    out = []
    stack = [-1] * len(at.open)
    real = sum(1 for t in at.open if not t.synthetic)
    for i, t in enumerate(toks):
        step = _nesting(t)
        if step > 0:
            stack.append(i)
            real += not t.synthetic
        elif step < 0 and stack:
            stack.pop()
            real -= not t.synthetic
        kind, index = _kind(toks, i), i
        if kind == _CONDITIONAL:
            index = i - 1
        if kind is None or index < 0 or index == len(toks) - 1:
            continue
        if stack or kind == _ARROW:
            out.append(_Point(index, real, kind, stack[-1] if stack else -1, _chained(toks, i)))
    return out


def _chained(toks: list[Tok], i: int) -> bool:
    """Whether the bracket around toks[i] closes right before another `(` or `[` opens."""
    depth = 0
    for j in range(i + 1, len(toks)):
        depth += _nesting(toks[j])
        if depth < 0:
            return j + 1 < len(toks) and toks[j + 1].role in ("call", "index")
    return False


def _kind(toks: list[Tok], i: int) -> int | None:
    t = toks[i]
    if t.kind == "OP" and t.text == ",":
        return _COMMA
    if t.kind == "OP" and t.text == "->":
        return _ARROW
    if t.kind == "NAME" and t.text in ("if", "else") and i > 0 and toks[i - 1].text != "}":
        return _CONDITIONAL
    if t.role == "sign" or t.kind not in ("OP", "NAME") or t.text not in _OPERATOR_KINDS:
        return None
    return _OPERATOR_KINDS[t.text]


def _wrapped(toks: list[Tok], expression_from: int | None) -> list[Tok] | None:
    """An assignment's or `output`'s expression in added parentheses, when it has operators to
    break at but no top-level `->` (which breaks as it is) or comma (a tuple in parentheses)."""
    if any(t.role == "body" for t in toks):
        return None
    start = expression_from
    if start is None:
        start = _top_level_equals(toks) + 1 or (1 if toks[0].text == "output" else 0)
    expr = toks[start:]
    if not start and expression_from is None or not expr:
        return None
    kinds, depth = set(), 0
    for i, t in enumerate(expr):
        depth += _nesting(t)
        if depth == 0 and i > 0:
            kinds.add(_kind(expr, i))
    if _COMMA in kinds or _ARROW in kinds or not kinds - {None}:
        return None
    return toks[:start] + [Tok("OP", "(", 0, "group", True)] + expr + [Tok("OP", ")", 0, "group", True)]


def _top_level_equals(toks: list[Tok]) -> int:
    """The index of the statement's `=` (not a keyword argument's), or -1."""
    depth = 0
    for i, t in enumerate(toks):
        depth += _nesting(t)
        if depth == 0 and t.kind == "OP" and t.text == "=":
            return i
    return -1


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
    head, toks = _head(list(ln.toks), ln.align, ln.field)
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


def formatted(text: str, name: str = "<text>") -> str:
    """`text` formatted, or `text` as it is when the formatter cannot: for the `.dl` files dslc
    writes itself (plan.dl, a sweep's best.dl), whose writing must never fail on the layout."""
    try:
        return format_source(text, name)
    except Exception:   # a bug in the formatter costs the layout, never the file
        return text


def statements(text: str) -> list[str]:
    """Each statement of `text` on one line, indented by its depth, spaced canonically, without
    comments, blank lines or aligned `=`: what two layouts of the same file have in common (a
    resumed run's plan.dl is compared with the plan by it). FormatError when `text` cannot be read."""
    out = []
    for ln in _lines(tokenize(text.replace("\r\n", "\n"))):
        code = [t for t in ln.toks if t.kind not in ("NL", "COMMENT")]
        if code:
            out.append(_At(INDENT * ln.depth).text(code))
    return out


def statement_at(text: str, start: int) -> str:
    """The statement that starts at offset `start` of `text`, on one line as `statements` writes
    it (a syntax node's span can stop short of the statement: `loss = (a + b)` ends at `b`)."""
    return statements(text[start:])[0].lstrip(" ")


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
