"""Compile-time functions: range, len, min, max, abs, sum, all, any, int, float, the math
functions log, exp, sqrt, sin and cos, and the constants pi and e; the casts long, double, half
and bool, which take tensors only.

They run on compile-time values; sizes keep or lose their parameter
expressions through the ordinary arithmetic of `Size` (a lost expression
records a guard). A name that is also a tensor function (`sum`, `abs`, `log`) or a cast
(`float`, `int`) means the tensor operation when an argument is a tensor: `calls.py` decides.
"""
from __future__ import annotations

import math

from ..ir.dims import MATH_FUNCTIONS, Size, Sym, as_float, extreme, math_function, plain, plain_float
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


def _extreme(name: str, args):
    """`max`/`min`: over sizes of parameters, a size that keeps the expression (`max(1, c // 4)`)
    for every value of c; with a float or a run-time size, Python's, whose comparisons record
    guards (or cannot be decided)."""
    values = _numbers(name, args)
    if any(isinstance(v, Size) for v in values) and all(is_int(v) for v in values):
        return extreme(name, values)
    return (max if name == "max" else min)(values)


def _min(*args):
    return _extreme("min", args)


def _max(*args):
    return _extreme("max", args)


def _sum(*args):
    if len(args) == 1 and isinstance(args[0], (list, tuple)) and not args[0]:
        return 0   # Python's sum of nothing
    values = _numbers("sum", args)
    total = values[0]
    for v in values[1:]:
        total = total + v
    return total


def _truths(name: str, args) -> list:
    if len(args) != 1 or not isinstance(args[0], (list, tuple)):
        raise BuiltinError(f"`{name}` takes one list")
    return [bool(v) for v in args[0]]   # a size's truth records its guard; a run-time size's is E0311


def _all(*args):
    return all(_truths("all", args))


def _any(*args):
    return any(_truths("any", args))


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
    return as_float(args[0])


def _real(name: str, args):
    """The one number a math function takes (a parameter keeps its expression)."""
    if len(args) != 1:
        raise BuiltinError(f"`{name}` takes one number")
    v = args[0]
    if isinstance(v, Sym):
        raise BuiltinError(f"`{name}` needs a number known at compile time, got the run-time size `{v}`", 0)
    if not is_number(v):
        raise BuiltinError(f"`{name}` expects a number or a tensor, got {describe(v)}", 0)
    return v


def _math(name: str):
    """`sqrt(d_model)`: a number, which keeps the parameter's expression for the generated code."""
    def fn(*args):
        x = _real(name, args)
        try:
            return math_function(name, x)
        except ValueError:
            raise BuiltinError(f"`{name}({plain_float(x):g})` is undefined", 0, code="E0308") from None
        except OverflowError:
            raise BuiltinError(f"`{name}({plain_float(x):g})` is too large for a float", 0, code="E0308") from None
    return fn


def _tensor_only(name: str, number_form: str):
    def fn(*args):
        raise BuiltinError(f"`{name}` converts a tensor (`{name}(x)` is torch's `x.{name}()`); "
                           f"{number_form}", 0 if args else None)
    return fn


def _cast(name: str, fn, dtype: str) -> Builtin:
    """A cast spelled as torch's method (`float(x)` is `x.float()`), and its meaning on numbers."""
    return Builtin(name, fn, tensor_op="cast", tensor_args=(("dtype", dtype),))


def _scan(*args):
    raise BuiltinError("`scan` runs a step block over a tensor's steps: `ys, state = scan(step, x, state, dim=1)`")


BUILTINS: dict[str, Builtin] = {b.name: b for b in (
    Builtin("scan", _scan),   # evaluated by frontend/scan.py
    Builtin("range", _range), Builtin("len", _len), Builtin("min", _min), Builtin("max", _max),
    Builtin("sum", _sum), Builtin("abs", _abs), Builtin("all", _all), Builtin("any", _any),
    _cast("int", _int, "int32"), _cast("float", _float, "float32"),
    _cast("long", _tensor_only("long", "a number is made an int by `int`"), "int64"),
    _cast("double", _tensor_only("double", "a number is made a float by `float`"), "float64"),
    _cast("half", _tensor_only("half", "a number is made a float by `float`"), "float16"),
    _cast("bool", _tensor_only("bool", "compare a number instead (`n != 0`)"), "bool"),
    *(Builtin(n, _math(n)) for n in MATH_FUNCTIONS),
)}

# Names of compile-time numbers (a local name of the spec's may shadow them).
CONSTANTS: dict[str, float] = {"pi": math.pi, "e": math.e, "inf": math.inf}
