"""Embedding: a lookup table, y[..., :] = weight[x[...], :].

The input holds integer ids in [0, num_embeddings); the output has the input's
shape plus a trailing embedding_dim, in float32 (the table's dtype). The row at
padding_idx gets no gradient; with max_norm, looked-up rows whose norm (of
order norm_type) exceeds it are renormalized in place. A lookup does no
multiply-adds.
"""
from __future__ import annotations

import math

from ..ir.dims import plain
from ..ir.types import TensorType
from . import checks
from .ptypes import BOOL, FLOAT, INT, Optional
from .registry import Example, OpDef, ParamSpec, S, ShapeError, TorchLayer, register


def _embedding_infer(b):
    n, pad = b["num_embeddings"], b["padding_idx"]
    # torch asserts -num_embeddings <= padding_idx < num_embeddings in the constructor.
    if pad is not None and not -plain(n) <= plain(pad) < plain(n):
        raise ShapeError(f"`Embedding`'s padding_idx {plain(pad)} is outside its {plain(n)} rows "
                         f"(valid: {-plain(n)} to {plain(n) - 1})", code="E0302", arg="padding_idx",
                         label="out of range")
    return [TensorType(b.x.shape + (b["embedding_dim"],), "float32")]


def _p_norm(g, rows: str, p: float) -> str:
    """The p-norm of each row (over the last axis, kept), as torch's `Tensor.norm(p)`."""
    axes = g.ints([-1], hint="axes")
    if p == 1.0:
        return g.op("ReduceL1", [rows, axes], keepdims=1)
    if p == 2.0:
        return g.op("ReduceL2", [rows, axes], keepdims=1)
    if math.isinf(p):
        return g.op("ReduceMax", [g.op("Abs", [rows]), axes], keepdims=1)
    total = g.op("ReduceSum", [g.op("Pow", [g.op("Abs", [rows]), g.const(p)]), axes], keepdims=1)
    return g.op("Pow", [total, g.const(1.0 / p)])


def _renorm_onnx(g, rows: str, max_norm: float, p: float) -> str:
    """torch's embedding_renorm_: rows whose p-norm exceeds max_norm are scaled by max_norm / (norm + 1e-7)."""
    norm = _p_norm(g, rows, p)
    limit = g.const(max_norm)
    scale = g.op("Div", [limit, g.op("Add", [norm, g.const(1e-7)])])
    scale = g.op("Where", [g.op("Greater", [norm, limit]), scale, g.const(1.0)], hint="scale")
    return g.op("Mul", [rows, scale])


def _embedding_onnx(g, n):
    """Gather the rows of the table with int64 ids; with max_norm, the rows renormalized as torch does."""
    from onnx import TensorProto
    ids = n.inputs[0]
    if n.x.dtype != "int64":
        ids = g.op("Cast", [ids], to=TensorProto.INT64)
    rows = g.op("Gather", [n.weight("weight"), ids], axis=0)
    if n["max_norm"] is not None:
        # torch also writes these rows back into the table (in eval too). An ONNX graph cannot change its
        # initializers, but a renormalized row is left as it is by a second renormalization, so every
        # lookup gives torch's rows; only another reader of the table (a tied `wte.weight`) would differ.
        rows = _renorm_onnx(g, rows, float(n["max_norm"]), float(n["norm_type"]))
    return [rows]


def _embedding_draw(d):
    n = d.int(1, 20)
    args = {"num_embeddings": n, "embedding_dim": d.int(1, 8),
            "padding_idx": d.choice([None, 0, n - 1, -1]), "max_norm": d.choice([None, 1.0]),
            "scale_grad_by_freq": d.bool(), "sparse": d.bool()}
    return Example(args, (S(*d.shape(0, 3, 1, 5), dtype=d.choice(["int64", "int32"]), values=(0, n)),))


register(OpDef(
    name="Embedding", kind="layer", family="embedding", stem="embedding",
    rewrites_weights=lambda a: "renormalizes its table (max_norm)" if a.get("max_norm") is not None else None,
    doc="Looks up a learned vector for each integer id: [*] ids -> [*, embedding_dim] floats.",
    params=(ParamSpec("num_embeddings", INT, check=checks.positive, doc="the number of ids (rows of the table)"),
            ParamSpec("embedding_dim", INT, check=checks.positive, doc="the size of each vector"),
            ParamSpec("padding_idx", Optional(INT), None, doc="an id whose row stays fixed (no gradient)"),
            ParamSpec("max_norm", Optional(FLOAT), None, checks.positive_number,
                      "renormalize looked-up rows to at most this norm"),
            ParamSpec("norm_type", FLOAT, 2.0, checks.positive_number, "the p of the p-norm for max_norm"),
            ParamSpec("scale_grad_by_freq", BOOL, False),
            ParamSpec("sparse", BOOL, False)),
    dtypes=("int64", "int32"),
    infer=_embedding_infer,
    weights=lambda a: {"weight": (a["num_embeddings"], a["embedding_dim"])},
    macs=lambda b, out: 0,
    label=lambda a: f"Embedding {a['num_embeddings']}×{a['embedding_dim']}",
    torch=TorchLayer("nn.Embedding", ("num_embeddings", "embedding_dim"),
                     ("padding_idx", "max_norm", "norm_type", "scale_grad_by_freq", "sparse")),
    onnx=_embedding_onnx,
    examples=(Example({"num_embeddings": 10, "embedding_dim": 4}, (S(2, 5, dtype="int64", values=(0, 10)),)),
              Example({"num_embeddings": 7, "embedding_dim": 3, "padding_idx": 0, "max_norm": 1.0},
                      (S(2, dtype="int32", values=(0, 7)),)),
              Example({"num_embeddings": 5, "embedding_dim": 2, "padding_idx": -1, "sparse": True},
                      (S(2, 3, 2, dtype="int64", values=(0, 5)),))),
    arbitrary=_embedding_draw,
))
