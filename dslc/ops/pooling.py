"""Pooling and resizing: MaxPool1d/2d, AvgPool1d/2d, AdaptiveAvgPool1d/2d,
AdaptiveMaxPool1d/2d, Upsample (and, with its rule, `interpolate`, UpsamplingNearest2d and
UpsamplingBilinear2d) and PixelShuffle. None has weights.

Windowed pools, per spatial dimension (kernel k, stride s = k when not given,
padding p ≤ ⌊k/2⌋, dilation d for max pools, span d·(k−1)+1), as torch's
`pooling_output_shape`:

    floor mode  out = ⌊(in + 2p − span) / s⌋ + 1
    ceil mode   out = ⌈(in + 2p − span) / s⌉ + 1, less one when the last window
                would start at or past in + p (inside the right padding only)
    torch fails when out < 1.

The ceil-mode correction can only fire when s > span − p; with a run-time size
(`T`) in that case it cannot be decided at compile time (E0311).

Adaptive pools give `output_size` directly (an int for every dimension, or a
list where `none` keeps that input size; 1-d pools take no `none`).

Upsample: out = `size`, or ⌊in · scale_factor⌋ in double precision as torch
computes it; `mode` fixes the rank (linear 3-d, bilinear/bicubic 4-d,
trilinear 5-d, nearest any of 3–5-d). PixelShuffle(r): [*, C, H, W] →
[*, C/r², H·r, W·r].

MACs: all 0. Max pools only compare; average pools, Upsample's interpolation
and PixelShuffle's reshuffle are not counted either, following the
torchvision/fvcore FLOP tables, which count only multiply-adds of
convolutions, linear maps and matrix products.

ONNX (opset 18): max pools pad with −∞ explicitly and average pools divide by
the taps inside their (explicitly zero-padded, for count_include_pad) input, so
that ceil mode's windows are torch's whatever a runtime's ceil rule is.
Adaptive pools: a global pool, an ordinary pool where the size divides, else
torch's bins one by one. Upsample is Resize with torch's coordinates (and a
Gather of torch's own indices where nearest's float32 arithmetic differs);
PixelShuffle is DepthToSpace in CRD order.

Unnamed pooling layers are written as functional calls (`F.max_pool2d(x, 2)`,
`F.adaptive_avg_pool2d(x, 1)`, `F.interpolate(x, scale_factor=2.0,
mode="bilinear")`, `F.pixel_shuffle(x, 2)`), as people write them by hand.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

from ..ir.dims import Real, Sym, plain, plain_float, require
from . import checks
from .nans import nan_mask, with_nans
from .ptypes import BOOL, FLOAT, INT, TENSOR, ArgTypeError, Ints, ListOf, OneOf, Optional, PType, Str, is_int
from .registry import REGISTRY, Example, OpDef, ParamSpec, S, ShapeError, TorchFunction, TorchLayer, register
from .shapes import divides, need_min_rank, need_rank, ntuple

LAYOUT = {1: "[C, L] or [N, C, L]", 2: "[C, H, W] or [N, C, H, W]"}


def _zero_macs(b, out):
    return 0


def _text(v, n: int) -> str:
    return "×".join("·" if x is None else str(plain(x)) for x in ntuple(v, n))


# ---------------------------------------------------------------- windowed pools

def _window_out(size, k, s, p, d, ceil: bool, name: str, dim: int, where=None):
    """One output length, exactly as torch's pooling_output_shape; on a run-time size, an output of at
    least 1 is a run-time requirement."""
    span = d * (k - 1) + 1
    if not ceil:
        out = (size + 2 * p - span) // s + 1
    else:
        out = (size + 2 * p - span + s - 1) // s + 1
        if s - (span - p) > 0:  # only then can the last window start in the right padding
            last = (out - 1) * s - (size + p)
            if isinstance(last, Sym):
                raise ShapeError(f"`{name}` with ceil_mode=true and a stride ({plain(s)}) larger than its window "
                                 f"less the padding ({plain(span - p)}): whether the last window is dropped "
                                 f"depends on the run-time size `{size}`",
                                 code="E0311", arg="ceil_mode", input=0,
                                 help="give that dimension a fixed size, or use ceil_mode=false")
            if last >= 0:
                out = out - 1
    if isinstance(out, Sym):
        require(out, ">=", 1, where)   # torch's "output size is too small" (ceil mode may overhang)
    elif plain(out) < 1:
        pad = f" + 2×{plain(p)} padding" if plain(p) else ""
        raise ShapeError(f"`{name}`'s window spans {plain(span)} but dimension {dim} of the input is only "
                         f"{plain(size)}{pad} wide", code="E0404", input=0,
                         label="window larger than its input", help="use a smaller kernel or a larger input")
    return out


def _pool_infer(n: int, dilated: bool):
    def infer(b):
        name = b.op.name
        need_rank(b.x, (n + 1, n + 2), name, LAYOUT[n])
        k = ntuple(b["kernel_size"], n)
        s = ntuple(b["kernel_size"] if b["stride"] is None else b["stride"], n)
        p = ntuple(b["padding"], n)
        d = ntuple(b["dilation"], n) if dilated else (1,) * n
        for ki, pi in zip(k, p):
            if plain(pi) > plain(ki) // 2:
                raise ShapeError(f"`{name}`'s padding {plain(pi)} must be at most half its kernel size "
                                 f"{plain(ki)}", code="E0302", arg="padding", label="too much padding",
                                 help=f"torch allows padding up to kernel_size // 2 = {plain(ki) // 2}")
        lead = b.x.rank - n
        spatial = tuple(_window_out(size, k[i], s[i], p[i], d[i], b["ceil_mode"], name, lead + i, b.where)
                        for i, size in enumerate(b.x.shape[lead:]))
        return [b.x.with_shape(b.x.shape[:lead] + spatial)]
    return infer


def _pool_functional(fn: str, keys: tuple):
    """`F.max_pool2d(x, 2, stride=1)`: the kernel positionally, the rest by name when not the default."""
    return lambda e: f"{fn}({e.inputs[0]}, {e.fmt(e['kernel_size'])}{''.join(e.kw(k) for k in keys)})"


def _pool_label(n: int, ctor: str):
    def label(a) -> str:
        text = f"{ctor} {_text(a['kernel_size'], n)}"
        if a["stride"] is not None and _text(a["stride"], n) != _text(a["kernel_size"], n):
            strides = {_text(x, 1) for x in ntuple(a["stride"], n)}
            text += f" /{strides.pop()}" if len(strides) == 1 else f" /{_text(a['stride'], n)}"
        return text
    return label


def _pool_arbitrary(n: int, dilated: bool):
    def draw(d):
        k = [d.int(1, 4) for _ in range(n)]
        dil = [d.int(1, 2) if dilated else 1 for _ in range(n)]
        p = [d.int(0, kk // 2) for kk in k]
        # at least the window's span, less the padding: the output is never empty
        sizes = [max(1, dl * (kk - 1) + 1 - 2 * pp) + d.int(0, 6) for kk, dl, pp in zip(k, dil, p)]
        args = {"kernel_size": d.choice([k, k[0]]) if len(set(k)) == 1 else k,
                "stride": d.choice([None, d.int(1, 3), [d.int(1, 3) for _ in range(n)]]),
                "padding": d.choice([p, p[0]]) if len(set(p)) == 1 else p, "ceil_mode": d.bool()}
        if dilated:
            args["dilation"] = d.choice([dil, dil[0]]) if len(set(dil)) == 1 else dil
        else:
            args["count_include_pad"] = d.bool()
        batch = (2,) if d.int(0, 3) else ()
        return Example(args, (S(*batch, 3, *sizes),))
    return draw


def _batched(g, x: str, lead: int) -> str:
    """ONNX pools want [N, C, ...]: an unbatched [C, ...] input gets a batch of 1."""
    return g.op("Unsqueeze", [x, g.ints([0])]) if lead == 1 else x


def _unbatched(g, y: str, lead: int) -> str:
    return g.op("Squeeze", [y, g.ints([0])]) if lead == 1 else y


def _some(v) -> bool:
    """Whether a size is non-zero (a run-time one may be: it counts as some)."""
    return isinstance(v, Sym) or plain(v) != 0


def _pool_geometry(n, dims: int, dilated: bool):
    """Kernel, stride (the kernel when not given), padding and dilation, per dimension; and the
    number of leading dimensions (1 unbatched, 2 batched)."""
    ints = lambda v: [plain(x) for x in ntuple(v, dims)]  # noqa: E731
    k = ints(n["kernel_size"])
    s = ints(n["kernel_size"] if n["stride"] is None else n["stride"])
    p = ints(n["padding"])
    d = ints(n["dilation"]) if dilated else [1] * dims
    return k, s, p, d, n.x.rank - dims


def _ceil_extra(n, k: list, s: list, p: list, d: list, lead: int) -> list:
    """The right padding beyond p that ceil mode's last window needs (a run-time size's is computed).

    Every window torch keeps starts inside the input or the left padding, so ceil mode is floor
    mode over an input with (out − 1)·s + span − (in + 2p) more on the right (none when negative:
    torch dropped the last window): the windows are torch's, whatever a runtime's ceil rule does."""
    if not n["ceil_mode"]:
        return [0] * len(k)
    extra = []
    for i, (size, out) in enumerate(zip(n.x.shape[lead:], n.outputs[0].shape[lead:])):
        e = (out - 1) * s[i] + d[i] * (k[i] - 1) + 1 - size - 2 * p[i]
        extra.append(e if isinstance(e, Sym) else max(plain(e), 0))
    return extra


def _lowest(dtype: str):
    """What max pooling pads with: −∞, or an integer type's least value."""
    import numpy as np
    return float("-inf") if dtype in ("float16", "bfloat16", "float32", "float64") else np.iinfo(dtype).min


def _max_pool_onnx(dims: int):
    def emit(g, n):
        """MaxPool over the input padded with −∞ (p each side, and ceil mode's extra on the right).

        Padding explicitly keeps a window made only of padding at −∞ as torch has it (onnxruntime's
        own padding gives −FLT_MAX there), and needs no ceil_mode."""
        k, s, p, d, lead = _pool_geometry(n, dims, dilated=True)
        extra = _ceil_extra(n, k, s, p, d, lead)
        x = _batched(g, n.inputs[0], lead)
        if all(di == 1 for di in d) and not any(_some(e) for e in extra):
            # no dilation and no ceil overhang: every window holds a real value (torch keeps
            # p ≤ k/2), so ONNX's own padding is exact, and spares a copy of the input
            def pool(z):
                return g.op("MaxPool", [z], kernel_shape=k, strides=s, pads=p + p if any(p) else None)
            return [_unbatched(g, _nan_max(g, pool, x, n.x.dtype), lead)]
        if any(p) or any(_some(e) for e in extra):
            pads = g.shape([0, 0] + p + [0, 0] + [pi + e for pi, e in zip(p, extra)])
            x = g.op("Pad", [x, pads, g.const(_lowest(n.x.dtype), dtype=n.x.dtype)])
        return [_unbatched(g, _nan_max(g, lambda z: g.op("MaxPool", [z], kernel_shape=k, strides=s, dilations=d),
                                       x, n.x.dtype), lead)]
    return emit


def _nan_max(g, pool, x: str, dtype: str) -> str:
    """`pool(x)`, with NaN in each window that holds one, as torch's max pools give."""
    mask = nan_mask(g, x, dtype)
    return with_nans(g, pool(x), mask and pool(mask), dtype)


def _avg_pool_onnx(dims: int):
    def emit(g, n):
        """AveragePool dividing by the taps inside its input (count_include_pad=0 in ONNX's terms).

        count_include_pad=true counts torch's padding p but never ceil mode's overhang: pad p zeros
        explicitly first. A static dimension then gets exactly the end padding that its last window
        needs (or loses the input its windows never reach), so no rounding rule is involved; a
        run-time one keeps ONNX's ceil_mode, whose rule is torch's there (torch could only drop
        the last window for a static size: E0311 otherwise)."""
        k, s, p, _, lead = _pool_geometry(n, dims, dilated=False)
        x = _batched(g, n.inputs[0], lead)
        include = n["count_include_pad"]
        if include and any(p):
            x = g.op("Pad", [x, g.ints([0, 0] + p + [0, 0] + p)])
        begins = [0] * dims if include else p
        ends, crop = [], []
        for i, (size, out) in enumerate(zip(n.x.shape[lead:], n.outputs[0].shape[lead:])):
            if isinstance(size, Sym) or isinstance(out, Sym):
                ends.append(begins[i])
                crop.append(0)
                continue
            length = plain(size) + (2 * p[i] if include else 0)
            end = (plain(out) - 1) * s[i] + k[i] - length - begins[i]  # the last window ends at the input's end
            ends.append(max(end, 0))
            crop.append(max(-end, 0))
        if any(crop):
            axes = [i + 2 for i in range(dims) if crop[i]]
            x = g.op("Slice", [x, g.ints([0] * len(axes)), g.ints([-crop[a - 2] for a in axes]), g.ints(axes)])
        y = g.op("AveragePool", [x], kernel_shape=k, strides=s, pads=begins + ends, count_include_pad=0,
                 ceil_mode=int(bool(n["ceil_mode"])))
        return [_unbatched(g, y, lead)]
    return emit


def _max_pool(n: int, examples: tuple) -> None:
    name = f"MaxPool{n}d"
    keys = ("stride", "padding", "dilation", "ceil_mode")
    register(OpDef(
        name=name, kind="layer", family="pool", stem="pool",
        doc=f"{n}-d max pooling over the last {n} dimension{'s' if n > 1 else ''}; stride defaults to the kernel.",
        params=(ParamSpec("kernel_size", Ints(n), check=checks.positive),
                ParamSpec("stride", Optional(Ints(n)), None, checks.positive),
                ParamSpec("padding", Ints(n), 0, checks.non_negative),
                ParamSpec("dilation", Ints(n), 1, checks.positive),
                ParamSpec("ceil_mode", BOOL, False)),
        infer=_pool_infer(n, dilated=True), macs=_zero_macs, label=_pool_label(n, name),
        torch=TorchLayer(f"nn.{name}", ("kernel_size",), keys,
                         functional=_pool_functional(f"F.max_pool{n}d", keys)),
        onnx=_max_pool_onnx(n), examples=examples, arbitrary=_pool_arbitrary(n, dilated=True),
    ))


def _avg_pool(n: int, examples: tuple) -> None:
    name = f"AvgPool{n}d"
    keys = ("stride", "padding", "ceil_mode", "count_include_pad")
    register(OpDef(
        name=name, kind="layer", family="pool", stem="pool",
        doc=f"{n}-d average pooling over the last {n} dimension{'s' if n > 1 else ''}; stride defaults to the "
            "kernel; count_include_pad counts padded zeros in each average.",
        params=(ParamSpec("kernel_size", Ints(n), check=checks.positive),
                ParamSpec("stride", Optional(Ints(n)), None, checks.positive),
                ParamSpec("padding", Ints(n), 0, checks.non_negative),
                ParamSpec("ceil_mode", BOOL, False),
                ParamSpec("count_include_pad", BOOL, True)),
        infer=_pool_infer(n, dilated=False), macs=_zero_macs, label=_pool_label(n, name),
        torch=TorchLayer(f"nn.{name}", ("kernel_size",), keys,
                         functional=_pool_functional(f"F.avg_pool{n}d", keys)),
        onnx=_avg_pool_onnx(n), examples=examples, arbitrary=_pool_arbitrary(n, dilated=False),
    ))


_max_pool(1, (Example({"kernel_size": 2}, (S(2, 3, 8),)),
              Example({"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True}, (S(2, 3, 10),)),
              Example({"kernel_size": 2, "stride": 3, "dilation": 2, "ceil_mode": True}, (S(3, 8),))))
_max_pool(2, (Example({"kernel_size": 2}, (S(2, 3, 8, 8),)),
              Example({"kernel_size": 3, "stride": 2, "padding": 1}, (S(2, 4, 7, 9),)),
              Example({"kernel_size": [2, 3], "stride": [2, 1], "dilation": [1, 2], "ceil_mode": True},
                      (S(2, 2, 5, 8),)),
              Example({"kernel_size": 2, "stride": 3, "padding": 1, "ceil_mode": True}, (S(3, 4, 4),))))
_avg_pool(1, (Example({"kernel_size": 2}, (S(2, 3, 8),)),
              Example({"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True, "count_include_pad": False},
                      (S(2, 3, 6),))))
_avg_pool(2, (Example({"kernel_size": 2}, (S(2, 3, 8, 8),)),
              Example({"kernel_size": [3, 2], "stride": 2, "padding": [1, 0], "ceil_mode": True},
                      (S(2, 3, 7, 5),)),
              Example({"kernel_size": 4, "stride": 3, "padding": 2, "ceil_mode": True, "count_include_pad": False},
                      (S(3, 5, 6),))))


# ---------------------------------------------------------------- adaptive pools

@dataclass(frozen=True)
class _OutputSize(PType):
    """An int, or a list of `n` entries that are ints or `none` (keep that input size)."""
    n: int

    @property
    def desc(self) -> str:
        return f"an int or a list of {self.n} ints or `none`s"

    def convert(self, v):
        if is_int(v):
            return v
        if isinstance(v, (list, tuple)) and len(v) == self.n and all(x is None or is_int(x) for x in v):
            return tuple(v)
        raise ArgTypeError(self.desc)


def _positive_sizes(v) -> str | None:
    return checks.positive(tuple(x for x in ntuple(v, 1) if x is not None))


def _adaptive_infer(n: int):
    def infer(b):
        need_rank(b.x, (n + 1, n + 2), b.op.name, LAYOUT[n])
        lead = b.x.rank - n
        want = ntuple(b["output_size"], n)
        spatial = tuple(size if w is None else w for size, w in zip(b.x.shape[lead:], want))
        return [b.x.with_shape(b.x.shape[:lead] + spatial)]
    return infer


def _adaptive_onnx(kind: str, dims: int):
    reduce_op, pool_op, global_op = (("ReduceMean", "AveragePool", "GlobalAveragePool") if kind == "Avg"
                                     else ("ReduceMax", "MaxPool", "GlobalMaxPool"))

    def emit(g, n):
        """The bins of `x`; a max pool gives NaN in each bin that holds one, as torch's does."""
        if kind == "Avg":
            return [pool(g, n, n.inputs[0])]
        return [_nan_max(g, lambda z: pool(g, n, z), n.inputs[0], n.x.dtype)]

    def pool(g, n, x: str) -> str:
        """torch's bins [⌊i·in/out⌋, ⌈(i+1)·in/out⌉) per dimension; bins are boxes, so dimensions pool one by one.

        Output 1 everywhere: the global pool. Output 1 on some dimensions: a reduction over them.
        A static size that the output divides: one ordinary pool, kernel = stride = in/out.
        Otherwise each bin is sliced and reduced, and the bins concatenated."""
        lead, wants = n.x.rank - dims, ntuple(n["output_size"], dims)
        if all(w is not None and plain(w) == 1 for w in wants):
            return _unbatched(g, g.op(global_op, [_batched(g, x, lead)]), lead)
        todo = []  # (axis, input size, output size) of the dimensions that change
        for i, (size, want) in enumerate(zip(n.x.shape[lead:], wants)):
            if want is not None and (isinstance(size, Sym) or plain(size) != plain(want)):
                todo.append((lead + i, size, plain(want)))
        if not todo:
            return g.op("Identity", [x])
        ones = [axis for axis, _, want in todo if want == 1]
        if ones:
            x = g.op(reduce_op, [x, g.ints(ones)], keepdims=1)
        todo = [t for t in todo if t[2] != 1]
        kernel = {axis: plain(size) // want for axis, size, want in todo
                  if not isinstance(size, Sym) and plain(size) % want == 0}
        if kernel:
            k = [kernel.get(lead + i, 1) for i in range(dims)]
            x = _unbatched(g, g.op(pool_op, [_batched(g, x, lead)], kernel_shape=k, strides=k), lead)
        for axis, size, want in todo:
            if axis not in kernel:
                x = _adaptive_bins(g, x, axis, size, want, reduce_op)
        return x
    return emit


def _adaptive_bins(g, x: str, axis: int, size, want: int, reduce_op: str) -> str:
    """Bin i of `want` along `axis` reduces [⌊i·in/want⌋, ⌈(i+1)·in/want⌉); a run-time `in` is read once."""
    if isinstance(size, Sym):
        length = g.dim(size)

        def bound(i: int, ceil: bool) -> str:  # int64 Div floors: sizes are ≥ 0
            scaled = g.op("Mul", [length, g.ints([i])])
            return g.op("Div", [g.op("Add", [scaled, g.ints([want - 1])]) if ceil else scaled, g.ints([want])])
    else:
        def bound(i: int, ceil: bool) -> str:
            return g.ints([-(-plain(size) * i // want) if ceil else plain(size) * i // want])
    bins = []
    for i in range(want):
        piece = g.op("Slice", [x, bound(i, False), bound(i + 1, True), g.ints([axis])])
        bins.append(g.op(reduce_op, [piece, g.ints([axis])], keepdims=1))
    return g.op("Concat", bins, axis=axis)


def _adaptive(kind: str, n: int, examples: tuple) -> None:
    name = f"Adaptive{kind}Pool{n}d"
    fn = f"F.adaptive_{kind.lower()}_pool{n}d"
    register(OpDef(
        name=name, kind="layer", family="pool", stem="pool",
        doc=f"{kind} pooling to a fixed output size, whatever the input size"
            + ("; a `none` entry keeps that input size." if n > 1 else "."),
        params=(ParamSpec("output_size", Ints(1) if n == 1 else _OutputSize(n), check=_positive_sizes),),
        infer=_adaptive_infer(n), macs=_zero_macs,
        label=lambda a, nm=name: f"{nm} → {_text(a['output_size'], n)}",
        torch=TorchLayer(f"nn.{name}", ("output_size",),
                         functional=lambda e, f=fn: f"{f}({e.inputs[0]}, {e.fmt(e['output_size'])})"),
        onnx=_adaptive_onnx(kind, n), examples=examples,
        arbitrary=lambda d: Example({"output_size": _drawn_output_size(d, n)},
                                    (S(*((2,) if d.bool() else ()), 3, *(d.int(1, 9) for _ in range(n))),)),
    ))


def _drawn_output_size(d, n: int):
    if n == 1 or d.bool():
        return d.int(1, 6)
    return [d.choice([None, d.int(1, 6)]) for _ in range(n)]


for _kind in ("Avg", "Max"):
    _adaptive(_kind, 1, (Example({"output_size": 4}, (S(2, 3, 10),)), Example({"output_size": [1]}, (S(3, 5),))))
    _adaptive(_kind, 2, (Example({"output_size": 1}, (S(2, 3, 8, 8),)),
                         Example({"output_size": [None, 3]}, (S(2, 3, 5, 7),)),
                         Example({"output_size": [4, 2]}, (S(3, 3, 5),))))


# ---------------------------------------------------------------- Upsample

UPSAMPLE_MODES = ("nearest", "linear", "bilinear", "bicubic", "trilinear")
MODE_RANKS = {"nearest": (3, 4, 5), "linear": (3,), "bilinear": (4,), "bicubic": (4,), "trilinear": (5,)}
UPSAMPLE_LAYOUT = {3: "[N, C, L]", 4: "[N, C, H, W]", 5: "[N, C, D, H, W]"}


def _positive_numbers(v) -> str | None:
    if any(plain_float(x) <= 0 for x in ntuple(v, 1)):
        return "must be positive"
    return None


def _upsample_rank(b) -> int:
    mode, t = b["mode"], b.x
    ranks = MODE_RANKS[mode]
    if t.rank not in ranks:
        want = " or ".join(f"{r}-d input {UPSAMPLE_LAYOUT[r]}" for r in ranks)
        raise ShapeError(f'`{b.op.name}` with mode="{mode}" expects a {want}, got {t.shape_str()}',
                         code="E0402", input=0, label=f"this is {t.rank}-d",
                         help='linear is for 3-d, bilinear/bicubic for 4-d, trilinear for 5-d input; '
                              'nearest works for all three')
    return t.rank - 2


def _check_upsample_args(b, n: int) -> None:
    size, scale = b["size"], b["scale_factor"]
    if b["align_corners"] is not None and b["mode"] == "nearest":
        raise ShapeError(f'`{b.op.name}`\'s align_corners only applies to the interpolating modes '
                         '(linear, bilinear, bicubic, trilinear), not "nearest"', code="E0302", arg="align_corners",
                         help="leave align_corners out with mode \"nearest\"")
    if (size is None) == (scale is None):
        both = size is not None
        raise ShapeError(f"`{b.op.name}` takes exactly one of size and scale_factor, got "
                         + ("both" if both else "neither"), code="E0302" if both else "E0303",
                         arg="scale_factor" if both else None)
    for what, v in (("size", size), ("scale_factor", scale)):
        if isinstance(v, tuple) and len(v) != n:
            raise ShapeError(f"`{b.op.name}`'s {what} has {len(v)} entries but the input {b.x.shape_str()} has "
                             f"{n} spatial dimension{'s' if n > 1 else ''}", code="E0402", arg=what, input=0)


def _scaled(size, factor, name: str):
    """⌊size · factor⌋ as torch computes it (a double product), keeping the size's expression when exact."""
    if is_int(factor):
        return size * factor   # an integer factor (an int parameter too): exact, and both expressions kept
    if isinstance(factor, Real):
        factor._lose()  # the shape depends on this float parameter: record its value
    f = Fraction(plain_float(factor))
    if f.denominator == 1:
        return size * f.numerator
    # a binary fraction num/den (den ≤ 1024) times a size: the double product is exact while
    # size·num < 2^53, so its floor is (size·num) // den
    if f.denominator <= 1024 and (isinstance(size, Sym) or plain(size) * f.numerator < 2 ** 53):
        return size * f.numerator // f.denominator
    if isinstance(size, Sym):
        raise ShapeError(f"`{name}`'s scale_factor {float(f)!r} times the run-time size `{size}` cannot be "
                         "worked out at compile time", code="E0311", arg="scale_factor",
                         help="use an integer or binary-fraction scale factor (2, 1.5, 0.75), or give `size`")
    return math.floor(float(size) * float(f))  # float() fixes a parameter-derived size (a guard)


def _upsample_infer(b):
    n = _upsample_rank(b)
    _check_upsample_args(b, n)
    sizes = b.x.shape[2:]
    if b["size"] is not None:
        spatial = ntuple(b["size"], n)
    else:
        spatial = tuple(_scaled(size, f, b.op.name) for size, f in zip(sizes, ntuple(b["scale_factor"], n)))
    for i, (size, out) in enumerate(zip(sizes, spatial)):
        if isinstance(out, Sym):
            require(out, ">=", 1, b.where)   # torch refuses an empty output
        elif plain(out) < 1:
            raise ShapeError(f"`{b.op.name}`'s scale_factor shrinks dimension {i + 2} of {b.x.shape_str()} "
                             f"(size {plain(size)}) to {plain(out)}", code="E0302", arg="scale_factor", input=0,
                             label="output would be empty")
    return [b.x.with_shape(b.x.shape[:2] + tuple(spatial))]


def _upsample_label(a, name: str = "Upsample", mode: bool = True) -> str:
    if a["size"] is not None:
        what = f"→ {_text(a['size'], len(a['size']) if isinstance(a['size'], tuple) else 1)}"
    else:
        f = a["scale_factor"]
        factors = [f"{plain_float(x):g}" for x in ntuple(f, 1)]
        what = f"×{factors[0]}" if len(set(factors)) == 1 else f"×({', '.join(factors)})"
    return f"{name} {what}" + (f" {a['mode']}" if mode else "")


def _upsample_functional(e) -> str:
    scale = e.kw("scale_factor") and f", scale_factor={_float_source(e, e['scale_factor'])}"
    return f"F.interpolate({e.inputs[0]}{e.kw('size')}{scale}{e.kw('mode')}{e.kw('align_corners')})"


def _float_source(e, f) -> str:
    """A scale factor as F.interpolate's annotation reads it, a float (`2.0`, `float(self.factor)`), so that
    torch.jit.script takes the call; nn.Upsample converts it itself."""
    if isinstance(f, (list, tuple)):
        return "[" + ", ".join(_float_source(e, x) for x in f) + "]"
    text = e.fmt(f)   # a block's parameter where the value is one (`self.upsample`)
    try:
        return repr(float(text))
    except ValueError:
        return text if isinstance(f, float) else f"float({text})"


def _upsample_arbitrary(d):
    mode = d.choice(UPSAMPLE_MODES)
    n = d.choice(MODE_RANKS[mode]) - 2
    sizes = [d.int(2, 6) for _ in range(n)]
    args = {"mode": mode}
    if d.bool():
        args["size"] = d.choice([d.int(1, 8), [d.int(1, 8) for _ in range(n)]])
    else:
        pick = lambda: d.choice([2, 2.0, 3.0, 0.5, 1.5, 1.7, 0.75])  # noqa: E731
        args["scale_factor"] = d.choice([pick(), [pick() for _ in range(n)]])
    if mode != "nearest":
        args["align_corners"] = d.choice([None, True, False])
    return Example(args, (S(2, 3, *sizes),))


# Upsample → ONNX. torch on the CPU (float32 arithmetic), per spatial dimension with input size
# `in`, output size `out`, scale_factor f:
#   nearest   source ⌊x · c⌋, c = float(1/f), or float(in)/out when a size is given; at most in − 1.
#             A 2-d resize with out_H + out_W ≤ 128 (torch's vectorized kernel) takes x when
#             out = in and x >> 1 when out = 2·in instead, whatever f is.
#   linear    half_pixel by 1/f (or in/out), or align_corners; a dimension with out = in is copied.
#   bicubic   the same coordinates with a = −0.75, clamped taps; never copied.
# onnxruntime's Resize maps x to x / scale in float32 and copies the whole input when the output
# shape equals the input's; the emitters below choose Resize's inputs so that it does what torch
# does, and index with Gather where Resize cannot (nearest only).

_RESIZE_MODES = {"nearest": "nearest", "linear": "linear", "bilinear": "linear", "trilinear": "linear",
                 "bicubic": "cubic"}


def _upsample_onnx(g, n):
    """Resize with torch's coordinate rules (nearest: asymmetric + floor; the others half_pixel or
    align_corners); a size goes in as `sizes`, a scale_factor as `scales` (torch maps by 1/f)."""
    return [_nearest_onnx(g, n) if n["mode"] == "nearest" else _interpolate_onnx(g, n)]


def _factors(n) -> list:
    """The scale_factor per spatial dimension, or Nones when a size is given."""
    f, dims = n["scale_factor"], n.x.rank - 2
    return [None] * dims if f is None else [plain_float(v) for v in ntuple(f, dims)]


def _resize_scale(size, out, factor) -> float:
    """The float32 scale for Resize: the factor, which torch also maps coordinates by.

    Resize sizes the output as ⌊in · scale⌋ of the float32 scale (onnxruntime rounds the product to
    float32, ONNX shape inference does not), torch as ⌊in · f⌋ in double; where these differ (1.3
    lies just above its float32 value), the scale moves by ulps until all agree, which moves the
    sampling positions by ~1e-7 of a pixel."""
    import numpy as np
    scale = np.float32(factor)
    if isinstance(size, Sym) or isinstance(out, Sym):
        return float(scale)
    size, out = plain(size), plain(out)

    def sized(s):
        return min(int(np.float32(size) * s), math.floor(size * float(s)))
    while sized(scale) < out:
        scale = np.nextafter(scale, np.float32(np.inf))
    while max(int(np.float32(size) * scale), math.floor(size * float(scale))) > out:
        scale = np.nextafter(scale, np.float32(0))
    return float(scale)


def _resize_attrs(n) -> dict:
    mode = n["mode"]
    attrs = {"mode": _RESIZE_MODES[mode]}
    if mode == "nearest":
        attrs.update(coordinate_transformation_mode="asymmetric", nearest_mode="floor")
    else:
        attrs["coordinate_transformation_mode"] = "align_corners" if n["align_corners"] else "half_pixel"
    if mode == "bicubic":
        attrs.update(cubic_coeff_a=-0.75, exclude_outside=0)
    return attrs


def _interpolate_onnx(g, n) -> str:
    """linear / bilinear / trilinear / bicubic as Resize.

    Coordinates from the sizes alone (a given size, or align_corners) take `sizes`. A scale_factor
    takes `scales`: 1 on the dimensions torch copies (linear modes, out = in), decided at run time
    for a run-time size. Bicubic never copies, so where every output size may equal its input
    size (and onnxruntime would copy the whole input), one dimension is edge-padded first — which
    changes no tap, as torch clamps taps to the edge — and the extra output sliced off."""
    attrs, x, out = _resize_attrs(n), n.inputs[0], n.outputs[0]
    if n["scale_factor"] is None or n["align_corners"]:
        return g.op("Resize", [x, None, None, g.shape(out.shape)], **attrs)
    linear, sizes, outs, factors = n["mode"] != "bicubic", n.x.shape[2:], out.shape[2:], _factors(n)
    scales, runtime = [], False
    for size, o, f in zip(sizes, outs, factors):
        if not isinstance(size, Sym) and not isinstance(o, Sym):
            scales.append(1.0 if linear and plain(o) == plain(size) else _resize_scale(size, o, f))
        elif linear and 1 < f < 2:  # ⌊in · f⌋ = in for small run-time sizes: torch copies then
            runtime = True
            same = g.op("Equal", [g.dim(o), g.dim(size)])
            scales.append(g.op("Where", [same, g.const([1.0]), g.const([_resize_scale(size, o, f)])]))
        else:
            scales.append(_resize_scale(size, o, f))
    if runtime:
        scales = g.op("Concat", [g.const([1.0, 1.0])] + [v if isinstance(v, str) else g.const([v]) for v in scales],
                      axis=0)
    else:
        scales = g.const([1.0, 1.0] + scales)
    copy_axis = None if linear else _bicubic_copy_axis(sizes, outs, factors)
    if copy_axis is None:
        return g.op("Resize", [x, None, scales], **attrs)
    axis, f = copy_axis
    extra = math.ceil(1 / (f - 1)) + 1  # (in + extra)·f ≥ in + extra + 1: the shapes differ
    padded = g.op("Pad", [x, g.ints([0] * n.x.rank + [extra if i == axis else 0 for i in range(n.x.rank)])],
                  mode="edge")
    y = g.op("Resize", [padded, None, scales], **attrs)
    return g.op("Slice", [y, g.ints([0]), g.dim(outs[axis - 2]), g.ints([axis])])


def _bicubic_copy_axis(sizes, outs, factors):
    """(axis, factor) to pad when every output size may equal its input size with some factor ≠ 1."""
    def may_copy(size, o, f):
        if isinstance(size, Sym) or isinstance(o, Sym):
            return 1 <= f < 2
        return plain(o) == plain(size)
    if not all(may_copy(*d) for d in zip(sizes, outs, factors)):
        return None
    moved = [(i + 2, f) for i, f in enumerate(factors) if f != 1]
    return moved[0] if moved else None


def _torch_nearest_index(size: int, out: int, factor, shortcut: bool):
    """torch's nearest source index per output index along one dimension (float32 arithmetic)."""
    import numpy as np
    x = np.arange(out, dtype=np.int64)
    if shortcut and out == size:
        return x
    if shortcut and out == 2 * size:
        return x >> 1
    c = np.float32(1.0 / factor) if factor is not None else np.float32(size) / np.float32(out)
    return np.minimum(np.floor(x.astype(np.float32) * c).astype(np.int64), size - 1)


def _resize_nearest_index(size: int, scale: float):
    """What Resize (asymmetric, floor) takes along one dimension: ⌊x / scale⌋ in float32, ⌊in · scale⌋ of them."""
    import numpy as np
    out = int(np.float32(size) * np.float32(scale))
    x = np.arange(out, dtype=np.float32)
    return np.minimum(np.floor(x / np.float32(scale)), size - 1).astype(np.int64)


def _nearest_onnx(g, n) -> str:
    """Resize (asymmetric, floor) when its float32 indices are torch's, else a Gather per dimension of
    torch's own indices (computed here, or in the graph for run-time sizes)."""
    import numpy as np
    x, out = n.inputs[0], n.outputs[0]
    sizes, outs, factors = n.x.shape[2:], out.shape[2:], _factors(n)
    if any(isinstance(d, Sym) for d in sizes + outs):
        return _nearest_gather_at_run_time(g, n, x, sizes, outs, factors)
    sizes, outs = [plain(d) for d in sizes], [plain(d) for d in outs]
    shortcut = len(sizes) == 2 and sum(outs) <= 128
    want = [_torch_nearest_index(s, o, f, shortcut) for s, o, f in zip(sizes, outs, factors)]
    scales = []
    for s, o, f, w in zip(sizes, outs, factors, want):
        if o == s and np.array_equal(w, np.arange(o)):
            scales.append(1.0)
        elif o == 2 * s and np.array_equal(w, np.arange(o) >> 1):
            scales.append(2.0)
        else:
            scales.append(float(np.float32(o) / np.float32(s)) if f is None else _resize_scale(s, o, f))
    copied = sizes == outs  # onnxruntime then copies the input
    if all(np.array_equal(_resize_nearest_index(s, sc) if not copied else np.arange(s), w)
           for s, sc, w in zip(sizes, scales, want)):
        if factors[0] is None:  # a size: `sizes`, whose scales out/in are the ones checked
            return g.op("Resize", [x, None, None, g.shape(out.shape)], **_resize_attrs(n))
        return g.op("Resize", [x, None, g.const([1.0, 1.0] + scales)], **_resize_attrs(n))
    for i, (s, w) in enumerate(zip(sizes, want)):
        if not np.array_equal(w, np.arange(s)):
            x = g.op("Gather", [x, g.ints(w)], axis=i + 2)
    return g.op("Identity", [x]) if x == n.inputs[0] else x


def _nearest_gather_at_run_time(g, n, x: str, sizes, outs, factors) -> str:
    """torch's nearest indices in the graph: ⌊x · c⌋ in float32 (c = float(1/f), or in/out in float32),
    capped at in − 1, with the 2-d kernel's copies (out = in) and halvings (out = 2·in) where it
    takes them (out_H + out_W ≤ 128); then Gather along each dimension."""
    from onnx import TensorProto
    shortcut = None
    if len(sizes) == 2:
        total = outs[0] + outs[1]
        shortcut = (plain(total) <= 128 if not isinstance(total, Sym) else
                    g.op("LessOrEqual", [g.dim(total), g.ints([128])]))
    for i, (size, o, f) in enumerate(zip(sizes, outs, factors)):
        if not isinstance(size, Sym) and not isinstance(o, Sym) and plain(o) == plain(size) and f in (None, 1.0):
            continue  # the identity, on every path
        s_, o_ = g.dim(size), g.dim(o)
        pos = g.op("Range", [g.const(0, dtype="int64"), g.op("Squeeze", [o_, g.ints([0])]), g.const(1, dtype="int64")])
        if f is not None:
            c = g.const(1.0 / f, dtype="float32")
        else:
            c = g.op("Div", [g.op("Cast", [s_], to=TensorProto.FLOAT), g.op("Cast", [o_], to=TensorProto.FLOAT)])
        src = g.op("Cast", [g.op("Floor", [g.op("Mul", [g.op("Cast", [pos], to=TensorProto.FLOAT), c])])],
                   to=TensorProto.INT64)
        src = g.op("Min", [src, g.op("Sub", [s_, g.ints([1])])])
        if shortcut is not None and shortcut is not False:
            same, double = g.op("Equal", [o_, s_]), g.op("Equal", [o_, g.op("Mul", [s_, g.ints([2])])])
            if shortcut is not True:
                same, double = g.op("And", [same, shortcut]), g.op("And", [double, shortcut])
            src = g.op("Where", [same, pos, g.op("Where", [double, g.op("Div", [pos, g.ints([2])]), src])])
        x = g.op("Gather", [x, src], axis=i + 2)
    return g.op("Identity", [x]) if x == n.inputs[0] else x


register(OpDef(
    name="Upsample", kind="layer", family="pool", stem="upsample",
    doc="Resizes the spatial dimensions of [N, C, ...] to `size` or by `scale_factor` (exactly one), "
        "by nearest-neighbour or (bi/tri)linear/bicubic interpolation.",
    params=(ParamSpec("size", Optional(OneOf((INT, ListOf(INT)))), None, checks.positive),
            ParamSpec("scale_factor", Optional(OneOf((FLOAT, ListOf(FLOAT)))), None, _positive_numbers),
            ParamSpec("mode", Str(UPSAMPLE_MODES), "nearest"),
            ParamSpec("align_corners", Optional(BOOL), None)),
    infer=_upsample_infer, macs=_zero_macs, label=_upsample_label, onnx=_upsample_onnx,
    torch=TorchLayer("nn.Upsample", (), ("size", "scale_factor", "mode", "align_corners"),
                     functional=_upsample_functional),
    examples=(Example({"scale_factor": 2.0}, (S(2, 3, 4, 4),)),
              Example({"scale_factor": 2.0, "mode": "bilinear", "align_corners": True}, (S(2, 3, 4, 5),)),
              Example({"size": [5, 7, 3], "mode": "trilinear"}, (S(2, 2, 3, 4, 3),)),
              Example({"scale_factor": [1.5, 0.5], "mode": "bicubic"}, (S(2, 1, 5, 6),)),
              Example({"size": 9, "mode": "linear"}, (S(2, 3, 4),))),
    arbitrary=_upsample_arbitrary,
))


# `interpolate` (F.interpolate) and the 2-d layers torch keeps for it share Upsample's rule and emitters: the
# rule reads `mode` and `align_corners`, which the layers fix (their `resolve`), and names the op it checks.
_RESIZE_PARAMS = {p.name: p for p in REGISTRY["Upsample"].params}


register(OpDef(
    name="interpolate", kind="function", family="pool",
    doc="F.interpolate: the spatial dimensions of [N, C, ...] resized to `size` or by `scale_factor` (exactly "
        "one), as the `Upsample` layer does (the same rule, modes and ONNX).",
    params=(ParamSpec("input", TENSOR),) + tuple(_RESIZE_PARAMS.values()),
    infer=_upsample_infer, macs=_zero_macs, label=lambda a: _upsample_label(a, "interpolate"),
    onnx=_upsample_onnx, torch=TorchFunction(_upsample_functional),
    examples=(Example({"input": S(2, 3, 4, 4), "scale_factor": 2.0}),
              Example({"input": S(2, 3, 4, 5), "size": [7, 3], "mode": "bilinear", "align_corners": False}),
              Example({"input": S(2, 3, 6), "scale_factor": 0.5, "mode": "linear", "align_corners": True})),
    arbitrary=lambda d: (lambda ex: Example({"input": ex.inputs[0], **ex.args}))(_upsample_arbitrary(d)),
))


def _upsampling_2d(name: str, mode: str, align_corners):
    """UpsamplingNearest2d / UpsamplingBilinear2d: F.interpolate with mode (and align_corners) fixed, on 4-d input."""
    def infer(b):
        if b.x.rank != 4:
            raise ShapeError(f"`{name}` expects a 4-d input [N, C, H, W], got {b.x.shape_str()}", code="E0402",
                             input=0, label=f"this is {b.x.rank}-d")
        return _upsample_infer(b)

    fixed = f", mode={mode!r}" + (", align_corners=True" if align_corners else "")
    register(OpDef(
        name=name, kind="layer", family="pool", stem="upsample",
        doc=f"nn.{name}: [N, C, H, W] resized to `size` or by `scale_factor` (exactly one), by "
            + ("nearest neighbour." if mode == "nearest" else "bilinear interpolation with align_corners=True."),
        params=(_RESIZE_PARAMS["size"], _RESIZE_PARAMS["scale_factor"]),
        resolve=lambda b: {"mode": mode, "align_corners": align_corners},
        infer=infer, macs=_zero_macs, label=lambda a: _upsample_label(a, name, mode=False), onnx=_upsample_onnx,
        torch=TorchLayer(f"nn.{name}", (), ("size", "scale_factor"),
                         functional=lambda e: f"F.interpolate({e.inputs[0]}{e.kw('size')}{e.kw('scale_factor')}{fixed})"),
        examples=(Example({"scale_factor": 2.0}, (S(2, 3, 4, 5),)), Example({"size": [3, 7]}, (S(1, 2, 5, 4),)),
                  Example({"scale_factor": [1.5, 0.5]}, (S(2, 1, 4, 6),))),
        arbitrary=lambda d: Example({"scale_factor": d.choice([2.0, 0.5, 1.5, [2.0, 3.0]])} if d.bool() else
                                    {"size": d.choice([d.int(1, 8), [d.int(1, 8), d.int(1, 8)]])},
                                    (S(2, 3, d.int(2, 6), d.int(2, 6)),)),
    ))


_upsampling_2d("UpsamplingNearest2d", "nearest", None)
_upsampling_2d("UpsamplingBilinear2d", "bilinear", True)


# ---------------------------------------------------------------- PixelShuffle

def _pixel_shuffle_infer(b):
    need_min_rank(b.x, 3, "PixelShuffle")
    r = b["upscale_factor"]
    c, h, w = b.x.shape[-3:]
    if not divides(c, r * r, b.where):
        raise ShapeError(f"`PixelShuffle({plain(r)})` needs channels divisible by {plain(r)}² = "
                         f"{plain(r) ** 2}, got {plain(c)} channels in {b.x.shape_str()}", code="E0405", input=0,
                         label=f"{plain(c)} channels", help=f"give the layer before it a multiple of {plain(r) ** 2} "
                         "output channels")
    return [b.x.with_shape(b.x.shape[:-3] + (c // (r * r), h * r, w * r))]


def _pixel_shuffle_onnx(g, n):
    """DepthToSpace in CRD order (torch's: channel c·r² + i·r + j goes to pixel (h·r + i, w·r + j) of c).

    DepthToSpace wants [N, C, H, W]: other ranks fold their leading dimensions into one, and back."""
    r, x = plain(n["upscale_factor"]), n.inputs[0]
    if n.x.rank == 4:
        return [g.op("DepthToSpace", [x], blocksize=r, mode="CRD")]
    x = g.op("Reshape", [x, g.shape([-1] + list(n.x.shape[-3:]))])
    y = g.op("DepthToSpace", [x], blocksize=r, mode="CRD")
    return [g.op("Reshape", [y, g.shape(n.outputs[0].shape)])]


register(OpDef(
    name="PixelShuffle", kind="layer", family="pool", stem="pixel_shuffle",
    doc="Rearranges [*, C·r², H, W] into [*, C, H·r, W·r] (sub-pixel upsampling).",
    params=(ParamSpec("upscale_factor", INT, check=checks.positive),),
    infer=_pixel_shuffle_infer, macs=_zero_macs, onnx=_pixel_shuffle_onnx,
    label=lambda a: f"PixelShuffle ×{plain(a['upscale_factor'])}",
    torch=TorchLayer("nn.PixelShuffle", ("upscale_factor",),
                     functional=lambda e: f"F.pixel_shuffle({e.inputs[0]}, {e.fmt(e['upscale_factor'])})"),
    examples=(Example({"upscale_factor": 2}, (S(2, 8, 3, 4),)), Example({"upscale_factor": 3}, (S(2, 1, 9, 2, 2),))),
    arbitrary=lambda d: (lambda r: Example({"upscale_factor": r},
                                           (S(*d.shape(0, 2, 1, 2), r * r * d.int(1, 3), d.int(1, 4), d.int(1, 4)),)))(
        d.int(1, 3)),
))
