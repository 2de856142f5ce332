"""NaN in ONNX as torch has it: torch's max-like reductions and max pools give NaN where what they
reduce holds one, onnxruntime's skip NaNs."""
from __future__ import annotations

_NAN_DTYPES = ("float16", "float32", "float64")


def nan_mask(g, x: str, dtype: str) -> str | None:
    """x's NaNs as a float32 0/1 tensor, or None when x's dtype holds no NaN (or has no IsNaN kernel)."""
    return g.cast(g.op("IsNaN", [x]), "float32", have="bool") if dtype in _NAN_DTYPES else None


def with_nans(g, y: str, reduced_mask: str | None, dtype: str) -> str:
    """torch's max-like reductions and max pools give NaN where what they reduce holds one;
    onnxruntime's skip NaNs. `reduced_mask` is the same reduction of the input's `nan_mask`."""
    if reduced_mask is None:
        return y
    found = g.op("Greater", [reduced_mask, g.const(0.0, dtype="float32")])
    return g.op("Where", [found, g.const(float("nan"), dtype=dtype), y])
