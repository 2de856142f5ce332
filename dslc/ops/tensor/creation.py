"""Tensors made from nothing but their arguments: random ones (`rand`, `randn`, `noise`, `randint`,
`rand_like`, `randn_like`; not pure, so the passes leave them alone, and in ONNX RandomUniform /
RandomNormal(Like)), and ranges (`arange`, whose ends may be run-time sizes, and `linspace`)."""
from __future__ import annotations

from ...ir.dims import Size, Sym, plain, require
from ...ir.types import FLOAT_DTYPES, TensorType
from .. import checks
from ..ptypes import FLOAT, INT, SHAPE, TENSOR, ArgTypeError, Optional, PType, Str, is_int
from ..registry import Example, OpDef, ParamSpec, S, ShapeError, TorchFunction, register

INT_DTYPES = ("int64", "int32", "int16", "int8", "uint8")
RANGE_DTYPES = ("float32", "float64", "float16", "int64", "int32")
LINSPACE_DTYPES = ("float32", "float64", "float16")


class _SizeOrInt(PType):
    """An int known at compile time or a run-time size (`T`): an end of `arange`."""
    desc = "an int or a size"

    def convert(self, v):
        if is_int(v) or isinstance(v, Sym):
            return v
        raise ArgTypeError(self.desc)


SIZE_OR_INT = _SizeOrInt()


# ---------------------------------------------------------------- random tensors of a size

def _sized(b, dtype: str):
    sizes = b["size"]
    for s in sizes:
        if not isinstance(s, Sym) and plain(s) <= 0:
            raise ShapeError(f"sizes must be positive, got {plain(s)}", code="E0302", arg="size")
    return [TensorType(tuple(sizes), dtype)]


def _device(e) -> str:
    return f", device={e.device}" if e.device else ""


def _dtype_kw(e, default: str) -> str:
    dtype = e.args.get("dtype", default)
    return f", dtype=torch.{dtype}" if dtype != default else ""


def _random_src(fn: str):
    def src(e):
        size = e.dims(e.args["size"]) or "()"
        return f"torch.{fn}({size}{_dtype_kw(e, 'float32')}{_device(e)})"
    return src


def _generated(dtype: str) -> str:
    """The dtype onnxruntime's RandomUniform/RandomNormal make (float32 or float64): others are cast from it."""
    return "float64" if dtype == "float64" else "float32"


def _random_onnx(op_type: str, **attrs):
    """`op_type` (RandomUniform or RandomNormal) of a static size; its Like form of a ConstantOfShape when the
    size is known at run time; cast to the result's dtype."""
    def emit(g, n):
        dtype = n.outputs[0].dtype
        return [g.cast(_random(g, op_type, n["size"], _generated(dtype), **attrs), dtype, have=_generated(dtype))]
    return emit


def _random(g, op_type: str, size, dtype: str, **attrs) -> str:
    if size and not any(isinstance(s, Sym) for s in size):
        return g.op(op_type, [], shape=[plain(s) for s in size], dtype=g.elem_type(dtype), **attrs)
    return g.op(op_type + "Like", [g.op("ConstantOfShape", [g.shape(size)])], dtype=g.elem_type(dtype), **attrs)


register(OpDef(
    name="noise", kind="function", family="random", pure=False,
    doc="Standard normal noise of the given shape (`noise([B, 100])`): `randn` by another name.",
    params=(ParamSpec("size", SHAPE),),
    infer=lambda b: _sized(b, "float32"),
    torch=TorchFunction(_random_src("randn")),
    onnx=_random_onnx("RandomNormal"),
    examples=(Example({"size": [2, 5]}),),
    arbitrary=lambda d: Example({"size": list(d.shape(1, 3, 1, 5))}),
))


for _name, _op_type, _doc in (("rand", "RandomUniform", "Uniform random numbers in [0, 1) of the given shape "
                                                        "(torch.rand)."),
                              ("randn", "RandomNormal", "Standard normal random numbers of the given shape "
                                                        "(torch.randn).")):
    register(OpDef(
        name=_name, kind="function", family="random", pure=False, doc=_doc,
        params=(ParamSpec("size", SHAPE), ParamSpec("dtype", Str(FLOAT_DTYPES), "float32")),
        infer=lambda b: _sized(b, b["dtype"]),
        torch=TorchFunction(_random_src(_name)),
        onnx=_random_onnx(_op_type),
        examples=(Example({"size": [2, 5]}), Example({"size": [3], "dtype": "float64"}),
                  Example({"size": [2, 2], "dtype": "float16"})),
        arbitrary=lambda d: Example({"size": list(d.shape(1, 3, 1, 5)),
                                     "dtype": d.choice(["float32", "float64", "float16"])}),
    ))


def _randint_infer(b):
    low, high = b["low"], b["high"]
    if plain(high) <= plain(low):
        raise ShapeError(f"`randint` needs low < high, got [{plain(low)}, {plain(high)})", code="E0302", arg="high",
                         label="an empty range")
    return _sized(b, b["dtype"])


def _randint_src(e) -> str:
    size = e.dims(e.args["size"])
    size = f"({size},)" if len(e.args["size"]) == 1 else f"({size})"
    return f"torch.randint({e.fmt(e['low'])}, {e.fmt(e['high'])}, {size}{_dtype_kw(e, 'int64')}{_device(e)})"


def _randint_onnx(g, n):
    """⌊u⌋ of u uniform in [low, high) in float64 (at most high − 1), cast to the integer dtype."""
    low, high = float(plain(n["low"])), float(plain(n["high"]))
    u = _random(g, "RandomUniform", n["size"], "float64", low=low, high=high)
    y = g.op("Min", [g.op("Floor", [u]), g.const(high - 1, "float64")])
    return [g.cast(y, n.outputs[0].dtype, have="float64")]


register(OpDef(
    name="randint", kind="function", family="random", pure=False,
    doc="Random integers uniform in [low, high) of the given shape (torch.randint; int64 unless `dtype` says).",
    params=(ParamSpec("low", INT), ParamSpec("high", INT), ParamSpec("size", SHAPE),
            ParamSpec("dtype", Str(INT_DTYPES), "int64")),
    infer=_randint_infer, torch=TorchFunction(_randint_src), onnx=_randint_onnx,
    examples=(Example({"low": 0, "high": 10, "size": [2, 5]}), Example({"low": -3, "high": 4, "size": [6],
                                                                         "dtype": "int32"})),
    arbitrary=lambda d: (lambda lo: Example({"low": lo, "high": lo + d.int(1, 9), "size": list(d.shape(1, 3, 1, 5)),
                                             "dtype": d.choice(["int64", "int32", "uint8"]) if lo >= 0 else "int64"}))(
        d.int(-5, 5)),
))


def _like_onnx(op_type: str):
    """RandomUniformLike / RandomNormalLike of the input itself (its shape), cast to its dtype."""
    def emit(g, n):
        dtype = n.x.dtype
        y = g.op(op_type, [n.inputs[0]], dtype=g.elem_type(_generated(dtype)))
        return [g.cast(y, dtype, have=_generated(dtype))]
    return emit


for _name, _op_type, _what in (("rand_like", "RandomUniformLike", "uniform in [0, 1)"),
                               ("randn_like", "RandomNormalLike", "standard normal")):
    register(OpDef(
        name=_name, kind="function", family="random", pure=False,
        doc=f"Random numbers {_what} of the input's shape and dtype (torch.{_name}; floating-point input).",
        params=(ParamSpec("input", TENSOR),), infer=lambda b: [b.x],
        torch=TorchFunction(lambda e, f=_name: f"torch.{f}({e.arg('input')})"),
        onnx=_like_onnx(_op_type),
        examples=(Example({"input": S(2, 3)}), Example({"input": S(4, dtype="float64")})),
        arbitrary=lambda d: Example({"input": S(*d.shape(0, 3, 1, 4), dtype=d.choice(["float32", "float16"]))}),
    ))


# ---------------------------------------------------------------- ranges

def _arange_ends(b) -> tuple:
    """(start, end) of `arange(end)`, `arange(start, end)`: Python's range convention."""
    return (0, b["start"]) if b["end"] is None else (b["start"], b["end"])


def _arange_infer(b):
    start, end = _arange_ends(b)
    step = plain(b["step"])
    span = end - start if step > 0 else start - end
    if not isinstance(span, Sym) and plain(span) < 0:
        raise ShapeError(f"`arange` from {plain(start)} to {plain(end)} by {step} goes the wrong way",
                         code="E0302", arg="end" if b["end"] is not None else "start",
                         help="torch refuses an end on the wrong side of the start")
    require(span, ">=", 0, b.where)   # torch refuses a run-time end on the wrong side of the start
    n = span if abs(step) == 1 else (span + abs(step) - 1) // abs(step)
    return [TensorType((n,), b["dtype"])]


def _arange_src(e) -> str:
    start, end = _arange_ends(e)
    step = e["step"]
    unit_step = _number_is(step, 1)   # a parameter that is 1 here is still written: it may be 2 elsewhere
    from_zero = _number_is(start, 0) and unit_step
    ends = ([] if from_zero else [e.fmt(start)]) + [e.fmt(end)] + ([] if unit_step else [e.fmt(step)])
    return f"torch.arange({', '.join(ends)}, dtype=torch.{e['dtype']}{_device(e)})"


def _number_is(v, n: int) -> bool:
    """`v` is the plain number `n`, not a size that happens to equal it (one with an expression)."""
    return not isinstance(v, (Sym, Size)) and plain(v) == n


def _arange_onnx(g, n):
    """A constant of a static range; Range over int64 scalars read off the inputs' shapes when an end is a
    run-time size, cast to the dtype (exact: the values are integers)."""
    import numpy as np
    start, end = _arange_ends(n)
    step, dtype = plain(n["step"]), n.outputs[0].dtype
    if not isinstance(start, Sym) and not isinstance(end, Sym):
        return [g.const(np.arange(plain(start), plain(end), step).astype(dtype), dtype, hint="arange")]
    ends = [g.op("Squeeze", [g.dim(v), g.ints([0])]) for v in (start, end)]
    y = g.op("Range", ends + [g.const(step, "int64")])
    return [g.cast(y, dtype, have="int64")]


register(OpDef(
    name="arange", kind="function", family="tensor",
    doc="start, start + step, ... up to, not including, end (torch.arange); `arange(n)` counts 0 .. n − 1. An end "
        "may be a run-time size (`arange(T)`, `arange(1, T)`). float32 unless `dtype` says (torch's is int64): "
        "frequencies of sinusoidal embeddings, say.",
    params=(ParamSpec("start", SIZE_OR_INT, 0), ParamSpec("end", Optional(SIZE_OR_INT), None),
            ParamSpec("step", INT, 1, check=lambda v: "must not be zero" if plain(v) == 0 else None),
            ParamSpec("dtype", Str(RANGE_DTYPES), "float32")),
    infer=_arange_infer, macs=lambda b, out: 0, torch=TorchFunction(_arange_src), onnx=_arange_onnx,
    examples=(Example({"start": 5}), Example({"start": 2, "end": 9, "step": 3, "dtype": "int64"}),
              Example({"start": 4, "end": -3, "step": -2}), Example({"start": 3, "step": 2})),
    arbitrary=lambda d: Example({"start": d.int(-4, 4), "end": d.int(-4, 9), "step": d.choice([1, 2, -1, 3]),
                                 "dtype": d.choice(["float32", "int64"])}),
))


def _linspace_infer(b):
    return [TensorType((b["steps"],), b["dtype"])]


def _linspace_values(start: float, end: float, steps: int, dtype: str):
    """torch's CPU linspace in the result's dtype: start + i·step for the first half, end − (steps − 1 − i)·step
    for the rest, step = (end − start) / (steps − 1)."""
    import numpy as np
    t = np.dtype(dtype)
    a, z = t.type(start), t.type(end)
    if steps == 1:
        return np.array([a], dtype=t)
    step = (z - a) / t.type(steps - 1)
    i = np.arange(steps)
    return np.where(i < steps // 2, a + step * i.astype(t), z - step * (steps - 1 - i).astype(t)).astype(t)


def _linspace_onnx(g, n):
    dtype = n.outputs[0].dtype
    values = _linspace_values(float(n["start"]), float(n["end"]), plain(n["steps"]), dtype)
    return [g.const(values, dtype, hint="linspace")]


register(OpDef(
    name="linspace", kind="function", family="tensor",
    doc="`steps` numbers from start to end, evenly spaced (torch.linspace), float32 unless `dtype` says.",
    params=(ParamSpec("start", FLOAT), ParamSpec("end", FLOAT), ParamSpec("steps", INT, check=checks.non_negative),
            ParamSpec("dtype", Str(LINSPACE_DTYPES), "float32")),
    infer=_linspace_infer, macs=lambda b, out: 0, onnx=_linspace_onnx,
    torch=TorchFunction(lambda e: f"torch.linspace({e.fmt(e['start'])}, {e.fmt(e['end'])}, {e.fmt(e['steps'])}"
                                  f"{_dtype_kw(e, 'float32')}{_device(e)})"),
    examples=(Example({"start": 0.0, "end": 1.0, "steps": 5}), Example({"start": -2.5, "end": 7.0, "steps": 11}),
              Example({"start": 3.0, "end": 3.0, "steps": 1, "dtype": "float64"})),
    arbitrary=lambda d: Example({"start": d.choice([0.0, -1.5, 2.0]), "end": d.choice([1.0, 10.0, -3.0]),
                                 "steps": d.int(1, 20)}),
))

