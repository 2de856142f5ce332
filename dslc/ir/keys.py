"""Keys of argument values that are equal exactly when the values and the parameter expressions
they carry are (`hidden` is not `128`, even when hidden is 128 now): common subexpressions
(passes/cse.py) and alike module-list elements (frontend/containers.py) compare by them, never
with `==`, which on a size records a guard."""
from __future__ import annotations

from .dims import Real, Size, Sym, plain, plain_float
from .graph import Graph
from .values import TensorValue


def value_key(v):
    """A hashable key of an argument: equal exactly when the values and their expressions are."""
    if isinstance(v, TensorValue):
        return ("t", v.ref)
    if isinstance(v, bool):
        return ("b", v)
    if isinstance(v, Size):
        return ("size", plain(v), v.expr)
    if isinstance(v, Real):
        return ("real", repr(plain_float(v)), v.expr)
    if isinstance(v, Sym):
        return ("sym", v.poly)
    if isinstance(v, float):
        return ("f", repr(v))
    if isinstance(v, int):
        return ("i", v)
    if isinstance(v, str):
        return ("s", v)
    if v is None:
        return ("none",)
    if isinstance(v, (list, tuple)):
        return (type(v).__name__, tuple(value_key(x) for x in v))
    if isinstance(v, dict):
        return ("dict", tuple((k, value_key(x)) for k, x in v.items()))
    if isinstance(v, Graph):
        return ("graph", id(v))
    return ("o", type(v).__name__, repr(v))


def args_key(args: dict):
    return tuple((k, value_key(v)) for k, v in args.items())
