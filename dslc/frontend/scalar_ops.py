"""The operators on compile-time values (numbers, sizes, strings, lists, dicts): `SCALAR_OPS`,
with the checks that refuse a list or string too long before it is built.
"""
from __future__ import annotations

from ..ir.dims import Size, Sym, SymbolicDecision, plain
from ..ir.limits import MAX_ITEMS
from ..ops.ptypes import is_int, is_number
from .errors import EvalError


def _check_numbers(a, b):
    for v in (a, b):
        if isinstance(v, (str, list, tuple, dict)) or v is None or not (is_number(v) or isinstance(v, Sym)):
            raise TypeError


def _arith(f):
    def op(a, b):
        _check_numbers(a, b)
        return f(a, b)
    return op


def length(v) -> int:
    return len(v) if isinstance(v, (list, tuple, dict, str)) else 0


def check_lengths(op: str, a, b, span) -> None:
    """Refuse, before building it, a list or string longer than MAX_ITEMS (`[0] * 10**9`)."""
    if op == "+" and isinstance(a, (list, str)) and type(a) is type(b):
        n = len(a) + len(b)
    elif op == "*" and (isinstance(a, list) and is_int(b) or isinstance(b, list) and is_int(a)):
        lst, count = (a, b) if isinstance(a, list) else (b, a)
        n = len(lst) * max(plain(count), 0)
    else:
        return
    if n > MAX_ITEMS:
        what = "string" if isinstance(a, str) else "list"
        raise EvalError("E0702", f"this {what} would hold {n:,} items, more than {MAX_ITEMS:,}", span,
                        label="too long")


def _add(a, b):
    if isinstance(a, list) and isinstance(b, list):
        return a + b
    if isinstance(a, str) and isinstance(b, str):
        return a + b
    _check_numbers(a, b)
    return a + b


def _mul(a, b):
    if isinstance(a, list) and is_int(b) or isinstance(b, list) and is_int(a):
        lst, n = (a, b) if isinstance(a, list) else (b, a)
        if isinstance(n, Size):
            n._lose("a repeat count")
        return lst * plain(n)
    _check_numbers(a, b)
    return a * b


def _truediv(a, b):
    _check_numbers(a, b)
    if isinstance(a, Sym) or isinstance(b, Sym):
        raise TypeError
    return a / b


def _eq(a, b):
    if isinstance(a, Sym) or isinstance(b, Sym):
        if isinstance(a, Sym) and isinstance(b, Sym) and a == b:
            return True
        raise SymbolicDecision(f"`{a if isinstance(a, Sym) else b}` is only known at run time")
    return a == b


def _contains(item, container) -> bool:
    """`a in b` at compile time: an element of a list or tuple, a key of a dict, a substring of a string."""
    if isinstance(container, str):
        if not isinstance(item, str):
            raise TypeError
        return item in container
    if isinstance(container, dict):
        return item in container
    if not isinstance(container, (list, tuple)):
        raise TypeError
    return any(_eq(item, x) for x in container)   # sizes compare as `==` does (run-time ones: E0311)


def _bitwise(f):
    """`a & b`, `a | b`, `a ^ b` of two ints or two bools, as in Python (a size's value is fixed: a guard)."""
    def op(a, b):
        if not (is_int(a) and is_int(b) or isinstance(a, bool) and isinstance(b, bool)):
            raise TypeError
        for v in (a, b):
            if isinstance(v, Size):
                v._lose("a bitwise operation")
        return f(plain(a), plain(b))
    return op


def invert(v):
    """`~n` of an int, as in Python (a bool is not a number: E0307)."""
    if not is_int(v):
        raise TypeError
    if isinstance(v, Size):
        v._lose("a bitwise operation")
    return ~plain(v)


SCALAR_OPS = {
    "+": _add, "-": _arith(lambda a, b: a - b), "*": _mul, "/": _truediv,
    "//": _arith(lambda a, b: a // b), "%": _arith(lambda a, b: a % b),
    "**": _arith(lambda a, b: a ** b),
    "==": _eq, "!=": lambda a, b: not _eq(a, b),
    "<": lambda a, b: a < b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, ">=": lambda a, b: a >= b,
    "@": lambda a, b: (_ for _ in ()).throw(TypeError()),
    "in": _contains, "not in": lambda a, b: not _contains(a, b),
    "&": _bitwise(lambda a, b: a & b), "|": _bitwise(lambda a, b: a | b), "^": _bitwise(lambda a, b: a ^ b),
}
