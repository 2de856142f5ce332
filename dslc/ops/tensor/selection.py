"""Selecting and ordering values: `where`, `masked_fill`, `clamp`, `tril`/`triu`, `cumsum`,
`one_hot`, `topk` and `sort`, as torch defines them (dtypes included)."""
from __future__ import annotations

from ...ir.dims import Sym, plain, require
from ...ir.types import FLOAT_DTYPES, TensorType
from .. import checks
from ..ptypes import BOOL, FLOAT, INT, TENSOR, TENSOR_OR_SCALAR, Optional
from ..registry import Example, OpDef, ParamSpec, S, ShapeError, TorchFunction, register
from ..shapes import broadcast, need_min_rank, norm_dim
from .arith import _result_dtype, _scalar
from .common import _WIDER, ANY_DTYPE, _t

NUMERIC = tuple(d for d in ANY_DTYPE if d != "bool")
# onnxruntime's CPU kernels, per ONNX op: other dtypes are computed in a wider one, exactly
_ORT = {"Where": {"float32", "float64", "float16", "int32", "int64", "uint8", "bool"},
        "Max": {"float32", "float64", "float16", "int32", "int64"},
        "Trilu": {"float32", "float64", "int64", "bool"},
        "TopK": {"float32", "float64", "int32", "int64"}}


def _work(op_type: str, dtype: str) -> str:
    """The dtype `op_type` runs in on onnxruntime for a `dtype` tensor (a wider one where it has no kernel)."""
    if dtype in _ORT[op_type]:
        return dtype
    wide = "float32" if dtype in FLOAT_DTYPES else _WIDER.get(dtype, "int64")
    return wide if wide in _ORT[op_type] else "int64" if wide not in FLOAT_DTYPES else "float32"


def _need_bool(t: TensorType, what: str, arg: str) -> None:
    if t.dtype != "bool":
        raise ShapeError(f"`{what}` takes a bool mask, got {t.dtype}", code="E0310", arg=arg,
                         help="compare to make one (`tokens == 0`)")


# ---------------------------------------------------------------- where, masked_fill

def _where_infer(b):
    cond = b["condition"].type
    _need_bool(cond, "where", "condition")
    a, c = _t(b["input"]), _t(b["other"])
    if a is None and c is None:
        raise ShapeError("`where` needs a tensor as `input` or `other` (both are numbers)", code="E0302", arg="input")
    shape = cond.shape
    for t in (a, c):
        if t is not None:
            shape = broadcast(TensorType(shape), t, where=b.where)
    return [TensorType(shape, _result_dtype(b["input"], b["other"], "add"))]


def _where_onnx(g, n):
    dt = n.outputs[0].dtype
    work = _work("Where", dt)
    xs = [g.cast(n.tensor(k), work, have=n.type_of(k).dtype) if n.type_of(k) else _scalar(g, n[k], work)
          for k in ("input", "other")]
    return [g.cast(g.op("Where", [n.tensor("condition")] + xs), dt, have=work)]


register(OpDef(
    name="where", kind="function", family="tensor",
    doc="`input` where `condition` is true, else `other` (torch.where), broadcast together; either may be a number.",
    params=(ParamSpec("condition", TENSOR), ParamSpec("input", TENSOR_OR_SCALAR), ParamSpec("other", TENSOR_OR_SCALAR)),
    dtypes=ANY_DTYPE, infer=_where_infer, macs=lambda b, out: 0,
    torch=TorchFunction(lambda e: f"torch.where({e.arg('condition')}, {e.arg('input')}, {e.arg('other')})"),
    onnx=_where_onnx,
    examples=(Example({"condition": S(2, 3, dtype="bool"), "input": S(2, 3), "other": S(3)}),
              Example({"condition": S(4, 1, dtype="bool"), "input": S(4, 5), "other": 0.0}),
              Example({"condition": S(3, dtype="bool"), "input": S(3, dtype="int64", values=(0, 9)), "other": -1}),
              Example({"condition": S(2, 3, dtype="bool"), "input": 1.5, "other": S(2, 3, dtype="float64")})),
    arbitrary=lambda d: Example({"condition": S(*d.shape(1, 3, 1, 4), dtype="bool"),
                                 "input": S(*d.shape(1, 3, 1, 4), dtype=d.choice(["float32", "int64"]), values=(0, 5)),
                                 "other": d.choice([0.0, -1, S(1, dtype="float32")])}),
))


def _masked_fill_infer(b):
    t, mask = b.x, b["mask"].type
    _need_bool(mask, "masked_fill", "mask")
    if broadcast(t, mask, where=b.where) != t.shape:
        raise ShapeError(f"`masked_fill`'s mask {mask.shape_str()} must broadcast to the input's shape "
                         f"{t.shape_str()}", code="E0401", arg="mask")
    return [t]


def _masked_fill_onnx(g, n):
    dt = n.x.dtype
    work = _work("Where", dt)
    value = g.cast(_scalar(g, n["value"], dt), work, have=dt)   # the value in the input's dtype, as torch casts it
    y = g.op("Where", [n.tensor("mask"), value, g.cast(n.inputs[0], work, have=dt)])
    return [g.cast(y, dt, have=work)]


register(OpDef(
    name="masked_fill", kind="function", family="tensor",
    doc="`input` with `value` where `mask` (bool, broadcast to the input) is true: attention masks "
        "(`masked_fill(scores, ~causal, -1e9)`).",
    params=(ParamSpec("input", TENSOR), ParamSpec("mask", TENSOR), ParamSpec("value", FLOAT)),
    dtypes=ANY_DTYPE, infer=_masked_fill_infer, macs=lambda b, out: 0,
    torch=TorchFunction(lambda e: f"{e.arg('input')}.masked_fill({e.arg('mask')}, {e.fmt(e.args['value'])})"),
    onnx=_masked_fill_onnx,
    examples=(Example({"input": S(2, 4, 4), "mask": S(4, 4, dtype="bool"), "value": float("-inf")}),
              Example({"input": S(2, 3), "mask": S(2, 3, dtype="bool"), "value": 0.5}),
              Example({"input": S(2, 3, dtype="int64", values=(0, 9)), "mask": S(1, 3, dtype="bool"), "value": -2.0})),
    arbitrary=lambda d: Example({"input": S(3, 4), "mask": S(*d.choice([(3, 4), (4,), (3, 1)]), dtype="bool"),
                                 "value": d.choice([0.0, -1e9, 2.5])}),
))


# ---------------------------------------------------------------- clamp

def _clamp_infer(b):
    lo, hi = b["min"], b["max"]
    if lo is None and hi is None:
        raise ShapeError("`clamp` needs `min` or `max` (or both)", code="E0302", arg="min")
    return [b.x.with_dtype(_clamped_dtype(b.x.dtype, (lo, hi)))]


def _clamped_dtype(dtype: str, bounds) -> str:
    """torch's result type: a float bound lifts an integer tensor to float32."""
    lifts = any(isinstance(v, float) for v in bounds) and dtype not in FLOAT_DTYPES
    return "float32" if lifts else dtype


def _clamp_src(e) -> str:
    parts = [f"{k}={e.fmt(e.args[k])}" for k in ("min", "max") if e.args[k] is not None]
    return f"{e.arg('input')}.clamp({', '.join(parts)})"


def _clamp_onnx(g, n):
    """Max with `min`, then Min with `max` (torch: all `max` where min > max), in the result's dtype."""
    dt = n.outputs[0].dtype
    work = _work("Max", dt)
    y = g.cast(n.inputs[0], work, have=n.x.dtype)
    if n["min"] is not None:
        y = g.op("Max", [y, g.cast(_scalar(g, n["min"], dt), work, have=dt)])
    if n["max"] is not None:
        y = g.op("Min", [y, g.cast(_scalar(g, n["max"], dt), work, have=dt)])
    return [g.cast(y, dt, have=work)]


register(OpDef(
    name="clamp", kind="function", family="tensor",
    doc="Each value limited to [min, max] (torch.clamp; either bound may be none).",
    params=(ParamSpec("input", TENSOR), ParamSpec("min", Optional(FLOAT), None), ParamSpec("max", Optional(FLOAT), None)),
    dtypes=NUMERIC, infer=_clamp_infer, macs=lambda b, out: 0, torch=TorchFunction(_clamp_src), onnx=_clamp_onnx,
    examples=(Example({"input": S(2, 5), "min": -0.5, "max": 0.5}), Example({"input": S(3, 4), "min": 0.0}),
              Example({"input": S(6, dtype="int64", values=(-5, 5)), "max": 2}),
              Example({"input": S(6, dtype="int64", values=(-5, 5)), "min": 0.5})),
    arbitrary=lambda d: Example({"input": S(*d.shape(1, 3, 1, 4)), "min": d.choice([None, -1.0, 0.0]),
                                 "max": d.choice([None, 1.0, 0.25])}),
))


# ---------------------------------------------------------------- tril, triu

def _tri_infer(b):
    need_min_rank(b.x, 2, b.op.name)
    return [b.x]


def _tri_onnx(upper: bool):
    def emit(g, n):
        dt = n.x.dtype
        work = _work("Trilu", dt)
        k = g.const(int(plain(n["diagonal"])), dtype="int64")
        y = g.op("Trilu", [g.cast(n.inputs[0], work, have=dt), k], upper=int(upper))
        return [g.cast(y, dt, have=work)]
    return emit


for _name, _upper in (("tril", False), ("triu", True)):
    register(OpDef(
        name=_name, kind="function", family="tensor",
        doc=f"The {'upper' if _upper else 'lower'} triangle of the last two dimensions (torch.{_name}), "
            f"from `diagonal` (0 the main one, positive above it); the rest zero (false): causal masks.",
        params=(ParamSpec("input", TENSOR), ParamSpec("diagonal", INT, 0)),
        dtypes=ANY_DTYPE, infer=_tri_infer, macs=lambda b, out: 0,
        torch=TorchFunction(lambda e, f=_name: f"torch.{f}({e.arg('input')}{e.kw('diagonal')})"),
        onnx=_tri_onnx(_upper),
        examples=(Example({"input": S(4, 4)}), Example({"input": S(2, 3, 5), "diagonal": 1}),
                  Example({"input": S(5, 5, dtype="bool"), "diagonal": -1}),
                  Example({"input": S(3, 4, dtype="int64", values=(1, 9))})),
        arbitrary=lambda d: Example({"input": S(*d.shape(2, 4, 1, 5), dtype=d.choice(["float32", "bool"])),
                                     "diagonal": d.int(-3, 3)}),
    ))


# ---------------------------------------------------------------- cumsum

_CUMSUM_DTYPES = ("float32", "float64", "int64", "int32", "int16", "int8", "uint8", "bool")


def _cumsum_infer(b):
    norm_dim(b["dim"], b.x.rank)
    return [b.x.with_dtype(b.x.dtype if b.x.dtype in FLOAT_DTYPES else "int64")]


def _cumsum_onnx(g, n):
    dt = n.outputs[0].dtype
    x = g.cast(n.inputs[0], dt, have=n.x.dtype)
    axis = norm_dim(n["dim"], n.x.rank) if n.x.rank else 0
    if not n.x.rank:
        return [g.op("Identity", [x])]
    return [g.op("CumSum", [x, g.const(axis, dtype="int64")])]


register(OpDef(
    name="cumsum", kind="function", family="reduce",
    doc="Running sums along `dim` (torch.cumsum); integer and bool inputs sum in int64.",
    params=(ParamSpec("input", TENSOR), ParamSpec("dim", INT)),
    dtypes=_CUMSUM_DTYPES, infer=_cumsum_infer, macs=lambda b, out: 0,
    torch=TorchFunction(lambda e: f"{e.arg('input')}.cumsum({e.fmt(e.args['dim'])})"), onnx=_cumsum_onnx,
    examples=(Example({"input": S(2, 5), "dim": 1}), Example({"input": S(3, 4, 2), "dim": -3}),
              Example({"input": S(2, 6, dtype="bool"), "dim": -1}),
              Example({"input": S(4, dtype="int32", values=(0, 9)), "dim": 0})),
    arbitrary=lambda d: Example({"input": S(*d.shape(1, 3, 1, 5), dtype=d.choice(["float32", "int64", "bool"]),
                                            values=(0, 4)), "dim": d.choice([0, -1])}),
))


# ---------------------------------------------------------------- one_hot

def _one_hot_infer(b):
    if b.x.dtype != "int64":
        raise ShapeError(f"`one_hot` takes int64 class ids, got {b.x.dtype}", code="E0310", arg="input")
    return [TensorType(b.x.shape + (b["num_classes"],), "int64")]


def _one_hot_onnx(g, n):
    depth = g.const([int(plain(n["num_classes"]))], dtype="int64")
    values = g.const([0, 1], dtype="int64")
    return [g.op("OneHot", [n.inputs[0], depth, values], axis=-1)]


register(OpDef(
    name="one_hot", kind="function", family="tensor",
    doc="Class ids [*] as [*, num_classes] int64 rows of zeros with a one at the id (F.one_hot; ids must "
        "be in [0, num_classes), which only the data can tell).",
    params=(ParamSpec("input", TENSOR), ParamSpec("num_classes", INT, check=checks.positive)),
    dtypes=("int64",), infer=_one_hot_infer, macs=lambda b, out: 0,
    torch=TorchFunction(lambda e: f"F.one_hot({e.arg('input')}, {e.fmt(e.args['num_classes'])})"),
    onnx=_one_hot_onnx,
    examples=(Example({"input": S(4, dtype="int64", values=(0, 5)), "num_classes": 5}),
              Example({"input": S(2, 3, dtype="int64", values=(0, 3)), "num_classes": 7})),
    arbitrary=lambda d: (lambda k: Example({"input": S(*d.shape(1, 3, 1, 4), dtype="int64", values=(0, k)),
                                            "num_classes": k}))(d.int(1, 6)),
))


# ---------------------------------------------------------------- topk, sort

_ORDER_DTYPES = ("float32", "float64", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8")


def _topk_infer(b):
    t = b.x
    need_min_rank(t, 1, "topk")
    d = norm_dim(b["dim"], t.rank)
    k, size = b["k"], t.shape[d]
    if not isinstance(size, Sym) and plain(k) > plain(size):
        raise ShapeError(f"`topk` takes {plain(k)} of dimension {d} of {t.shape_str()}, which has {plain(size)}",
                         code="E0406", arg="k")
    if isinstance(size, Sym):   # a run-time size must hold k values: checked first thing in forward
        require(size, ">=", plain(k), b.where)
    shape = t.shape[:d] + (k,) + t.shape[d + 1:]
    return [TensorType(shape, t.dtype), TensorType(shape, "int64")]


def _ordered(g, n, k: str, largest: bool) -> list:
    """TopK (sorted; equal values in index order) in a dtype onnxruntime has, cast back."""
    dt, axis = n.x.dtype, norm_dim(n["dim"], n.x.rank)
    work = _work("TopK", dt)
    values, indices = g.op("TopK", [g.cast(n.inputs[0], work, have=dt), k], n_out=2, axis=axis,
                           largest=int(largest), sorted=1)
    return [g.cast(values, dt, have=work), indices]


def _topk_onnx(g, n):
    return _ordered(g, n, g.const([int(plain(n["k"]))], dtype="int64"), bool(n["largest"]))


register(OpDef(
    name="topk", kind="function", family="reduce",
    doc="The `k` largest (or, with largest=false, smallest) values along `dim`, sorted, and their indices "
        "(torch.topk). Which of equal values comes first is unspecified, in torch as in ONNX.",
    params=(ParamSpec("input", TENSOR), ParamSpec("k", INT, check=checks.positive), ParamSpec("dim", INT, -1),
            ParamSpec("largest", BOOL, True)),
    dtypes=_ORDER_DTYPES, infer=_topk_infer, macs=lambda b, out: 0,
    torch=TorchFunction(lambda e: f"{e.arg('input')}.topk({e.fmt(e.args['k'])}{e.kw('dim')}{e.kw('largest')})"),
    onnx=_topk_onnx,
    examples=(Example({"input": S(3, 10), "k": 3}), Example({"input": S(4, 5, 2), "k": 2, "dim": 1, "largest": False})),
    arbitrary=lambda d: Example({"input": S(3, 6), "k": d.int(1, 6), "dim": d.choice([-1, 1]), "largest": d.bool()}),
))


def _sort_infer(b):
    t = b.x
    need_min_rank(t, 1, "sort")
    norm_dim(b["dim"], t.rank)
    return [t, t.with_dtype("int64")]


def _sort_src(e) -> str:
    """Always stable: ONNX's TopK puts equal values in index order, and so does a stable sort."""
    keys = "".join(e.kw(k) for k in ("dim", "descending"))
    return f"{e.arg('input')}.sort({keys.removeprefix(', ')}{', ' if keys else ''}stable=True)"


def _sort_onnx(g, n):
    size = n.x.shape[norm_dim(n["dim"], n.x.rank)]
    k = g.dim(size) if isinstance(size, Sym) else g.const([int(plain(size))], dtype="int64")
    return _ordered(g, n, k, bool(n["descending"]))


register(OpDef(
    name="sort", kind="function", family="reduce",
    doc="Values sorted along `dim` (ascending, or descending) and their original indices (torch.sort, "
        "stable: equal values keep their order, as ONNX's TopK orders them).",
    params=(ParamSpec("input", TENSOR), ParamSpec("dim", INT, -1), ParamSpec("descending", BOOL, False)),
    dtypes=_ORDER_DTYPES, infer=_sort_infer, macs=lambda b, out: 0, torch=TorchFunction(_sort_src),
    onnx=_sort_onnx,
    examples=(Example({"input": S(3, 7)}), Example({"input": S(4, 5, 2), "dim": 1, "descending": True}),
              Example({"input": S(2, 9, dtype="int64", values=(0, 3)), "descending": True})),
    arbitrary=lambda d: Example({"input": S(*d.shape(1, 3, 1, 6), dtype=d.choice(["float32", "int64"]),
                                            values=(0, 4)), "dim": d.choice([0, -1]), "descending": d.bool()}),
))
