"""Mutation operators on `.dl` source.

Text is a `str` decoded with "surrogateescape", so invalid UTF-8 bytes survive as lone surrogates
and come back byte for byte (`to_bytes`). The tokenizer is a plain regex, deliberately not dslc's:
it must cut any text, however broken, into pieces that join back to it.

Each operator takes (rng, text) and returns the mutated text, or None where it does not apply
(no number to replace, no declaration to copy); `mutate` picks operators until one applies.
"""
from __future__ import annotations

import random
import re
from typing import Callable, Optional

TOKEN = re.compile(r"""
    "(?:[^"\\\n]|\\.)*"? | '(?:[^'\\\n]|\\.)*'?           # strings (unterminated: to the line's end, so
                                                         # that a line of 10**5 quotes is not quadratic)
  | \#[^\n]*                                             # a comment
  | (?:\d+\.\d*|\.\d+)(?:[eE][+-]?\d+)? | \d+(?:[eE][+-]?\d+)?   # numbers
  | [A-Za-z_]\w*                                         # names and keywords
  | -> | \*\* | // | == | != | <= | >=
  | \r?\n
  | [ \t\f\r]+
  | .
""", re.X | re.S)
KEYWORDS = {"model", "block", "import", "loss", "train", "input", "output", "param", "for", "in", "repeat", "if",
            "else", "step", "phase", "freeze", "unfreeze", "as", "and", "or", "not", "of", "true", "false", "none",
            "True", "False", "None"}
HUGE = ["10**30", "9 ** 9 ** 9", "2**64", "1e308", "-1", "0", "18446744073709551616", "1e309",
        "-9223372036854775809", "4294967296", "1e-320", "99999999999999999999999999999999"]
SMALL = ["0", "1", "2", "3", "7", "16", "64", "-2", "0.5", "1.5", "1e-3", "0.0"]
STRINGS = ['""', '"x"', '"nearest"', '"bilinear"', '"mean"', '"sum"', '"none"', '"max"', '"reflect"', '"circular"',
           '"zeros"', '"relu"', '"tanh"', '"same"', '"valid"', '"fan_in"', "'a\\'b'", '"\\u202e"']
PYTHON_NAMES = ["self", "torch", "nn", "F", "math", "forward", "super", "build", "class", "def", "lambda", "return",
                "import", "pass", "yield", "global", "_", "__init__", "__class__", "__dict__", "print", "len", "range",
                "int", "float", "list", "dict", "object", "type", "exec", "eval", "x", "B", "T"]
BAD_UTF8 = ["\udcff", "\udcc0\udcaf", "\udced\udca0\udc80", "\udc80", "\udcfe\udcff", "\udce2\udc82"]
CONTROL = ["\x01", "\x07", "\x08", "\x0b", "\x0c", "\x1b", "\x7f", "\r", "\u2028", "\u2029", "\u202e", "\ufeff",
           "\u200b", "\x85"]
LONG_UNITS = ["a", "\\n", "é", "ab\\\""]     # what a long string literal is made of (escapes too)
MAX_MUTANT = 16 << 20    # characters: operators compound, and a mutant must fit the worker's memory limit
COPIES_BYTES = 1 << 20   # dup_decl adds about this much at most (a copied 1 MB string must not become 2 GB)
DECL_START = re.compile(r"^(model|block|loss|train|import)\b", re.M)


def tokens(text: str) -> list[str]:
    """Pieces of `text` that join back to it exactly."""
    return TOKEN.findall(text)


def kind(piece: str) -> str:
    if piece[:1] in "\"'" and len(piece) > 1:
        return "string"
    if piece[:1] == "#":
        return "comment"
    if piece[:1].isdigit() or (piece[:1] == "." and piece[1:2].isdigit()):
        return "number"
    if piece[:1].isalpha() or piece[:1] == "_":
        return "keyword" if piece in KEYWORDS else "name"
    if piece in ("\n", "\r\n"):
        return "newline"
    if piece.strip(" \t\f\r") == "":
        return "space"
    return "punct"


def to_bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def from_bytes(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


def _where(pieces: list[str], kinds: tuple[str, ...]) -> list[int]:
    return [i for i, p in enumerate(pieces) if kind(p) in kinds]


def _significant(pieces: list[str]) -> list[int]:
    return _where(pieces, ("string", "number", "name", "keyword", "punct"))


def _replace_one(rng: random.Random, text: str, kinds: tuple[str, ...], make: Callable[[str], str]) -> Optional[str]:
    """Replace one piece of one of `kinds` by make(piece)."""
    pieces = tokens(text)
    spots = [i for i in _where(pieces, kinds) if len(pieces[i]) <= 100]   # nesting a 1 MB name 5,000 times: no
    if not spots:
        return None
    i = rng.choice(spots)
    pieces[i] = make(pieces[i])
    return "".join(pieces)


def _other(rng: random.Random, choices: list[str], current: str) -> str:
    return rng.choice([c for c in choices if c != current])


# ---------------------------------------------------------------- token operators


def delete(rng, text):
    pieces = tokens(text)
    spots = _significant(pieces)
    if not spots:
        return None
    i = rng.randrange(len(spots))
    for j in spots[i:i + rng.choice([1, 1, 2, 3])]:
        pieces[j] = ""
    return "".join(pieces)


def duplicate(rng, text):
    pieces = tokens(text)
    spots = _significant(pieces)
    if not spots:
        return None
    i = rng.randrange(len(spots))
    run = spots[i:i + rng.choice([1, 1, 2, 5])]
    copy = "".join(pieces[run[0]:run[-1] + 1])
    pieces[run[-1]] += " " + copy if rng.random() < 0.5 else copy
    return "".join(pieces)


def swap(rng, text):
    pieces = tokens(text)
    spots = _significant(pieces)
    if len(spots) < 2:
        return None
    i, j = rng.sample(spots, 2)
    pieces[i], pieces[j] = pieces[j], pieces[i]
    return "".join(pieces)


def huge_number(rng, text):
    return _replace_one(rng, text, ("number",), lambda p: _other(rng, HUGE, p))


def small_number(rng, text):
    """Another ordinary number: the file usually still parses, and the checks behind the parser
    (shapes, arguments, code generation) get to see it."""
    return _replace_one(rng, text, ("number",), lambda p: _other(rng, SMALL, p))


def retype_number(rng, text):
    """An integer becomes a float (7 -> 7.0) and a float an integer (0.5 -> 0): type confusions."""
    def flip(p: str) -> str:
        if re.fullmatch(r"\d+", p):
            return p + ".0"
        return str(int(float(p))) if float(p) < 1e18 else "1"
    return _replace_one(rng, text, ("number",), flip)


def swap_string(rng, text):
    """A string literal becomes another one of the file, or a word that some argument takes."""
    pool = sorted({p for p in tokens(text) if kind(p) == "string" and len(p) <= 100}) + STRINGS
    return _replace_one(rng, text, ("string",), lambda p: _other(rng, pool, p))


def swap_name(rng, text):
    """A name becomes another name of the file, a registry entry (Linear -> Conv2d, x -> h), or a
    name that means something in the generated Python (self, torch, class, ...)."""
    pieces = tokens(text)
    names = sorted({p for p in pieces if kind(p) == "name"})
    if not names:
        return None
    pool = names + registry_names() + PYTHON_NAMES
    return _replace_one(rng, text, ("name",), lambda p: _other(rng, pool, p))


def registry_names() -> list[str]:
    from dslc.ops import REGISTRY
    return sorted(n for n, op in REGISTRY.items() if not op.internal)


def drop_line(rng, text):
    lines = text.splitlines(keepends=True)
    if len(lines) < 2:
        return None
    del lines[rng.randrange(len(lines))]
    return "".join(lines)


def dup_line(rng, text):
    lines = text.splitlines(keepends=True)
    if not lines:
        return None
    i = rng.randrange(len(lines))
    lines.insert(i, lines[i] if lines[i].endswith("\n") else lines[i] + "\n")
    return "".join(lines)


# ---------------------------------------------------------------- deep nesting of an operand


def nest_parens(rng, text):
    d = rng.choice([100, 1000, 5000, 20000])
    return _replace_one(rng, text, ("number", "name"), lambda p: "(" * d + p + ")" * d)


def nest_unary(rng, text):
    n = rng.choice([100, 1000, 5000])
    prefix = rng.choice(["-", "- ", "not ", "+"])
    return _replace_one(rng, text, ("number", "name"), lambda p: prefix * n + p)


def nest_sum(rng, text):
    n = rng.choice([900, 5000])
    op = rng.choice([" + ", " * ", " - ", " and ", " -> "])
    return _replace_one(rng, text, ("number", "name"), lambda p: op.join([p] * n))


def nest_compare(rng, text):
    n = rng.choice([3000, 10000])
    op = rng.choice([" < ", " == ", " in "])
    return _replace_one(rng, text, ("number", "name"), lambda p: op.join([p] * n))


def nest_lists(rng, text):
    d = rng.choice([100, 1000, 5000])
    opener, closer = rng.choice([("[", "]"), ("{a: ", "}"), ("f(", ")"), ("(", ",)")])
    return _replace_one(rng, text, ("number", "name"), lambda p: opener * d + p + closer * d)


def nest_blocks(rng, text):
    """Statements nested n deep, inserted after a line that opens a body."""
    lines = text.splitlines(keepends=True)
    spots = [i for i, line in enumerate(lines) if line.rstrip().endswith("{")]
    if not spots:
        return None
    n = rng.choice([150, 1000, 3000])
    head = rng.choice(["if true {\n", "repeat 1 {\n", "for i in [1] {\n", "if 1 < 2 { ReLU() } else {\n"])
    i = rng.choice(spots)
    lines.insert(i + 1, head * n + "ReLU()\n" + "}\n" * n)
    return "".join(lines)


# ---------------------------------------------------------------- bytes


def truncate(rng, text):
    data = to_bytes(text)
    if len(data) < 2:
        return None
    return from_bytes(data[:rng.randrange(1, len(data))])


def _insert(rng, text, what: str):
    i = rng.randrange(len(text) + 1)
    return text[:i] + what + text[i:]


def insert_nul(rng, text):
    return _insert(rng, text, "\x00" * rng.choice([1, 1, 3]))


def insert_bad_utf8(rng, text):
    return _insert(rng, text, rng.choice(BAD_UTF8))


def insert_control(rng, text):
    return _insert(rng, text, rng.choice(CONTROL))


# ---------------------------------------------------------------- declarations and strings


def declarations(text: str) -> list[tuple[int, int]]:
    """(start, end) of each top-level declaration: from a line starting with a declaration keyword
    to the next such line."""
    starts = [m.start() for m in DECL_START.finditer(text)]
    return list(zip(starts, starts[1:] + [len(text)]))


def dup_decl(rng, text):
    spans = declarations(text)
    if not spans:
        return None
    start, end = rng.choice(spans)
    decl = text[start:end].rstrip("\n") + "\n"
    n = rng.choice([2, 50, 2000])
    if rng.random() < 0.5:   # the same name again and again (E0204 each time), up to ~1 MB
        copies = decl * min(n, max(2, COPIES_BYTES // len(decl)))
    else:   # fresh names are all evaluated: fewer, at most ~100 kB (a bigger file is slow, not broken)
        n = min(n, 20, max(2, COPIES_BYTES // 10 // len(decl)))
        name = re.match(r"\w+\s+(\w+)", decl)
        copies = "".join(decl.replace(name.group(1), f"{name.group(1)}_{k}", 1) if name else decl for k in range(n))
    return text[:end] + ("\n" if not text[:end].endswith("\n") else "") + copies + text[end:]


def long_string(rng, text):
    n = rng.choice([10_000, 100_000, 1_000_000])
    unit = rng.choice(LONG_UNITS)
    body = unit * (n // len(unit))
    close = '"' if rng.random() < 0.8 else ""
    return _replace_one(rng, text, ("string", "number", "name"), lambda _: '"' + body + close)


# ---------------------------------------------------------------- the table and the driver

OPERATORS: dict[str, Callable] = {
    "delete": delete, "duplicate": duplicate, "swap": swap, "huge_number": huge_number,
    "small_number": small_number, "retype_number": retype_number, "swap_name": swap_name,
    "swap_string": swap_string, "drop_line": drop_line, "dup_line": dup_line,
    "nest_parens": nest_parens, "nest_unary": nest_unary, "nest_sum": nest_sum, "nest_compare": nest_compare,
    "nest_lists": nest_lists, "nest_blocks": nest_blocks, "truncate": truncate, "insert_nul": insert_nul,
    "insert_bad_utf8": insert_bad_utf8, "insert_control": insert_control, "dup_decl": dup_decl,
    "long_string": long_string,
}
# cheap edits find most bugs, and the gentle ones (numbers, names, lines) often leave a file that
# parses, so that the checks and the code generation behind the parser are reached: drawn more often
WEIGHTS = {"delete": 3, "duplicate": 2, "swap": 2, "huge_number": 4, "small_number": 4, "retype_number": 3,
           "swap_name": 4, "swap_string": 2, "drop_line": 3, "dup_line": 3}


def pick_operator(rng: random.Random) -> str:
    names = list(OPERATORS)
    return rng.choices(names, weights=[WEIGHTS.get(n, 1) for n in names])[0]


def mutate(rng: random.Random, text: str, count: int) -> tuple[str, list[str]]:
    """Apply `count` operators that apply; returns the mutant and their names in order."""
    applied = []
    for _ in range(count):
        for _attempt in range(20):
            name = pick_operator(rng)
            out = OPERATORS[name](rng, text)
            if out is not None and out != text and len(out) <= MAX_MUTANT:
                text = out
                applied.append(name)
                break
    return text, applied
