"""Convolutions: Conv1d/2d/3d and ConvTranspose1d/2d.

Per spatial dimension, with kernel k, stride s, padding p, dilation d (span
d·(k−1)+1):

    conv        out = ⌊(in + 2p − d·(k−1) − 1) / s⌋ + 1
                padding="valid" is p = 0; padding="same" (stride 1 only)
                pads d·(k−1) in all, ⌊·/2⌋ on the left, so out = in
    transposed  out = (in − 1)·s − 2p + d·(k−1) + output_padding + 1
                output_padding < s or output_padding < d (torch's rule)

`in_channels` is inferred from dimension 1 of a batched [N, C, ...] input and
must be static; `groups` must divide both channel counts.

Weights (state-dict names as torch):
    conv        weight (out, in/groups, *k)   bias (out,)
    transposed  weight (in, out/groups, *k)   bias (out,)

MACs (one multiply-add per kernel tap):
    conv        |output| · in/groups · ∏k    (every output element reads in/groups·∏k taps)
    transposed  |input| · out/groups · ∏k    (every input element scatters into out/groups·∏k outputs)
where |·| counts every element, batch included.

padding_mode "reflect" / "replicate" / "circular" pads with F.pad before a
zero-padding convolution, so torch needs each side's padding < in (reflect)
or ≤ in (circular).

ONNX (opset 18): Conv / ConvTranspose with torch's weight layouts as they are.
Conv's own pads are zeros only, so the other padding modes become a Pad node
("reflect", "edge") or, for circular, Slice + Concat wrapping (Pad's "wrap" is
opset 19). ConvTranspose takes output_padding as an attribute only below the
stride (onnxruntime's rule, stricter than torch's); otherwise, and where a
run-time size can crop the output to nothing, it is written as torch defines
it: the full transposed convolution, cropped.
"""
from __future__ import annotations

from ..ir.dims import Sym, plain, product
from . import checks
from .onnxpad import pad_onnx
from .ptypes import BOOL, INT, Ints, OneOf, Str
from .registry import Example, OpDef, ParamSpec, S, ShapeError, TorchLayer, register
from .shapes import conv_out, ntuple, static

LAYOUT = {1: "[N, C, L]", 2: "[N, C, H, W]", 3: "[N, C, D, H, W]"}
PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
PADDING_WORDS = ("same", "valid")


# ---------------------------------------------------------------- shared pieces

def _padding_check(v) -> str | None:
    """Conv padding: the strings "same"/"valid", or non-negative ints."""
    if isinstance(v, str):
        return None if v in PADDING_WORDS else 'must be "same", "valid" or non-negative ints'
    return checks.non_negative(v)


def _in_channels(b, n: int):
    name, t = b.op.name, b.x
    if t.rank != n + 2:
        raise ShapeError(f"`{name}` expects a {n + 2}-d input {LAYOUT[n]}, got {t.shape_str()}", code="E0402",
                         input=0, label=f"expects {LAYOUT[n]}", help=_rank_help(name, n, t.rank))
    return static(t.shape[1], f"`{name}`'s in_channels (the input's dimension 1)")


def _rank_help(name: str, n: int, rank: int) -> str:
    if rank < n + 2:
        return (f"`{name}` needs a batch and a channel dimension before the {n} spatial one"
                f"{'s' if n > 1 else ''}: apply it before `Flatten()`, or `Unflatten`/reshape to {LAYOUT[n]}")
    return f"a {rank}-d input has {rank - 2} spatial dimensions: use the {rank - 2}-d layer, or reshape"


def _check_groups(name: str, in_channels, out_channels, groups) -> None:
    g = plain(groups)
    for what, c, inp in (("in_channels", in_channels, 0), ("out_channels", out_channels, None)):
        if plain(c) % g:
            raise ShapeError(f"`{name}`'s groups={g} must divide {what}, but {what} is {plain(c)}",
                             code="E0405", arg="groups", input=inp, label=f"does not divide {plain(c)}",
                             help=f"choose groups among the divisors of {plain(c)}")


def _channel_resolve(n: int):
    def resolve(b):
        in_c = _in_channels(b, n)
        _check_groups(b.op.name, in_c, b["out_channels"], b["groups"])
        return {"in_channels": in_c}
    return resolve


def _text(v, n: int) -> str:
    """`3×3` for a kernel of 3 in 2-d, `3×5` for (3, 5)."""
    return "×".join(str(plain(x)) for x in ntuple(v, n))


def _label(n: int, ctor: str):
    def label(a) -> str:
        text = f"{ctor} {_text(a['kernel_size'], n)}"
        if any(plain(s) != 1 for s in ntuple(a["stride"], n)):
            strides = {plain(s) for s in ntuple(a["stride"], n)}
            text += f" /{strides.pop()}" if len(strides) == 1 else f" /{_text(a['stride'], n)}"
        text += f", {plain(a['out_channels'])}"
        if plain(a["groups"]) != 1:
            text += f", groups {plain(a['groups'])}"
        return text
    return label


def _out_shape(b, spatial: tuple):
    return [b.x.with_shape(b.x.shape[:1] + (b["out_channels"],) + tuple(spatial))]


# ---------------------------------------------------------------- Conv1d/2d/3d

def _conv_pads(b, n: int) -> list[tuple]:
    """(left, right) padding per spatial dimension; "same" keeps the size at stride 1."""
    name, pad = b.op.name, b["padding"]
    if not isinstance(pad, str):
        return [(p, p) for p in ntuple(pad, n)]
    if pad == "valid":
        return [(0, 0)] * n
    if any(plain(s) != 1 for s in ntuple(b["stride"], n)):
        raise ShapeError(f'`{name}` with padding="same" needs stride 1, got stride={_stride_src(b["stride"])}',
                         code="E0302", arg="padding", label='"same" is only for stride 1',
                         help="give the padding as a number, e.g. kernel_size // 2")
    out = []
    for k, d in zip(ntuple(b["kernel_size"], n), ntuple(b["dilation"], n)):
        total = d * (k - 1)
        out.append((total // 2, total - total // 2))  # torch puts the odd pixel on the right
    return out


def _stride_src(v) -> str:
    return str(plain(v)) if not isinstance(v, tuple) else "(" + ", ".join(str(plain(x)) for x in v) + ")"


def _check_padding_mode(b, pads: list[tuple]) -> None:
    """reflect needs each side's padding < the size; circular needs ≤ (F.pad's rules)."""
    mode, name = b["padding_mode"], b.op.name
    if mode not in ("reflect", "circular"):
        return
    for i, ((left, right), size) in enumerate(zip(pads, b.x.shape[2:])):
        if isinstance(size, Sym):
            continue
        widest = max(plain(left), plain(right))
        if widest > plain(size) or (mode == "reflect" and widest == plain(size)):
            bound = "smaller than" if mode == "reflect" else "at most"
            raise ShapeError(f'`{name}` with padding_mode="{mode}" pads {widest} along dimension {i + 2} of '
                             f"{b.x.shape_str()}, but the padding must be {bound} the size {plain(size)}",
                             code="E0404", arg="padding", input=0, label="too much padding for this input",
                             help='use less padding, a larger input, or padding_mode="zeros"/"replicate"')


def _conv_infer(n: int):
    def infer(b):
        pads = _conv_pads(b, n)
        _check_padding_mode(b, pads)
        if isinstance(b["padding"], str) and b["padding"] == "same":
            return _out_shape(b, b.x.shape[2:])
        k, s, d = (ntuple(b[a], n) for a in ("kernel_size", "stride", "dilation"))
        spatial = tuple(conv_out(size, k[i], s[i], pads[i][0], d[i], b.op.name, where=b.where)
                        for i, size in enumerate(b.x.shape[2:]))
        return _out_shape(b, spatial)
    return infer


def _conv_weights(n: int):
    def weights(a):
        w = (a["out_channels"], a["in_channels"] // a["groups"]) + ntuple(a["kernel_size"], n)
        return {"weight": w, **({"bias": (a["out_channels"],)} if a["bias"] else {})}
    return weights


def _conv_macs(n: int):
    def macs(b, out):
        return product(out[0].shape) * (b["in_channels"] // b["groups"]) * product(ntuple(b["kernel_size"], n))
    return macs


def _conv_arbitrary(n: int):
    def draw(d):
        groups = d.choice([1, 1, 2, 3])
        k = _drawn_ints(d, n, 1, 3)
        dil = _drawn_ints(d, n, 1, 2)
        style = d.choice(["int", "list", "same", "valid"])
        pad = {"int": lambda: d.int(0, 2), "list": lambda: [d.int(0, 2) for _ in range(n)]}.get(style,
                                                                                          lambda: style)()
        stride = 1 if style == "same" else d.choice([1, 2, [d.int(1, 3) for _ in range(n)]])
        # at least 2 more than the kernel's span, so reflect padding (≤ 2) always fits
        sizes = [dl * (kk - 1) + 1 + d.int(2, 4 if n == 3 else 6)
                 for kk, dl in zip(ntuple(k, n), ntuple(dil, n))]
        args = {"out_channels": groups * d.int(1, 3), "kernel_size": k, "stride": stride, "padding": pad,
                "dilation": dil, "groups": groups, "bias": d.bool(), "padding_mode": d.choice(PADDING_MODES)}
        return Example(args, (S(2, groups * d.int(1, 2), *sizes),))
    return draw


def _drawn_ints(d, n: int, lo: int, hi: int):
    """An int or a list of n ints, as users write either."""
    return d.int(lo, hi) if d.bool() else [d.int(lo, hi) for _ in range(n)]


def _onnx_pads(pads: list[tuple]) -> list[int]:
    """(left, right) per spatial dimension → ONNX's [x1_begin, x2_begin, …, x1_end, x2_end, …]."""
    return [plain(left) for left, _ in pads] + [plain(right) for _, right in pads]


def _conv_onnx(n_dims: int):
    def emit(g, n):
        """ONNX Conv (same weight layout as torch); non-zero padding modes pad first, as torch does."""
        pads = _conv_pads(n, n_dims)
        x = n.inputs[0]
        if n["padding_mode"] != "zeros" and any(plain(left) or plain(right) for left, right in pads):
            x = pad_onnx(g, x, 2, pads, n["padding_mode"])
            pads = [(0, 0)] * n_dims
        bias = [n.weight("bias")] if n["bias"] else []
        return [g.op("Conv", [x, n.weight("weight")] + bias,
                     kernel_shape=[plain(k) for k in ntuple(n["kernel_size"], n_dims)],
                     strides=[plain(s) for s in ntuple(n["stride"], n_dims)],
                     dilations=[plain(d) for d in ntuple(n["dilation"], n_dims)],
                     pads=_onnx_pads(pads), group=plain(n["groups"]))]
    return emit


def _conv(n: int, doc: str, examples: tuple) -> None:
    name = f"Conv{n}d"
    register(OpDef(
        name=name, kind="layer", family="conv", category="conv", spatial=n, stem="conv", doc=doc,
        params=(ParamSpec("out_channels", INT, check=checks.positive),
                ParamSpec("kernel_size", Ints(n), check=checks.positive),
                ParamSpec("stride", Ints(n), 1, checks.positive),
                ParamSpec("padding", OneOf((Ints(n), Str(PADDING_WORDS))), 0, _padding_check),
                ParamSpec("dilation", Ints(n), 1, checks.positive),
                ParamSpec("groups", INT, 1, checks.positive),
                ParamSpec("bias", BOOL, True),
                ParamSpec("padding_mode", Str(PADDING_MODES), "zeros")),
        resolve=_channel_resolve(n), infer=_conv_infer(n),
        weights=_conv_weights(n), macs=_conv_macs(n), label=_label(n, name),
        torch=TorchLayer(f"nn.{name}", ("in_channels", "out_channels", "kernel_size"),
                         ("stride", "padding", "dilation", "groups", "bias", "padding_mode")),
        onnx=_conv_onnx(n), examples=examples, arbitrary=_conv_arbitrary(n),
    ))


_conv(1, "1-d convolution over [N, C, L] (sequences); in_channels is inferred.", (
    Example({"out_channels": 4, "kernel_size": 3}, (S(2, 3, 10),)),
    Example({"out_channels": 6, "kernel_size": 5, "padding": "same", "dilation": 2, "groups": 3},
            (S(2, 3, 9),)),
    Example({"out_channels": 2, "kernel_size": 3, "stride": 2, "padding": 1, "padding_mode": "circular",
             "bias": False}, (S(2, 4, 7),)),
))
_conv(2, "2-d convolution over [N, C, H, W] (images); in_channels is inferred.", (
    Example({"out_channels": 8, "kernel_size": 3, "padding": 1}, (S(2, 3, 8, 8),)),
    Example({"out_channels": 4, "kernel_size": 3, "stride": 2, "groups": 4}, (S(2, 4, 9, 7),)),
    Example({"out_channels": 5, "kernel_size": [2, 3], "padding": "same", "padding_mode": "reflect"},
            (S(2, 3, 6, 5),)),
    Example({"out_channels": 2, "kernel_size": 3, "padding": "valid", "dilation": [2, 1]}, (S(2, 1, 7, 4),)),
))
_conv(3, "3-d convolution over [N, C, D, H, W] (volumes, video); in_channels is inferred.", (
    Example({"out_channels": 4, "kernel_size": 3, "padding": 1}, (S(2, 2, 4, 5, 5),)),
    Example({"out_channels": 2, "kernel_size": [1, 3, 3], "stride": [1, 2, 2], "padding_mode": "replicate",
             "padding": [0, 1, 1]}, (S(2, 3, 3, 6, 6),)),
))


# ---------------------------------------------------------------- ConvTranspose1d/2d

def _transposed_infer(n: int):
    def infer(b):
        name = b.op.name
        k, s, p, op, d = (ntuple(b[a], n) for a in ("kernel_size", "stride", "padding", "output_padding",
                                                     "dilation"))
        for i in range(n):
            if not (plain(op[i]) < plain(s[i]) or plain(op[i]) < plain(d[i])):
                raise ShapeError(f"`{name}`'s output_padding must be smaller than its stride or its dilation, "
                                 f"got output_padding={plain(op[i])} with stride={plain(s[i])} and "
                                 f"dilation={plain(d[i])}", code="E0302", arg="output_padding",
                                 label="too large", help="output_padding only picks among the stride's "
                                 "possible output sizes: keep it below the stride")
        spatial = []
        for i, size in enumerate(b.x.shape[2:]):
            out = (size - 1) * s[i] - 2 * p[i] + d[i] * (k[i] - 1) + op[i] + 1
            if not isinstance(out, Sym) and plain(out) < 1:
                raise ShapeError(f"`{name}`'s padding={plain(p[i])} crops the output along dimension {i + 2} of "
                                 f"{b.x.shape_str()} to size {plain(out)}", code="E0302", arg="padding",
                                 input=0, label="too much padding", help="use less padding or a larger input")
            spatial.append(out)
        return _out_shape(b, spatial)
    return infer


def _transposed_weights(n: int):
    def weights(a):
        w = (a["in_channels"], a["out_channels"] // a["groups"]) + ntuple(a["kernel_size"], n)
        return {"weight": w, **({"bias": (a["out_channels"],)} if a["bias"] else {})}
    return weights


def _transposed_macs(n: int):
    def macs(b, out):
        return product(b.x.shape) * (b["out_channels"] // b["groups"]) * product(ntuple(b["kernel_size"], n))
    return macs


def _transposed_arbitrary(n: int):
    def draw(d):
        groups = d.choice([1, 1, 2])
        stride = d.int(1, 3)
        dil = d.int(1, 2)
        args = {"out_channels": groups * d.int(1, 3), "kernel_size": [d.int(1, 4) for _ in range(n)],
                "stride": d.choice([stride, [stride] * n]), "padding": d.int(0, 1),
                "output_padding": d.int(0, max(stride, dil) - 1), "groups": groups, "bias": d.bool(),
                "dilation": dil}
        return Example(args, (S(2, groups * d.int(1, 2), *(d.int(2, 5) for _ in range(n))),))
    return draw


def _transposed_onnx(n_dims: int):
    def emit(g, n):
        """ONNX ConvTranspose: weight (in, out/groups, *k) as torch; out = (in−1)·s − 2p + d·(k−1) + op + 1."""
        ints = lambda a: [plain(v) for v in ntuple(n[a], n_dims)]  # noqa: E731
        k, s, p, op, d = (ints(a) for a in ("kernel_size", "stride", "padding", "output_padding", "dilation"))
        attrs = {"kernel_shape": k, "strides": s, "dilations": d, "group": plain(n["groups"])}
        x, w = n.inputs[0], n.weight("weight")
        # a run-time size of 1 can crop the output to nothing: torch gives an empty tensor
        may_vanish = any(isinstance(size, Sym) and d_ * (k_ - 1) + o_ + 1 - 2 * p_ < 1
                         for size, k_, p_, o_, d_ in zip(n.x.shape[2:], k, p, op, d))
        if all(o < st for o, st in zip(op, s)) and not may_vanish:
            bias = [n.weight("bias")] if n["bias"] else []
            return [g.op("ConvTranspose", [x, w] + bias, pads=p * 2, output_padding=op, **attrs)]
        return [_transposed_by_cropping(g, n, x, w, p, op, attrs)]
    return emit


def _transposed_by_cropping(g, n, x: str, w: str, p: list, op: list, attrs: dict) -> str:
    """torch's own definition: the full transposed convolution, output_padding zeros past its end,
    cropped by p on the left and p − output_padding on the right, then the bias.

    For output_padding ≥ stride (torch allows it below the dilation; onnxruntime refuses it), and
    for run-time sizes the crop empties (onnxruntime fails on an empty ConvTranspose output)."""
    y = g.op("ConvTranspose", [x, w], **attrs)
    rank = len(p) + 2
    if any(op):
        y = g.op("Pad", [y, g.ints([0] * rank + [0, 0] + op)])
    ends = g.shape([pi + size for pi, size in zip(p, n.outputs[0].shape[2:])])
    y = g.op("Slice", [y, g.ints(p), ends, g.ints(range(2, rank))])
    if n["bias"]:
        y = g.op("Add", [y, g.op("Reshape", [n.weight("bias"), g.ints([-1] + [1] * len(p))])])
    return y


def _transposed(n: int, doc: str, examples: tuple) -> None:
    name = f"ConvTranspose{n}d"
    register(OpDef(
        name=name, kind="layer", family="conv", category="conv_transpose", spatial=n, stem="deconv", doc=doc,
        params=(ParamSpec("out_channels", INT, check=checks.positive),
                ParamSpec("kernel_size", Ints(n), check=checks.positive),
                ParamSpec("stride", Ints(n), 1, checks.positive),
                ParamSpec("padding", Ints(n), 0, checks.non_negative),
                ParamSpec("output_padding", Ints(n), 0, checks.non_negative),
                ParamSpec("groups", INT, 1, checks.positive),
                ParamSpec("bias", BOOL, True),
                ParamSpec("dilation", Ints(n), 1, checks.positive)),
        resolve=_channel_resolve(n), infer=_transposed_infer(n),
        weights=_transposed_weights(n), macs=_transposed_macs(n), label=_label(n, name),
        torch=TorchLayer(f"nn.{name}", ("in_channels", "out_channels", "kernel_size"),
                         ("stride", "padding", "output_padding", "groups", "bias", "dilation")),
        onnx=_transposed_onnx(n), examples=examples, arbitrary=_transposed_arbitrary(n),
    ))


_transposed(1, "Transposed 1-d convolution (learned upsampling of [N, C, L]); in_channels is inferred.", (
    Example({"out_channels": 4, "kernel_size": 4, "stride": 2, "padding": 1}, (S(2, 3, 5),)),
    Example({"out_channels": 4, "kernel_size": 3, "stride": 1, "output_padding": 1, "dilation": 2, "groups": 2},
            (S(2, 2, 6),)),
))
_transposed(2, "Transposed 2-d convolution (learned upsampling of [N, C, H, W]); in_channels is inferred.", (
    Example({"out_channels": 8, "kernel_size": 2, "stride": 2}, (S(2, 4, 5, 5),)),
    Example({"out_channels": 6, "kernel_size": 3, "stride": [2, 3], "padding": 1, "output_padding": [1, 2],
             "groups": 3, "bias": False}, (S(2, 3, 4, 3),)),
))
