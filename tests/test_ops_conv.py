"""Convolution, pooling and resizing entries against hand-written torch modules.

The torch modules here are built directly (`nn.Conv2d(...)`), not through
dslc, and compared with the registry's shape rules, weights, MACs and labels
in the cases that are easy to get wrong: groups and depthwise convolutions,
dilation, padding="same", padding modes, transposed output_padding,
ceil_mode's last-window rule, adaptive sizes with `none`, run-time sizes,
and the errors each rule reports.
"""
from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dslc.frontend.binding import convert
from dslc.ir.dims import Size, Sym, plain, recording
from dslc.ir.types import TensorType
from dslc.ops import REGISTRY
from dslc.ops.registry import Bound, ShapeError

B, T = Sym.var("B"), Sym.var("T")


def rule(name: str, shape, **kwargs):
    """Bind `kwargs` as the frontend does, run resolve + infer; returns (op, bound, output type)."""
    op = REGISTRY[name]
    args = {p.name: convert(p, kwargs[p.name], None, name) if p.name in kwargs else p.default for p in op.params}
    b = Bound(op, args, [TensorType(tuple(shape))])
    if op.resolve:
        b.args.update(op.resolve(b))
    outs = op.infer(b)
    assert len(outs) == 1
    return op, b, outs[0]


def out_shape(name: str, shape, **kwargs) -> tuple:
    return tuple(plain(d) for d in rule(name, shape, **kwargs)[2].shape)


def error(name: str, shape, **kwargs) -> ShapeError:
    with pytest.raises(ShapeError) as info:
        rule(name, shape, **kwargs)
    return info.value


def assert_matches(name: str, kwargs: dict, shape: tuple, module: nn.Module) -> None:
    """Output shape, parameter count and state-dict names/shapes equal the torch module's."""
    op, b, out = rule(name, shape, **kwargs)
    with torch.no_grad():
        got = module(torch.randn(shape))
    assert tuple(plain(d) for d in out.shape) == tuple(got.shape)
    weights = {k: tuple(plain(d) for d in v) for k, v in op.weight_shapes(b.args).items()}
    assert weights == {k: tuple(v.shape) for k, v in module.state_dict().items()}
    assert sum(math.prod(s) for s in weights.values()) == sum(p.numel() for p in module.parameters())


# ---------------------------------------------------------------- convolutions

CONV_CASES = [
    # depthwise: groups = in = out
    ("Conv2d", dict(out_channels=8, kernel_size=3, padding=1, groups=8), (2, 8, 7, 7),
     lambda: nn.Conv2d(8, 8, 3, padding=1, groups=8)),
    # grouped, per-dimension kernel, stride and dilation, no bias
    ("Conv2d", dict(out_channels=12, kernel_size=[3, 5], stride=[2, 1], dilation=[1, 2], groups=4, bias=False),
     (2, 8, 11, 13), lambda: nn.Conv2d(8, 12, (3, 5), stride=(2, 1), dilation=(1, 2), groups=4, bias=False)),
    # "same" with an even kernel and odd total padding: torch pads the extra pixel on the right
    ("Conv1d", dict(out_channels=5, kernel_size=4, padding="same", dilation=3, padding_mode="reflect"), (2, 3, 12),
     lambda: nn.Conv1d(3, 5, 4, padding="same", dilation=3, padding_mode="reflect")),
    ("Conv2d", dict(out_channels=4, kernel_size=[2, 5], padding="same", dilation=2, padding_mode="circular"),
     (2, 3, 6, 9), lambda: nn.Conv2d(3, 4, (2, 5), padding="same", dilation=2, padding_mode="circular")),
    ("Conv3d", dict(out_channels=2, kernel_size=[1, 3, 2], padding="valid"), (2, 2, 3, 5, 4),
     lambda: nn.Conv3d(2, 2, (1, 3, 2), padding="valid")),
    ("Conv2d", dict(out_channels=3, kernel_size=3, stride=3, padding=[2, 1], padding_mode="circular"),
     (2, 2, 5, 7), lambda: nn.Conv2d(2, 3, 3, stride=3, padding=(2, 1), padding_mode="circular")),
    # replicate padding may exceed the input size
    ("Conv1d", dict(out_channels=2, kernel_size=3, padding=4, padding_mode="replicate"), (2, 1, 2),
     lambda: nn.Conv1d(1, 2, 3, padding=4, padding_mode="replicate")),
    # a kernel exactly as wide as the padded input
    ("Conv2d", dict(out_channels=6, kernel_size=5, padding=1), (2, 3, 3, 3), lambda: nn.Conv2d(3, 6, 5, padding=1)),
    ("Conv3d", dict(out_channels=4, kernel_size=2, stride=2, dilation=[1, 2, 1], groups=2), (2, 2, 4, 5, 6),
     lambda: nn.Conv3d(2, 4, 2, stride=2, dilation=(1, 2, 1), groups=2)),
]

TRANSPOSED_CASES = [
    ("ConvTranspose2d", dict(out_channels=6, kernel_size=3, stride=2, padding=1, output_padding=1, groups=2),
     (2, 4, 5, 6), lambda: nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2)),
    # output_padding may reach dilation - 1 even at stride 1
    ("ConvTranspose1d", dict(out_channels=2, kernel_size=3, output_padding=2, dilation=3), (2, 3, 4),
     lambda: nn.ConvTranspose1d(3, 2, 3, output_padding=2, dilation=3)),
    ("ConvTranspose2d", dict(out_channels=3, kernel_size=[2, 3], stride=[3, 2], output_padding=[2, 1],
                             dilation=[1, 2], bias=False), (2, 5, 3, 4),
     lambda: nn.ConvTranspose2d(5, 3, (2, 3), stride=(3, 2), output_padding=(2, 1), dilation=(1, 2), bias=False)),
    ("ConvTranspose1d", dict(out_channels=4, kernel_size=4, stride=2, padding=1, groups=4), (2, 4, 7),
     lambda: nn.ConvTranspose1d(4, 4, 4, stride=2, padding=1, groups=4)),
]


@pytest.mark.parametrize("name,kwargs,shape,make", CONV_CASES + TRANSPOSED_CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CONV_CASES + TRANSPOSED_CASES)])
def test_conv_matches_torch(name, kwargs, shape, make):
    torch.manual_seed(0)
    assert_matches(name, kwargs, shape, make())


def test_conv_macs_and_labels():
    op, b, out = rule("Conv2d", (2, 3, 32, 32), out_channels=64, kernel_size=3, stride=2, padding=1)
    assert out.shape == (2, 64, 16, 16)
    assert op.macs(b, [out]) == 2 * 64 * 16 * 16 * 3 * 3 * 3
    assert op.label_text(b.args) == "Conv2d 3×3 /2, 64"
    op, b, out = rule("Conv2d", (2, 32, 8, 8), out_channels=32, kernel_size=3, padding=1, groups=32)
    assert op.macs(b, [out]) == 2 * 32 * 8 * 8 * 1 * 9  # depthwise: one input channel per output
    assert op.label_text(b.args) == "Conv2d 3×3, 32, groups 32"
    op, b, out = rule("Conv1d", (2, 4, 10), out_channels=6, kernel_size=5, stride=[3], groups=2)
    assert op.label_text(b.args) == "Conv1d 5 /3, 6, groups 2"
    op, b, out = rule("ConvTranspose2d", (2, 4, 5, 5), out_channels=8, kernel_size=2, stride=2)
    assert out.shape == (2, 8, 10, 10)
    assert op.macs(b, [out]) == 2 * 4 * 5 * 5 * 8 * 2 * 2  # every input element scatters out·k² products
    assert op.label_text(b.args) == "ConvTranspose2d 2×2 /2, 8"


def test_conv_weights_follow_torch_names_and_layouts():
    op, b, _ = rule("ConvTranspose2d", (2, 6, 3, 3), out_channels=4, kernel_size=[2, 3], groups=2, bias=True)
    assert op.weight_shapes(b.args) == {"weight": (6, 2, 2, 3), "bias": (4,)}
    op, b, _ = rule("Conv3d", (2, 6, 3, 3, 3), out_channels=4, kernel_size=1, groups=2, bias=False)
    assert op.weight_shapes(b.args) == {"weight": (4, 3, 1, 1, 1)}


def test_conv_with_runtime_length_agrees_with_torch_at_every_length():
    conv = nn.Conv1d(3, 4, 3, stride=2, padding=1, dilation=2)
    deconv = nn.ConvTranspose1d(3, 4, 4, stride=2, padding=1)
    _, _, same = rule("Conv1d", (B, 3, T), out_channels=4, kernel_size=4, padding="same")
    assert same.shape[2] == T
    _, _, out = rule("Conv1d", (B, 3, T), out_channels=4, kernel_size=3, stride=2, padding=1, dilation=2)
    _, _, up = rule("ConvTranspose1d", (B, 3, T), out_channels=4, kernel_size=4, stride=2, padding=1)
    with torch.no_grad():
        for t in range(3, 12):
            x = torch.randn(2, 3, t)
            assert out.concrete(B=2, T=t) == tuple(conv(x).shape)
            assert up.concrete(B=2, T=t) == tuple(deconv(x).shape)


def test_conv_keeps_parameter_expressions():
    image = Size.param("image", 32)
    _, _, out = rule("Conv2d", (B, 3, image, image), out_channels=8, kernel_size=3, stride=2, padding=1)
    assert isinstance(out.shape[2], Size) and plain(out.shape[2]) == 16


# ---------------------------------------------------------------- convolution errors

def test_conv_on_flat_input_names_the_layer_and_layout():
    err = error("Conv2d", (B, 784), out_channels=32, kernel_size=3)
    assert err.code == "E0402"
    assert err.message == "`Conv2d` expects a 4-d input [N, C, H, W], got [B, 784]"
    assert error("Conv1d", (2, 3, 4, 5), out_channels=2, kernel_size=1).code == "E0402"
    assert error("ConvTranspose2d", (3, 4, 5), out_channels=2, kernel_size=1).code == "E0402"


def test_kernel_larger_than_input():
    err = error("Conv2d", (2, 3, 4, 4), out_channels=8, kernel_size=5)
    assert err.code == "E0404" and "Conv2d" in err.message
    assert error("Conv1d", (2, 3, 4), out_channels=8, kernel_size=3, dilation=2).code == "E0404"
    with pytest.raises(RuntimeError):
        nn.Conv1d(3, 8, 3, dilation=2)(torch.randn(2, 3, 4))


def test_groups_must_divide_both_channel_counts():
    err = error("Conv2d", (2, 6, 8, 8), out_channels=32, kernel_size=3, groups=4)
    assert err.code == "E0405" and err.arg == "groups" and "in_channels" in err.message
    err = error("Conv2d", (2, 6, 8, 8), out_channels=8, kernel_size=3, groups=3)
    assert err.code == "E0405" and "out_channels" in err.message
    assert error("ConvTranspose1d", (2, 4, 5), out_channels=3, kernel_size=2, groups=2).code == "E0405"
    with pytest.raises(ValueError):
        nn.Conv2d(6, 8, 3, groups=3)


def test_same_padding_needs_stride_one():
    err = error("Conv2d", (2, 3, 8, 8), out_channels=4, kernel_size=3, stride=2, padding="same")
    assert err.code == "E0302" and err.arg == "padding"
    with pytest.raises(ValueError):
        nn.Conv2d(3, 4, 3, stride=2, padding="same")


@pytest.mark.parametrize("mode,pad,size,fails", [("reflect", 4, 4, True), ("reflect", 3, 4, False),
                                                 ("circular", 4, 4, False), ("circular", 5, 4, True)])
def test_padding_modes_limit_the_padding(mode, pad, size, fails):
    kwargs = dict(out_channels=2, kernel_size=3, padding=pad, padding_mode=mode)
    module = nn.Conv1d(1, 2, 3, padding=pad, padding_mode=mode)
    if fails:
        assert error("Conv1d", (2, 1, size), **kwargs).code == "E0404"
        with pytest.raises(RuntimeError):
            module(torch.randn(2, 1, size))
    else:
        assert_matches("Conv1d", kwargs, (2, 1, size), module)


def test_transposed_output_padding_and_cropping():
    err = error("ConvTranspose2d", (2, 3, 4, 4), out_channels=2, kernel_size=3, stride=2, output_padding=2)
    assert err.code == "E0302" and err.arg == "output_padding"
    with pytest.raises(RuntimeError):
        nn.ConvTranspose2d(3, 2, 3, stride=2, output_padding=2)(torch.randn(2, 3, 4, 4))
    err = error("ConvTranspose1d", (2, 3, 1), out_channels=2, kernel_size=1, padding=1)
    assert err.code == "E0302" and err.arg == "padding"
    with pytest.raises(RuntimeError):
        nn.ConvTranspose1d(3, 2, 1, padding=1)(torch.randn(2, 3, 1))


# ---------------------------------------------------------------- windowed pools

def _torch_or_none(f):
    try:
        return tuple(f().shape)
    except RuntimeError:
        return None


def _rule_or_none(name, shape, **kwargs):
    try:
        return out_shape(name, shape, **kwargs)
    except ShapeError as err:
        assert err.code in ("E0404", "E0302"), err.message
        return None


def test_pool1d_output_sizes_follow_torch_exactly():
    """Every small case, ceil_mode's last-window rule and the failures included."""
    for n, k, s, p, d, ceil in itertools.product(range(1, 8), range(1, 5), range(1, 5), range(0, 3), (1, 2),
                                                 (False, True)):
        x = torch.randn(1, 2, n)
        got = _torch_or_none(lambda: F.max_pool1d(x, k, s, p, d, ceil_mode=ceil))  # noqa: B023 (called at once)
        assert _rule_or_none("MaxPool1d", (1, 2, n), kernel_size=k, stride=s, padding=p, dilation=d,
                             ceil_mode=ceil) == got, (n, k, s, p, d, ceil)
        if d == 1:
            got = _torch_or_none(lambda: F.avg_pool1d(x, k, s, p, ceil_mode=ceil))  # noqa: B023 (called at once)
            assert _rule_or_none("AvgPool1d", (1, 2, n), kernel_size=k, stride=s, padding=p,
                                 ceil_mode=ceil) == got, (n, k, s, p, ceil)


def test_ceil_mode_drops_a_window_that_starts_in_the_right_padding():
    # windows start at -1, 2, 5 in a length-4 input padded by 1: the last starts past 4 + 1
    assert out_shape("MaxPool1d", (2, 3, 4), kernel_size=2, stride=3, padding=1, ceil_mode=True) == (2, 3, 2)
    assert tuple(nn.MaxPool1d(2, stride=3, padding=1, ceil_mode=True)(torch.randn(2, 3, 4)).shape) == (2, 3, 2)


POOL_CASES = [
    ("MaxPool2d", dict(kernel_size=[2, 3], stride=[2, 1], dilation=[1, 2], ceil_mode=True), (2, 3, 5, 8),
     lambda: nn.MaxPool2d((2, 3), stride=(2, 1), dilation=(1, 2), ceil_mode=True)),
    ("MaxPool2d", dict(kernel_size=3, stride=2, padding=1), (3, 7, 9), lambda: nn.MaxPool2d(3, 2, 1)),
    ("AvgPool2d", dict(kernel_size=4, stride=3, padding=2, ceil_mode=True, count_include_pad=False), (2, 3, 5, 6),
     lambda: nn.AvgPool2d(4, 3, 2, ceil_mode=True, count_include_pad=False)),
    ("AvgPool1d", dict(kernel_size=3), (4, 10), lambda: nn.AvgPool1d(3)),
    ("AdaptiveAvgPool2d", dict(output_size=[None, 3]), (2, 3, 5, 7), lambda: nn.AdaptiveAvgPool2d((None, 3))),
    ("AdaptiveMaxPool2d", dict(output_size=[4, None]), (3, 5, 7), lambda: nn.AdaptiveMaxPool2d((4, None))),
    ("AdaptiveAvgPool2d", dict(output_size=1), (2, 3, 5, 7), lambda: nn.AdaptiveAvgPool2d(1)),
    ("AdaptiveMaxPool1d", dict(output_size=9), (2, 3, 4), lambda: nn.AdaptiveMaxPool1d(9)),
    ("AdaptiveAvgPool1d", dict(output_size=[2]), (3, 4), lambda: nn.AdaptiveAvgPool1d((2,))),
    ("Upsample", dict(scale_factor=1.7), (2, 3, 7, 5), lambda: nn.Upsample(scale_factor=1.7)),
    ("Upsample", dict(scale_factor=[0.75, 2], mode="bilinear", align_corners=True), (2, 3, 7, 5),
     lambda: nn.Upsample(scale_factor=(0.75, 2), mode="bilinear", align_corners=True)),
    ("Upsample", dict(size=6, mode="bicubic"), (2, 3, 7, 5), lambda: nn.Upsample(size=6, mode="bicubic")),
    ("Upsample", dict(size=[2, 3, 4], mode="trilinear"), (2, 1, 3, 3, 3),
     lambda: nn.Upsample(size=(2, 3, 4), mode="trilinear")),
    ("Upsample", dict(scale_factor=0.1), (2, 3, 33), lambda: nn.Upsample(scale_factor=0.1)),
    ("PixelShuffle", dict(upscale_factor=3), (2, 3, 18, 4, 5), lambda: nn.PixelShuffle(3)),
]


@pytest.mark.parametrize("name,kwargs,shape,make", POOL_CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(POOL_CASES)])
def test_pools_and_resizing_match_torch(name, kwargs, shape, make):
    assert_matches(name, kwargs, shape, make())
    op, b, out = rule(name, shape, **kwargs)
    assert op.macs(b, [out]) == 0 and not op.has_state


def test_upsample_scale_follows_torchs_double_product():
    for n, f in itertools.product(range(1, 40), (0.1, 0.3, 1 / 3, 0.7, 1.1, 1.7, 2.5, 3.0)):
        want = tuple(F.interpolate(torch.randn(1, 1, n), scale_factor=f).shape) if math.floor(n * f) else None
        got = _rule_or_none("Upsample", (1, 1, n), scale_factor=f)
        assert got == want, (n, f)


def test_pools_with_runtime_length():
    _, _, out = rule("MaxPool1d", (B, 3, T), kernel_size=3, stride=2, padding=1, ceil_mode=True)
    _, _, up = rule("Upsample", (B, 3, T), scale_factor=1.5, mode="linear")
    _, _, ad = rule("AdaptiveAvgPool1d", (B, 3, T), output_size=4)
    with torch.no_grad():
        for t in range(2, 12):
            x = torch.randn(2, 3, t)
            assert out.concrete(B=2, T=t) == tuple(F.max_pool1d(x, 3, 2, 1, ceil_mode=True).shape)
            assert up.concrete(B=2, T=t) == tuple(F.interpolate(x, scale_factor=1.5, mode="linear").shape)
    assert ad.shape[2] == 4 and ad.shape[0] == B
    # whether the last window is dropped depends on T: not decidable at compile time
    assert error("MaxPool1d", (B, 3, T), kernel_size=2, stride=3, ceil_mode=True).code == "E0311"
    assert error("Upsample", (B, 3, T), scale_factor=0.1).code == "E0311"


def test_ceil_mode_records_a_guard_only_when_it_decides():
    image = Size.param("image", 32)
    with recording() as guards:
        _, _, out = rule("MaxPool2d", (B, 3, image, image), kernel_size=3, stride=2, padding=1, ceil_mode=True)
    want = F.max_pool2d(torch.randn(1, 3, 32, 32), 3, 2, 1, ceil_mode=True).shape[2]
    assert plain(out.shape[2]) == want and isinstance(out.shape[2], Size) and guards == []
    with recording() as guards:
        rule("MaxPool2d", (B, 3, image, image), kernel_size=2, stride=3, ceil_mode=True)
    assert guards  # the last window's position depends on `image`


def test_stateless_layers_have_functional_forms():
    for name in ("MaxPool1d", "MaxPool2d", "AvgPool1d", "AvgPool2d", "AdaptiveAvgPool1d", "AdaptiveAvgPool2d",
                 "AdaptiveMaxPool1d", "AdaptiveMaxPool2d", "Upsample", "PixelShuffle"):
        op = REGISTRY[name]
        assert op.torch.functional is not None and not op.has_state, name


def test_pool_labels():
    def label(name, shape, **kw):
        op, b, _ = rule(name, shape, **kw)
        return op.label_text(b.args)
    assert label("MaxPool2d", (2, 3, 8, 8), kernel_size=2) == "MaxPool2d 2×2"
    assert label("MaxPool2d", (2, 3, 8, 8), kernel_size=3, stride=2, padding=1) == "MaxPool2d 3×3 /2"
    assert label("AdaptiveAvgPool2d", (2, 3, 8, 8), output_size=[None, 7]) == "AdaptiveAvgPool2d → ·×7"
    assert label("Upsample", (2, 3, 8, 8), scale_factor=2.0, mode="bilinear") == "Upsample ×2 bilinear"
    assert label("PixelShuffle", (2, 4, 8, 8), upscale_factor=2) == "PixelShuffle ×2"


# ---------------------------------------------------------------- pooling errors

def test_pool_errors():
    err = error("MaxPool2d", (2, 3, 8, 8), kernel_size=2, padding=2)
    assert err.code == "E0302" and err.arg == "padding"
    with pytest.raises(RuntimeError):
        nn.MaxPool2d(2, padding=2)(torch.randn(2, 3, 8, 8))
    assert error("MaxPool2d", (2, 3, 2, 8), kernel_size=3).code == "E0404"
    assert error("AvgPool1d", (2, 3, 2), kernel_size=4, stride=1, ceil_mode=True).code == "E0404"
    # in ceil mode a window may overhang: torch accepts a kernel of 3 over 2 elements at stride 3
    assert out_shape("AvgPool1d", (2, 3, 2), kernel_size=3, ceil_mode=True) == (2, 3, 1)
    assert error("MaxPool2d", (3, 2, 8), kernel_size=3).code == "E0404"  # unbatched [C, H, W], H < kernel
    assert error("MaxPool1d", (8,), kernel_size=2).code == "E0402"
    assert error("AdaptiveAvgPool2d", (8, 8), output_size=1).code == "E0402"


def test_upsample_errors():
    err = error("Upsample", (2, 3, 4, 4), scale_factor=2.0, mode="linear")
    assert err.code == "E0402" and "linear" in err.message
    assert error("Upsample", (2, 3, 4), scale_factor=2.0, mode="trilinear").code == "E0402"
    err = error("Upsample", (2, 3, 4, 4), scale_factor=2.0, align_corners=True)
    assert err.code == "E0302" and err.arg == "align_corners"
    with pytest.raises(ValueError):
        nn.Upsample(scale_factor=2.0, align_corners=True)(torch.randn(2, 3, 4, 4))
    assert error("Upsample", (2, 3, 4, 4), size=4, scale_factor=2.0).code == "E0302"
    assert error("Upsample", (2, 3, 4, 4)).code == "E0303"
    assert error("Upsample", (2, 3, 4, 4), size=[2, 3, 4]).code == "E0402"
    assert error("Upsample", (2, 3, 4, 4), scale_factor=0.2).code == "E0302"


def test_pixel_shuffle_channels_must_divide():
    err = error("PixelShuffle", (2, 6, 4, 4), upscale_factor=2)
    assert err.code == "E0405" and "PixelShuffle" in err.message
    with pytest.raises(RuntimeError):
        nn.PixelShuffle(2)(torch.randn(2, 6, 4, 4))
    assert error("PixelShuffle", (4, 4), upscale_factor=2).code == "E0402"


# ---------------------------------------------------------------- through the compiler

SPEC = """
model Net(width: int = 8, classes: int = 10) {
    input x: [B, 3, 16, 16]
    h = x -> Conv2d(width, 3, padding=1) -> ReLU() -> MaxPool2d(2) -> Conv2d(2 * width, 3, stride=2, groups=2)
    output h -> Upsample(scale_factor=2.0, mode="bilinear") -> AvgPool2d(3, stride=2, ceil_mode=true) as pool ->
        AdaptiveAvgPool2d(1) -> Flatten() -> Linear(classes)
}
"""


def test_generated_code_runs_and_reads_like_hand_written(tmp_path):
    import dslc
    path = tmp_path / "net.dl"
    path.write_text(SPEC)
    prog = dslc.load(str(path))
    src = prog.source(["Net"])
    assert "nn.Conv2d(3, width, 3, padding=1)" in src
    assert "nn.Conv2d(width, 2 * width, 3, stride=2, groups=2)" in src
    assert "F.max_pool2d(" in src and "F.adaptive_avg_pool2d(" in src
    assert 'F.interpolate(h, scale_factor=2.0, mode="bilinear")' in src
    assert "self.pool = nn.AvgPool2d(3, stride=2, ceil_mode=True)" in src  # named: a module
    net = prog.build("Net", seed=0)
    assert tuple(net(torch.randn(2, 3, 16, 16)).shape) == (2, 10)
