"""Casts: `cast(x, dtype)`, which a spec also spells as torch's methods do: `float(x)` is
`x.float()`, `long(x)` is `x.long()`, `int(x)` is `x.int()` (int32, as in torch), `bool(x)`,
`double(x)` and `half(x)` (the spellings are the front end's, dslc/frontend/builtins.py)."""
from __future__ import annotations

from ...ir.types import DTYPES
from ..ptypes import TENSOR, Str
from ..registry import Example, OpDef, ParamSpec, S, TorchFunction, register
from .common import ANY_DTYPE

# torch's Tensor method for each dtype (`x.long()`): every one of ours has one
METHOD = {"float32": "float", "float64": "double", "float16": "half", "bfloat16": "bfloat16", "int64": "long",
          "int32": "int", "int16": "short", "int8": "char", "uint8": "byte", "bool": "bool"}


def _cast_onnx(g, n):
    """Cast: floats to integers toward zero, anything to bool as `!= 0`, as torch converts (a float out of
    the integer dtype's range is undefined in both)."""
    have, want = n.x.dtype, n.outputs[0].dtype
    return [g.op("Identity", [n.inputs[0]]) if have == want else g.cast(n.inputs[0], want, have=have)]


register(OpDef(
    name="cast", kind="function", family="tensor",
    doc="The tensor's values as `dtype` (`x.to(dtype)`; floats to integers toward zero, anything to bool as "
        "`!= 0`). Also spelled as torch's methods: `float(x)`, `double(x)`, `half(x)`, `long(x)`, `int(x)` "
        "(int32, as `x.int()`) and `bool(x)`.",
    params=(ParamSpec("input", TENSOR), ParamSpec("dtype", Str(DTYPES))),
    dtypes=ANY_DTYPE, infer=lambda b: [b.x.with_dtype(b["dtype"])], macs=lambda b, out: 0,
    fold=lambda c: c.x,   # constant folding rounds it to the result's dtype: toward zero for integers, as torch
    torch=TorchFunction(lambda e: f"{e.arg('input')}.{METHOD[e['dtype']]}()"),
    label=lambda a: a["dtype"],
    onnx=_cast_onnx,
    examples=(Example({"input": S(2, 3), "dtype": "int64"}), Example({"input": S(2, 3), "dtype": "bool"}),
              Example({"input": S(4, dtype="bool"), "dtype": "float32"}),
              Example({"input": S(3, dtype="int64", values=(-9, 9)), "dtype": "float16"}),
              Example({"input": S(2, 5, dtype="float64", values=(-5, 5)), "dtype": "int8"}),
              Example({"input": S(3, 2, dtype="int32", values=(0, 200)), "dtype": "uint8"})),
    arbitrary=lambda d: Example({"input": S(*d.shape(1, 3, 1, 4),
                                            dtype=d.choice(["float32", "float64", "float16", "int64", "int32", "bool"]),
                                            values=(0, 100)),
                                 "dtype": d.choice(["float32", "float64", "float16", "int64", "int32", "int16",
                                                    "int8", "uint8", "bool"])}),
))
