"""Reductions (sum, mean, amax, ...), arg-reductions and gather."""
from __future__ import annotations

from ...ir.dims import Sym, expr_of, plain, product, require
from ...ir.types import DTYPES, FLOAT_DTYPES, TensorType
from ..nans import nan_mask, with_nans
from ..ptypes import BOOL, INT, TENSOR, ListOf, OneOf, Optional
from ..registry import Constants, Example, OpDef, ParamSpec, S, ShapeError, TorchFunction, register
from ..shapes import norm_dim
from .common import _ORT_MISSING, _WIDER, ANY_DTYPE, _axis, _kind


def _reduce_infer(b):
    t = b.x
    dim = b["dim"]
    if dim is None or dim == ():  # torch reduces every dim for dim=[] too
        dims = set(range(t.rank))
    else:
        raw = dim if isinstance(dim, tuple) else (dim,)
        dims = {norm_dim(d, t.rank) for d in raw}
        if len(dims) != len(raw):
            raise ShapeError("a dimension is listed twice", code="E0406", arg="dim")
    if b["keepdim"]:
        shape = tuple(1 if i in dims else d for i, d in enumerate(t.shape))
    else:
        shape = tuple(d for i, d in enumerate(t.shape) if i not in dims)
    dtype = t.dtype if t.is_float else "float32" if b.op.name == "mean" else "int64" if b.op.name == "sum" else t.dtype
    return [TensorType(shape, dtype)]


def _reduce_src(e, method: str) -> str:
    dim, keep = e.args["dim"], e.args["keepdim"]
    if dim is None and keep:
        dim = tuple(range(e.x.rank))  # torch wants the dims spelled out to keep them
    parts = []
    if dim is not None:
        parts.append(f"dim={e.fmt(dim)}")
    if keep:
        parts.append("keepdim=True")
    return f"{e.arg('input')}.{method}({', '.join(parts)})"


_REDUCE = {"mean": "ReduceMean", "sum": "ReduceSum", "amax": "ReduceMax", "amin": "ReduceMin"}


def _reduce_work_dtype(op: str, dtype: str) -> str:
    """What torch accumulates in: sums of integers and bools in int64, of float16/bfloat16 (and their means)
    in float32; max and min in the dtype itself (wider only where onnxruntime lacks a kernel)."""
    if op == "sum" and _kind(dtype) < 2:
        return "int64"
    if op in ("sum", "mean") and dtype in ("float16", "bfloat16"):
        return "float32"
    return _WIDER[dtype] if dtype in _ORT_MISSING.get(_REDUCE[op], ()) else dtype


def _reduce_onnx(op: str):
    """The emitter of mean/sum/amax/amin: axes as an input (opset 18), none for dim=None (every dim)."""
    def emit(g, n):
        x, t = n.inputs[0], n.x
        work = _reduce_work_dtype(op, t.dtype)
        inputs = [g.cast(x, work, have=t.dtype)]
        dim = n["dim"]
        if dim not in (None, ()) and t.rank:
            inputs.append(g.ints(sorted(_axis(d, t.rank) for d in (dim if isinstance(dim, tuple) else (dim,)))))
        y = g.op(_REDUCE[op], inputs, keepdims=int(bool(n["keepdim"])))
        if op in ("amax", "amin"):   # NaN wins, as in torch
            mask = nan_mask(g, inputs[0], work)
            y = with_nans(g, y, mask and g.op("ReduceMax", [mask] + inputs[1:], keepdims=int(bool(n["keepdim"]))), work)
        return [g.cast(y, n.outputs[0].dtype, have=work)]
    return emit


def _sum_fold(c: Constants):
    """A uniform sum is the value times the number of elements summed (when that number is static)."""
    t, dim = c.inputs[0], c.args["dim"]
    listed = dim if isinstance(dim, tuple) else (dim,)
    dims = range(t.rank) if dim in (None, ()) else [plain(d) for d in listed]
    n = c.static(product([t.shape[d] for d in dims]))
    return None if n is None else c.x * n


# The value of each reduction over a uniform constant: the mean, maximum and minimum are the value.
_FOLDS = {"mean": lambda c: c.x, "sum": _sum_fold, "amax": lambda c: c.x, "amin": lambda c: c.x}


for _name, _doc, _types in (("mean", "Mean over dimensions (all when dim is none).", FLOAT_DTYPES),
                            ("sum", "Sum over dimensions (all when dim is none).", ANY_DTYPE),
                            ("amax", "Maximum over dimensions (all when dim is none).", ANY_DTYPE),
                            ("amin", "Minimum over dimensions (all when dim is none).", ANY_DTYPE)):
    register(OpDef(
        name=_name, kind="function", family="reduce", doc=_doc,
        params=(ParamSpec("input", TENSOR), ParamSpec("dim", Optional(OneOf((INT, ListOf(INT)))), None),
                ParamSpec("keepdim", BOOL, False)),
        dtypes=_types,
        infer=_reduce_infer, fold=_FOLDS[_name],
        torch=TorchFunction(lambda e, m=_name: _reduce_src(e, m)),
        onnx=_reduce_onnx(_name),
        examples=(Example({"input": S(2, 3, 4), "dim": 1}), Example({"input": S(2, 3, 4), "dim": [1, 2],
                                                                      "keepdim": True}),
                  Example({"input": S(2, 3)})),
        arbitrary=lambda d: Example({"input": S(2, 3, 4), "dim": d.choice([None, 0, -1, [0, 2]]),
                                     "keepdim": d.bool()}),
    ))


_ARG_DTYPES = tuple(d for d in DTYPES if d != "bool")


_ORT_ARG = {"float32", "float64", "int32", "int64", "int8", "uint8"}   # onnxruntime's ArgMax/ArgMin kernels


def _arg_infer(b):
    """torch.argmax/argmin: a reduction's shape (no dim: over every dim, keepdim keeping them as 1s) of
    int64 indices."""
    return [_reduce_infer(b)[0].with_dtype("int64")]


def _arg_src(e, method: str) -> str:
    parts = []
    if e.args["dim"] is not None:
        parts.append(f"dim={e.fmt(e.args['dim'])}")
    if e.args["keepdim"]:
        parts.append("keepdim=True")
    return f"{e.arg('input')}.{method}({', '.join(parts)})"


def _arg_onnx(op_type: str):
    """ArgMax/ArgMin keep the first of equal values, as torch does; no dim: over the flattened tensor."""
    def emit(g, n):
        t = n.x
        if t.rank == 0 and n["dim"] is not None:   # torch's index into a 0-d tensor along dim 0 or -1: 0
            return [g.const(0, dtype="int64")]
        x = g.cast(n.inputs[0], t.dtype if t.dtype in _ORT_ARG else
                  "float32" if t.is_float else "int64", have=t.dtype)   # exact: float16/bfloat16 and small ints widen
        if n["dim"] is None:
            flat = g.op("Reshape", [x, g.ints([-1])])
            found = _first_nan_or(g, op_type, flat, t.dtype, axis=0, keepdims=0)
            return [g.op("Reshape", [found, g.shape(n.outputs[0].shape)]) if n["keepdim"] else found]
        return [_first_nan_or(g, op_type, x, t.dtype, axis=norm_dim(n["dim"], t.rank), keepdims=int(bool(n["keepdim"])))]
    return emit


for _name, _onnx_name, _doc in (("argmax", "ArgMax", "Index of the largest value along `dim` (of the flattened "
                                                     "tensor when dim is none); the first of equal ones."),
                                ("argmin", "ArgMin", "Index of the smallest value along `dim` (of the flattened "
                                                     "tensor when dim is none); the first of equal ones.")):
    register(OpDef(
        name=_name, kind="function", family="reduce", doc=_doc,
        params=(ParamSpec("input", TENSOR), ParamSpec("dim", Optional(INT), None), ParamSpec("keepdim", BOOL, False)),
        dtypes=_ARG_DTYPES,
        infer=_arg_infer,
        torch=TorchFunction(lambda e, m=_name: _arg_src(e, m)),
        onnx=_arg_onnx(_onnx_name),
        examples=(Example({"input": S(4, 10), "dim": 1}), Example({"input": S(2, 3, 4), "dim": 0, "keepdim": True}),
                  Example({"input": S(2, 3, 4)}), Example({"input": S(2, 3), "keepdim": True}),
                  Example({"input": S(5, 3, dtype="int64", values=(0, 4)), "dim": -1})),
        arbitrary=lambda d: Example({"input": S(*d.shape(1, 3, 1, 5)), "dim": d.choice([None, 0, -1]),
                                     "keepdim": d.bool()}),
    ))


def _first_nan_or(g, op_type: str, x: str, dtype: str, **attrs) -> str:
    """ArgMax/ArgMin, except that torch's answer is the first NaN along the axis when there is one
    (onnxruntime skips NaNs)."""
    y = g.op(op_type, [x], select_last_index=0, **attrs)
    mask = nan_mask(g, x, dtype)
    if mask is None:
        return y
    first = g.op("ArgMax", [mask], select_last_index=0, **attrs)
    found = g.op("Greater", [g.op("ReduceMax", [mask, g.ints([attrs["axis"]])], keepdims=attrs["keepdims"]),
                             g.const(0.0, dtype="float32")])
    return g.op("Where", [found, first, y])


def _gather_infer(b):
    """torch.gather: the output has the index's shape; its size along every other dim fits the input's."""
    t, index = b.x, b["index"].type
    d = norm_dim(b["dim"], t.rank)
    if index.dtype != "int64":
        raise ShapeError(f"`gather`'s index must be int64, got {index.dtype}", code="E0310", arg="index")
    if index.rank != t.rank:
        raise ShapeError(f"`gather`'s index must have the input's rank {t.rank}, got {index.shape_str()}",
                         code="E0406", arg="index")
    for i, (a, n) in enumerate(zip(index.shape, t.shape)):
        if i != d and (isinstance(a, Sym) or isinstance(n, Sym)):
            require(n - a, ">=", 0, b.where)   # the index fits the input there, at run time
        elif i != d and plain(a) > plain(n):
            raise ShapeError(f"`gather`'s index is larger than the input in dimension {i} ({plain(a)} > {plain(n)})",
                             code="E0406", arg="index")
    return [TensorType(index.shape, t.dtype)]


def _gather_onnx(g, n):
    """GatherElements, which wants the index to cover the input in every other dim: a smaller index
    (allowed by torch) reads a slice of the input of its own size first."""
    t, index = n.x, n.type_of("index")
    d = norm_dim(n["dim"], t.rank)
    x = n.inputs[0]
    cut = [i for i in range(t.rank) if i != d and expr_of(index.shape[i]) != expr_of(t.shape[i])]
    if cut:
        x = g.op("Slice", [x, g.ints([0] * len(cut)), g.shape([index.shape[i] for i in cut]), g.ints(cut)])
    return [g.op("GatherElements", [x, n.tensor("index")], axis=d)]


register(OpDef(
    name="gather", kind="function", family="tensor",
    doc="Values of `input` along `dim` at the positions `index` holds (torch.gather); the output has the index's shape.",
    params=(ParamSpec("input", TENSOR), ParamSpec("dim", INT), ParamSpec("index", TENSOR)),
    dtypes=ANY_DTYPE,
    infer=_gather_infer,
    torch=TorchFunction(lambda e: f"{e.arg('input')}.gather({e.fmt(e.args['dim'])}, {e.arg('index')})"),
    onnx=_gather_onnx,
    examples=(Example({"input": S(4, 10), "dim": 1, "index": S(4, 1, dtype="int64", values=(0, 10))}),
              Example({"input": S(3, 5, 2), "dim": 1, "index": S(3, 7, 2, dtype="int64", values=(0, 5))}),
              Example({"input": S(3, 5, 4), "dim": 0, "index": S(2, 5, 2, dtype="int64", values=(0, 3))})),
    arbitrary=lambda d: Example({"input": S(3, 4), "dim": d.choice([0, 1, -1]),
                                 "index": S(d.int(1, 3), d.int(1, 4), dtype="int64", values=(0, 3))}),
))
