"""Shared by the tensor ops: dtype promotion as torch does it, and the ONNX helpers (opset 18)."""
from __future__ import annotations

from ...ir.dims import plain
from ...ir.types import DTYPES, FLOAT_DTYPES, TensorType
from ...ir.values import TensorValue

ANY_DTYPE = DTYPES


def _t(v) -> TensorType | None:
    return v.type if isinstance(v, TensorValue) else None


_INT64_MAX = 2 ** 63 - 1


_FLOAT_BITS = {"float16": 16, "bfloat16": 16, "float32": 32, "float64": 64}


_INT_BITS = {"uint8": 8, "int8": 8, "int16": 16, "int32": 32, "int64": 64}


# dtypes onnxruntime's CPU kernels lack, per ONNX op: those compute in a wider dtype and are cast back,
# which is exact (integer results wrap modulo 2^bits as torch's do; bf16 -> f32 -> bf16 round-trips).
_ORT_MISSING = {"Neg": {"bfloat16", "uint8"}, "Pow": {"bfloat16", "int16", "int8", "uint8"},
                "MatMul": {"bfloat16", "int16", "int8", "uint8"}, "Expand": {"bfloat16"},
                "ReduceMax": {"bfloat16", "int16", "bool"}, "ReduceMin": {"bfloat16", "int16", "bool"}}


_WIDER = {"bfloat16": "float32", "int16": "int32", "int8": "int32", "uint8": "int32", "bool": "uint8"}


def _kind(dtype: str) -> int:
    """torch's dtype categories: 0 bool, 1 integer, 2 floating point."""
    return 0 if dtype == "bool" else 2 if dtype in FLOAT_DTYPES else 1


def _promote(a: str, b: str) -> str:
    """torch.promote_types for two tensors' dtypes."""
    if a == b or _kind(a) != _kind(b):
        return a if _kind(a) >= _kind(b) else b
    if _kind(a) == 2:
        return "float32" if {a, b} == {"float16", "bfloat16"} else max(a, b, key=_FLOAT_BITS.get)
    if "uint8" in (a, b):
        other = b if a == "uint8" else a
        return "int16" if other == "int8" else other
    return max(a, b, key=_INT_BITS.get)


def _widened(g, op_type: str, xs: list, dtype: str, extra: tuple = (), **attrs) -> str:
    """`op_type(*xs, *extra)` on `dtype` tensors, through a wider dtype where onnxruntime lacks a kernel (exact)."""
    wide = _WIDER[dtype] if dtype in _ORT_MISSING.get(op_type, ()) else dtype
    y = g.op(op_type, [g.cast(x, wide, have=dtype) for x in xs] + list(extra), **attrs)
    return g.cast(y, dtype, have=wide)


def _axis(d, rank: int) -> int:
    """A dim index in [0, rank) (torch's negative dims counted from the end)."""
    d = plain(d)
    return d + rank if d < 0 else d


