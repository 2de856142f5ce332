"""Normalization layers: BatchNorm1d/2d/3d, LayerNorm, GroupNorm, InstanceNorm1d/2d.

Each computes y = (x - mean) / sqrt(var + eps) * weight + bias, and they differ
only in the axes the statistics are taken over:
- BatchNorm:    per channel, over the batch and every spatial position
                (running estimates replace them in eval mode when tracked);
- InstanceNorm: per sample and channel, over the spatial positions;
- GroupNorm:    per sample and group of channels, over the group and positions;
- LayerNorm:    per position, over the trailing `normalized_shape` dimensions.
weight and bias (when affine) have one entry per channel, or the
normalized_shape for LayerNorm. The channel count (num_features,
num_channels) and LayerNorm's default normalized_shape come from the input.
"""
from __future__ import annotations

from ..ir.dims import Sym, plain, product, require
from . import checks
from .ptypes import BOOL, FLOAT, INT, ListOf, OneOf, Optional
from .registry import Example, OpDef, ParamSpec, S, ShapeError, TorchLayer, helper, register
from .shapes import divides, need_min_rank, need_rank, same_dim, static


def _affine_macs(flag: str):
    """One multiply-add per output element when there is an affine map, else none counted."""
    return lambda b, out: product(out[0].shape) if b[flag] else 0


def _batch_norm_macs(b, out):
    """None: at inference batch norm is a per-channel scale and shift that folds into the
    convolution or linear layer before it, and PyTorch's FLOP counter (which torchvision's
    published tables come from) counts none. Layer, group and instance norms, which cannot
    fold, count their affine map."""
    return 0


def _channel_weights(a):
    """weight and bias: one entry per channel, when affine."""
    c = a["num_features"] if "num_features" in a else a["num_channels"]
    return {"weight": (c,), "bias": (c,)} if a["affine"] else {}


def _running_stats(a):
    """The running estimates that replace batch statistics in eval mode, when tracked."""
    if not a["track_running_stats"]:
        return {}
    c = a["num_features"]
    return {"running_mean": ((c,), "float32"), "running_var": ((c,), "float32"),
            "num_batches_tracked": ((), "int64")}


def _one_value_per_channel(t, what: str, first: int | None, where=None) -> None:
    """Batch statistics over a single value are undefined: torch raises at run time, so say it now,
    or, where one run-time size is among them (the batch), require more than one value (`B > 1`: the
    generated model checks it when it runs, before torch would raise). Over several run-time sizes
    (an instance norm's H and W) nothing is required: torch's own error stays.

    `first` is the first dimension the statistics range over besides the spatial ones
    (0 for BatchNorm's batch, None for InstanceNorm, which only uses the positions).
    """
    dims = ([t.shape[first]] if first is not None else []) + list(t.shape[2:])
    run_time = sum(isinstance(d, Sym) for d in dims)
    if run_time:
        if run_time == 1:   # a product of several reads as no rule a person writes
            require(product(dims), ">", 1, where)
        return
    if product(plain(d) for d in dims) != 1:
        return
    over = "batch and spatial" if first is not None else "spatial"
    raise ShapeError(f"`{what}` computes its statistics over the {over} dimensions, but {t.shape_str()} "
                     f"has a single value per channel there", code="E0403", input=0,
                     label="one value per channel",
                     help="use a larger input, or track_running_stats=true for evaluation with running statistics")


# ---------------------------------------------------------------- ONNX forms of BatchNorm and InstanceNorm (eval mode)

def _float_dtype(n) -> str:
    """The dtype of constants that meet the input (its own, for the float types numpy has)."""
    return n.x.dtype if n.x.dtype in ("float32", "float64", "float16") else "float32"


def _per_channel(g, n, v: str) -> str:
    """A [C] tensor shaped [C, 1, ...] to broadcast over dimension 1 of the input, as torch does."""
    if n.x.rank <= 2:
        return v
    return g.op("Reshape", [v, g.ints([-1] + [1] * (n.x.rank - 2))])


def _scale_and_bias(g, n, channels: int) -> tuple:
    """weight and bias when affine, else constant ones and zeros of [C]."""
    if n["affine"]:
        return n.weight("weight"), n.weight("bias")
    dtype = _float_dtype(n)
    import numpy as np  # ONNX emission only: `dslc check` starts without numpy
    return g.const(np.ones(channels), dtype, hint="ones"), g.const(np.zeros(channels), dtype, hint="zeros")


def _normalize(g, n, x: str, axes: list) -> str:
    """(x - mean) / sqrt(var + eps) with the mean and biased variance over `axes` (as torch's batch statistics)."""
    axes = g.ints(axes, hint="axes")
    mean = g.op("ReduceMean", [x, axes], keepdims=1, hint="mean")
    centered = g.op("Sub", [x, mean], hint="centered")
    var = g.op("ReduceMean", [g.op("Mul", [centered, centered]), axes], keepdims=1, hint="var")
    std = g.op("Sqrt", [g.op("Add", [var, g.const(float(n["eps"]), _float_dtype(n))])], hint="std")
    return g.op("Div", [centered, std])


def _channel_affine(g, n, y: str) -> str:
    """y * weight + bias per channel (dimension 1), when affine."""
    if not n["affine"]:
        return y
    y = g.op("Mul", [y, _per_channel(g, n, n.weight("weight"))])
    return g.op("Add", [y, _per_channel(g, n, n.weight("bias"))])


def _running_stats_onnx(g, n) -> str:
    """Eval with tracked statistics: BatchNormalization from running_mean / running_var."""
    scale, bias = _scale_and_bias(g, n, n["num_features"])
    return g.op("BatchNormalization", [n.inputs[0], scale, bias, n.weight("running_mean"), n.weight("running_var")],
                epsilon=float(n["eps"]), training_mode=0)


def _batch_norm_onnx(g, n):
    """Running statistics when tracked; else (as torch in eval) the batch's, over N and every position."""
    if n["track_running_stats"]:
        return [_running_stats_onnx(g, n)]
    y = _normalize(g, n, n.inputs[0], [0] + list(range(2, n.x.rank)))
    return [_channel_affine(g, n, y)]


def _instance_norm_onnx(g, n):
    """InstanceNormalization per sample and channel; running statistics in eval when tracked."""
    if n["track_running_stats"]:  # torch: use_input_stats = training or not track_running_stats
        return [_running_stats_onnx(g, n)]
    scale, bias = _scale_and_bias(g, n, n["num_features"])
    return [g.op("InstanceNormalization", [n.inputs[0], scale, bias], epsilon=float(n["eps"]))]


# ---------------------------------------------------------------- BatchNorm / InstanceNorm

_MOMENTUM = ParamSpec("momentum", Optional(FLOAT), 0.1, checks.probability,
                      "weight of each batch in the running statistics; none: a cumulative average")


def _running_norm(name: str, ranks: tuple, layout: str, stem: str, doc: str, instance: bool, examples, draw):
    affine_default, track_default = (False, False) if instance else (True, True)
    eps_check = checks.non_negative_number if instance else checks.positive_number  # torch: BN needs eps > 0

    def resolve(b):
        need_rank(b.x, ranks, name, layout)
        return {"num_features": static(b.x.shape[1], f"`{name}`'s num_features (the input's dimension 1)")}

    def infer(b):
        if not b["track_running_stats"]:  # with running statistics, eval mode does not look at the batch
            _one_value_per_channel(b.x, name, None if instance else 0, b.where)
        return [b.x]

    register(OpDef(
        name=name, kind="layer", family="norm", stem=stem, doc=doc, draws=False,
        category="" if instance else "batchnorm", spatial=None if instance else int(name[-2]),
        params=(ParamSpec("eps", FLOAT, 1e-5, eps_check), _MOMENTUM,
                ParamSpec("affine", BOOL, affine_default), ParamSpec("track_running_stats", BOOL, track_default)),
        resolve=resolve, infer=infer, weights=_channel_weights, buffers=_running_stats,
        macs=_affine_macs("affine") if instance else _batch_norm_macs,
        label=lambda a: f"{name} {a['num_features']}",
        torch=TorchLayer(f"nn.{name}", ("num_features",), ("eps", "momentum", "affine", "track_running_stats")),
        onnx=_instance_norm_onnx if instance else _batch_norm_onnx,
        examples=examples, arbitrary=draw,
    ))


def _norm_args(d) -> dict:
    return {"eps": d.choice([1e-5, 1e-3]), "momentum": d.choice([0.1, None, 0.01]),
            "affine": d.bool(), "track_running_stats": d.bool()}


_running_norm(
    "BatchNorm1d", (2, 3), "[N, C] or [N, C, L]", "bn", instance=False,
    doc="Batch normalization per channel of [N, C] or [N, C, L] input; num_features = C.",
    examples=(Example({}, (S(2, 5),)), Example({"affine": False, "momentum": None}, (S(2, 4, 6),)),
              Example({"track_running_stats": False}, (S(3, 4, 2),))),
    draw=lambda d: Example(_norm_args(d), (S(2, d.int(1, 6), *d.shape(0, 1, 1, 5)),)))

_running_norm(
    "BatchNorm2d", (4,), "[N, C, H, W]", "bn", instance=False,
    doc="Batch normalization per channel of [N, C, H, W] input; num_features = C.",
    examples=(Example({}, (S(2, 3, 4, 4),)), Example({"eps": 1e-3, "track_running_stats": False}, (S(2, 3, 2, 5),))),
    draw=lambda d: Example(_norm_args(d), (S(2, d.int(1, 6), d.int(1, 4), d.int(1, 4)),)))

_running_norm(
    "BatchNorm3d", (5,), "[N, C, D, H, W]", "bn", instance=False,
    doc="Batch normalization per channel of [N, C, D, H, W] input; num_features = C.",
    examples=(Example({}, (S(2, 3, 2, 3, 4),)), Example({"affine": False}, (S(2, 2, 1, 2, 2),))),
    draw=lambda d: Example(_norm_args(d), (S(2, d.int(1, 4), *d.shape(3, 3, 1, 3)),)))

_running_norm(
    "InstanceNorm1d", (3,), "[N, C, L]", "inorm", instance=True,
    doc="Normalizes each channel of each sample of [N, C, L] input over L; num_features = C.",
    examples=(Example({}, (S(2, 3, 5),)), Example({"affine": True, "track_running_stats": True}, (S(2, 4, 3),))),
    draw=lambda d: Example(_norm_args(d), (S(2, d.int(1, 5), d.int(2, 6)),)))

_running_norm(
    "InstanceNorm2d", (4,), "[N, C, H, W]", "inorm", instance=True,
    doc="Normalizes each channel of each sample of [N, C, H, W] input over H and W; num_features = C.",
    examples=(Example({}, (S(2, 3, 4, 4),)), Example({"affine": True, "eps": 1e-3}, (S(2, 2, 1, 3),))),
    draw=lambda d: Example(_norm_args(d), (S(2, d.int(1, 5), d.int(2, 4), d.int(1, 4)),)))


# ---------------------------------------------------------------- LayerNorm

def _nonempty_positive(v) -> str | None:
    if isinstance(v, tuple) and not v:
        return "must name at least one dimension"
    return checks.positive(v)


def _dims(ns) -> tuple:
    return ns if isinstance(ns, tuple) else (ns,)


def _layer_norm_resolve(b):
    t, ns = b.x, b["normalized_shape"]
    if ns is None:  # torch wants it in the constructor: the last dimension, as people write it
        need_min_rank(t, 1, "LayerNorm")
        return {"normalized_shape": static(t.shape[-1], "`LayerNorm`'s normalized_shape (the input's last dimension)")}
    want = _dims(ns)
    if t.rank < len(want):
        raise ShapeError(f"`LayerNorm` over {_show(want)} needs an input with at least {len(want)} dimensions, "
                         f"got {t.shape_str()}", code="E0402", input=0, arg="normalized_shape")
    have = t.shape[t.rank - len(want):]
    for h, w in zip(have, want):
        if isinstance(h, Sym):   # a run-time size: it must be normalized_shape's, which the forward checks
            require(h, "==", plain(w), b.where)
        elif not same_dim(h, w, b.where):
            raise ShapeError(f"`LayerNorm` normalizes over {_show(want)}, but the input {t.shape_str()} ends in "
                             f"{_show(have)}", code="E0403", arg="normalized_shape",
                             label="must equal the input's trailing dimensions",
                             help="leave normalized_shape out to normalize over the last dimension")
    return {}


def _show(dims) -> str:
    return "[" + ", ".join(str(d) if isinstance(d, Sym) else str(plain(d)) for d in dims) + "]"


def _layer_norm_weights(a):
    if not a["elementwise_affine"]:
        return {}
    shape = _dims(a["normalized_shape"])
    return {"weight": shape, **({"bias": shape} if a["bias"] else {})}


def _layer_norm_draw(d):
    shape = (2,) + d.shape(1, 3, 1, 5)
    ns = d.choice([None, "int", "list"])
    n = d.int(1, len(shape))
    args = {"eps": d.choice([1e-5, 1e-6]), "elementwise_affine": d.bool(), "bias": d.bool()}
    if ns == "int":
        args["normalized_shape"] = shape[-1]
    elif ns == "list":
        args["normalized_shape"] = list(shape[len(shape) - n:])
    return Example(args, (S(*shape),))


def _layer_norm_onnx(g, n):
    """LayerNormalization over the trailing normalized_shape; constant scale 1 without an affine map."""
    shape = tuple(_dims(n["normalized_shape"]))
    if n["elementwise_affine"]:
        inputs = [n.weight("weight")] + ([n.weight("bias")] if n["bias"] else [])
    else:
        import numpy as np
        inputs = [g.const(np.ones(shape), _float_dtype(n), hint="ones")]
    # no bias: B is left off, not passed empty (onnxruntime 1.32 crashes on an empty trailing B)
    return [g.op("LayerNormalization", [n.inputs[0]] + inputs, axis=-len(shape), epsilon=float(n["eps"]))]


register(OpDef(
    name="LayerNorm", kind="layer", family="norm", stem="norm", draws=False,
    doc="Normalizes over the trailing normalized_shape dimensions (default: the last dimension of the input).",
    params=(ParamSpec("normalized_shape", Optional(OneOf((INT, ListOf(INT)))), None, _nonempty_positive,
                      "the trailing dimensions to normalize over; none: the input's last"),
            ParamSpec("eps", FLOAT, 1e-5, checks.non_negative_number),
            ParamSpec("elementwise_affine", BOOL, True),
            ParamSpec("bias", BOOL, True)),
    resolve=_layer_norm_resolve,
    infer=lambda b: [b.x],
    weights=_layer_norm_weights,
    macs=_affine_macs("elementwise_affine"),
    label=lambda a: "LayerNorm " + "×".join(str(plain(d)) for d in _dims(a["normalized_shape"])),
    torch=TorchLayer("nn.LayerNorm", ("normalized_shape",), ("eps", "elementwise_affine", "bias")),
    onnx=_layer_norm_onnx,
    examples=(Example({}, (S(2, 3, 8),)),
              Example({"normalized_shape": [3, 4], "elementwise_affine": True}, (S(2, 3, 4),)),
              Example({"normalized_shape": 6, "bias": False, "eps": 1e-6}, (S(2, 6),)),
              Example({"elementwise_affine": False}, (S(2, 5),))),
    arbitrary=_layer_norm_draw,
))


# ---------------------------------------------------------------- GroupNorm

def _group_norm_resolve(b):
    t, g = b.x, b["num_groups"]
    need_min_rank(t, 2, "GroupNorm")
    c = static(t.shape[1], "`GroupNorm`'s num_channels (the input's dimension 1)")
    if not divides(c, g, b.where):
        raise ShapeError(f"`GroupNorm`'s {plain(g)} groups do not divide the {plain(c)} channels of "
                         f"{t.shape_str()}", code="E0405", arg="num_groups",
                         label=f"does not divide {plain(c)}",
                         help="num_groups must divide the input's dimension 1")
    return {"num_channels": c}


def _group_norm_infer(b):
    t = b.x
    # torch checks (in train and eval mode) that each group holds more than one value.
    dims = [t.shape[0]] + list(t.shape[2:])
    if not any(isinstance(d, Sym) for d in dims) and \
            product(plain(d) for d in dims) * (plain(b["num_channels"]) // plain(b["num_groups"])) == 1:
        raise ShapeError(f"`GroupNorm` with {plain(b['num_groups'])} groups of one channel each has a single "
                         f"value per group in {t.shape_str()}", code="E0403", input=0,
                         label="one value per group", help="use fewer groups or a larger input")
    return [t]


def _group_norm_onnx(g, n):
    """Written out (GroupNormalization is opset 21) with the arithmetic of torch's CPU kernel."""
    x, groups, channels, dtype = n.inputs[0], n["num_groups"], n["num_channels"], n.x.dtype
    grouped = g.op("Reshape", [x, g.ints([0, groups, -1])], hint="grouped")  # [N, G, D * positions]; 0 keeps N
    axes = g.ints([2], hint="axes")
    mean = g.op("ReduceMean", [grouped, axes], keepdims=1, hint="mean")
    centered = g.op("Sub", [grouped, mean], hint="centered")
    var = g.op("ReduceMean", [g.op("Mul", [centered, centered]), axes], keepdims=1, hint="var")
    # rstd = 1 / sqrt(var + eps), formed in float64 and rounded, as torch does
    std = g.op("Sqrt", [g.op("Add", [g.cast(var, "float64"), g.const(float(n["eps"]), "float64")])])
    rstd = g.cast(g.op("Div", [g.const(1.0, "float64"), std]), dtype)
    if not n["affine"]:  # torch: (x - mean) * rstd
        return [g.op("Reshape", [g.op("Mul", [centered, rstd]), g.op("Shape", [x])])]
    # torch: y = x * scale + shift per sample and channel, scale = rstd * weight, shift = bias - mean * scale
    per_channel = [0, channels] + [1] * (n.x.rank - 2)

    def spread(v):
        """[N, G, 1] -> [N, C, 1, ...]: each group's value for each of its channels."""
        return g.op("Reshape", [g.op("Expand", [v, g.ints([1, 1, channels // groups])]), g.ints(per_channel)])

    scale = g.op("Mul", [spread(rstd), _per_channel(g, n, n.weight("weight"))], hint="scale")
    shift = g.op("Sub", [g.cast(_per_channel(g, n, n.weight("bias")), "float64"),
                         g.op("Mul", [g.cast(spread(mean), "float64"), g.cast(scale, "float64")])])
    shift = g.cast(shift, dtype)
    if all(not isinstance(d, Sym) and plain(d) == 1 for d in n.x.shape[2:]):
        # one value per channel: torch's fused multiply-add (an exact product, one rounding) is float64's
        y = g.op("Add", [g.op("Mul", [g.cast(x, "float64"), g.cast(scale, "float64")]),
                         g.cast(shift, "float64")])
        return [g.cast(y, dtype)]
    return [g.op("Add", [g.op("Mul", [x, scale]), shift])]


register(OpDef(
    name="GroupNorm", kind="layer", family="norm", stem="gn", draws=False,
    doc="Normalizes each group of channels of each sample of [N, C, *] input; num_groups must divide C.",
    params=(ParamSpec("num_groups", INT, check=checks.positive),
            ParamSpec("eps", FLOAT, 1e-5, checks.non_negative_number),
            ParamSpec("affine", BOOL, True)),
    resolve=_group_norm_resolve,
    infer=_group_norm_infer,
    weights=_channel_weights,
    macs=_affine_macs("affine"),
    label=lambda a: f"GroupNorm {a['num_channels']} ({a['num_groups']} groups)",
    torch=TorchLayer("nn.GroupNorm", ("num_groups", "num_channels"), ("eps", "affine")),
    onnx=_group_norm_onnx,
    examples=(Example({"num_groups": 2}, (S(2, 4, 3, 3),)), Example({"num_groups": 3, "affine": False}, (S(2, 6),)),
              Example({"num_groups": 1, "eps": 1e-3}, (S(2, 4, 5),))),
    arbitrary=lambda d: (lambda g, k: Example({"num_groups": g, "eps": d.choice([1e-5, 1e-3]), "affine": d.bool()},
                                              (S(2, g * k, *d.shape(0, 2, 1, 4)),)))(d.int(1, 4), d.int(1, 3)),
))


# ---------------------------------------------------------------- batch norm folded into the layer before it (-O2)

helper("folded_batchnorm", '''
    def folded_batchnorm(weight, bias, mean, var, gamma, beta, eps: float):
        """The weight and bias of a layer followed by a batch norm in eval mode, as one layer:
        weight * s and (bias - mean) * s + beta per output channel, where s = gamma / sqrt(var + eps)."""
        scale = torch.rsqrt(var + eps)
        if gamma is not None:
            scale = scale * gamma
        shift = -mean * scale if bias is None else (bias - mean) * scale
        if beta is not None:
            shift = shift + beta
        return weight * scale.reshape(-1, *[1] * (weight.dim() - 1)), shift
''')

helper("fold_batchnorm", '''
    def fold_batchnorm(layer, bn):
        """`layer` (a convolution or linear layer) with the batch norm `bn` after it folded in, for inference."""
        with torch.no_grad():
            weight, bias = folded_batchnorm(layer.weight, layer.bias, bn.running_mean, bn.running_var,
                                            bn.weight, bn.bias, bn.eps)
            layer.weight.copy_(weight)
            if layer.bias is None:
                layer.bias = nn.Parameter(bias)
            else:
                layer.bias.copy_(bias)
        return layer
''', needs=("folded_batchnorm",))

helper("unoptimized_weights", '''
    def unoptimized_weights(folded: dict, dropped: tuple = ()):
        """A load_state_dict pre-hook, so that a checkpoint of the unoptimized model loads into this one:
        `folded` maps a layer to (its batch norm, eps), whose entries fold into the layer's as they load;
        the entries of `dropped` layers (removed as unused) are skipped."""
        def hook(module, state, prefix, *args):
            for name in dropped:
                for key in [k for k in state if k.startswith(f"{prefix}{name}.") or k == prefix + name]:
                    del state[key]
            for layer, (bn, eps) in folded.items():
                p, q = f"{prefix}{layer}.", f"{prefix}{bn}."
                if q + "running_mean" not in state:
                    continue  # a checkpoint of the folded model itself
                stats = [state.pop(q + k, None) for k in ("running_mean", "running_var", "weight", "bias")]
                state.pop(q + "num_batches_tracked", None)
                state[p + "weight"], state[p + "bias"] = folded_batchnorm(state[p + "weight"], state.get(p + "bias"),
                                                                          *stats, eps)
        return hook
''', needs=("folded_batchnorm",))
