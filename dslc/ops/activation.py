"""Activations: each is a layer (`ReLU()`) and a function (`relu(x)`) sharing one
shape rule and one emission table. Unnamed activation layers are written as
functional calls (`F.relu(x)`), as people write them by hand.
"""
from __future__ import annotations

import math

from ..ir.dims import plain, plain_float
from ..ir.types import TensorType
from . import checks
from .ptypes import FLOAT, INT, TENSOR, Str
from .registry import INPLACE, Constants, Elementwise, Example, OpDef, ParamSpec, S, ShapeError, TorchFunction, TorchLayer, register
from .shapes import norm_dim


def _same(b):
    if "dim" in b.args:
        norm_dim(b["dim"], b.x.rank)
    return [TensorType(b.x.shape, b.x.dtype)]


_KEYWORD_ONLY = ("approximate", "inplace")   # written by name even first: `F.relu(x, inplace=True)`


def _call(fn: str, params: tuple, e, source: str) -> str:
    """`F.leaky_relu(x, 0.2)`: positional for the first parameter, keywords after, defaults left out."""
    parts = [source]
    for i, p in enumerate(params):
        v = e.args[p.name]
        if p.name in ("dim",):
            parts.append(f"dim={e.fmt(v)}")
        elif not _is_default(v, p.default):
            parts.append(e.fmt(v) if i == 0 and p.name not in _KEYWORD_ONLY else f"{p.name}={e.fmt(v)}")
    return f"{fn}({', '.join(parts)})"


def _is_default(v, default) -> bool:
    if isinstance(default, float) and not isinstance(v, (bool, str)) and v is not None:
        return plain_float(v) == default
    return plain(v) == default if not isinstance(v, str) else v == default


# ---- ONNX forms (opset 18), shared by each layer and its function

def _x(n) -> str:
    return n.inputs[0]


def _gelu_onnx(g, n):
    x = _x(n)
    half_x = g.op("Mul", [x, g.const(0.5)])
    if n["approximate"] == "tanh":  # 0.5 x (1 + tanh(√(2/π) (x + 0.044715 x³)))
        cube = g.op("Mul", [g.op("Mul", [x, x]), x])
        inner = g.op("Add", [x, g.op("Mul", [cube, g.const(0.044715)])])
        t = g.op("Tanh", [g.op("Mul", [inner, g.const((2.0 / 3.141592653589793) ** 0.5)])])
    else:  # 0.5 x (1 + erf(x / √2)): exact, as torch's default
        t = g.op("Erf", [g.op("Div", [x, g.const(2.0 ** 0.5)])])
    return [g.op("Mul", [half_x, g.op("Add", [t, g.const(1.0)])])]


def _softplus_onnx(g, n):
    """log(1 + exp(βx)) / β, and x itself where βx > threshold (as torch does, for stability)."""
    x, beta = _x(n), float(n["beta"])
    bx = g.op("Mul", [x, g.const(beta)])
    soft = g.op("Div", [g.op("Softplus", [bx]), g.const(beta)])
    return [g.op("Where", [g.op("Greater", [bx, g.const(float(n["threshold"]))]), x, soft])]


def _silu_onnx(g, n):
    x = _x(n)
    return [g.op("Mul", [x, g.op("Sigmoid", [x])])]


def _simple(op_type: str, **attrs):
    return lambda g, n: [g.op(op_type, [_x(n)], **{k: f(n) for k, f in attrs.items()})]


_ONNX = {
    "relu": _simple("Relu"),
    "relu6": lambda g, n: [g.op("Clip", [_x(n), g.const(0.0), g.const(6.0)])],
    "leaky_relu": _simple("LeakyRelu", alpha=lambda n: float(n["negative_slope"])),
    "elu": _simple("Elu", alpha=lambda n: float(n["alpha"])),
    "selu": _simple("Selu"),  # ONNX's default α and γ are torch's
    "gelu": _gelu_onnx,
    "silu": _silu_onnx,
    "mish": _simple("Mish"),
    "hardswish": _simple("HardSwish"),
    "hardsigmoid": _simple("HardSigmoid", alpha=lambda n: 1.0 / 6.0, beta=lambda n: 0.5),
    "softplus": _softplus_onnx,
    "sigmoid": _simple("Sigmoid"),
    "tanh": _simple("Tanh"),
    "softmax": _simple("Softmax", axis=lambda n: int(n["dim"])),
    "log_softmax": _simple("LogSoftmax", axis=lambda n: int(n["dim"])),
}


def _softmax_fold(log: bool):
    """Softmax of a uniform constant is 1/n along dim (n its size there), log_softmax -log(n)."""
    def fold(c: Constants):
        n = c.static(c.inputs[0].shape[plain(c.args["dim"])])
        if n is None:
            return None
        return -math.log(n) if log else 1.0 / n
    return fold


# The activations on uniform constants (constant folding): on one value, the same float arithmetic as torch's.
_FOLDS = {
    "relu": Elementwise(lambda v, a: max(v, 0.0)),
    "relu6": Elementwise(lambda v, a: min(max(v, 0.0), 6.0)),
    "sigmoid": Elementwise(lambda v, a: 1.0 / (1.0 + math.exp(-v)) if v >= 0 else math.exp(v) / (1.0 + math.exp(v))),
    "tanh": Elementwise(lambda v, a: math.tanh(v)),
    "silu": Elementwise(lambda v, a: v / (1.0 + math.exp(-v)) if v >= -700 else 0.0),
    "gelu": Elementwise(lambda v, a: 0.5 * v * (1.0 + math.erf(v / math.sqrt(2.0))) if a.get("approximate") == "none"
                        else None),
    "leaky_relu": Elementwise(lambda v, a: v if v >= 0 else v * plain_float(a["negative_slope"])),
    "softmax": _softmax_fold(log=False),
    "log_softmax": _softmax_fold(log=True),
}


def _activation(layer: str, fn: str, torch_fn: str, params: tuple = (), doc: str = "", explicit=(),
                arbitrary_args=None, inplace: bool = False, produces: str = ""):
    """A layer and its function; `inplace`: torch's take `inplace=` (after their other settings)."""
    params = params + ((INPLACE,) if inplace else ())
    slope = params[0].name if params and params[0].name in ("negative_slope", "alpha") else None
    # torch's leaky_relu_ and elu_ have no backward for a negative slope (it raises there)
    inplace_backward = (lambda a, s=slope: plain_float(a[s]) >= 0) if slope else None
    pos = tuple(p.name for p in params[:1]) if params and params[0].name not in ("dim",) + _KEYWORD_ONLY else ()
    kws = tuple(p.name for p in params if p.name not in pos)
    args_draw = arbitrary_args or (lambda d: {})
    register(OpDef(
        name=layer, kind="layer", family="activation", stem=fn.replace("_", ""), doc=doc, fold=_FOLDS.get(fn),
        inplace_backward=inplace_backward, produces=produces,
        params=params, infer=_same, macs=lambda b, out: 0,
        label=lambda a, n=layer: n,
        torch=TorchLayer(f"nn.{layer}", pos, kws, explicit=explicit,
                         functional=lambda e, f=torch_fn, ps=params: _call(f, ps, e, e.inputs[0])),
        onnx=_ONNX[fn],
        examples=(Example({}, (S(2, 3, 4),)),),
        arbitrary=lambda d, g=args_draw: Example(g(d), (S(*d.shape(1, 4, 1, 6)),)),
    ))
    register(OpDef(
        name=fn, kind="function", family="activation", doc=doc, fold=_FOLDS.get(fn),
        inplace_backward=inplace_backward, produces=produces,
        params=(ParamSpec("input", TENSOR),) + params, infer=_same, macs=lambda b, out: 0,
        torch=TorchFunction(lambda e, f=torch_fn, ps=params: _call(f, ps, e, e.arg("input"))),
        onnx=_ONNX[fn],
        examples=(Example({"input": S(2, 3, 4)}),),
        arbitrary=lambda d, g=args_draw: Example({"input": S(*d.shape(1, 4, 1, 6)), **g(d)}),
    ))


_activation("ReLU", "relu", "F.relu", doc="max(0, x).", inplace=True)
_activation("ReLU6", "relu6", "F.relu6", doc="min(max(0, x), 6).", inplace=True)
_activation("LeakyReLU", "leaky_relu", "F.leaky_relu",
            (ParamSpec("negative_slope", FLOAT, 0.01),), doc="x if x > 0 else negative_slope * x.", inplace=True,
            arbitrary_args=lambda d: {"negative_slope": d.choice([0.01, 0.2, 0.5])})
_activation("ELU", "elu", "F.elu", (ParamSpec("alpha", FLOAT, 1.0),), doc="x if x > 0 else alpha * (exp(x) - 1).", inplace=True,
            arbitrary_args=lambda d: {"alpha": d.choice([1.0, 0.5])})
_activation("SELU", "selu", "F.selu", doc="Scaled ELU with the self-normalizing constants.", inplace=True)
_activation("GELU", "gelu", "F.gelu", (ParamSpec("approximate", Str(("none", "tanh")), "none"),),
            doc="x * Φ(x); `approximate=\"tanh\"` uses the tanh approximation.",
            arbitrary_args=lambda d: {"approximate": d.choice(["none", "tanh"])})
_activation("SiLU", "silu", "F.silu", doc="x * sigmoid(x) (swish).", inplace=True)
_activation("Mish", "mish", "F.mish", doc="x * tanh(softplus(x)).", inplace=True)
_activation("Hardswish", "hardswish", "F.hardswish", doc="x * relu6(x + 3) / 6.", inplace=True)
_activation("Hardsigmoid", "hardsigmoid", "F.hardsigmoid", doc="relu6(x + 3) / 6.", inplace=True)
_activation("Softplus", "softplus", "F.softplus",
            (ParamSpec("beta", FLOAT, 1.0, checks.positive_number), ParamSpec("threshold", FLOAT, 20.0)),
            doc="log(1 + exp(beta * x)) / beta.",
            arbitrary_args=lambda d: {"beta": d.choice([1.0, 2.0])})
_activation("Sigmoid", "sigmoid", "torch.sigmoid", doc="1 / (1 + exp(-x)).", produces="probabilities")
_activation("Tanh", "tanh", "torch.tanh", doc="Hyperbolic tangent.")
_activation("Softmax", "softmax", "F.softmax", (ParamSpec("dim", INT, -1),), explicit=("dim",),
            doc="exp(x) / sum(exp(x)) along `dim` (default: the last).",
            arbitrary_args=lambda d: {"dim": d.int(-2, 1)}, produces="probabilities")
_activation("LogSoftmax", "log_softmax", "F.log_softmax", (ParamSpec("dim", INT, -1),), explicit=("dim",),
            doc="log(softmax(x)) along `dim` (default: the last).",
            arbitrary_args=lambda d: {"dim": d.int(-2, 1)}, produces="log_probabilities")


def _prelu_infer(b):
    n = b["num_parameters"]
    if plain(n) != 1:
        if b.x.rank < 2 or b.x.shape[1] != n:
            raise ShapeError(f"`PReLU` with {plain(n)} parameters needs {plain(n)} channels in dimension 1, "
                             f"got {b.x.shape_str()}", arg="num_parameters")
    return _same(b)


def _prelu_onnx(g, n):
    """One slope, or one per channel: shaped [C, 1, ...] to broadcast over dim 1 as torch does."""
    slope = n.weight("weight")
    if n["num_parameters"] != 1:
        slope = g.op("Reshape", [slope, g.ints([n["num_parameters"]] + [1] * (n.x.rank - 2))])
    return [g.op("PRelu", [_x(n), slope])]


register(OpDef(
    name="PReLU", kind="layer", family="activation", stem="prelu", draws=False,
    doc="LeakyReLU with a learned slope: one shared, or one per channel (num_parameters = channels).",
    params=(ParamSpec("num_parameters", INT, 1, checks.positive), ParamSpec("init", FLOAT, 0.25)),
    infer=_prelu_infer, macs=lambda b, out: 0,
    weights=lambda a: {"weight": (a["num_parameters"],)},
    torch=TorchLayer("nn.PReLU", (), ("num_parameters", "init")),
    onnx=_prelu_onnx,
    examples=(Example({}, (S(2, 3, 4),)), Example({"num_parameters": 3}, (S(2, 3, 4),))),
    arbitrary=lambda d: Example({"num_parameters": d.choice([1, 3])}, (S(2, 3, *d.shape(0, 2, 1, 4)),)),
))
