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

from lark import Lark, Token, Transformer, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput

from ..diagnostics import Diagnostic, DslcError, Label, SourceFile, Span
from ..ir.limits import MAX_EXPR_DEPTH, MAX_INT, MAX_STRING
from ..ir.types import DTYPES
from . import ast
from .parse_cache import cached_lark

MAX_DEPTH = 100  # brackets nested deeper than this are refused before parsing (E0106)
MAX_DIGITS = len(str(MAX_INT))  # a longer integer literal is too large without converting it

# `{` after one of these opens a dict literal; anywhere else it opens a body.
_DICT_CONTEXT = {"EQUAL", "LPAR", "LSQB", "COMMA", "COLON", "ARROW", "ADD_OP", "MUL_OP",
                 "COMP_OP", "POW", "LBRACE"}
_OPEN = {"LPAR": "RPAR", "LSQB": "RSQB", "LBRACE": "RBRACE"}
_CLOSE = set(_OPEN.values())

# How tokens are spoken of in messages.
_TOKEN_WORDS = {
    "LPAR": "`(`", "RPAR": "`)`", "LSQB": "`[`", "RSQB": "`]`", "LBRACE": "`{`", "RBRACE": "`}`",
    "COMMA": "`,`", "COLON": "`:`", "EQUAL": "`=`", "DOT": "`.`", "ARROW": "`->`",
    "COMP_OP": "a comparison", "ADD_OP": "`+` or `-`", "MUL_OP": "an operator", "POW": "`**`", "INVERT": "`~`",
    "NAME": "a name", "INT": "a number", "FLOAT": "a number", "STRING": "a string",
    "_NL": "a new line", "$END": "the end of the file", "TRUE": "`true`", "FALSE": "`false`",
    "NONE": "`none`",
}


class _NewlineFilter:
    """Drops newlines that do not end a statement, tracks bracket nesting, and refuses a
    keyword glued to the name after it.

    Where the grammar allows a keyword but no name (`model` at the top level, `in` after
    `for i`), lark's contextual lexer matches the keyword as a prefix of a longer word, so
    `modelM {` would read as `model M {`: a keyword must end where a word ends."""

    always_accept = ("_NL",)

    def __init__(self) -> None:
        self.unclosed: list[Token] = []
        self.stack: list = []
        self.text = ""
        self.keywords: frozenset = frozenset()  # token types of the word keywords (`MODEL`, `IN`, ...)

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
            if t in self.keywords and _word_char(self.text, tok.end_pos):
                raise _GluedKeyword(tok)
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


class _GluedKeyword(Exception):
    def __init__(self, tok: Token):
        self.tok = tok


def _word_char(text: str, pos: int) -> bool:
    return pos < len(text) and (text[pos].isalnum() or text[pos] == "_")


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
    # The tables take ~0.2 s to build: parse_cache keeps them in a per-user folder, safely.
    parser = cached_lark(_grammar_text(), parser="lalr", lexer="contextual", keep_all_tokens=True,
                         maybe_placeholders=True, postlex=_NewlineFilter(),
                         start=["start", "expr"], transformer=_BUILDER)
    parser.options.postlex.keywords = frozenset(
        t.name for t in parser.terminals if t.pattern.type == "str" and t.pattern.value.isidentifier())
    return parser


@functools.lru_cache(maxsize=1)
def keywords() -> frozenset:
    """The language's words: the grammar's keyword strings (`model`, `input`, `of`, ...) and the
    word operators and constants its regular expressions match (the formatter and the
    highlighters read them here, so a new keyword reaches them by itself)."""
    words = {t.pattern.value for t in _lark().terminals if t.pattern.type == "str" and t.pattern.value.isidentifier()}
    return frozenset(words | {"and", "or", "not", "in", "true", "false", "none", "True", "False", "None"})


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


def parse(file: SourceFile, parses=frozenset()) -> ast.Module:
    """Parse a whole file, reporting every broken declaration. `parses`: texts of declarations
    known to parse on their own (dslc.frontend.reparse's): they are not parsed again to find the
    broken ones, and the whole-file parse starts after the first ones of them."""
    bounds = _declaration_bounds(file.text)
    begin = next((start for start, end in bounds if file.text[start:end] not in parses), len(file.text))
    try:
        module = _parse_text(file, file.text[begin:], offset=begin)
    except _SyntaxError as first:
        whole = first.diagnostic
    else:   # the text parses whole, though a piece of it does not on its own
        return module if begin == 0 else parse(file)
    # Re-parse each top-level declaration on its own to find every broken one. The whole-file
    # error is kept only if it lies in a declaration that is broken on its own too (otherwise it
    # is a cascade, e.g. of a missing `}` in the declaration before).
    # Each declaration is parsed as a text of its own at its offset, so recovery is linear in
    # the file's size however many declarations are broken. The whole-file parse got through the
    # declarations before the error, so only the one before it (perhaps a missing `}` that the
    # error is a cascade of) and those after are parsed again.
    errors, keep_whole = [], False
    if whole.span is not None:
        at = next((i for i, (start, end) in enumerate(bounds) if whole.span.start < end), len(bounds) - 1)
        bounds = bounds[max(at - 1, 0):]
    for start, end in bounds:
        if file.text[start:end] in parses:
            continue
        try:
            _parse_text(file, file.text[start:end], offset=start)
        except _SyntaxError as e:
            errors.append(e.diagnostic)
            if whole.span is not None and start <= whole.span.start < end:
                keep_whole = True
    if keep_whole or not errors:
        errors.insert(0, whole)
    raise DslcError(errors)


_DECL_START = re.compile(r"^(model|block|loss|train|import)\b", re.M)


def _declaration_bounds(text: str) -> list[tuple[int, int]]:
    """(start, end) of each top-level declaration's text; text before the first one is a piece
    of its own (it may hold a declaration whose keyword is misspelled)."""
    starts = sorted({0} | {m.start() for m in _DECL_START.finditer(text)}) + [len(text)]
    return list(zip(starts, starts[1:]))


class _SyntaxError(Exception):
    def __init__(self, diagnostic: Diagnostic):
        self.diagnostic = diagnostic


def parse_expression(file: SourceFile, text: str):
    """One expression (a `--set` value); `text` may blank out a prefix of `file`'s text."""
    try:
        return _parse_text(file, text, start="expr")
    except _SyntaxError as e:
        raise DslcError(e.diagnostic) from None


def _parse_text(file: SourceFile, text: str, start: str = "start", offset: int = 0):
    """Parse `text`, which lies at `offset` in `file` (spans are positions in the whole file)."""
    parser = _lark()
    filt: _NewlineFilter = parser.options.postlex
    filt.text = text
    _BUILDER.file, _BUILDER.prefix_nots, _BUILDER.offset, _BUILDER.depths = file, {}, offset, {}
    here = _Place(file, offset)
    try:
        result = parser.parse(text, start=start)
    except _TooDeep as e:
        raise _SyntaxError(Diagnostic(
            "E0106", f"brackets nest more than {MAX_DEPTH} deep", here.token(e.tok),
            label="too deep from here", help="split the expression into named steps")) from None
    except _GluedKeyword as e:
        raise _SyntaxError(_glued_keyword(here, text, e.tok)) from None
    except UnexpectedInput as e:
        raise _SyntaxError(_syntax_diagnostic(here, text, e, filt.unclosed, filt.stack)) from None
    except DslcError as e:  # raised by the builder (a positional argument after a keyword, a limit)
        raise _SyntaxError(e.diagnostics[0]) from None
    finally:
        _BUILDER.depths = {}  # the nodes it holds belong to this parse only
    return ast.Module(file, tuple(result)) if start == "start" else result


class _Place:
    """Spans in `file` of positions in a text that starts at `offset` of it."""

    def __init__(self, file: SourceFile, offset: int):
        self.file, self.offset = file, offset

    def span(self, start: int, end: int) -> Span:
        return Span(self.file, self.offset + start, self.offset + end)

    def token(self, tok: Token) -> Span:
        return self.span(tok.start_pos, tok.end_pos)


def _glued_keyword(here: _Place, text: str, tok: Token) -> Diagnostic:
    end = tok.end_pos
    while _word_char(text, end):
        end += 1
    word = text[tok.start_pos:end]
    return Diagnostic("E0101", f"unexpected name `{word}`", here.span(tok.start_pos, end),
                      label=f"`{tok.value}` is a keyword",
                      help=f"did you mean `{tok.value} {word[len(tok.value):]}`?")


def _syntax_diagnostic(here: _Place, text: str, e: UnexpectedInput, unclosed: list[Token],
                       open_now: list) -> Diagnostic:
    if isinstance(e, UnexpectedCharacters):
        return _bad_character(here, text, e.pos_in_stream)
    tok = getattr(e, "token", None)
    opener = _unclosed_before(tok, open_now)
    if opener is not None:
        closer = {"LPAR": ")", "LSQB": "]"}[opener.type]
        return Diagnostic("E0104", f"`{opener.value}` is never closed", here.token(opener),
                          label="opened here", help=f"add the missing `{closer}`",
                          labels=(Label(here.token(tok), "the next statement starts here"),))
    at_end = isinstance(e, UnexpectedEOF) or (tok is not None and tok.type == "$END")
    if at_end and unclosed:
        opener = unclosed[-1]
        closer = {"LPAR": ")", "LSQB": "]", "LBRACE": "}"}[opener.type]
        return Diagnostic("E0104", f"`{opener.value}` is never closed", here.token(opener),
                          label="opened here", help=f"add the missing `{closer}`")
    if at_end:
        pos = len(text.rstrip())
        return Diagnostic("E0101", "the file ends in the middle of a statement",
                          here.span(max(0, pos - 1), pos), label="expected more after this")
    special = _reserved_name(here, text, tok) or _leading_arrow(here, text, tok)
    if special is not None:
        return special
    span = here.token(tok)
    expected = _expected_words(e)
    what = _token_word(tok)
    if tok.type == "RBRACE" and expected and "a new line" in expected:
        pass
    message = f"unexpected {what}"
    if tok.type == "NAME" and tok.value in _KEYWORD_HINTS:
        message = f"`{tok.value}` cannot start a statement here"
    if tok.type == "_NL":
        span = here.span(tok.start_pos, tok.start_pos + 1)
    label = f"expected {_join(expected)}" if expected else ""
    help = _dtype_after_shape(text, tok) or _syntax_help(tok, expected)
    return Diagnostic("E0101", message, span, label=label, help=help)


# The words that start a statement, which therefore cannot start an assignment (`output = ...`).
RESERVED = ("model", "block", "loss", "train", "import", "input", "output", "param", "buffer", "for", "repeat", "if",
            "else", "step", "phase", "freeze", "unfreeze")
_OTHER_NAME = {"output": "out", "input": "inp", "param": "weight", "buffer": "buf"}


def _reserved_name(here: _Place, text: str, tok) -> Diagnostic | None:
    """`output = x -> Linear(8)`, `output, hidden = ...`, `input = ...`: a reserved word where a
    statement's first name would be."""
    if tok is None or tok.type not in ("EQUAL", "COMMA"):
        return None
    start = text.rfind("\n", 0, tok.start_pos) + 1
    before = text[start:tok.start_pos]
    word = before.strip()
    if word not in RESERVED:
        return None
    at = start + before.index(word)
    end = text.find("\n", tok.end_pos)
    line = text[start:len(text) if end < 0 else end]
    other = _OTHER_NAME.get(word, f"{word}_")
    targets = line[:line.index("=")].strip() if "=" in line else word
    renamed = f"`{other}{targets[len(word):]} = ...`"
    if word == "output" and tok.type == "EQUAL":
        rest = line[line.index("=") + 1:].strip()
        help_ = f"to return the value, write `output {rest or '...'}`; to name it, choose another name ({renamed})"
    else:
        help_ = f"choose another name ({renamed})"
    article = "an" if word[0] in "aeiou" else "a"
    return Diagnostic("E0101", f"`{word}` is a reserved word: a line that starts with it is {article} `{word}` "
                      "statement, not an assignment", here.span(at, at + len(word)), label="reserved", help=help_)


def _leading_arrow(here: _Place, text: str, tok) -> Diagnostic | None:
    """A line that starts with `->`, meant to continue the statement above (which must end with `->`)."""
    if tok is None or tok.type in ("$END",):
        return None
    start = text.rfind("\n", 0, tok.start_pos) + 1
    line = text[start:]
    at = start + len(line) - len(line.lstrip(" \t"))
    if not text.startswith("->", at) or tok.start_pos > at + 1:
        return None
    above = text[:start].rstrip()
    if above.endswith("->"):
        help_ = "the line above already ends with `->`, which continues the statement: write the arrow once"
    else:
        help_ = "a statement continues on the next line when its line ends with `->`: move this `->` to the end " \
                "of the line above"
    return Diagnostic("E0101", "a line cannot start with `->`", here.span(at, at + 2),
                      label="continues the statement above?", help=help_)


def _unclosed_before(tok, open_now: list):
    """A `(` or `[` left open on an earlier line than the token the parser choked on."""
    if tok is None or tok.type == "$END" or not open_now:
        return None
    kind, opener = open_now[-1]
    if kind == "paren" and opener.line < tok.line and tok.column <= 12:
        return opener
    return None


def _bad_character(here: _Place, text: str, pos: int) -> Diagnostic:
    ch = text[pos]
    span = here.span(pos, pos + 1)
    if ch in "\"'":
        end = text.find("\n", pos)
        end = len(text) if end < 0 else end
        return Diagnostic("E0102", "this string is never closed", here.span(pos, end),
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


_EXPR_START = {"NAME", "INT", "FLOAT", "STRING", "LPAR", "LSQB", "LBRACE", "TRUE", "FALSE", "NONE", "ADD_OP",
               "INVERT"}
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


# torch's names for dtypes (`torch.long`), which a PyTorch user may write after a shape
_TORCH_DTYPES = {"long": "int64", "int": "int32", "short": "int16", "float": "float32", "double": "float64",
                 "half": "float16", "bool": "bool", "byte": "uint8", "char": "int8"}


def _dtype_after_shape(text: str, tok) -> str | None:
    """`input x: [B, T] long`: the dtype is written after `of`."""
    if tok is None or tok.type != "NAME" or not text[:tok.start_pos].rstrip().endswith("]"):
        return None
    dtype = tok.value if tok.value in DTYPES else _TORCH_DTYPES.get(tok.value)
    if dtype is None:
        return None
    return f"a dtype follows the shape after `of`: `[...] of {dtype}`"


def _syntax_help(tok: Token, expected: list[str]) -> str | None:
    if tok.type == "_NL" and "`)`" in expected:
        return "a `)` may be missing"
    if tok.type == "EQUAL" and "`)`" in expected:
        return "keyword arguments are written `name=value` inside a call"
    if "a new line" in expected and tok.type in ("NAME", "INT", "FLOAT", "STRING"):
        return "put one statement per line"
    return None


# ---- AST building, inside the parser ----
#
# The builder runs as lark's internal transformer, so no parse tree is built: each
# reduction calls a method with its children (all tokens kept). Spans come from the
# first and last child; binary operators arrive as one flat list and are ordered here.

_VALUE_TOKENS = {"NAME", "INDEX", "INT", "FLOAT", "STRING", "TRUE", "FALSE", "NONE", "ADD_OP", "BINOP", "LOGIC",
                 "POW", "NOT", "ARROW", "CONTAINS", "INVERT"}
_PREC = {"or": 1, "and": 2, "==": 4, "!=": 4, "<": 4, "<=": 4, ">": 4, ">=": 4, "in": 4, "not in": 4,
         "|": 5, "^": 6, "&": 7, "+": 8, "-": 8, "*": 9, "/": 9, "//": 9, "%": 9, "@": 9}
_NOT_PREC = 3  # `not a == b` is `not (a == b)`, as in Python
_COMPARE = 4


def _vals(children) -> list:
    """Children without punctuation, keywords and placeholders."""
    return [c for c in children if c is not None and not (isinstance(c, Token) and c.type not in _VALUE_TOKENS)]


def _after(children, token_type: str):
    """The child right after the first token of `token_type` (an optional part's value), or None."""
    for i, c in enumerate(children):
        if isinstance(c, Token) and c.type == token_type:
            return next((x for x in children[i + 1:] if x is not None), None)
    return None


def _first(children, cls):
    return next((c for c in children if isinstance(c, cls)), None)


def _name_tokens(children) -> list:
    return [c for c in children if isinstance(c, Token) and c.type == "NAME"]


class _ToAst(Transformer):
    file: SourceFile
    offset: int = 0   # where the parsed text starts in `file`
    # `not x` nodes written bare before an operand, by id (`binary` decides their reach). The
    # nodes are kept here too: a freed node's id could otherwise come back on a new node.
    prefix_nots: dict
    # The depth of each long expression node, by id (with the node, for the same reason).
    depths: dict

    def __default__(self, data, children, meta):
        # lark's own helper rules (`__binary_star_8`): a Tree that lark splices into the parent
        return Tree(data, children, meta)

    def _sp(self, children) -> Span:
        items = [c for c in children if c is not None]
        first, last = items[0], items[-1]
        start = first.start_pos + self.offset if isinstance(first, Token) else first.span.start
        end = last.end_pos + self.offset if isinstance(last, Token) else last.span.end
        return Span(self.file, start, end)

    def _tok(self, tok: Token) -> Span:
        return Span(self.file, tok.start_pos + self.offset, tok.end_pos + self.offset)

    def _checked(self, node):
        """Refuse an expression nested deeper than MAX_EXPR_DEPTH: evaluation and every later
        walk of the tree recurse on it. Each level of nesting takes at least one character, so
        only nodes longer than the limit are measured, each once (their depth is kept)."""
        if node.span.end - node.span.start <= MAX_EXPR_DEPTH:
            return node
        depth = _depth(node, self.depths)
        if depth > MAX_EXPR_DEPTH:
            raise DslcError(Diagnostic(
                "E0705", f"this expression nests more than {MAX_EXPR_DEPTH} operations deep", node.span,
                label="too deep", help="split it into named steps"))
        self.depths[id(node)] = (node, depth)
        return node

    # top level
    def start(self, c):
        return [d for d in c if d is not None and not isinstance(d, Token)]

    def import_decl(self, c):
        tok = _vals(c)[0]
        return ast.Import(self._sp(c), self._string(tok), self._tok(tok))

    def model_decl(self, c):
        return self._callable_decl(ast.ModelDecl, c)

    def block_decl(self, c):
        return self._callable_decl(ast.BlockDecl, c)

    def _callable_decl(self, cls, c):
        v = _vals(c)
        name = v[0]
        params = next((x for x in v[1:] if isinstance(x, _Params)), _Params())
        body = v[-1]
        return cls(self._sp(c), str(name), self._tok(name), tuple(params), tuple(body))

    def loss_decl(self, c):
        name, value = _name_tokens(c)[0], _after(c, "EQUAL")
        return ast.LossDecl(self._sp(c), str(name), self._tok(name), value)

    def train_decl(self, c):
        name, body = _vals(c)
        return ast.TrainDecl(self._sp(c), str(name), self._tok(name), tuple(body))

    def sweep_decl(self, c):
        name, body = _vals(c)
        fields = tuple(x for x in body if isinstance(x, ast.SweepField))
        spaces = [x for x in body if isinstance(x, _Space)]
        return ast.SweepDecl(self._sp(c), str(name), self._tok(name), fields, tuple(tuple(s) for s in spaces),
                             tuple(s.span for s in spaces))

    def sweep_body(self, c):
        return _spanned(_Body(x for x in c if x is not None and not isinstance(x, Token)), self._sp(c))

    def sweep_field(self, c):
        name = _name_tokens(c)[0]
        return ast.SweepField(self._sp(c), str(name), self._tok(name), _after(c, "EQUAL"))

    def sweep_space(self, c):
        return _spanned(_Space(x for x in c if isinstance(x, ast.SweepRange)), self._sp(c))

    def sweep_range(self, c):
        return ast.SweepRange(self._sp(c), _first(c, ast.Dotted), _after(c, "EQUAL"))

    def param_list(self, c):
        params = [p for p in c if isinstance(p, ast.ParamDecl)]
        seen = {}
        for p in params:
            if p.name in seen:
                raise DslcError(Diagnostic("E0204", f"parameter `{p.name}` is declared twice", p.span,
                                           label="second declaration",
                                           labels=(Label(seen[p.name].span, "first declared here"),),
                                           help="give each parameter its own name"))
            seen[p.name] = p
        return _spanned(_Params(params), self._sp(c))

    def param(self, c):
        return ast.ParamDecl(self._sp(c), str(_name_tokens(c)[0]), _after(c, "COLON"), _after(c, "EQUAL"))

    def type_expr(self, c):
        return ast.TypeExpr(self._sp(c), str(_name_tokens(c)[0]), _first(c, ast.TypeExpr))

    def body(self, c):
        return _spanned(_Body(s for s in c if s is not None and not isinstance(s, Token)), self._sp(c))

    # statements
    def input_stmt(self, c):
        name, shape, dtype = _name_tokens(c)[0], _after(c, "COLON"), _after(c, "OF")
        return ast.InputStmt(self._sp(c), str(name), self._tok(name), shape,
                             str(dtype) if dtype is not None else None,
                             self._tok(dtype) if dtype is not None else None)

    def output_stmt(self, c):
        return ast.OutputStmt(self._sp(c), tuple(x for x in _vals(c) if x is not None))

    def param_stmt(self, c):
        name, shape, init = _name_tokens(c)[0], _after(c, "COLON"), _after(c, "EQUAL")
        return ast.ParamStmt(self._sp(c), str(name), self._tok(name), shape, init)

    def buffer_stmt(self, c):
        name, value = _name_tokens(c)[0], _after(c, "EQUAL")
        pos, kws = next((x for x in c if isinstance(x, _Args)), _Args(((), ()))).value
        return ast.BufferStmt(self._sp(c), str(name), self._tok(name), value, kws, pos)

    def for_stmt(self, c):
        names = _name_tokens(c[:next(i for i, x in enumerate(c) if isinstance(x, Token) and x.type == "IN")])
        return ast.ForStmt(self._sp(c), tuple(map(str, names)), tuple(map(self._tok, names)),
                           _after(c, "IN"), tuple(_first(c, _Body)))

    def repeat_stmt(self, c):
        count, body = _vals(c)
        return ast.RepeatStmt(self._sp(c), count, tuple(body))

    def if_stmt(self, c):
        cond, body, orelse = c[1], _first(c, _Body), _after(c, "ELSE")
        if orelse is None:
            orelse = ()
        elif isinstance(orelse, ast.IfStmt):
            orelse = (orelse,)
        return ast.IfStmt(self._sp(c), cond, tuple(body), tuple(orelse))

    def step_stmt(self, c):
        name, body = _vals(c)
        return ast.StepStmt(self._sp(c), str(name), self._tok(name), tuple(body))

    def phase_stmt(self, c):
        name, body = _vals(c)
        return ast.PhaseStmt(self._sp(c), str(name), self._tok(name), tuple(body))

    def dotted(self, c):
        # an INDEX token is `.0` (its dot taken with it, where the lexer would read `.0` as a float)
        return ast.Dotted(self._sp(c), tuple(str(t).lstrip(".") for t in _vals(c)))

    def freeze_stmt(self, c):
        return ast.FreezeStmt(self._sp(c), tuple(_vals(c)), True)

    def unfreeze_stmt(self, c):
        return ast.FreezeStmt(self._sp(c), tuple(_vals(c)), False)

    def assign_stmt(self, c):
        eq = next(i for i, x in enumerate(c) if isinstance(x, Token) and x.type == "EQUAL")
        return ast.AssignStmt(self._sp(c), tuple(_vals(c[:eq])), _after(c, "EQUAL"))

    def expr_stmt(self, c):
        return ast.ExprStmt(self._sp(c), c[0])

    # expressions
    def pipe(self, c):
        if len(c) == 1:  # an aliased `?` rule is called even for one child
            return c[0]
        return self._checked(ast.Pipe(self._sp(c), tuple(x for x in c if not isinstance(x, Token))))

    def as_name(self, c):
        value, name = c[0], _after(c, "AS")
        if name.type == "STRING":   # a name template, `as "denselayer{i + 1}"` (frontend/templates.py)
            problem = template_problem(name.value[1:-1])
            if problem:
                at, why = problem
                start = self._tok(name).start + 1 + at
                raise DslcError(Diagnostic("E0101", f"this name template {why}", Span(self.file, start, start + 1),
                                           label="here", help='a template is a name with expressions in braces: '
                                                              '`as "layer{i + 1}"`'))
            return self._checked(ast.AsName(self._sp(c), value, name.value[1:-1], self._tok(name), template=True))
        return self._checked(ast.AsName(self._sp(c), value, str(name), self._tok(name)))

    def cond(self, c):
        then, test, orelse = c[0], _after(c, "IF"), _after(c, "ELSE")
        return self._checked(ast.Cond(self._sp(c), test, then, orelse))

    def binary(self, c):
        if len(c) == 1:
            return c[0]
        operands = list(c[0::2])
        ops = [Token.new_borrow_pos(t.type, " ".join(t.split()), t) if t.type == "CONTAINS" else t
               for t in c[1::2]]   # `not   in` is the operator `not in`
        return _Climb(self, operands, ops).parse(0)

    def unary(self, c):
        op, operand = c
        return self._checked(ast.UnaryOp(self._sp(c), str(op), operand))

    def not_(self, c):
        node = self._checked(ast.UnaryOp(self._sp(c), "not", c[1]))
        self.prefix_nots[id(node)] = node  # an inner `not` stays a prefix too: `not not a == b`
        return node

    def power(self, c):
        base, op, exp = c
        return self._checked(ast.BinOp(self._sp(c), "**", base, exp, self._tok(op)))

    def paren(self, c):
        self.prefix_nots.pop(id(c[1]), None)  # `(not a) == b`: the parentheses end its reach
        return c[1]

    def call(self, c):
        func = c[0]
        args = next((x for x in c[1:] if isinstance(x, _Args)), _Args(((), ())))
        pos, kws = args.value
        return self._checked(ast.Call(self._sp(c), func, pos, kws))

    def args(self, c):
        pos, kws = [], []
        for a in c:
            if a is None or isinstance(a, Token):
                continue
            if isinstance(a, ast.Keyword):
                kws.append(a)
            elif kws:
                raise DslcError(Diagnostic("E0101", "a positional argument cannot follow a keyword argument",
                                           a.span, label="move this before the keyword arguments"))
            else:
                pos.append(a)
        return _spanned(_Args((tuple(pos), tuple(kws))), self._sp(c))

    def arg(self, c):
        return c[0]

    def kwarg(self, c):
        name, value = c[0], _after(c, "EQUAL")
        return ast.Keyword(self._sp(c), str(name), value)

    def index(self, c):
        subs = next(x for x in c if isinstance(x, _Subs))
        return self._checked(ast.Index(self._sp(c), c[0], tuple(subs)))

    def subscripts(self, c):
        return _spanned(_Subs(s for s in c if s is not None and not isinstance(s, Token)), self._sp(c))

    def slice(self, c):
        # [start] ":" [stop] [":" [step]]: placeholders are None
        parts, current = [], None
        for x in c:
            if isinstance(x, Token) and x.type == "COLON":
                parts.append(current)
                current = None
            elif x is not None:
                current = x
        parts.append(current)
        parts += [None] * (3 - len(parts))
        return ast.Slice(self._sp(c), parts[0], parts[1], parts[2])

    def attr(self, c):
        value, name = c[0], c[-1]
        return self._checked(ast.Attr(self._sp(c), value, str(name), self._tok(name)))

    def name(self, c):
        return ast.Name(self._tok(c[0]), str(c[0]))

    def int_lit(self, c):
        digits = str(c[0]).lstrip("0") or "0"
        if len(digits) > MAX_DIGITS or int(digits) > MAX_INT:
            raise DslcError(Diagnostic("E0701", "this integer is too large", self._tok(c[0]),
                                       label="at most 2**63 - 1", help="sizes and counts are int64 in PyTorch"))
        return ast.Const(self._tok(c[0]), int(digits))

    def float_lit(self, c):
        return ast.Const(self._tok(c[0]), float(c[0]))

    def str_lit(self, c):
        return ast.Const(self._tok(c[0]), self._string(c[0]))

    def _string(self, tok: Token) -> str:
        if len(tok) - 2 > MAX_STRING:
            raise DslcError(Diagnostic("E0704", f"this string is longer than {MAX_STRING:,} characters",
                                       Span(self.file, self._tok(tok).start, self._tok(tok).start + 1),
                                       label="the string starts here", help="keep long data in a data file"))
        return _string_value(tok)

    def true_lit(self, c):
        return ast.Const(self._tok(c[0]), True)

    def false_lit(self, c):
        return ast.Const(self._tok(c[0]), False)

    def none_lit(self, c):
        return ast.Const(self._tok(c[0]), None)

    def tuple(self, c):
        return self._checked(ast.TupleExpr(self._sp(c), tuple(x for x in _vals(c) if x is not None)))

    def list(self, c):
        return self._checked(ast.ListExpr(self._sp(c), tuple(x for x in _vals(c) if x is not None)))

    def dict(self, c):
        items = [x for x in c if isinstance(x, _Item)]
        return self._checked(ast.DictExpr(self._sp(c), tuple(i.key for i in items),
                                          tuple(i.key_span for i in items), tuple(i.value for i in items)))

    def dict_item(self, c):
        key, value = c[0], _after(c, "COLON")
        text = self._string(key) if key.type == "STRING" else str(key)
        return _spanned(_Item(text, self._tok(key), value), self._sp(c))


def _spanned(x, span):
    """Give a builder-only container (a body, an argument list) the span of its text."""
    x.span = span
    return x


class _Space(tuple):
    """A sweep's `space { ... }` while the builder runs (it carries its span)."""


class _Params(tuple):
    pass


class _Body(tuple):
    pass


class _Subs(tuple):
    pass


class _Args:
    def __init__(self, value):
        self.value = value


class _Item:
    def __init__(self, key, key_span, value):
        self.key, self.key_span, self.value = key, key_span, value


class _Climb:
    """Precedence climbing over `operand (op operand)*`, with Python's `not` and comparison chains."""

    def __init__(self, builder: _ToAst, operands: list, ops: list):
        self.b, self.operands, self.ops, self.k = builder, operands, ops, 0

    def parse(self, min_prec: int):
        left = self._operand(min_prec)
        chain_right = None  # the last right operand of a comparison chain at this level
        while self.k < len(self.ops) and _PREC[str(self.ops[self.k])] > min_prec:
            op = self.ops[self.k]
            prec = _PREC[str(op)]
            self.k += 1
            right = self.parse(prec)
            if prec == _COMPARE and chain_right is not None:  # a < b < c is (a < b) and (b < c)
                pair = ast.BinOp(chain_right.span.to(right.span), str(op), chain_right, right, self.b._tok(op))
                left = ast.BinOp(left.span.to(right.span), "and", left, self.b._checked(pair), self.b._tok(op))
            else:
                left = ast.BinOp(left.span.to(right.span), str(op), left, right, self.b._tok(op))
            left = self.b._checked(left)
            chain_right = right if prec == _COMPARE else None
        return left

    def _operand(self, min_prec: int):
        x = self.operands[self.k]
        if self.b.prefix_nots.get(id(x)) is x and min_prec <= _NOT_PREC:
            self.operands[self.k] = x.operand
            inner = self.parse(_NOT_PREC)
            return self.b._checked(ast.UnaryOp(x.span.to(inner.span), "not", inner))
        return x


def _is_body(x) -> bool:
    return isinstance(x, tuple) and len(x) == 2 and x[0] == "body"


_ESCAPES = {"n": "\n", "t": "\t", "\\": "\\", '"': '"', "'": "'", "r": "\r", "0": "\0"}
_ESCAPE = re.compile(r"\\(.)", re.S)


def template_problem(text: str) -> tuple[int, str] | None:
    """(offset in `text`, what is wrong) for a template the parser refuses, else None."""
    if "\\" in text:
        return text.index("\\"), "has an escape, which no name has"
    opened = None
    for i, ch in enumerate(text):
        if ch == "{":
            if opened is not None:
                return i, "opens a brace inside a brace"
            opened = i
        elif ch == "}":
            if opened is None:
                return i, "closes a brace it did not open"
            if not text[opened + 1:i].strip():
                return opened, "has an empty `{}`"
            opened = None
    if opened is not None:
        return opened, "opens a brace it does not close"
    if "{" not in text:
        return 0, "has no `{expression}`: write a fixed name without quotes (`as conv1`)"
    return None


def _string_value(tok: Token) -> str:
    """The value of a string literal; only simple escapes, never Python eval."""
    body = tok.value[1:-1]
    if "\\" not in body:
        return body
    return _ESCAPE.sub(lambda m: _ESCAPES.get(m.group(1), m.group(0)), body)


def _depth(node, known: dict) -> int:
    """How deeply `node` nests: 1 + its deepest child. Children longer than MAX_EXPR_DEPTH
    were measured when they were built (`known`); shorter ones are at most that deep, so the
    recursion here stays shallow."""
    hit = known.get(id(node))
    if hit is not None and hit[0] is node:
        return hit[1]
    deepest = 0
    for child in _children(node):
        deepest = max(deepest, _depth(child, known))
    return deepest + 1


def _children(node):
    for value in node.__dict__.values():
        if isinstance(value, ast.Node):
            yield value.value if isinstance(value, ast.Keyword) else value
        elif isinstance(value, tuple):
            for item in value:
                if isinstance(item, ast.Node):
                    yield item.value if isinstance(item, ast.Keyword) else item


_BUILDER = _ToAst()
