"""A str, bool or none parameter passed to a layer as it is (`mode=mode`, `bias=bias`), where no legal
value of it changes the layer's output types, stays a live constructor argument of the generated
class (backends/neutral.py), as a person passes it through: `nn.Upsample(scale_factor=2, mode=mode)`.

The class compiled at the defaults, built with other values, is checked against dslc's own build at
those values (compiled for them) and against a hand-written twin; a parameter that changes a shape,
or that anything else reads, keeps its guard."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import dslc
from dslc.backends.neutral import choices
from dslc.backends.pymodule import exec_source
from dslc.ops.registry import REGISTRY

torch.set_num_threads(1)

SPEC = """\
model M(mode: str = "nearest", bias: bool = true) {
    input x: [B, 4, 8, 8]
    x -> Upsample(scale_factor=2, mode=mode) -> Conv2d(4, 3, padding=1, bias=bias)
}

# the same layers written as functions in forward: the value is kept as `self.mode`
model Fn(mode: str = "nearest", bias: bool = true) {
    input x: [B, 4, 8, 8]
    h = x -> Conv2d(4, 3, padding=1, bias=bias) as conv
    y = x -> Upsample(scale_factor=2, mode=mode)
    output concat([Upsample(scale_factor=2, mode=mode)(h), y], dim=1)
}
"""


def _load(tmp_path, text: str, name: str = "m.dl"):
    path = tmp_path / name
    path.write_text(text)
    prog = dslc.load(str(path))
    return prog, prog.source()


class Twin(nn.Module):
    """M by hand."""

    def __init__(self, mode="nearest", bias=True):
        super().__init__()
        self.up = nn.Upsample(scale_factor=2, mode=mode)
        self.conv = nn.Conv2d(4, 4, 3, padding=1, bias=bias)

    def forward(self, x):
        return self.conv(self.up(x))


VALUES = [("nearest", True), ("bilinear", False), ("bicubic", True), ("nearest", False)]


@pytest.mark.parametrize("model", ["M", "Fn"])
@pytest.mark.parametrize("mode, bias", VALUES)
def test_the_class_builds_each_value_as_dslc_builds_it(tmp_path, model, mode, bias):
    prog, source = _load(tmp_path, SPEC)
    assert "compiled for mode" not in source and "compiled for bias" not in source
    mine = exec_source(source, "<m>").build(model, seed=0, mode=mode, bias=bias).eval()
    theirs = prog.build(model, seed=0, mode=mode, bias=bias).eval()
    got, want = mine.state_dict(), theirs.state_dict()
    assert [(k, v.shape) for k, v in got.items()] == [(k, v.shape) for k, v in want.items()]
    assert all(torch.equal(got[k], want[k]) for k in got)
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(mine(x), theirs(x))


@pytest.mark.parametrize("mode, bias", VALUES)
def test_the_class_is_its_twin(tmp_path, mode, bias):
    _, source = _load(tmp_path, SPEC)
    assert "nn.Upsample(scale_factor=2, mode=mode)" in source and "bias=bias" in source
    mine = exec_source(source, "<m>").build("M", mode=mode, bias=bias).eval()
    twin = Twin(mode, bias).eval()
    # an nn.Sequential's keys are places: the convolution is `1`, the twin's `conv`
    renamed = {k.replace("1.", "conv.", 1): v for k, v in mine.state_dict().items()}
    assert [(k, v.shape) for k, v in renamed.items()] == [(k, v.shape) for k, v in twin.state_dict().items()]
    twin.load_state_dict(renamed)
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.equal(mine(x), twin(x))


def test_a_function_in_forward_reads_the_value_kept_in_the_constructor(tmp_path):
    _, source = _load(tmp_path, SPEC)
    fn = source.split("class Fn(")[1]
    assert "self.mode = mode" in fn and "mode=self.mode" in fn
    mine = exec_source(source, "<m>").build("Fn", mode="bilinear", bias=False).eval()
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        h = F.conv2d(x, mine.conv.weight, padding=1)
        want = torch.cat([F.interpolate(h, scale_factor=2.0, mode="bilinear"),
                          F.interpolate(x, scale_factor=2.0, mode="bilinear")], dim=1)
        assert torch.equal(mine(x), want)


def test_a_value_the_layer_refuses_is_refused_with_the_spec_line(tmp_path):
    prog, source = _load(tmp_path, SPEC)
    module = exec_source(source, "<m>")
    # "linear" is for 3-d input, "trilinear" for 5-d: dslc refuses them for this 4-d one, so does the class
    for bad in ("linear", "trilinear", "bogus"):
        with pytest.raises(ValueError, match=r'M needs mode in \("nearest", "bilinear", "bicubic"\) \(m.dl:3\)'):
            module.build("M", mode=bad)
    with pytest.raises(dslc.DslcError):
        prog.build("M", mode="linear")


SHAPED = """\
model Padded(p: str = "same") {
    input x: [B, 3, 8, 8]
    x -> Conv2d(4, 3, padding=p) -> Flatten() -> Linear(10)
}

model Branched(mode: str = "nearest") {
    input x: [B, 3, 8, 8]
    h = x -> Upsample(scale_factor=2, mode=mode)
    output (h -> Conv2d(4, 1) as conv) if mode == "nearest" else h
}

model Other(mode: str = "nearest", act: str = "tanh") {
    input x: [B, 3, 8, 8]
    x -> Upsample(scale_factor=2, mode=mode) -> Conv2d(4, 1) -> GELU(approximate=act)
}
"""


def test_a_parameter_that_changes_a_shape_or_is_read_otherwise_keeps_its_guard(tmp_path):
    prog, source = _load(tmp_path, SHAPED)
    module = exec_source(source, "<m>")
    # "valid" shrinks the convolution's output, which the Linear's in_features were computed from
    with pytest.raises(ValueError, match=r'Padded was compiled for p="same"'):
        module.build("Padded", p="valid")
    assert prog.graph("Padded", params={"p": "valid"}).params["p"] == "valid"   # dslc builds it, differently
    # read by the condition too: the other value builds another structure
    with pytest.raises(ValueError, match=r'Branched was compiled for mode="nearest"'):
        module.build("Branched", mode="bilinear")
    # GELU's approximate is "none" or "tanh": both give the same shape, so both parameters are live
    other = source.split("class Other(")[1]
    assert "nn.GELU(approximate=act)" in other and "compiled for" not in other
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(4))
    mine = module.build("Other", mode="bicubic", act="none").eval()
    theirs = prog.build("Other", seed=0, mode="bicubic", act="none").eval()
    with torch.no_grad():
        assert torch.equal(mine(x), theirs(x))


BLOCKS = """\
block Up(mode: str) {
    input x: [B, C, H, W]
    x -> Upsample(scale_factor=2, mode=mode) -> Conv2d(C, 3, padding=1)
}

model Ups(a: bool = true, b: bool = true, c: bool = true, d: bool = false) {
    input x: [B, 4, 4, 4]
    x -> Up("nearest") -> Up("bilinear") -> Conv2d(4, 1, bias=a) -> Conv2d(4, 1, bias=b) ->
        Conv2d(4, 1, bias=c) -> Conv2d(4, 1, bias=d)
}
"""


def test_a_block_takes_the_value_and_its_uses_share_one_class(tmp_path):
    prog, source = _load(tmp_path, BLOCKS)
    assert source.count("class Up(") == 1 and 'Up(4, "nearest"), Up(4, "bilinear")' in source
    # four flags, more than are compiled every way: each is live as a layer's argument all the same
    assert "compiled for" not in source
    mine = exec_source(source, "<m>").build("Ups", seed=0, a=False, d=True).eval()
    theirs = prog.build("Ups", seed=0, a=False, d=True).eval()
    assert list(mine.state_dict()) == list(theirs.state_dict())
    x = torch.randn(2, 4, 4, 4, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        assert torch.equal(mine(x), theirs(x))


def test_the_values_of_a_parameter_type():
    upsample = REGISTRY["Upsample"]
    assert choices(upsample.param("mode").type) == ("nearest", "linear", "bilinear", "bicubic", "trilinear")
    assert choices(upsample.param("align_corners").type) == (None, False, True)
    assert choices(REGISTRY["Conv2d"].param("padding").type) is None   # ints too: not listed


PASSED_ON = """\
block Inner(m: str, b: bool) {
    input x: [B, C, H, W]
    x -> Upsample(scale_factor=2, mode=m) -> Conv2d(C, 3, padding=1, bias=b)
}

block Outer(mode: str, bias: bool = true) {
    input x: [B, C, H, W]
    x -> Inner(mode, bias) -> Inner("nearest", bias)
}

model Nested(mode: str = "nearest", bias: bool = true) {
    input x: [B, 3, 4, 4]
    x -> Outer(mode, bias=bias) -> Outer("bicubic")
}

model Repeated(mode: str = "nearest") {
    input x: [B, 3, 4, 4]
    h = x
    repeat 2 {
        h = h -> Upsample(scale_factor=2, mode=mode) -> Conv2d(3, 3, padding=1)
    }
    output h
}

block Pad(p: str) {
    input x: [B, C, H, W]
    x -> Conv2d(C, 3, padding=p)
}

model Padded(p: str = "same") {
    input x: [B, 3, 8, 8]
    x -> Pad(p) -> Flatten() -> Linear(10)
}
"""


@pytest.mark.parametrize("model, values", [("Nested", {"mode": "bilinear", "bias": False}),
                                           ("Nested", {"mode": "bicubic"}),
                                           ("Repeated", {"mode": "bilinear"})])
def test_a_parameter_passed_on_through_blocks_stays_live(tmp_path, model, values):
    prog, source = _load(tmp_path, PASSED_ON)
    assert "Outer(3, mode, bias=bias)" in source and "Inner(in_channels, mode, bias)" in source
    assert "RepeatedBlock(3, mode), RepeatedBlock(3, mode)" in source
    mine = exec_source(source, "<m>").build(model, seed=0, **values).eval()
    theirs = prog.build(model, seed=0, **values).eval()
    got, want = mine.state_dict(), theirs.state_dict()
    assert [(k, v.shape) for k, v in got.items()] == [(k, v.shape) for k, v in want.items()]
    assert all(torch.equal(got[k], want[k]) for k in got)
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        assert torch.equal(mine(x), theirs(x))
    # a block's argument that changes a shape: the block's class bakes it, the model keeps its guard
    with pytest.raises(ValueError, match=r'Padded was compiled for p="same"'):
        exec_source(source, "<m>").build("Padded", p="valid")
