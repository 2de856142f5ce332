"""Elementwise math functions (`exp`, `log`, `sqrt`, `sin`, `cos`, `abs`) and `normalize`.

They take floating-point tensors and keep the shape and dtype. Each one is a single torch call
and a single ONNX node (normalize is x / max(‖x‖_p, eps), as F.normalize computes it). Sinusoidal
embeddings (DDPM's timestep, the Transformer's positions) and CLIP's temperature need them.
"""
from __future__ import annotations

import math

from ..ir.types import TensorType
from . import checks
from .ptypes import FLOAT, INT, TENSOR
from .registry import Elementwise, Example, OpDef, ParamSpec, S, ShapeError, TorchFunction, register
from .shapes import norm_dim


def _same(b):
    if "dim" in b.args:
        norm_dim(b["dim"], b.x.rank)
    return [TensorType(b.x.shape, b.x.dtype)]


def _unary(name: str, torch_fn: str, onnx_op: str, doc: str, fold):
    register(OpDef(
        name=name, kind="function", family="arith", doc=doc, fold=Elementwise(lambda v, a, f=fold: f(v)),
        params=(ParamSpec("input", TENSOR),), infer=_same, macs=lambda b, out: 0,
        torch=TorchFunction(lambda e, f=torch_fn: f"{f}({e.arg('input')})"),
        onnx=lambda g, n, op=onnx_op: [g.op(op, [n.inputs[0]])],
        examples=(Example({"input": S(2, 3, 4)}),),
        arbitrary=lambda d: Example({"input": S(*d.shape(1, 4, 1, 6))}),
    ))


def _normalize_onnx(g, n):
    """x / max(‖x‖_p, eps) along dim: ReduceL2 (p = 2) or ReduceL1 (p = 1), as F.normalize."""
    x = n.inputs[0]
    axis = norm_dim(n["dim"], n.x.rank)
    p = float(n["p"])
    reduce = {2.0: "ReduceL2", 1.0: "ReduceL1"}[p]
    norm = g.op(reduce, [x, g.ints([axis])], keepdims=1)
    eps = g.const(float(n["eps"]), n.x.dtype)
    return [g.op("Div", [x, g.op("Max", [norm, eps])])]


def _normalize_check(b):
    p = float(b["p"])
    if p not in (1.0, 2.0):
        raise ShapeError(f"`normalize` takes p=1 or p=2, got {p:g}", code="E0302")
    return _same(b)


_unary("exp", "torch.exp", "Exp", "e to the power of each element.", math.exp)
_unary("log", "torch.log", "Log", "Natural logarithm of each element (NaN below 0, as in torch).", math.log)
_unary("sqrt", "torch.sqrt", "Sqrt", "Square root of each element (NaN below 0, as in torch).", math.sqrt)
_unary("sin", "torch.sin", "Sin", "Sine of each element (radians).", math.sin)
_unary("cos", "torch.cos", "Cos", "Cosine of each element (radians).", math.cos)
_unary("abs", "torch.abs", "Abs", "Absolute value of each element.", abs)

register(OpDef(
    name="normalize", kind="function", family="arith",
    doc="x / max(‖x‖_p, eps) along `dim` (torch's default: 1): unit vectors, as F.normalize.",
    params=(ParamSpec("input", TENSOR), ParamSpec("p", FLOAT, 2.0), ParamSpec("dim", INT, 1),
            ParamSpec("eps", FLOAT, 1e-12, checks.positive_number)),
    infer=_normalize_check, macs=lambda b, out: 0,
    torch=TorchFunction(lambda e: f"F.normalize({e.arg('input')}"
                        + "".join(f", {k}={e.fmt(e[k])}" for k, d in (("p", 2.0), ("dim", 1), ("eps", 1e-12))
                                  if e[k] != d) + ")"),
    onnx=_normalize_onnx,
    examples=(Example({"input": S(2, 3, 4)}), Example({"input": S(2, 5), "p": 1.0, "dim": 0})),
    arbitrary=lambda d: Example({"input": S(*d.shape(1, 4, 1, 6)), "dim": d.int(-1, 0)}),
))
