"""Linear maps: Linear, Bilinear, Identity."""
from __future__ import annotations

from ..ir.dims import product
from . import checks
from .ptypes import BOOL, INT
from .registry import Example, OpDef, ParamSpec, S, ShapeError, TorchLayer, register
from .shapes import need_min_rank, same_dim, static


def _linear_onnx(g, n):
    x, w = n.inputs[0], n.weight("weight")
    bias = n.weight("bias") if n["bias"] else None
    if n.x.rank == 2:  # the canonical form: y = x Wᵀ + b in one node
        return [g.op("Gemm", [x, w, bias], transB=1)]
    y = g.op("MatMul", [x, g.op("Transpose", [w], perm=[1, 0])])
    return [g.op("Add", [y, bias]) if bias else y]


def _bilinear_onnx(g, n):
    """y_k = x1ᵀ A_k x2 + b_k over any leading dims."""
    y = g.op("Einsum", [n.inputs[0], n.weight("weight"), n.inputs[1]], equation="...i,kij,...j->...k")
    return [g.op("Add", [y, n.weight("bias")]) if n["bias"] else y]


def _batch(shape):
    return product(shape[:-1])


def _linear_resolve(b):
    need_min_rank(b.x, 1, "Linear")
    return {"in_features": static(b.x.shape[-1], "Linear's in_features (the input's last dimension)")}


register(OpDef(
    name="Linear", kind="layer", family="linear", category="linear", spatial=0, stem="fc",
    doc="y = x Aᵀ + b over the last dimension; in_features is inferred from the input.",
    params=(ParamSpec("out_features", INT, check=checks.positive),
            ParamSpec("bias", BOOL, True)),
    resolve=_linear_resolve,
    infer=lambda b: [b.x.with_shape(b.x.shape[:-1] + (b["out_features"],))],
    weights=lambda a: {"weight": (a["out_features"], a["in_features"]),
                       **({"bias": (a["out_features"],)} if a["bias"] else {})},
    macs=lambda b, out: _batch(b.x.shape) * b["in_features"] * b["out_features"],
    label=lambda a: f"Linear {a['in_features']}→{a['out_features']}",
    torch=TorchLayer("nn.Linear", ("in_features", "out_features"), ("bias",)),
    onnx=_linear_onnx,
    examples=(Example({"out_features": 3}, (S(2, 5),)),
              Example({"out_features": 4, "bias": False}, (S(2, 7, 6),))),
    arbitrary=lambda d: Example({"out_features": d.int(1, 16), "bias": d.bool()},
                                (S(*d.shape(1, 4, 1, 8)),)),
))


def _bilinear_resolve(b):
    x1, x2 = b.inputs
    need_min_rank(x1, 1, "Bilinear", input=0)
    need_min_rank(x2, 1, "Bilinear", input=1)
    if x1.rank != x2.rank or not all(same_dim(p, q, b.where) for p, q in zip(x1.shape[:-1], x2.shape[:-1])):
        raise ShapeError(f"`Bilinear`'s inputs must agree in every dimension but the last, "
                         f"got {x1.shape_str()} and {x2.shape_str()}", input=1)
    return {"in1_features": static(x1.shape[-1], "Bilinear's in1_features", input=0),
            "in2_features": static(x2.shape[-1], "Bilinear's in2_features", input=1)}


register(OpDef(
    name="Bilinear", kind="layer", family="linear", stem="bilinear",
    doc="y = x1ᵀ A x2 + b; both input sizes are inferred.",
    inputs=("input1", "input2"),
    params=(ParamSpec("out_features", INT, check=checks.positive),
            ParamSpec("bias", BOOL, True)),
    resolve=_bilinear_resolve,
    infer=lambda b: [b.x.with_shape(b.x.shape[:-1] + (b["out_features"],))],
    weights=lambda a: {"weight": (a["out_features"], a["in1_features"], a["in2_features"]),
                       **({"bias": (a["out_features"],)} if a["bias"] else {})},
    macs=lambda b, out: _batch(b.x.shape) * b["in1_features"] * b["in2_features"] * b["out_features"],
    label=lambda a: f"Bilinear {a['in1_features']}×{a['in2_features']}→{a['out_features']}",
    torch=TorchLayer("nn.Bilinear", ("in1_features", "in2_features", "out_features"), ("bias",)),
    onnx=_bilinear_onnx,
    examples=(Example({"out_features": 3}, (S(2, 5), S(2, 4))),),
    arbitrary=lambda d: Example({"out_features": d.int(1, 8), "bias": d.bool()},
                                (S(3, d.int(1, 6)), S(3, d.int(1, 6)))),
))


register(OpDef(
    name="Identity", kind="layer", family="tensor", category="identity", stem="identity",
    doc="Returns its input unchanged.",
    params=(),
    infer=lambda b: [b.x],
    torch=TorchLayer("nn.Identity", functional=lambda e: e.inputs[0]),
    onnx=lambda g, n: [g.op("Identity", [n.inputs[0]])],
    examples=(Example({}, (S(2, 3),)),),
    arbitrary=lambda d: Example({}, (S(*d.shape(1, 4, 1, 6)),)),
))
