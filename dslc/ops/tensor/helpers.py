"""The language's small helpers: positions, reparameterize, detach, zeros, ones, full."""
from __future__ import annotations

import math

from ...ir.dims import Real, Size, Sym, plain
from ...ir.pyliteral import py_float
from ...ir.types import DTYPES, FLOAT_DTYPES, TensorType
from ..ptypes import FLOAT, SHAPE, TENSOR, Optional, Str, is_int
from ..registry import REGISTRY, Example, OpDef, ParamSpec, S, ShapeError, TorchFunction, register
from ..shapes import need_min_rank, same_dim
from .common import ANY_DTYPE


def _positions_onnx(g, n):
    """Range(0, x.shape[1], 1) in int64, the length read off the input by Shape."""
    length = g.op("Squeeze", [g.op("Shape", [n.inputs[0]], start=1, end=2), g.ints([0])])
    return [g.op("Range", [g.const(0, "int64"), length, g.const(1, "int64")])]


register(OpDef(
    name="positions", kind="function", family="tensor",
    doc="The positions 0 .. x.shape[1] - 1 of a [B, T, ...] tensor, as int64 [T].",
    params=(ParamSpec("input", TENSOR),), dtypes=ANY_DTYPE,
    infer=lambda b: (need_min_rank(b.x, 2, "positions"), [TensorType((b.x.shape[1],), "int64")])[1],
    torch=TorchFunction(lambda e: f"torch.arange({e.arg('input')}.shape[1], device={e.arg('input')}.device)"),
    onnx=_positions_onnx,
    examples=(Example({"input": S(2, 7, dtype="int64")}),),
    arbitrary=lambda d: Example({"input": S(2, d.int(1, 9), dtype="int64")}),
))


def _same_shapes(b, what: str):
    a, c = b.inputs
    if a.rank != c.rank or not all(same_dim(p, q, b.where) for p, q in zip(a.shape, c.shape)):
        raise ShapeError(f"`{what}` needs equal shapes, got {a.shape_str()} and {c.shape_str()}", code="E0403",
                         input=1)
    return [a]


register(OpDef(
    name="reparameterize", kind="function", family="tensor", pure=False,
    doc="mu + exp(log_var / 2) * noise while training; mu at inference (the VAE trick).",
    params=(ParamSpec("mu", TENSOR), ParamSpec("log_var", TENSOR)),
    infer=lambda b: _same_shapes(b, "reparameterize"),
    torch=TorchFunction(lambda e: f"{e.arg('mu')} + torch.exp({e.arg('log_var')} / 2) * torch.randn_like({e.arg('mu')}) "
                                  f"if self.training else {e.arg('mu')}"),
    onnx=lambda g, n: [g.op("Identity", [n.tensor("mu")])],  # the exported graph is the model in eval: mu
    examples=(Example({"mu": S(2, 5), "log_var": S(2, 5)}),),
    arbitrary=lambda d: (lambda s: Example({"mu": S(*s), "log_var": S(*s)}))(d.shape(1, 3, 1, 5)),
))


def _sizes_infer(dtype_param: bool):
    def infer(b):
        sizes = b["size"]
        for s in sizes:
            if not isinstance(s, Sym) and plain(s) <= 0:
                raise ShapeError(f"sizes must be positive, got {plain(s)}", code="E0302", arg="size")
        return [TensorType(tuple(sizes), b.args.get("dtype", "float32") if dtype_param else "float32")]
    return infer


def _creation_src(fn: str):
    def src(e):
        extra = ""
        if e.args.get("dtype", "float32") != "float32":
            extra = f", dtype=torch.{e.args['dtype']}"
        device = f", device={e.device}" if e.device else ""
        size = e.dims(e.args["size"]) or "()"  # an empty size is a 0-d tensor: torch.zeros(())
        return f"torch.{fn}({size}{extra}{device})"
    return src


def _filled_onnx(value: float):
    """The emitter of zeros/ones: ConstantOfShape of the size (bfloat16, which it cannot hold, by a Cast)."""
    def emit(g, n):
        import numpy as np
        from onnx import numpy_helper
        dtype = n.outputs[0].dtype
        held = "float32" if dtype == "bfloat16" else dtype
        fill = numpy_helper.from_array(np.full([1], value, dtype=np.dtype(held)))
        y = g.op("ConstantOfShape", [g.shape(n["size"])], value=fill)
        return [g.cast(y, dtype, have=held)]
    return emit


for _name, _doc in (("zeros", "A tensor of zeros. Named without a call as a loss target, it takes the "
                              "prediction's shape: `bce(D(fake), zeros)`."),
                    ("ones", "A tensor of ones. Named without a call as a loss target, it takes the "
                             "prediction's shape: `bce(D(real), ones)`.")):
    _value = 1.0 if _name == "ones" else 0.0
    register(OpDef(
        name=_name, kind="function", family="tensor", category="constant", doc=_doc, fold=lambda c, v=_value: v,
        params=(ParamSpec("size", SHAPE), ParamSpec("dtype", Str(DTYPES), "float32")),
        infer=_sizes_infer(True),
        torch=TorchFunction(_creation_src(_name)),
        onnx=_filled_onnx(_value),
        examples=(Example({"size": [2, 3]}), Example({"size": [4], "dtype": "int64"})),
        arbitrary=lambda d: Example({"size": list(d.shape(1, 3, 1, 5))}),
    ))


def _full_value(e, value, dtype: str) -> str:
    """The fill value as Python source of the dtype's kind (a float literal makes float32, an int int64);
    a value computed from parameters keeps its expression (`math.sqrt(dim)`, `float(dim)`)."""
    if dtype == "bool":
        return "True" if value else "False"
    if isinstance(value, Real) and not value.expr.is_const():
        return e.fmt(value)   # an integer dtype is then given (`_full_src`): torch.full truncates, as int() does
    if isinstance(value, Size):
        return f"float({e.fmt(value)})" if dtype in FLOAT_DTYPES else e.fmt(value)
    return py_float(value) if dtype in FLOAT_DTYPES else str(int(value))


def _full_src(e) -> str:
    dtype = e.outputs[0].dtype
    value = e.args["value"]
    float_of_int = isinstance(value, Real) and not value.expr.is_const() and dtype not in FLOAT_DTYPES
    extra = f", dtype=torch.{dtype}" if dtype not in ("float32", "int64", "bool") or float_of_int else ""
    device = f", device={e.device}" if e.device else ""
    dims = e.dims(e.args["size"])
    size = f"({dims},)" if len(e.args["size"]) == 1 else f"({dims})"
    return f"torch.full({size}, {_full_value(e, e.args['value'], dtype)}{extra}{device})"


def _full_onnx(g, n):
    """ConstantOfShape of the size, filled with the value (bfloat16, which it cannot hold, by a Cast)."""
    import numpy as np
    from onnx import numpy_helper
    dtype = n.outputs[0].dtype
    held = "float32" if dtype == "bfloat16" else dtype
    fill = numpy_helper.from_array(np.full([1], n["value"], dtype=np.dtype(held)))
    y = g.op("ConstantOfShape", [g.shape(n["size"])], value=fill)
    return [g.cast(y, dtype, have=held)]


def _full_infer(b):
    """torch.full's dtype: the given one, else the value's (an int makes int64, a float float32)."""
    [t] = _sizes_infer(False)(b)
    return [t.with_dtype(b["dtype"] or ("int64" if is_int(b["value"]) else "float32"))]


# Written in specs, and made by constant folding (dslc/passes/constants.py): a uniform tensor
# whose value was computed at compile time (`ones([4]) * 3` is `full([4], 3.0)`).
register(OpDef(
    name="full", kind="function", family="tensor", category="constant",
    fold=lambda c: c.args.get("value"),
    doc="A tensor of the given size filled with one value (torch.full): of `dtype`, else int64 for an int value "
        "and float32 for a float.",
    params=(ParamSpec("size", SHAPE), ParamSpec("value", FLOAT), ParamSpec("dtype", Optional(Str(DTYPES)), None)),
    infer=_full_infer,
    torch=TorchFunction(_full_src),
    onnx=_full_onnx,
    examples=(Example({"size": [2, 3], "value": 2.5}), Example({"size": [4], "value": 3.0, "dtype": "int64"}),
              Example({"size": [3], "value": -1.0, "dtype": "float64"}), Example({"size": [2, 2], "value": 7})),
    arbitrary=lambda d: Example({"size": list(d.shape(1, 3, 1, 5)), "value": d.choice([0.5, -2.0, 7.0])}),
))


def uniform(size: tuple, value, dtype: str) -> tuple[OpDef, dict]:
    """The op and arguments of a `size` tensor holding `value` everywhere: zeros, ones (not for -0.0) or full."""
    if value in (0, 1) and not (value == 0 and math.copysign(1.0, float(value)) < 0):
        return REGISTRY["ones" if value == 1 else "zeros"], {"size": size, "dtype": dtype}
    return REGISTRY["full"], {"size": size, "value": float(value), "dtype": dtype}


register(OpDef(
    name="detach", kind="function", family="tensor", category="stop_gradient",
    doc="The same values, cut from the gradient graph.",
    params=(ParamSpec("input", TENSOR),), dtypes=ANY_DTYPE,
    infer=lambda b: [b.x],
    torch=TorchFunction(lambda e: f"{e.arg('input')}.detach()"),
    onnx=lambda g, n: [g.op("Identity", [n.inputs[0]])],
    examples=(Example({"input": S(2, 3)}),),
    arbitrary=lambda d: Example({"input": S(*d.shape(1, 4, 1, 5))}),
))
