"""Compile-time functions: range, len, min, max, abs, sum, int, float.

They run on compile-time values; sizes keep or lose their parameter
expressions through the ordinary arithmetic of `Size` (a lost expression
records a guard).
"""
from __future__ import annotations

import math

from ..ir.dims import Size, Sym, plain
from ..ir.limits import MAX_INT, MAX_ITEMS
from ..ops.ptypes import describe, is_int, is_number
from .values import Builtin


class BuiltinError(Exception):
    """A bad call of a built-in; `arg` is the index of the offending argument."""

    def __init__(self, message: str, arg: int | None = None, code: str = "E0301"):
        super().__init__(message)
        self.arg, self.code = arg, code


def _need_ints(name: str, args) -> list[int]:
    out = []
    for i, a in enumerate(args):
        if isinstance(a, Sym):
            raise BuiltinError(f"`{name}` needs sizes known at compile time, got `{a}`", i)
        if not is_int(a):
            raise BuiltinError(f"`{name}` expects ints, got {describe(a)}", i)
        if isinstance(a, Size):
            a._lose("a count")
        out.append(plain(a))
    return out


def _range(*args):
    if not 1 <= len(args) <= 3:
        raise BuiltinError("`range` takes 1 to 3 arguments")
    ints = _need_ints("range", args)
    if len(ints) == 3 and ints[2] == 0:
        raise BuiltinError("`range`'s step must not be zero", 2)
    n = _range_length(*ints)
    if n > MAX_ITEMS:
        raise BuiltinError(f"`range` would count {n:,} numbers, more than {MAX_ITEMS:,}", code="E0702")
    return list(range(*ints))


def _range_length(start: int, stop: int | None = None, step: int = 1) -> int:
    """len(range(...)) without building it (len() of a range over 2**63 raises OverflowError)."""
    if stop is None:
        start, stop = 0, start
    if step > 0:
        return max(0, (stop - start + step - 1) // step)
    return max(0, (start - stop - step - 1) // -step)


def _len(*args):
    if len(args) != 1:
        raise BuiltinError("`len` takes one argument")
    v = args[0]
    if not isinstance(v, (list, tuple, str)):
        raise BuiltinError(f"`len` needs a list, got {describe(v)}", 0)
    return len(v)


def _numbers(name: str, args) -> list:
    if len(args) == 1 and isinstance(args[0], (list, tuple)):
        args = list(args[0])
    if not args:
        raise BuiltinError(f"`{name}` needs at least one value")
    for i, a in enumerate(args):
        if not is_number(a):
            raise BuiltinError(f"`{name}` expects numbers, got {describe(a)}", i)
    return list(args)


def _min(*args):
    return min(_numbers("min", args))


def _max(*args):
    return max(_numbers("max", args))


def _sum(*args):
    values = _numbers("sum", args)
    total = values[0]
    for v in values[1:]:
        total = total + v
    return total


def _abs(*args):
    if len(args) != 1 or not is_number(args[0]):
        raise BuiltinError("`abs` takes one number")
    return abs(args[0])


def _int(*args):
    if len(args) != 1 or not is_number(args[0]):
        raise BuiltinError("`int` takes one number")
    v = args[0]
    if isinstance(v, float) and not math.isfinite(v):
        raise BuiltinError(f"`int` cannot convert {v} to an integer", 0, code="E0308")
    if isinstance(v, float) and abs(v) > MAX_INT:
        raise BuiltinError(f"`int({v:g})` is too large: more than 2**63 - 1", 0, code="E0701")
    return int(v)


def _float(*args):
    if len(args) != 1 or not is_number(args[0]):
        raise BuiltinError("`float` takes one number")
    return float(args[0])


BUILTINS: dict[str, Builtin] = {b.name: b for b in (
    Builtin("range", _range), Builtin("len", _len), Builtin("min", _min), Builtin("max", _max),
    Builtin("sum", _sum), Builtin("abs", _abs), Builtin("int", _int), Builtin("float", _float),
)}
