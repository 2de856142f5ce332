"""Text -> AST.

Lark (LALR) with positions on, a post-lexer for newlines, and a transformer
that builds the frozen AST of `ast.py`. Syntax errors become diagnostics in
the user's words (`)` rather than `RPAR`); a file with several broken
declarations reports one error for each of them.
"""
from __future__ import annotations

import functools
import re
from importlib import resources

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken, VisitError

from ..diagnostics import Diagnostic, DslcError, Label, SourceFile, Span
from . import ast

MAX_DEPTH = 100  # brackets nested deeper than this are refused before parsing (E0106)

# `{` after one of these opens a dict literal; anywhere else it opens a body.
_DICT_CONTEXT = {"EQUAL", "LPAR", "LSQB", "COMMA", "COLON", "ARROW", "ADD_OP", "MUL_OP",
                 "COMP_OP", "POW", "LBRACE"}
_OPEN = {"LPAR": "RPAR", "LSQB": "RSQB", "LBRACE": "RBRACE"}
_CLOSE = set(_OPEN.values())

# How tokens are spoken of in messages.
_TOKEN_WORDS = {
    "LPAR": "`(`", "RPAR": "`)`", "LSQB": "`[`", "RSQB": "`]`", "LBRACE": "`{`", "RBRACE": "`}`",
    "COMMA": "`,`", "COLON": "`:`", "EQUAL": "`=`", "DOT": "`.`", "ARROW": "`->`",
    "COMP_OP": "a comparison", "ADD_OP": "`+` or `-`", "MUL_OP": "an operator", "POW": "`**`",
    "NAME": "a name", "INT": "a number", "FLOAT": "a number", "STRING": "a string",
    "_NL": "a new line", "$END": "the end of the file", "TRUE": "`true`", "FALSE": "`false`",
    "NONE": "`none`",
}


class _NewlineFilter:
    """Drops newlines that do not end a statement and tracks bracket nesting."""

    always_accept = ("_NL",)

    def __init__(self) -> None:
        self.unclosed: list[Token] = []
        self.stack: list = []

    def process(self, stream):
        stack: list[tuple[str, Token]] = []  # (kind, opening token); kind: paren | dict | body
        self.stack = stack  # live, so a syntax error can see what is still open
        self.unclosed = []
        prev = None
        for tok in stream:
            t = tok.type
            if t == "_NL":
                if (stack and stack[-1][0] != "body") or prev in (None, "_NL", "ARROW", "LBRACE"):
                    continue
                prev = t
                yield tok
                continue
            if t in _OPEN:
                kind = "paren" if t != "LBRACE" else ("dict" if prev in _DICT_CONTEXT else "body")
                stack.append((kind, tok))
                if len(stack) > MAX_DEPTH:
                    raise _TooDeep(tok)
            elif t in _CLOSE and stack:
                stack.pop()
            prev = t
            yield tok
        self.unclosed = [tok for _, tok in stack]


class _TooDeep(Exception):
    def __init__(self, tok: Token):
        self.tok = tok


@functools.lru_cache(maxsize=1)
def _grammar_text() -> str:
    """The grammar: inside the wheel (dslc/grammars), or grammars/ of a source checkout."""
    packaged = resources.files("dslc").joinpath("grammars/dl.lark")
    if packaged.is_file():
        return packaged.read_text(encoding="utf-8")
    from pathlib import Path
    return (Path(__file__).resolve().parents[2] / "grammars" / "dl.lark").read_text(encoding="utf-8")


@functools.lru_cache(maxsize=1)
def _lark() -> Lark:
    return Lark(_grammar_text(), parser="lalr", lexer="contextual", propagate_positions=True,
                maybe_placeholders=True, postlex=_NewlineFilter(), cache=_cache_path(),
                start=["start", "expr"])


def _cache_path() -> str | bool:
    """A per-user cache of the parse tables (they take ~0.2 s to build)."""
    import hashlib
    import os
    import tempfile
    digest = hashlib.sha256(_grammar_text().encode()).hexdigest()[:16]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(tempfile.gettempdir(), f"dslc-{os.getuid()}")
    try:
        os.makedirs(base, exist_ok=True)
        return os.path.join(base, f"dl-lark-{digest}.cache")
    except OSError:
        return False


def decode(data: bytes, name: str) -> str:
    """The text of a file, or a diagnostic if it is binary or not UTF-8."""
    if b"\x00" in data:
        raise DslcError(Diagnostic("E0105", "this is a binary file, not `.dl` source", file_name=name))
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DslcError(Diagnostic(
            "E0105", f"the file is not valid UTF-8 (byte {e.start} is 0x{data[e.start]:02x})",
            file_name=name, help="save the file as UTF-8 text")) from None
    return text[1:] if text.startswith("\ufeff") else text


def parse(file: SourceFile) -> ast.Module:
    """Parse a whole file, reporting every broken declaration."""
    try:
        return _parse_text(file, file.text)
    except _SyntaxError as first:
        whole = first.diagnostic
    # Re-parse each top-level declaration on its own to find every broken one. The whole-file
    # error is kept only if it lies in a declaration that is broken on its own too (otherwise it
    # is a cascade, e.g. of a missing `}` in the declaration before).
    errors, keep_whole = [], False
    for start, end, chunk in _declaration_chunks(file.text):
        try:
            _parse_text(file, chunk)
        except _SyntaxError as e:
            errors.append(e.diagnostic)
            if whole.span is not None and start <= whole.span.start < end:
                keep_whole = True
    if keep_whole or not errors:
        errors.insert(0, whole)
    raise DslcError(errors)


_DECL_START = re.compile(r"^(model|block|loss|train|import)\b", re.M)


def _declaration_chunks(text: str) -> list[tuple[int, int, str]]:
    """(start, end, copy of the text with everything but one declaration blanked out)."""
    starts = [m.start() for m in _DECL_START.finditer(text)] + [len(text)]
    blank = re.sub(r"[^\n]", " ", text)
    return [(a, b, blank[:a] + text[a:b] + blank[b:]) for a, b in zip(starts, starts[1:])]


class _SyntaxError(Exception):
    def __init__(self, diagnostic: Diagnostic):
        self.diagnostic = diagnostic


def parse_expression(file: SourceFile, text: str):
    """One expression (a `--set` value); `text` may blank out a prefix of `file`'s text."""
    try:
        return _parse_text(file, text, start="expr")
    except _SyntaxError as e:
        raise DslcError(e.diagnostic) from None


def _parse_text(file: SourceFile, text: str, start: str = "start"):
    parser = _lark()
    filt: _NewlineFilter = parser.options.postlex
    try:
        tree = parser.parse(text, start=start)
    except _TooDeep as e:
        raise _SyntaxError(Diagnostic(
            "E0106", f"brackets nest more than {MAX_DEPTH} deep", _tok_span(file, e.tok),
            label="too deep from here", help="split the expression into named steps")) from None
    except UnexpectedInput as e:
        raise _SyntaxError(_syntax_diagnostic(file, text, e, filt.unclosed, filt.stack)) from None
    try:
        result = _ToAst(file).transform(tree)
    except VisitError as e:
        if isinstance(e.orig_exc, DslcError):
            raise _SyntaxError(e.orig_exc.diagnostics[0]) from None
        raise
    return ast.Module(file, tuple(result)) if start == "start" else result


def _tok_span(file: SourceFile, tok: Token) -> Span:
    return Span(file, tok.start_pos, tok.end_pos)


def _syntax_diagnostic(file: SourceFile, text: str, e: UnexpectedInput, unclosed: list[Token],
                       open_now: list) -> Diagnostic:
    if isinstance(e, UnexpectedCharacters):
        return _bad_character(file, text, e.pos_in_stream)
    tok = getattr(e, "token", None)
    opener = _unclosed_before(tok, open_now)
    if opener is not None:
        closer = {"LPAR": ")", "LSQB": "]"}[opener.type]
        return Diagnostic("E0104", f"`{opener.value}` is never closed", _tok_span(file, opener),
                          label="opened here", help=f"add the missing `{closer}`",
                          labels=(Label(_tok_span(file, tok), "the next statement starts here"),))
    at_end = isinstance(e, UnexpectedEOF) or (tok is not None and tok.type == "$END")
    if at_end and unclosed:
        opener = unclosed[-1]
        closer = {"LPAR": ")", "LSQB": "]", "LBRACE": "}"}[opener.type]
        return Diagnostic("E0104", f"`{opener.value}` is never closed", _tok_span(file, opener),
                          label=f"opened here", help=f"add the missing `{closer}`")
    if at_end:
        pos = len(text.rstrip())
        return Diagnostic("E0101", "the file ends in the middle of a statement",
                          Span(file, max(0, pos - 1), pos), label="expected more after this")
    span = _tok_span(file, tok)
    expected = _expected_words(e)
    what = _token_word(tok)
    if tok.type == "RBRACE" and expected and "a new line" in expected:
        pass
    message = f"unexpected {what}"
    if tok.type == "NAME" and tok.value in _KEYWORD_HINTS:
        message = f"`{tok.value}` cannot start a statement here"
    if tok.type == "_NL":
        span = Span(file, tok.start_pos, tok.start_pos + 1)
    label = f"expected {_join(expected)}" if expected else ""
    return Diagnostic("E0101", message, span, label=label, help=_syntax_help(tok, expected))


def _unclosed_before(tok, open_now: list):
    """A `(` or `[` left open on an earlier line than the token the parser choked on."""
    if tok is None or tok.type == "$END" or not open_now:
        return None
    kind, opener = open_now[-1]
    if kind == "paren" and opener.line < tok.line and tok.column <= 12:
        return opener
    return None


def _bad_character(file: SourceFile, text: str, pos: int) -> Diagnostic:
    ch = text[pos]
    span = Span(file, pos, pos + 1)
    if ch in "\"'":
        end = text.find("\n", pos)
        end = len(text) if end < 0 else end
        return Diagnostic("E0102", "this string is never closed", Span(file, pos, end),
                          label="string starts here", help=f"end the string with {ch} on the same line")
    shown = ch if ch.isprintable() else f"U+{ord(ch):04X}"
    return Diagnostic("E0103", f"unexpected character `{shown}`", span, label="not part of the language",
                      help="comments start with `#`" if ch in "/;" else None)


_KEYWORD_HINTS = {"def", "class", "return", "while", "let", "var", "import"}


def _token_word(tok: Token) -> str:
    if tok.type == "NAME":
        return f"name `{tok.value}`"
    if tok.type in ("INT", "FLOAT"):
        return f"number `{tok.value}`"
    if tok.type == "STRING":
        return f"string {tok.value}"
    if tok.type == "_NL":
        return "end of line"
    if tok.type == "$END":
        return "end of file"
    return f"`{tok.value}`"


_EXPR_START = {"NAME", "INT", "FLOAT", "STRING", "LPAR", "LSQB", "LBRACE", "TRUE", "FALSE", "NONE", "ADD_OP"}
_CLOSERS = {"RPAR": "`)`", "RSQB": "`]`", "RBRACE": "`}`", "COMMA": "`,`", "_NL": "a new line",
            "COLON": "`:`", "EQUAL": "`=`"}


def _expected_words(e: UnexpectedInput) -> list[str]:
    """What the parser wanted, in the user's words: `an expression` rather than every operator."""
    names = set(getattr(e, "expected", None) or getattr(e, "accepts", None) or [])
    words = []
    if names & _EXPR_START:
        words.append("an expression")
    for n in sorted(names):
        if n in _CLOSERS and _CLOSERS[n] not in words:
            words.append(_CLOSERS[n])
    if not words:
        keywords = sorted(n.lower() for n in names if n.isupper() and n.isalpha() and n not in _TOKEN_WORDS)
        words = [f"`{k}`" for k in keywords[:6]]
    return words


def _join(words: list[str]) -> str:
    if len(words) > 6:
        words = words[:6] + ["..."]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def _syntax_help(tok: Token, expected: list[str]) -> str | None:
    if tok.type == "_NL" and "`)`" in expected:
        return "a `)` may be missing"
    if tok.type == "EQUAL" and "`)`" in expected:
        return "keyword arguments are written `name=value` inside a call"
    if "a new line" in expected and tok.type in ("NAME", "INT", "FLOAT", "STRING"):
        return "put one statement per line"
    return None


# ---- parse tree -> AST ----

def _clean(children) -> list:
    """Children without placeholder Nones and punctuation tokens."""
    return [c for c in children if c is not None and not (isinstance(c, Token) and c.type in ("ARROW",))]


_DTYPES_NOTE = None


@v_args(meta=True)
class _ToAst(Transformer):
    def __init__(self, file: SourceFile):
        super().__init__()
        self.file = file

    def _span(self, meta, children=()) -> Span:
        if not getattr(meta, "empty", True):
            return Span(self.file, meta.start_pos, meta.end_pos)
        spans = [self._of(c) for c in children if c is not None]
        spans = [s for s in spans if s is not None]
        if not spans:
            return Span(self.file, 0, 0)
        return spans[0].to(spans[-1])

    def _of(self, item) -> Span | None:
        if isinstance(item, Token):
            return Span(self.file, item.start_pos, item.end_pos)
        return getattr(item, "span", None)

    def _tok(self, tok: Token) -> Span:
        return Span(self.file, tok.start_pos, tok.end_pos)

    # top level
    def start(self, meta, children):
        return [c for c in children if c is not None]

    def import_decl(self, meta, c):
        return ast.Import(self._span(meta, c), _string_value(c[0]), self._tok(c[0]))

    def model_decl(self, meta, c):
        return self._callable_decl(ast.ModelDecl, meta, c)

    def block_decl(self, meta, c):
        return self._callable_decl(ast.BlockDecl, meta, c)

    def _callable_decl(self, cls, meta, c):
        name, rest = c[0], c[1:]
        params = rest[0] if len(rest) == 2 and isinstance(rest[0], tuple) and not _is_body(rest[0]) else ()
        body = rest[-1]
        return cls(self._span(meta, c), str(name), self._tok(name), tuple(params), tuple(body[1]))

    def loss_decl(self, meta, c):
        return ast.LossDecl(self._span(meta, c), str(c[0]), self._tok(c[0]), c[1])

    def train_decl(self, meta, c):
        return ast.TrainDecl(self._span(meta, c), str(c[0]), self._tok(c[0]), tuple(c[1][1]))

    def param_list(self, meta, c):
        return tuple(p for p in c if isinstance(p, ast.ParamDecl))

    def param(self, meta, c):
        return ast.ParamDecl(self._span(meta, c), str(c[0]), c[1], c[2])

    def type_expr(self, meta, c):
        return ast.TypeExpr(self._span(meta, c), str(c[0]), c[1])

    def body(self, meta, c):
        return ("body", [s for s in c if s is not None])

    # statements
    def input_stmt(self, meta, c):
        name, shape, dtype = c
        return ast.InputStmt(self._span(meta, c), str(name), self._tok(name), shape,
                             str(dtype) if dtype is not None else None,
                             self._tok(dtype) if dtype is not None else None)

    def output_stmt(self, meta, c):
        return ast.OutputStmt(self._span(meta, c), tuple(_clean(c)))

    def param_stmt(self, meta, c):
        return ast.ParamStmt(self._span(meta, c), str(c[0]), self._tok(c[0]), c[1], c[2])

    def for_stmt(self, meta, c):
        names = [t for t in c if isinstance(t, Token)]
        return ast.ForStmt(self._span(meta, c), tuple(map(str, names)), tuple(map(self._tok, names)),
                           c[len(names)], tuple(c[-1][1]))

    def repeat_stmt(self, meta, c):
        return ast.RepeatStmt(self._span(meta, c), c[0], tuple(c[1][1]))

    def if_stmt(self, meta, c):
        orelse = c[2]
        if orelse is None:
            orelse = ()
        elif isinstance(orelse, ast.IfStmt):
            orelse = (orelse,)
        else:
            orelse = tuple(orelse[1])
        return ast.IfStmt(self._span(meta, c), c[0], tuple(c[1][1]), orelse)

    def step_stmt(self, meta, c):
        return ast.StepStmt(self._span(meta, c), str(c[0]), self._tok(c[0]), tuple(c[1][1]))

    def phase_stmt(self, meta, c):
        return ast.PhaseStmt(self._span(meta, c), str(c[0]), self._tok(c[0]), tuple(c[1][1]))

    def dotted(self, meta, c):
        return ast.Dotted(self._span(meta, c), tuple(map(str, c)))

    def freeze_stmt(self, meta, c):
        return ast.FreezeStmt(self._span(meta, c), tuple(c), True)

    def unfreeze_stmt(self, meta, c):
        return ast.FreezeStmt(self._span(meta, c), tuple(c), False)

    def assign_stmt(self, meta, c):
        c = _clean(c)
        return ast.AssignStmt(self._span(meta, c), tuple(c[:-1]), c[-1])

    def expr_stmt(self, meta, c):
        return ast.ExprStmt(self._span(meta, c), c[0])

    # expressions
    def pipe(self, meta, c):
        return ast.Pipe(self._span(meta, c), tuple(_clean(c)))

    def as_name(self, meta, c):
        return ast.AsName(self._span(meta, c), c[0], str(c[1]), self._tok(c[1]))

    def cond(self, meta, c):
        then, test, orelse = c
        return ast.Cond(self._span(meta, c), test, then, orelse)

    def or_test(self, meta, c):
        return self._fold_keyword("or", meta, c)

    def and_test(self, meta, c):
        return self._fold_keyword("and", meta, c)

    def _fold_keyword(self, op, meta, c):
        out = c[0]
        for right in c[1:]:
            out = ast.BinOp(out.span.to(right.span), op, out, right, out.span.to(right.span))
        return out

    def not_(self, meta, c):
        return ast.UnaryOp(self._span(meta, c), "not", c[0])

    def comparison(self, meta, c):
        # a < b < c means (a < b) and (b < c), as in Python
        pairs = []
        for i in range(0, len(c) - 2, 2):
            left, op, right = c[i], c[i + 1], c[i + 2]
            pairs.append(ast.BinOp(left.span.to(right.span), str(op), left, right, self._tok(op)))
        out = pairs[0]
        for p in pairs[1:]:
            out = ast.BinOp(out.span.to(p.span), "and", out, p, p.op_span)
        return out

    def _fold_binary(self, meta, c):
        out = c[0]
        for i in range(1, len(c), 2):
            op, right = c[i], c[i + 1]
            out = ast.BinOp(out.span.to(right.span), str(op), out, right, self._tok(op))
        return out

    arith = term = _fold_binary

    def power(self, meta, c):
        return ast.BinOp(self._span(meta, c), "**", c[0], c[2], self._tok(c[1]))

    def unary(self, meta, c):
        return ast.UnaryOp(self._span(meta, c), str(c[0]), c[1])

    def call(self, meta, c):
        func, args = c
        pos, kws = args if args is not None else ((), ())
        return ast.Call(self._span(meta, c), func, pos, kws)

    def args(self, meta, c):
        pos, kws = [], []
        for a in c:
            if a is None:
                continue
            if isinstance(a, ast.Keyword):
                kws.append(a)
            elif kws:
                raise DslcError(Diagnostic("E0101", "a positional argument cannot follow a keyword argument",
                                           a.span, label="move this before the keyword arguments"))
            else:
                pos.append(a)
        return tuple(pos), tuple(kws)

    def arg(self, meta, c):
        return c[0]

    def kwarg(self, meta, c):
        return ast.Keyword(self._span(meta, c), str(c[0]), c[1])

    def index(self, meta, c):
        return ast.Index(self._span(meta, c), c[0], tuple(c[1]))

    def subscripts(self, meta, c):
        return [s for s in c if s is not None]

    def slice(self, meta, c):
        parts = list(c) + [None] * (3 - len(c))
        return ast.Slice(self._span(meta, c), parts[0], parts[1], parts[2])

    def attr(self, meta, c):
        return ast.Attr(self._span(meta, c), c[0], str(c[1]), self._tok(c[1]))

    def name(self, meta, c):
        return ast.Name(self._tok(c[0]), str(c[0]))

    def int_lit(self, meta, c):
        return ast.Const(self._tok(c[0]), int(c[0]))

    def float_lit(self, meta, c):
        return ast.Const(self._tok(c[0]), float(c[0]))

    def str_lit(self, meta, c):
        return ast.Const(self._tok(c[0]), _string_value(c[0]))

    def true_lit(self, meta, c):
        return ast.Const(self._tok(c[0]), True)

    def false_lit(self, meta, c):
        return ast.Const(self._tok(c[0]), False)

    def none_lit(self, meta, c):
        return ast.Const(self._tok(c[0]), None)

    def tuple(self, meta, c):
        return ast.TupleExpr(self._span(meta, c), tuple(x for x in c if x is not None))

    def list(self, meta, c):
        return ast.ListExpr(self._span(meta, c), tuple(x for x in c if x is not None))

    def dict(self, meta, c):
        items = [x for x in c if x is not None]
        return ast.DictExpr(self._span(meta, c), tuple(k for k, _, _ in items),
                            tuple(s for _, s, _ in items), tuple(v for _, _, v in items))

    def dict_item(self, meta, c):
        key = c[0]
        value = _string_value(key) if key.type == "STRING" else str(key)
        return value, self._tok(key), c[1]


def _is_body(x) -> bool:
    return isinstance(x, tuple) and len(x) == 2 and x[0] == "body"


_ESCAPES = {"n": "\n", "t": "\t", "\\": "\\", '"': '"', "'": "'", "r": "\r", "0": "\0"}


def _string_value(tok: Token) -> str:
    """The value of a string literal; only simple escapes, never Python eval."""
    body = tok.value[1:-1]
    out, i = [], 0
    while i < len(body):
        ch = body[i]
        if ch == "\\" and i + 1 < len(body):
            out.append(_ESCAPES.get(body[i + 1], "\\" + body[i + 1]))
            i += 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)
