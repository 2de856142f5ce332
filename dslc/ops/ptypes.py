"""Parameter types of registry entries: conversion and checking of argument values.

`convert` returns the value to store (often the value itself) or raises
`ArgTypeError` naming what was expected. Range checks live in `checks.py`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..ir.dims import Real, Size, Sym
from ..ir.values import Fill, TensorValue


class ArgTypeError(Exception):
    """The argument's type does not fit; `expected` reads like `an int`."""

    def __init__(self, expected: str):
        super().__init__(expected)
        self.expected = expected


class ArgRangeError(Exception):
    """The argument's type fits but no value of it can work; `problem` reads like `must be ...`."""

    def __init__(self, problem: str):
        super().__init__(problem)
        self.problem = problem


FLOAT32_MAX = 3.4028234663852886e38


def describe(v) -> str:
    """How a value is spoken of in messages."""
    if isinstance(v, bool):
        return f"the bool `{str(v).lower()}`"
    if isinstance(v, (int, Size)):
        return f"the int `{int.__int__(v)}`"
    if isinstance(v, (float, Real)):
        return f"the float `{float.__float__(v)!r}`"
    if isinstance(v, str):
        return f"the string {v!r}"
    if v is None:
        return "`none`"
    if isinstance(v, TensorValue):
        return f"a tensor {v.type}"
    if isinstance(v, Sym):
        return f"the run-time size `{v}`"
    if isinstance(v, tuple):
        tensors = all(isinstance(x, TensorValue) for x in v)
        return f"a tuple of {len(v)} tensors" if tensors and v else "a tuple"
    if isinstance(v, list):
        return "a list"
    if isinstance(v, dict):
        return "a dict"
    return getattr(v, "describe", lambda: type(v).__name__)()


def is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


class PType:
    desc = "a value"

    def convert(self, v):
        raise NotImplementedError

    def __str__(self) -> str:
        return self.desc


class _Int(PType):
    desc = "an int"

    def convert(self, v):
        if is_int(v):
            return v
        raise ArgTypeError(self.desc)


def _fits_float32(x: float) -> bool:
    return math.isinf(x) or -FLOAT32_MAX <= x <= FLOAT32_MAX


class _Float(PType):
    desc = "a number"

    def convert(self, v):
        if not is_number(v):
            raise ArgTypeError(self.desc)
        # Layers keep their float settings as float32 scalars (torch converts them when the layer
        # runs: `LeakyReLU(1e308)` checked, then failed in forward).
        # ±inf is a legal setting (a p-norm's `p`, Softplus's `threshold`); NaN never is.
        if isinstance(v, float) and not _fits_float32(float.__float__(v)):  # no guard on a Real
            raise ArgRangeError("must be ±inf or a number within float32's range (about ±3.4e38)")
        return v


class _Bool(PType):
    desc = "a bool (`true` or `false`)"

    def convert(self, v):
        if isinstance(v, bool):
            return v
        raise ArgTypeError(self.desc)


@dataclass(frozen=True)
class Str(PType):
    choices: tuple[str, ...] = ()

    @property
    def desc(self) -> str:
        if self.choices:
            return "one of " + ", ".join(f'"{c}"' for c in self.choices)
        return "a string"

    def convert(self, v):
        if not isinstance(v, str):
            raise ArgTypeError(self.desc)
        return v


@dataclass(frozen=True)
class Ints(PType):
    """An int, or a list of `n` ints (kernel sizes, strides, paddings)."""
    n: int

    @property
    def desc(self) -> str:
        return f"an int or a list of {self.n} ints"

    def convert(self, v):
        if is_int(v):
            return v
        if isinstance(v, (list, tuple)) and len(v) == self.n and all(is_int(x) for x in v):
            return tuple(v)
        raise ArgTypeError(self.desc)


@dataclass(frozen=True)
class Optional(PType):
    inner: PType

    @property
    def desc(self) -> str:
        return f"{self.inner.desc} or `none`"

    def convert(self, v):
        return None if v is None else self.inner.convert(v)


@dataclass(frozen=True)
class ListOf(PType):
    inner: PType

    @property
    def desc(self) -> str:
        return f"a list of {_plural(self.inner.desc)}"

    def convert(self, v):
        if not isinstance(v, (list, tuple)):
            raise ArgTypeError(self.desc)
        try:
            return tuple(self.inner.convert(x) for x in v)
        except ArgTypeError:
            raise ArgTypeError(self.desc) from None


@dataclass(frozen=True)
class DictOf(PType):
    """A dict literal with name or string keys: `{"backbone": 0.1, head: 10.0}`."""
    inner: PType

    @property
    def desc(self) -> str:
        return f"a dict of {_plural(self.inner.desc)}"

    def convert(self, v):
        if not isinstance(v, dict) or not all(isinstance(k, str) for k in v):
            raise ArgTypeError(self.desc)
        try:
            return {str(k): self.inner.convert(x) for k, x in v.items()}
        except ArgTypeError:
            raise ArgTypeError(self.desc) from None


@dataclass(frozen=True)
class OneOf(PType):
    options: tuple[PType, ...]

    @property
    def desc(self) -> str:
        return " or ".join(o.desc for o in self.options)

    def convert(self, v):
        for o in self.options:
            try:
                return o.convert(v)
            except ArgTypeError:
                pass
        raise ArgTypeError(self.desc)


class _Shape(PType):
    """A list of sizes; run-time sizes (`B`) and -1 allowed."""
    desc = "a list of sizes"

    def convert(self, v):
        if isinstance(v, (list, tuple)) and all(is_int(x) or isinstance(x, Sym) for x in v):
            return tuple(v)
        if is_int(v) or isinstance(v, Sym):
            return (v,)
        raise ArgTypeError(self.desc)


class _Tensor(PType):
    desc = "a tensor"

    def convert(self, v):
        if isinstance(v, TensorValue):
            return v
        raise ArgTypeError(self.desc)


class _Tensors(PType):
    desc = "a list of tensors"

    def convert(self, v):
        if isinstance(v, (list, tuple)) and v and all(isinstance(x, TensorValue) for x in v):
            return tuple(v)
        raise ArgTypeError(self.desc)


class _TensorOrScalar(PType):
    desc = "a tensor or a number"

    def convert(self, v):
        if isinstance(v, TensorValue) or is_number(v) or isinstance(v, Fill):
            return v
        raise ArgTypeError(self.desc)


class _TensorOrSize(_TensorOrScalar):
    """An arithmetic operand: also a run-time size (`x / T`), read off an input's shape when the model runs."""
    desc = "a tensor, a number or a size"

    def convert(self, v):
        return v if isinstance(v, Sym) else super().convert(v)


class _OptionalTensor(PType):
    """A tensor argument that may be left out (`attention`'s `mask`)."""
    desc = "a tensor or none"

    def convert(self, v):
        if v is None or isinstance(v, TensorValue):
            return v
        raise ArgTypeError(self.desc)


class _Weights(_OptionalTensor):
    """A loss's `weight=`, as torch's: a tensor, or numbers written in the spec (a constant tensor)."""
    desc = "a list of numbers, a tensor or none"

    def convert(self, v):
        if isinstance(v, (list, tuple)) and v and all(is_number(x) for x in v):
            return tuple(FLOAT.convert(x) for x in v)
        return super().convert(v)


@dataclass(frozen=True)
class Layer(PType):
    """A layer made but not applied, given as an argument (torch's `TransformerEncoder(encoder_layer, ...)`):
    one of the registry layers `names`. The value is the front end's layer spec (its `op` and `args`)."""
    names: tuple[str, ...]

    @property
    def desc(self) -> str:
        return " or ".join(f"a `{n}(...)` layer" for n in self.names)

    def convert(self, v):
        op = getattr(v, "op", None)
        if getattr(op, "kind", None) == "layer" and op.name in self.names and isinstance(getattr(v, "args", None), dict):
            return v
        raise ArgTypeError(self.desc)


class _Any(PType):
    desc = "a value"

    def convert(self, v):
        return v


def _plural(desc: str) -> str:
    for art in ("an ", "a "):
        if desc.startswith(art):
            return desc[len(art):] + "s"
    return desc


INT = _Int()
FLOAT = _Float()
BOOL = _Bool()
STR = Str()
SHAPE = _Shape()
TENSOR = _Tensor()
TENSORS = _Tensors()
TENSOR_OR_SCALAR = _TensorOrScalar()
TENSOR_OR_SIZE = _TensorOrSize()
OPTIONAL_TENSOR = _OptionalTensor()
WEIGHTS = _Weights()
ANY = _Any()
INTS = ListOf(INT)
TENSOR_TYPES = (_Tensor, _Tensors, _TensorOrScalar, _OptionalTensor)  # _TensorOrSize is one too


def is_tensor_type(t: PType) -> bool:
    return isinstance(t, TENSOR_TYPES)
