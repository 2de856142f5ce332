"""Padding: the layers ReflectionPad1d/2d/3d, ReplicationPad1d/2d/3d, CircularPad1d/2d/3d,
ZeroPad1d/2d/3d and ConstantPad1d/2d/3d, the function `pad` (F.pad), and PixelUnshuffle.

`padding` is torch's: one int for every side, or (left, right, top, bottom, front, back), the
last dimension first. A negative amount crops. torch crops first and pads what is left, so the
checks (a reflection narrower than the dimension, a circular wrap at most once) and the ONNX
emission (Slice, then Pad) work on the cropped size. Constant padding applies to any input with
enough dimensions; the other modes to [C, ...] or [N, C, ...] inputs with n spatial dimensions,
as in torch. No padding has weights or MACs.
"""
from __future__ import annotations

from ..ir.dims import Sym, plain, require
from .checks import positive
from .onnxpad import pad_onnx
from .ptypes import FLOAT, INT, TENSOR, Ints, ListOf, Str
from .registry import Example, OpDef, ParamSpec, S, ShapeError, TorchFunction, TorchLayer, register
from .shapes import divides, need_min_rank, need_rank

MODES = ("constant", "reflect", "replicate", "circular")


def pairs(padding, n: int) -> list[tuple]:
    """(before, after) for each of the last `n` dims, outermost first, from torch's order
    (the last dim's pair first)."""
    flat = (padding,) * (2 * n) if not isinstance(padding, (tuple, list)) else tuple(padding)
    return [(flat[2 * k], flat[2 * k + 1]) for k in reversed(range(len(flat) // 2))]


def padded_shape(t, amounts: list[tuple], mode: str, what: str, arg: str, where=None):
    """The shape of `t` padded by `amounts` on its last dims, with torch's checks of each mode; on a
    run-time size, a reflection or a wrap becomes a run-time requirement (checked by the forward)."""
    shape = list(t.shape)
    first = t.rank - len(amounts)
    for i, (before, after) in enumerate(amounts):
        size = shape[first + i]
        kept = size + min(plain(before), 0) + min(plain(after), 0)
        out = kept + max(plain(before), 0) + max(plain(after), 0)
        most = max(plain(before), plain(after))
        if not isinstance(size, Sym):
            _check_side(plain(kept), plain(out), most, mode, what, arg, first + i, t)
        elif mode in ("reflect", "circular"):
            require(kept, ">" if mode == "reflect" else ">=", most, where)
        else:
            require(kept, ">=", 1, where)   # what a crop leaves
        shape[first + i] = size + before + after
    return t.with_shape(tuple(shape))


def _check_side(kept: int, out: int, most: int, mode: str, what: str, arg: str, dim: int, t) -> None:
    if kept < 0 or out < 1:   # torch's other modes refuse an empty result; an empty one is refused here too
        raise ShapeError(f"`{what}` crops dimension {dim} of {t.shape_str()} below nothing", code="E0403", arg=arg)
    if mode == "reflect" and most >= kept:
        raise ShapeError(f"`{what}` reflects {most} on dimension {dim} of {t.shape_str()}, which needs a padding "
                         f"smaller than the size ({kept})", code="E0403", arg=arg,
                         help="reflection cannot repeat the edge; use replicate or circular padding for more")
    if mode == "circular" and most > kept:
        raise ShapeError(f"`{what}` wraps {most} on dimension {dim} of {t.shape_str()}, more than its size ({kept})",
                         code="E0403", arg=arg)
    if mode == "replicate" and kept == 0:
        raise ShapeError(f"`{what}` replicates an empty dimension {dim} of {t.shape_str()}", code="E0403", arg=arg)


def need_pad_rank(t, n: int, mode: str, what: str) -> None:
    """Constant padding needs n dims; the other modes, as torch, [C, ...] or [N, C, ...] with n spatial dims."""
    if mode == "constant":
        need_min_rank(t, n, what)
    else:
        need_rank(t, (n + 1, n + 2), what, f"[C, {n} spatial dims] or [N, C, {n} spatial dims]")


def _zero_macs(b, out):
    return 0


# ---------------------------------------------------------------- the layers

def _layer_infer(mode: str, n: int, name: str):
    def infer(b):
        need_pad_rank(b.x, n, mode, name)
        return [padded_shape(b.x, pairs(b["padding"], n), mode, name, "padding", b.where)]
    return infer


def _layer_onnx(mode: str, n: int):
    def emit(g, n_):
        value = float(plain(n_.args.get("value", 0.0)))
        return [pad_onnx(g, n_.inputs[0], n_.x.rank - n, pairs(n_["padding"], n), mode, value, n_.x.dtype)]
    return emit


def _layer_functional(mode: str, n: int):
    def emit(e) -> str:
        amounts = pairs(e["padding"], n)
        flat = [v for before, after in reversed(amounts) for v in (before, after)]
        extra = f", mode={e.fmt(mode)}" if mode != "constant" else ""
        if float(plain(e.args.get("value", 0.0))) != 0.0:
            extra = f", value={e.fmt(e.args['value'])}"
        return f"F.pad({e.inputs[0]}, {e.fmt(tuple(flat))}{extra})"
    return emit


def _layer_label(name: str):
    def label(a) -> str:
        p = a["padding"]
        text = ", ".join(str(plain(v)) for v in p) if isinstance(p, (tuple, list)) else str(plain(p))
        return f"{name} {text}"
    return label


_LAYERS = (("ReflectionPad", "reflect"), ("ReplicationPad", "replicate"), ("CircularPad", "circular"),
           ("ZeroPad", "constant"), ("ConstantPad", "constant"))
_SHAPES = {1: (S(2, 3, 6), S(3, 5)), 2: (S(2, 3, 5, 6), S(3, 4, 5)), 3: (S(1, 2, 4, 5, 6), S(2, 3, 4, 5))}


def _layer_examples(stem: str, n: int) -> tuple:
    cropping = tuple([1, -1] * n)
    out = [Example({"padding": 2}, (_SHAPES[n][0],)), Example({"padding": (1, 2, 0, 1, 2, 0)[: 2 * n]}, (_SHAPES[n][1],)),
           Example({"padding": cropping}, (_SHAPES[n][0],))]
    if stem == "ConstantPad":
        out = [Example({**e.args, "value": 1.5}, e.inputs) for e in out]
    return tuple(out)


def _layer_arbitrary(stem: str, mode: str, n: int):
    def draw(d):
        shape = [d.int(1, 2), d.int(1, 3)][: d.int(1, 2)] + [d.int(1, 5) for _ in range(n)]
        padding = d.choice([d.int(0, 3), tuple(d.int(-2, 3) for _ in range(2 * n))])
        args = {"padding": padding}
        if stem == "ConstantPad":
            args["value"] = d.choice([0.0, -1.0, 2.5])
        return Example(args, (S(*shape),))
    return draw


def _register_layer(stem: str, mode: str, n: int) -> None:
    name = f"{stem}{n}d"
    params = (ParamSpec("padding", Ints(2 * n), doc=f"one int, or {2 * n} (the last dimension's first)"),)
    keywords = ()
    if stem == "ConstantPad":
        params += (ParamSpec("value", FLOAT, doc="the value padded in"),)
        keywords = ("value",)
    register(OpDef(
        name=name, kind="layer", family="pool", stem="pad",
        doc=f"Pads the last {n} dimension{'s' if n > 1 else ''} by {mode} padding "
            f"({'zeros' if stem == 'ZeroPad' else 'a constant' if mode == 'constant' else mode}); negative amounts crop.",
        params=params, infer=_layer_infer(mode, n, name), macs=_zero_macs, label=_layer_label(name),
        onnx=_layer_onnx(mode, n), dtypes=None,
        torch=TorchLayer(f"nn.{name}", ("padding",) + keywords, functional=_layer_functional(mode, n)),
        examples=_layer_examples(stem, n), arbitrary=_layer_arbitrary(stem, mode, n)))


for _stem, _mode in _LAYERS:
    for _n in (1, 2, 3):
        _register_layer(_stem, _mode, _n)


# ---------------------------------------------------------------- pad (F.pad)

def _pad_infer(b):
    flat = b["pad"]
    if not flat or len(flat) % 2:
        raise ShapeError(f"`pad` takes an even number of amounts (before and after, last dimension first), "
                         f"got {len(flat)}", code="E0302", arg="pad")
    n, mode = len(flat) // 2, b["mode"]
    if mode != "constant" and n > 3:
        raise ShapeError(f"{mode} padding pads at most 3 dimensions, got {n} pairs", code="E0302", arg="pad")
    if n > b.x.rank:
        raise ShapeError(f"`pad` pads {n} dimensions of a {b.x.rank}-d tensor {b.x.shape_str()}",
                         code="E0406", arg="pad")
    need_pad_rank(b.x, n, mode, "pad")
    return [padded_shape(b.x, pairs(tuple(flat), n), mode, "pad", "pad", b.where)]


def _pad_src(e) -> str:
    extra = f", mode={e.fmt(e['mode'])}" if e["mode"] != "constant" else ""
    if e["mode"] == "constant" and float(plain(e["value"])) != 0.0:
        extra += f", value={e.fmt(e['value'])}"
    return f"F.pad({e.arg('input')}, {e.fmt(tuple(e['pad']))}{extra})"


def _pad_onnx(g, n):
    flat = tuple(n["pad"])
    return [pad_onnx(g, n.inputs[0], n.x.rank - len(flat) // 2, pairs(flat, len(flat) // 2), n["mode"],
                     float(plain(n["value"])), n.x.dtype)]


register(OpDef(
    name="pad", kind="function", family="pool",
    doc="Pads (or, by negative amounts, crops) the last dimensions, as `F.pad`: `pad` lists (before, after) "
        "for the last dimension, then the one before it, ...; `mode` constant (with `value`), reflect, "
        "replicate or circular.",
    params=(ParamSpec("input", TENSOR), ParamSpec("pad", ListOf(INT)),
            ParamSpec("mode", Str(MODES), "constant"), ParamSpec("value", FLOAT, 0.0)),
    infer=_pad_infer, macs=_zero_macs, torch=TorchFunction(_pad_src), onnx=_pad_onnx,
    label=lambda a: f"pad {a['mode']}",
    examples=(Example({"input": S(2, 3, 5), "pad": [1, 2]}),
              Example({"input": S(2, 3, 5, 6), "pad": [1, 2, 0, 1], "mode": "reflect"}),
              Example({"input": S(2, 3, 5, 6), "pad": [2, -1, 1, 1], "mode": "circular"}),
              Example({"input": S(1, 2, 3, 4, 5), "pad": [1, 1, 1, 1, 1, 1], "mode": "replicate"}),
              Example({"input": S(4, 5), "pad": [1, 0, 2, 3], "value": -1.0})),
    arbitrary=lambda d: (lambda mode, rank: Example({
        "input": S(*[d.int(2, 5) for _ in range(rank)]),
        "pad": [d.int(-1, 2) for _ in range(2 * d.int(1, min(rank - 1, 3) if mode != "constant" else rank))],
        "mode": mode, "value": d.choice([0.0, 1.0])}))(d.choice(MODES), d.int(2, 4)),
))


# ---------------------------------------------------------------- PixelUnshuffle

def _pixel_unshuffle_infer(b):
    need_min_rank(b.x, 3, "PixelUnshuffle")
    r = b["downscale_factor"]
    c, h, w = b.x.shape[-3:]
    for size, what in ((h, "height"), (w, "width")):
        if not divides(size, r, b.where):
            raise ShapeError(f"`PixelUnshuffle({plain(r)})` needs a {what} divisible by {plain(r)}, got "
                             f"{b.x.shape_str()}", code="E0405", input=0)
    return [b.x.with_shape(b.x.shape[:-3] + (c * r * r, h // r, w // r))]


def _pixel_unshuffle_onnx(g, n):
    """[*, C, H·r, W·r] → [N', C, H, r, W, r] → transpose to [N', C, r, r, H, W] → [*, C·r², H, W]:
    torch's order (output channel c·r² + i·r + j is pixel (h·r + i, w·r + j) of c), which is not
    SpaceToDepth's."""
    r = plain(n["downscale_factor"])
    c, h, w = n.x.shape[-3:]
    x = g.op("Reshape", [n.inputs[0], g.shape([-1, c, h // r, r, w // r, r])])
    x = g.op("Transpose", [x], perm=[0, 1, 3, 5, 2, 4])
    return [g.op("Reshape", [x, g.shape(n.outputs[0].shape)])]


register(OpDef(
    name="PixelUnshuffle", kind="layer", family="pool", stem="pixel_unshuffle",
    doc="Rearranges [*, C, H·r, W·r] into [*, C·r², H, W] (the inverse of PixelShuffle).",
    params=(ParamSpec("downscale_factor", INT, check=positive),),
    infer=_pixel_unshuffle_infer, macs=_zero_macs, onnx=_pixel_unshuffle_onnx,
    label=lambda a: f"PixelUnshuffle ÷{plain(a['downscale_factor'])}",
    torch=TorchLayer("nn.PixelUnshuffle", ("downscale_factor",),
                     functional=lambda e: f"F.pixel_unshuffle({e.inputs[0]}, {e.fmt(e['downscale_factor'])})"),
    examples=(Example({"downscale_factor": 2}, (S(2, 3, 4, 6),)), Example({"downscale_factor": 3}, (S(2, 1, 2, 6, 3),))),
    arbitrary=lambda d: (lambda r: Example({"downscale_factor": r},
                                           (S(*d.shape(0, 2, 1, 2), d.int(1, 3), r * d.int(1, 3), r * d.int(1, 3)),)))(
        d.int(1, 3)),
))
