"""Static tensor types: a dtype and a shape whose dims may be symbolic."""
from __future__ import annotations

import struct
from dataclasses import dataclass

from .dims import Sym, dim_key, plain

DTYPES = ("float32", "float64", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8", "bool")
FLOAT_DTYPES = ("float32", "float64", "float16", "bfloat16")
_PACK = {"float32": "f", "float16": "e"}
_INT_BITS = {"int64": 64, "int32": 32, "int16": 16, "int8": 8, "uint8": 8}


@dataclass(frozen=True, eq=False)
class TensorType:
    shape: tuple
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"unknown dtype {self.dtype}")
        object.__setattr__(self, "shape", tuple(self.shape))

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def is_float(self) -> bool:
        return self.dtype in FLOAT_DTYPES

    def with_shape(self, shape) -> "TensorType":
        return TensorType(tuple(shape), self.dtype)

    def with_dtype(self, dtype: str) -> "TensorType":
        return TensorType(self.shape, dtype)

    def key(self) -> tuple:
        k = self.__dict__.get("_key")
        if k is None:  # cached: caches and equality ask for it often
            k = (self.dtype, tuple(dim_key(d) for d in self.shape))
            object.__setattr__(self, "_key", k)
        return k

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TensorType) and self.key() == other.key()

    def __hash__(self) -> int:
        return hash(self.key())

    def shape_str(self) -> str:
        return format_shape(self.shape)

    def __str__(self) -> str:
        s = self.shape_str()
        return s if self.dtype == "float32" else f"{s} of {self.dtype}"

    def concrete(self, **symbols: int) -> tuple[int, ...]:
        """The shape with symbolic dims given values (for tests and examples)."""
        out = []
        for d in self.shape:
            if isinstance(d, Sym):
                v = d.poly.evaluate(lambda a: symbols.get(getattr(a, "name", None)))
                if v is None:
                    raise KeyError(f"no value for {d}")
                out.append(v)
            else:
                out.append(plain(d))
        return tuple(out)


def format_shape(shape) -> str:
    return "[" + ", ".join(str(plain(d)) if not isinstance(d, Sym) else str(d) for d in shape) + "]"


def rounded(v, dtype: str):
    """A number as one element of a `dtype` tensor holds it: float32 and float16 through IEEE single
    and half precision, other floats as Python floats, integers as ints (OverflowError out of range)."""
    if dtype in _PACK:
        return struct.unpack(_PACK[dtype], struct.pack(_PACK[dtype], float(v)))[0]
    if dtype in FLOAT_DTYPES:
        return float(v)
    v = int(v)
    bits = _INT_BITS[dtype]
    lo, hi = (0, 2 ** bits) if dtype == "uint8" else (-2 ** (bits - 1), 2 ** (bits - 1))
    if not lo <= v < hi:
        raise OverflowError
    return v
