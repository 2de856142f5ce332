"""A loop over a list whose layers change the spatial size, then Flatten and Linear (issue #14): the
generated class follows every size of the running value as Python (`in_channels, size = width,
size // 2`, `nn.Linear(in_channels * size ** 2, hidden)`), so the class compiled once builds, for
other lists, what dslc builds when it compiles for them and what a hand-written twin builds; what
its shape rules cannot follow keeps the class's guard.
"""
from __future__ import annotations

import os

import pytest
import torch
from torch import nn

import dslc

SPECS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "specs")
torch.set_num_threads(1)

# d2l.ai §8.2 (VGG), as d2l writes it, on 32×32 inputs rather than 224×224 (a small test)
D2L_VGG = """\
# d2l.ai §8.2 (VGG): vgg_block and VGG-11 for Fashion-MNIST resized to 224×224.
block VGGBlock(convs: int, out: int) {
    repeat convs {
        Conv2d(out, 3, padding=1)
        ReLU()
    }
    MaxPool2d(2, stride=2)
}

model VGG(arch: list = [[1, 64], [1, 128], [2, 256], [2, 512], [2, 512]], classes: int = 10) {
    input x: [B, 1, 224, 224]
    for convs, out in arch {
        VGGBlock(convs, out)
    }
    Flatten()
    Linear(4096)
    ReLU()
    Dropout(0.5)
    Linear(4096)
    ReLU()
    Dropout(0.5)
    Linear(classes)
}
""".replace("224, 224]", "32, 32]")


def _same(mine: nn.Module, theirs: nn.Module, x: torch.Tensor) -> None:
    """Keys, shapes, initial weights and eval outputs all equal (the same seed built both)."""
    got, want = mine.state_dict(), theirs.state_dict()
    assert list(got) == list(want)
    for k, v in want.items():
        assert got[k].shape == v.shape and torch.equal(got[k], v), k
    with torch.no_grad():
        assert torch.equal(mine.eval()(x), theirs.eval()(x))


def _twin_outputs(twin: nn.Module, mine: nn.Module, x: torch.Tensor) -> None:
    """The hand-written twin, loaded with the generated model's weights, computes the same."""
    twin.load_state_dict(mine.state_dict())
    with torch.no_grad():
        assert torch.equal(twin.eval()(x), mine.eval()(x))


def small_cnn_twin(widths, classes=10, hidden=256, dropout=0.5) -> nn.Sequential:
    """SmallCNN as one writes it by hand: each stage halves the 32×32 input."""
    layers, in_channels, size = [], 3, 32
    for width in widths:
        layers.append(nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)))
        in_channels, size = width, size // 2
    return nn.Sequential(*layers, nn.Flatten(), nn.Dropout(dropout), nn.Linear(in_channels * size * size, hidden),
                         nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, classes))


def test_small_cnn_follows_its_size_in_the_loop():
    source = dslc.load(os.path.join(SPECS, "small_cnn.dl")).source(["SmallCNN"])
    assert "layers, in_channels, size = [], 3, 32" in source
    assert "in_channels, size = width, size // 2" in source
    assert "nn.Linear(in_channels * size ** 2, hidden)" in source
    assert "was compiled for" not in source


@pytest.mark.parametrize("widths", [[16], [8, 16, 32, 64], None])
def test_small_cnn_class_builds_other_widths(widths):
    prog = dslc.load(os.path.join(SPECS, "small_cnn.dl"))
    params = {} if widths is None else {"widths": widths}
    module = prog.module(["SmallCNN"])   # compiled once, at the default widths
    torch.manual_seed(0)
    mine = module.SmallCNN(**params)
    theirs = prog.build("SmallCNN", seed=0, **params)
    x = torch.randn(2, 3, 32, 32)
    _same(mine, theirs, x)
    _same(module.build("SmallCNN", seed=0, **params), theirs, x)
    _twin_outputs(small_cnn_twin(widths or [32, 64, 128]), mine, x)


def d2l_vgg_twin(arch, classes=10) -> nn.Sequential:
    """d2l's vgg_block and VGG, with the flattened size computed (d2l's LazyLinear infers it)."""
    def vgg_block(num_convs, in_channels, out_channels):
        layers = []
        for _ in range(num_convs):
            layers.append(nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1))
            layers.append(nn.ReLU())
            in_channels = out_channels
        layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        return nn.Sequential(*layers)

    blocks, in_channels, size = [], 1, 32
    for num_convs, out_channels in arch:
        blocks.append(vgg_block(num_convs, in_channels, out_channels))
        in_channels, size = out_channels, size // 2
    return nn.Sequential(*blocks, nn.Flatten(), nn.Linear(in_channels * size * size, 4096), nn.ReLU(),
                         nn.Dropout(0.5), nn.Linear(4096, 4096), nn.ReLU(), nn.Dropout(0.5),
                         nn.Linear(4096, classes))


def test_d2l_vgg_class_builds_another_arch(tmp_path):
    path = tmp_path / "d2l_vgg.dl"
    path.write_text(D2L_VGG)
    prog = dslc.load(str(path))
    source = prog.source()
    assert "for convs, out in arch:" in source and "nn.Linear(in_channels * size ** 2, 4096)" in source
    assert "was compiled for" not in source
    arch = [[1, 16], [2, 32]]
    torch.manual_seed(0)
    mine = prog.module().VGG(arch=arch)
    x = torch.randn(2, 1, 32, 32)
    _same(mine, prog.build("VGG", seed=0, arch=arch), x)
    assert mine[3].in_features == 32 * 8 * 8
    _twin_outputs(d2l_vgg_twin(arch), mine, x)


RECT = """\
block ConvPool(out: int) {
    Conv2d(out, 3, padding=1)
    ReLU()
    MaxPool2d(2)
}

model Rect(widths: list[int] = [4, 8], classes: int = 3) {
    input x: [B, 3, 32, 16]
    for width in widths {
        ConvPool(width)
    }
    Flatten()
    Linear(classes)
}
"""


def test_height_and_width_where_they_differ(tmp_path):
    path = tmp_path / "rect.dl"
    path.write_text(RECT)
    prog = dslc.load(str(path))
    source = prog.source()
    # the loop variable is `width`: the running width is `w`
    assert "layers, in_channels, h, w = [], 3, 32, 16" in source
    assert "in_channels, h, w = width, h // 2, w // 2" in source
    assert "nn.Linear(in_channels * h * w, classes)" in source
    torch.manual_seed(0)
    mine = prog.module().Rect(widths=[2, 4, 6])
    _same(mine, prog.build("Rect", seed=0, widths=[2, 4, 6]), torch.randn(2, 3, 32, 16))


# A square input that a pass makes oblong: one `size` cannot follow it, `height, width` can
OBLONG = """\
model Oblong(kernels: list[int] = [3, 5], classes: int = 3) {
    input x: [B, 2, 12, 12]
    for k in kernels {
        Conv2d(4, [1, k])
        ReLU()
    }
    Flatten()
    Linear(classes)
}
"""


def test_a_pass_that_makes_the_size_oblong_is_written_with_height_and_width(tmp_path):
    path = tmp_path / "oblong.dl"
    path.write_text(OBLONG)
    prog = dslc.load(str(path))
    source = prog.source()
    assert "for k in kernels:" in source and "was compiled for" not in source
    assert "in_channels, width = 4, width - k + 1" in source
    assert "nn.Linear(in_channels * height * width, classes)" in source
    torch.manual_seed(0)
    mine = prog.module().Oblong(kernels=[2, 2, 4])
    _same(mine, prog.build("Oblong", seed=0, kernels=[2, 2, 4]), torch.randn(2, 2, 12, 12))


# A float scale the loop reads: the shape rule's product of it with a size is no whole-number size
# the class could write, so the list stays fixed (the class keeps its guard)
SCALED = """\
model Scaled(scales: list[float] = [2.0, 1.5], classes: int = 3) {
    input x: [B, 2, 4, 4]
    for s in scales {
        Upsample(scale_factor=s)
    }
    Flatten()
    Linear(classes)
}
"""


def test_a_size_the_loop_cannot_follow_keeps_the_guard(tmp_path):
    path = tmp_path / "scaled.dl"
    path.write_text(SCALED)
    prog = dslc.load(str(path))
    source = prog.source()
    assert "for s in scales" not in source
    assert "# `scales` stays fixed, not a loop: `Upsample` changes a size by `scale_factor`" in source
    assert "Scaled was compiled for scales=[2.0, 1.5]" in source
    module = prog.module()
    with pytest.raises(ValueError, match="compiled for scales"):
        module.Scaled(scales=[2.0])
    torch.manual_seed(0)
    mine = module.Scaled()
    _same(mine, prog.build("Scaled", seed=0), torch.randn(2, 2, 4, 4))


# Loops whose layers change sizes in other ways, each compiled once at its defaults and built at other
# lists: strides and a ceil-mode pool (a block's result from its graph, a residual one too), a 1-d
# length, a branch, a repeat and an integer up-sampling, a pool to a fixed size (no `size` needed), a
# flag that changes no size, and a sequence whose run-time length the loop leaves alone.
SHAPES = """\
block Down(out: int, stride: int) {
    Conv2d(out, 3, stride=stride, padding=1)
    BatchNorm2d()
    ReLU()
}

block Res(out: int, stride: int) {
    input x
    h = x -> Conv2d(out, 3, stride=stride, padding=1) -> ReLU() -> Conv2d(out, 3, padding=1)
    s = x -> Conv2d(out, 1, stride=stride)
    output h + s
}

model Strided(stages: list = [[8, 2], [16, 1], [32, 2]], classes: int = 3) {
    input x: [B, 3, 20, 20]
    for width, stride in stages {
        Down(width, stride)
        MaxPool2d(3, stride=2, padding=1, ceil_mode=true)
    }
    Flatten()
    Linear(classes)
}

model Residual(stages: list = [[8, 2], [16, 1]], classes: int = 3) {
    input x: [B, 3, 16, 16]
    for width, stride in stages {
        Res(width, stride)
    }
    Flatten()
    Linear(classes)
}

model Length(widths: list[int] = [4, 6], classes: int = 2) {
    input x: [B, 2, 30]
    for w in widths {
        Conv1d(w, 5, stride=2)
        ReLU()
    }
    Flatten()
    Linear(classes)
}

model Branch(widths: list[int] = [4, 6], classes: int = 2) {
    input x: [B, 2, 6, 6]
    for w in widths {
        ConvTranspose2d(w, 2, stride=2)
        if w > 4 {
            AvgPool2d(3)
        }
    }
    Flatten()
    Linear(classes)
}

model Grow(widths: list[int] = [4, 6], depth: int = 2, classes: int = 2) {
    input x: [B, 3, 16, 16]
    for w in widths {
        repeat depth {
            Conv2d(w, 3)
        }
        Upsample(scale_factor=2)
    }
    Flatten()
    Linear(classes)
}

model Pooled(widths: list[int] = [4, 6], classes: int = 2) {
    input x: [B, 3, 16, 16]
    for w in widths {
        Conv2d(w, 3, padding=1)
        MaxPool2d(2)
    }
    AdaptiveAvgPool2d(3)
    Flatten()
    Linear(classes)
}

model Flags(config: list = [[8, true], [16, false]], classes: int = 3) {
    input x: [B, 3, 16, 16]
    for width, bn in config {
        Conv2d(width, 3, padding=1, bias=not bn)
        MaxPool2d(2)
    }
    Flatten()
    Linear(classes)
}

model Sequence(widths: list[int] = [4, 6], classes: int = 2) {
    input x: [B, T, 8]
    for w in widths {
        Linear(w)
        ReLU()
    }
    Linear(classes)
}
"""

SHAPE_CASES = [
    ("Strided", {"stages": [[4, 1], [6, 2], [8, 2], [8, 2]]}, (2, 3, 20, 20),
     "in_channels, size = width, ((size - 1) // stride + 1) // 2 + 1"),
    ("Residual", {"stages": [[4, 1], [6, 2], [8, 2]]}, (2, 3, 16, 16), "in_channels, size = width, (size - 1) // stride + 1"),
    ("Length", {"widths": [3]}, (2, 2, 30), "nn.Linear(in_channels * length, classes)"),
    ("Branch", {"widths": [5, 3, 6]}, (2, 2, 6, 6), "        size = size // 3"),
    ("Grow", {"widths": [2], "depth": 3}, (2, 3, 16, 16), "in_channels, size = w, size - 2"),
    ("Pooled", {"widths": [2, 3, 4]}, (2, 3, 16, 16), "nn.Linear(9 * in_channels, classes)"),
    ("Flags", {"config": [[4, False], [6, False], [8, True]]}, (2, 3, 16, 16), "in_channels, size = width, size // 2"),
    ("Sequence", {"widths": [3, 5, 7]}, (2, 5, 8), "layers, in_features = [], 8"),
]


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    path = tmp_path_factory.mktemp("shapes") / "shapes.dl"
    path.write_text(SHAPES)
    prog = dslc.load(str(path))
    return prog, prog.source(), prog.module()


@pytest.mark.parametrize("name,params,shape,line", SHAPE_CASES, ids=[c[0] for c in SHAPE_CASES])
def test_other_size_rules_in_a_loop(shapes, name, params, shape, line):
    prog, source, module = shapes
    assert line in source and "was compiled for" not in source
    torch.manual_seed(0)
    mine = module.MODELS[name](**params)
    _same(mine, prog.build(name, seed=0, **params), torch.randn(*shape))


# A block that flattens what its loop made: its class takes its input's height and width (the
# caller's sizes), as it takes `in_channels`; the branch `Small` did not take is written from `Large`.
FEATURES = """\
block Features(config: list, bn: bool = false) {
    for width in config {
        Conv2d(width, 3, padding=1)
        if bn {
            BatchNorm2d()
        }
        ReLU()
        MaxPool2d(2)
    }
    Flatten()
    Linear(5)
}

model Small {
    input x: [B, 3, 8, 8]
    Features([4, 8]) as features
}

model Large {
    input x: [B, 3, 16, 8]
    Features([4, 8, 8], bn=true) as features
}
"""


def test_a_block_takes_the_sizes_its_loop_flattens(tmp_path):
    path = tmp_path / "features.dl"
    path.write_text(FEATURES)
    prog = dslc.load(str(path))
    source = prog.source()
    assert source.count("class Features") == 1
    assert "nn.Linear(in_channels * h * w, 5)" in source and "Features(3, 16, 8, [4, 8, 8], bn=True)" in source
    module = prog.module()
    for name, shape in (("Small", (2, 3, 8, 8)), ("Large", (2, 3, 16, 8))):
        torch.manual_seed(0)
        mine = module.MODELS[name]()
        _same(mine, prog.build(name, seed=0), torch.randn(*shape))
    torch.manual_seed(0)
    alone = module.Features(2, 12, 20, [3, 5], bn=True)   # another input and list than any model's
    assert alone[-1].in_features == 5 * (12 // 4) * (20 // 4)
    assert alone(torch.randn(2, 2, 12, 20)).shape == (2, 5)
