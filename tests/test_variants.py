"""One class per block (backends/variants.py): a block's specializations are written as one class
that decides in its constructor, checked against hand-written twins in torchvision's style built
with arguments the spec itself never used."""
from __future__ import annotations

import os
import re

import pytest
import torch
from torch import nn
from zoo_case import CifarBasicBlock
from zoo_vision import StyleUpsampleConvLayer

import dslc
from dslc.api import exec_source
from dslc.backends import variants

SPECS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "specs")


def _source(name: str) -> tuple[object, str]:
    prog = dslc.load(os.path.join(SPECS, name))
    return prog, prog.source()


def _classes(src: str) -> list[str]:
    return re.findall(r"^class (\w+)\(", src, re.M)


# ---------------------------------------------------------------- the pieces


def test_conditions_are_minimized_over_the_cases_that_matter():
    a = variants.Atom("s", "stride == 1", "stride != 1")
    b = variants.Atom("c", "c_in == out", "c_in != out")
    everything = {0, 1, 2, 3}
    # the projection is built unless stride == 1 and the widths agree (bit 0: a holds, bit 1: b)
    assert variants.condition({0, 1, 2}, everything, [a, b]) in (
        "stride != 1 or c_in != out", "c_in != out or stride != 1")
    assert variants.condition({3}, everything, [a, b]) == "stride == 1 and c_in == out"
    # assignments outside `care` go either way: the shorter test
    assert variants.condition({0, 2}, {0, 2, 3}, [a, b]) == "stride != 1"
    assert variants.condition(everything, everything, [a, b]) == "True"


def test_statements_keep_compound_lines_and_closing_brackets_together():
    lines = ["self.h = nn.ModuleList([", "    Block(1),", "])", "if x:", "    y = 1", "else:", "    y = 2", "z = 3"]
    assert variants.statements(lines) == [tuple(lines[:3]), tuple(lines[3:7]), (lines[7],)]


def test_hunks_rebuild_every_sequence():
    seqs = [list("abcxd"), list("abyd"), list("zabd")]
    common, parts = variants.hunks(seqs)
    assert common == list("abd")
    for s, p in zip(seqs, parts):
        rebuilt = p[0] + [common[0]] + p[1] + [common[1]] + p[2] + [common[2]] + p[3]
        assert rebuilt == s


def _shortcut_bodies(plain_return: str) -> list:
    s = variants.Atom("s", "stride != 1", "stride == 1")
    forward = ["def forward(self, x):", "    h = self.conv(x)"]
    built = variants.Body(["self.conv = nn.Conv2d(c, c, 3)", "self.proj = Proj(c, stride)"],
                          forward + ["    skip = self.proj(x)", "    return h + skip"], [[(s, True)]], {})
    plain = variants.Body(["self.conv = nn.Conv2d(c, c, 3)"], forward + [plain_return], [[(s, False)]], {})
    return [built, plain]


def test_a_member_or_none_and_a_shortcut_are_one_conditional_expression_each():
    merged = variants.merge("Block", _shortcut_bodies("    return h + x"), {"c", "stride"})
    assert merged.init == ["self.conv = nn.Conv2d(c, c, 3)", "self.proj = Proj(c, stride) if stride != 1 else None"]
    assert merged.forward == ["def forward(self, x):", "    h = self.conv(x)",
                              "    skip = self.proj(x) if self.proj is not None else x", "    return h + skip"]


def test_branches_that_differ_otherwise_stay_a_chain():
    # the other branch multiplies: not the same statements on another value
    merged = variants.merge("Block", _shortcut_bodies("    return h * x"), {"c", "stride"})
    assert merged.forward[2:] == ["    if self.proj is not None:", "        skip = self.proj(x)",
                                  "        return h + skip", "    else:", "        return h * x"]
    # a long assignment is parenthesized on two lines, the condition under the value
    assert variants._conditional("self.downsample = ", "Downsample(in_channels, expansion * width, stride=stride)",
                                 "in_channels != expansion * width or stride != 1", "None") == [
        "self.downsample = (Downsample(in_channels, expansion * width, stride=stride)",
        "                   if in_channels != expansion * width or stride != 1 else None)"]


# ---------------------------------------------------------------- ResNet's BasicBlock and Bottleneck


class BasicBlockTwin(nn.Module):
    """torchvision's BasicBlock (its projection an nn.Sequential of a 1×1 conv and a batch norm)."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False),
                                            nn.BatchNorm2d(planes))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + identity)


def _same_function(mine: nn.Module, twin: nn.Module, x: torch.Tensor) -> None:
    assert list(mine.state_dict()) == list(twin.state_dict())
    twin.load_state_dict(mine.state_dict(), strict=True)
    mine.eval(), twin.eval()
    with torch.no_grad():
        assert torch.equal(mine(x), twin(x))


def test_resnet_blocks_are_one_class_each_branching_as_torchvision_does():
    prog, src = _source("resnet.dl")
    names = _classes(src)
    assert "BasicBlock2" not in names and "Bottleneck2" not in names
    # torchvision's choice of the projection (the spec's own condition, not the part of it each use
    # evaluated), and its `identity = x if self.downsample is None else ...`
    assert "self.downsample = Downsample(in_channels, out, stride=stride) if stride != 1 or in_channels != out " \
           "else None\n" in src
    assert "does not take" not in src.split("class BasicBlock(")[1].split("\nclass ")[0]
    assert "skip = self.downsample(x) if self.downsample is not None else x\n" \
           "        return F.relu(h + skip)" in src
    module = prog.module()
    torch.manual_seed(0)
    # (8, 8, 2) and (16, 32, 1): cases no model uses; the second takes the projection as torchvision's does
    for inplanes, planes, stride in ((16, 16, 1), (16, 32, 2), (8, 8, 2), (16, 32, 1)):
        mine = module.BasicBlock(inplanes, planes, stride)
        _same_function(mine, BasicBlockTwin(inplanes, planes, stride), torch.randn(2, inplanes, 8, 8))


TWO_DECISIONS = """
block Block(out: int, stride: int = 1) {
    input x
    h = x -> Conv2d(out, 3, stride=stride, padding=1)
    if stride != 1 {
        h = h -> BatchNorm2d()
    }
    if x.shape[1] != out {
        h = h -> ReLU()
    }
    output h * 2.0
}

model M {
    input x: [B, 8, 16, 16]
    Block(16, stride=2)
    Block(16)
}
"""


def test_arguments_outside_every_compiled_case_are_refused(tmp_path):
    """The uses decide two things together (a stride and a width that both change, or neither): a
    class given one without the other would run code the file never compiled, so it says so rather
    than build something the spec may not describe."""
    path = tmp_path / "two.dl"
    path.write_text(TWO_DECISIONS)
    module = dslc.load(str(path)).module()
    module.Block(8, 16, stride=2), module.Block(16, 16)
    with pytest.raises(ValueError, match=r"^Block \(two\.dl:2\) does not take "):
        module.Block(8, 16)


# ---------------------------------------------------------------- MobileNetV2: a decision forward reads


class InvertedResidualTwin(nn.Module):
    """torchvision's InvertedResidual, in its layout (conv.0.0.weight, ...)."""

    def __init__(self, inp: int, oup: int, t: int, stride: int):
        super().__init__()
        hidden = inp * t
        self.use_res_connect = stride == 1 and inp == oup
        layers = [_conv_bn_relu6(inp, hidden, 1, 1, 1)] if t != 1 else []
        layers += [_conv_bn_relu6(hidden, hidden, 3, stride, hidden), nn.Conv2d(hidden, oup, 1, bias=False),
                   nn.BatchNorm2d(oup)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


def _conv_bn_relu6(inp: int, oup: int, k: int, stride: int, groups: int) -> nn.Module:
    """torchvision's Conv2dNormActivation: an nn.Sequential."""
    return nn.Sequential(nn.Conv2d(inp, oup, k, stride=stride, padding=(k - 1) // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(oup), nn.ReLU6())


def test_mobilenet_inverted_residual_is_one_class_whose_forward_reads_the_decision():
    prog, src = _source("mobilenet.dl")
    assert [n for n in _classes(src) if n.startswith("InvertedResidual")] == ["InvertedResidual"]
    assert "self.use_res_connect = stride == 1 and in_channels == out" in src   # the spec names it, as torchvision
    assert "return inp + h if self.use_res_connect else h" in src
    module = prog.module()
    torch.manual_seed(0)
    # (8, 8, 1, 1) and (8, 16, 1, 2): an expansion of 1 with the residual or a stride, which no use
    # in MobileNetV2 has; the class builds them as torchvision's does (no guard refuses them)
    for inp, oup, t, stride in ((16, 16, 6, 1), (16, 24, 6, 2), (16, 8, 1, 1), (8, 8, 6, 2), (8, 8, 1, 1),
                                (8, 16, 1, 2)):
        mine = module.InvertedResidual(inp, oup, t, stride)
        twin = InvertedResidualTwin(inp, oup, t, stride)
        assert list(mine.state_dict()) == list(twin.state_dict()), (inp, oup, t, stride)
        twin.load_state_dict(mine.state_dict(), strict=True)
        x = torch.randn(2, inp, 8, 8)
        with torch.no_grad():
            assert torch.equal(mine.eval()(x), twin.eval()(x))


def _features_twin(settings: list) -> nn.Sequential:
    """torchvision's MobileNetV2 features for other settings (its loop, width_mult 1)."""
    layers, inp = [_conv_bn_relu6(3, 32, 3, 2, 1)], 32
    for t, c, n, s in settings:
        for i in range(n):
            layers.append(InvertedResidualTwin(inp, c, t, s if i == 0 else 1))
            inp = c
    return nn.Sequential(*layers, _conv_bn_relu6(inp, 1280, 1, 1, 1))


def test_mobilenet_features_loop_over_the_settings_as_torchvision_does():
    """The nested loop over `settings` stays a loop: the residual blocks leave `in_channels` as it
    was, which their class decided equals `c`, so `in_channels = c` holds after every block. Other
    settings (a stage of one block, an unstrided first block that widens, a block that keeps its
    width at stride 2) build torchvision's features."""
    prog, src = _source("mobilenet.dl")
    assert """        for t, c, n, s in settings:
            for i in range(n):
                layers.append(InvertedResidual(in_channels, c, t, stride=s if i == 0 else 1))
                in_channels = c
""" in src
    module = prog.module()
    for settings in ([[1, 16, 1, 1], [6, 24, 2, 2]], [[1, 32, 2, 2], [6, 48, 1, 1], [6, 48, 3, 1]],
                     [[6, 8, 1, 1], [4, 8, 2, 2], [1, 16, 2, 1]]):
        torch.manual_seed(0)
        mine = module.Features(3, settings)
        twin = _features_twin(settings)
        assert [v.shape for v in mine.state_dict().values()] == [v.shape for v in twin.state_dict().values()]
        twin.load_state_dict(dict(zip(twin.state_dict(), mine.state_dict().values())))
        x = torch.randn(2, 3, 32, 32)
        with torch.no_grad():
            assert torch.equal(mine.eval()(x), twin.eval()(x)), settings


FREE_DECISION = """block Blk(out: int, stride: int = 1) {
    input x
    y = x -> Conv2d(x.shape[1], 3, padding=1)
    z = (y -> ReLU()) if x.shape[1] == out else (y -> ReLU())
    output (z -> Conv2d(out, 1, stride=stride)) if stride != 1 else z
}

block Features(settings: list) {
    Conv2d(8, 3, padding=1)
    for c, s in settings {
        Blk(c, stride=s)
    }
    Conv2d(16, 1)
}

model M(settings: list = [[8, 1], [16, 2]]) {
    input x: [N, 3, 16, 16]
    Features(settings) as features
}

model Other {
    input x: [N, 6, 16, 16]
    Blk(4)
}
"""


def test_a_loop_relies_only_on_what_every_such_use_of_a_block_decided(tmp_path):
    """In M's loop the stride-1 block keeps its input's width where `x.shape[1] == out`, but Other
    uses the same block at stride 1 with another width, and it keeps its input's width there too: no
    one form of its result holds in every use, so the loop cannot say what `in_channels` is after it
    and stays unrolled. Without Other it loops."""
    from support import program_and_module
    prog, module = program_and_module(tmp_path, FREE_DECISION)
    assert "for c, s in settings:" not in prog.source()
    looped, module = program_and_module(tmp_path, FREE_DECISION.split("model Other")[0], "alone.dl")
    assert "for c, s in settings:" in looped.source()
    torch.manual_seed(0)
    mine = module.Features(3, [[8, 1], [4, 2], [4, 1]])
    theirs = looped.build("M", settings=[[8, 1], [4, 2], [4, 1]]).features
    assert [v.shape for v in mine.state_dict().values()] == [v.shape for v in theirs.state_dict().values()]


RESIDUAL_ONLY = """block Blk(out: int, t: int, stride: int = 1) {
    input x
    h = x -> Conv2d(x.shape[1] * t, 1) -> Conv2d(out, 3, stride=stride, padding=1)
    output relu((x + h) if stride == 1 and x.shape[1] == out else h)
}

block Features(settings: list) {
    Conv2d(8, 3, padding=1)
    for t, c, n, s in settings {
        for i in range(n) {
            Blk(c, t, stride=s if i == 0 else 1)
        }
    }
    Conv2d(16, 1)
}

model M(settings: list = [[2, 8, 3, 1]]) {
    input x: [N, 3, 16, 16]
    Features(settings) as features
}

model Other {
    input x: [N, 4, 16, 16]
    Blk(8, 2, stride=2)
}
"""


def test_a_block_that_only_added_its_input_back_in_the_loop_still_sets_the_width(tmp_path):
    """Every pass M compiled adds its input back (8 channels to 8): the loop still says `in_channels =
    c` after the block, the form its other use (Other: 4 to 8 at stride 2) has, so other settings
    build what dslc builds."""
    from support import program_and_module
    prog, module = program_and_module(tmp_path, RESIDUAL_ONLY)
    assert "                in_channels = c\n" in prog.source()
    for settings in ([[2, 12, 3, 2]], [[1, 4, 3, 1], [2, 12, 1, 1]], [[1, 8, 2, 2], [1, 8, 1, 1]]):
        torch.manual_seed(0)
        mine = module.Features(3, settings).eval()
        theirs = prog.build("M", settings=settings).features.eval()
        assert [v.shape for v in mine.state_dict().values()] == [v.shape for v in theirs.state_dict().values()]
        theirs.load_state_dict(dict(zip(theirs.state_dict(), mine.state_dict().values())))
        x = torch.randn(2, 3, 16, 16)
        with torch.no_grad():
            assert torch.equal(mine(x), theirs(x)), settings


def test_an_int_scale_factor_stays_a_live_argument():
    # the example's UpsampleConvLayer takes any integer upsample; an int parameter as Upsample's
    # scale_factor keeps its expression in the shapes, so no guard pins it to the 2 the model uses
    prog, src = _source("style_transfer.dl")
    assert "needs upsample == 2" not in src and "float(self.upsample)" in src
    module = prog.module()
    torch.manual_seed(0)
    for upsample in (1, 2, 3):
        mine = module.UpsampleConvLayer(6, 4, 3, upsample)
        twin = StyleUpsampleConvLayer(6, 4, 3, upsample)
        twin.load_state_dict(mine.state_dict(), strict=True)
        x = torch.randn(2, 6, 5, 7)
        with torch.no_grad():
            assert torch.equal(mine(x), twin(x))
        assert mine(x).shape == (2, 4, 5 * upsample, 7 * upsample)


# ---------------------------------------------------------------- flags, names and counts


def test_a_flag_argument_is_a_branch_and_a_name_argument_is_passed_through():
    _, clip = _source("clip.dl")
    assert "ResidualAttentionBlock2" not in _classes(clip)
    assert "self.causal = causal" in clip and "if self.causal:" in clip
    _, unet = _source("unet.dl")
    assert "Up2" not in _classes(unet) and "        if bilinear:\n" in unet and "if not bilinear" not in unet   # a positive test first
    _, inception = _source("inception.dl")
    # `padding="same"` in one use and `padding=padding` in another are the same statement
    assert "ConvBnRelu2" not in _classes(inception)
    assert 'padding="same", bias' not in inception and "padding=padding, bias" in inception


STAGES = """
block Stage(width: int, convs: int) {
    repeat convs {
        Conv2d(width, 3, padding=1)
        ReLU()
    }
    MaxPool2d(2)
}

model Net {
    input x: [B, 3, 32, 32]
    Stage(16, 1) as stage1
    Stage(32, 2) as stage2
}
"""


def test_specializations_that_differ_by_a_count_are_one_class_with_a_loop(tmp_path):
    """Stages that unroll `repeat convs` (two layers a pass) are one class that loops over the count
    (backends/loops.py), as torchvision's make_layers; DenseNet's dense block, a list made in a loop,
    is one class whose count is an argument."""
    path = tmp_path / "stages.dl"
    path.write_text(STAGES, encoding="utf-8")
    prog = dslc.load(str(path))
    src = prog.source()
    assert _classes(src) == ["Stage", "Net"] and "for _ in range(convs):" in src and "built for" not in src
    net = exec_source(src, "<stages>").Net()
    assert [len(net.stage1), len(net.stage2)] == [3, 5]   # 1 and 2 passes of conv-ReLU, then the pool
    assert {k: v.shape for k, v in net.state_dict().items()} == \
        {k: v.shape for k, v in prog.build("Net").state_dict().items()}
    _, dense = _source("densenet.dl")
    assert "DenseBlock2" not in _classes(dense) and "for i in range(layers)" in dense


CONFIGS = """
block Features(config: list, bn: bool = false) {
    for width in config {
        Conv2d(width, 3, padding=1)
        if bn {
            BatchNorm2d()
        }
        ReLU()
    }
}

model Small {
    input x: [B, 3, 8, 8]
    Features([4, 8]) as features
}

model Large {
    input x: [B, 3, 8, 8]
    Features([4, 8, 8], bn=true) as features
}
"""


def test_a_loop_over_a_list_argument_is_one_class_for_every_list(tmp_path):
    """VGG's configuration: the loop stays a Python loop (backends/loops.py), the list and the flag are
    constructor arguments, and the branch `Small` did not take is written from `Large`."""
    path = tmp_path / "configs.dl"
    path.write_text(CONFIGS, encoding="utf-8")
    src = dslc.load(str(path)).source()
    assert src.count("class Features") == 1
    assert "def __init__(self, in_channels: int, config: list, bn: bool = False):" in src
    assert "            if bn:\n                self.append(nn.BatchNorm2d(in_channels))" in src


def test_classes_of_one_block_that_stay_apart_say_what_they_were_built_for(tmp_path):
    """A block unrolled over a list argument is one class per list, each saying in its docstring the
    arguments its constructor does not take that tell it from the others. Here the loop unrolls
    because the `Linear` after it reads a size its pools made with `ceil_mode=bn`, a flag: what the shape
    rule made of it holds only for that flag (backends/loopsizes.py)."""
    path = tmp_path / "configs.dl"
    pooled = "        ReLU()\n        MaxPool2d(2, ceil_mode=bn)\n    }\n    Flatten()\n    Linear(4)\n"
    path.write_text(CONFIGS.replace("        ReLU()\n    }\n", pooled), encoding="utf-8")
    prog = dslc.load(str(path))
    src = prog.source()
    docs = re.findall(r'class (Features\d?)\(nn.Sequential\):\n    """The block `Features` \(configs.dl:\d+\)(.*)"""', src)
    # the list's items are sizes the classes take (`config[0]`): its length tells them apart
    assert docs == [("Features", ", built for len(config) == 2 and not bn."),
                    ("Features2", ", built for len(config) == 3 and bn.")]
    # one model alone has one class of the block, which needs no telling apart: only its length is checked
    assert re.search(r'"""The block `Features` \(configs.dl:\d+\), built for len\(config\) == 3."""',
                     prog.source(["Large"]))



def test_only_arguments_the_class_cannot_build_are_refused():
    """Bit 0: `stride == 1`, which a branch tests; bit 1: `expand != 1`, decided both ways and tested by
    no branch (the block this one calls decides it); bit 2: `k % 2 == 1`, never seen failing (the
    residual's shapes need it)."""
    s = variants.Atom("s", "stride == 1", "stride != 1")
    e = variants.Atom("e", "expand != 1", "expand == 1")
    k = variants.Atom("k", "k % 2 == 1", "k % 2 == 0")
    body = variants.Body([], [], [[(s, True), (e, False)], [(s, True), (e, True), (k, True)],
                                  [(s, False), (e, True)]], {})
    cases = [variants._minterms(body.cases, [s, e, k])]
    refused = variants.refused_cases([body], cases, [s, e, k], used={0})
    # stride 2 at expand 1, and stride 1 with an even k at expand 6, differ from a compiled case
    # (stride 2 at expand 6; stride 1 at expand 1, which did not need k odd) only in `expand`: built
    assert refused == set()
    body = variants.Body([], [], [[(s, True), (e, True), (k, True)], [(s, False), (e, False)]], {})
    cases = [variants._minterms(body.cases, [s, e, k])]
    refused = variants.refused_cases([body], cases, [s, e, k], used={0})
    assert refused == {0b011, 0b001}   # stride 1 with an even k, at either expansion
    lines = variants.refusal("MBConv", "efficientnet.dl:60", [body], cases, [s, e, k], {0})
    assert lines == ["if stride == 1 and k % 2 == 0:",
                     '    raise ValueError("MBConv (efficientnet.dl:60) does not take stride == 1 and k % 2 == 0")']
    # where `k % 2 == 1` is the residual sum's own check (its other outcome an error), each refused
    # assignment is a compiled one with that check failing: the spec's need, with the check's line
    k = variants.Atom("k", "k % 2 == 1", "k % 2 == 0", where="efficientnet.dl:64")
    body = variants.Body([], [], [[(s, True), (e, True), (k, True)], [(s, False), (e, False)]], {})
    lines = variants.refusal("MBConv", "efficientnet.dl:60", [body], cases, [s, e, k], {0})
    assert lines == ["if stride == 1 and k % 2 == 0:",
                     '    raise ValueError("MBConv needs k % 2 == 1 or stride != 1 (efficientnet.dl:64)")']


def test_members_that_draw_nothing_move_to_the_reference_order():
    """A norm built before the attention in one body and after it in the other is one statement where
    the body with its flag false builds it; a layer that draws random numbers (fc) never moves, nor a
    member that reads a local of the constructor."""
    post = ["self.attn = nn.MultiheadAttention(dim, heads)", "self.norm = nn.LayerNorm(dim)",
            "self.fc = nn.Linear(dim, dim)", "width = 2 * dim", "self.late = nn.LayerNorm(width)"]
    pre = ["self.norm = nn.LayerNorm(dim)", "self.fc = nn.Linear(dim, dim)", "self.attn = nn.MultiheadAttention(dim, heads)",
           "width = 2 * dim", "self.late = nn.LayerNorm(width)"]
    quiet = frozenset({"norm", "late"})
    bodies = [variants.Body(pre, [], [], {"pre_norm": True}, quiet=quiet),
              variants.Body(post, [], [], {"pre_norm": False}, quiet=quiet)]
    aligned = variants._aligned([variants.statements(b.init) for b in bodies], bodies)
    assert [s[0] for s in aligned[0]] == ["self.fc = nn.Linear(dim, dim)", "self.attn = nn.MultiheadAttention(dim, heads)",
                                          "self.norm = nn.LayerNorm(dim)", "width = 2 * dim",
                                          "self.late = nn.LayerNorm(width)"]
    assert [s[0] for s in aligned[1]] == post


def test_impossible_bounds_are_no_case_to_refuse():
    a, b = variants.Atom("a", "blocks < 1", "blocks >= 1"), variants.Atom("b", "blocks == 1", "blocks != 1")
    assert not variants._possible(0b11, [a, b]) and variants._possible(0b10, [a, b])

# ---------------------------------------------------------------- what a docstring claims


def test_a_block_whose_branch_adds_layers_is_one_class_with_stable_names():
    """cifar_resnet's Residual builds its projection only where the shape changes. Its layers are
    named by their place in the source (frontend/sites.py), not by what one use built, so both uses
    are one class, as kuangliu's BasicBlock: `conv1`/`bn1` on the main path in either, `conv2`/`bn2`
    the projection or None; the combination no use took (a new width at stride 1) takes the projection,
    as the spec's condition `stride != 1 or x.shape[1] != out` says."""
    prog, src = _source("cifar_resnet.dl")
    assert [n for n in _classes(src) if n.startswith("Residual")] == ["Residual"]
    module = prog.module()
    torch.manual_seed(0)
    for inp, out, stride in ((64, 64, 1), (64, 128, 2), (32, 32, 2), (64, 128, 1)):
        mine = module.Residual(inp, out, stride=stride).eval()
        twin = CifarBasicBlock(inp, out, stride).eval()
        keys = [k for k in mine.state_dict() if not k.startswith("conv_bn_relu.")]
        assert keys[:2] == ["conv1.weight", "conv1.bias"]
        assert any(k.startswith("conv2.") for k in keys) == (stride != 1 or inp != out)
        assert [v.shape for v in mine.state_dict().values()] == [v.shape for v in twin.state_dict().values()]
        twin.load_state_dict(dict(zip(twin.state_dict(), mine.state_dict().values())))
        x = torch.randn(2, inp, 8, 8)
        with torch.no_grad():
            assert torch.equal(mine(x), twin(x))


def _docstring_facts(src: str) -> list[tuple]:
    """(class, its `built for` facts, its `Expects inputs with` facts, its __init__'s source)."""
    out = []
    for m in re.finditer(r'^class (\w+)\(.*\n    """(.*?)"""\n\n    def __init__.*?\n((?:        .*\n|\n)*)', src, re.M):
        built = re.search(r", built for (.*?)\.(?: Expects|$)", m.group(2))
        expects = re.search(r"Expects inputs with (.*)\.$", m.group(2))
        out.append((m.group(1), built.group(1).split(" and ") if built else [],
                    expects.group(1).split(" and ") if expects else [], m.group(3)))
    return out


@pytest.mark.parametrize("name", sorted(f for f in os.listdir(SPECS) if f.endswith(".dl")))
def test_a_docstring_claims_only_what_the_class_checks(name):
    """What a class was `built for` is a fact on arguments: checked in its constructor where the
    constructor takes them (else it is the arguments the class bakes in, VGG's configuration); a
    fact on the input's sizes is stated as what the input needs (`Expects inputs with ...`)."""
    prog = dslc.load(os.path.join(SPECS, name))
    src = prog.source() if prog.buildable else prog.source(["MLP"], hidden=8, classes=2)
    for cls, built, expects, init in _docstring_facts(src):
        signature = re.search(rf"class {cls}\(.*?def __init__\(self(.*?)\):", src, re.S).group(1)
        args = set(re.findall(r"(\w+)(?::|=| =)", signature))
        for fact in built:
            assert ".shape[" not in fact, (cls, fact)
            names = set(re.findall(r"[A-Za-z_]\w*", fact)) - {"and", "or", "not"}
            if names <= args:
                assert f'raise ValueError("{cls} needs {fact} (' in init, (cls, fact)
        assert all(".shape[" in f for f in expects), (cls, expects)


def test_unet_up_states_what_its_inputs_need():
    _, src = _source("unet.dl")
    # the docstring wraps within the 120-column limit
    assert '"""The block `Up` (unet.dl:28). Expects inputs with 2 * x.shape[2] == skip.shape[2] and 2 * x.shape[3] ==\n' \
           '    skip.shape[3]."""' in src


def test_a_parameter_check_whose_other_outcome_is_an_error_reads_as_a_need():
    """`future` counts steps: the spec refuses a negative one (E0302), so the generated constructor
    says what it needs, with the spec's line, not that it "was compiled for" it."""
    prog, src = _source("sine_forecaster.dl")
    assert "was compiled for future" not in src
    module = prog.module()
    with pytest.raises(ValueError, match=r"^SineForecaster needs future >= 0 \(sine_forecaster\.dl:20\)$"):
        module.SineForecaster(future=-1)
    net = module.SineForecaster(hidden=8, future=3).eval()
    with torch.no_grad():
        assert net(torch.randn(2, 5)).shape == (2, 8)   # 5 steps and 3 more
    with pytest.raises(dslc.diagnostics.DslcError, match="E0302"):
        prog.graph("SineForecaster", future=-1)


def test_a_run_time_bound_reads_as_a_person_writes_it():
    """The positional table has `maxlen` rows: forward checks `S > self.maxlen` and says `S <= maxlen`
    (the requirement is `maxlen - S >= 0`)."""
    prog, src = _source("translator.dl")
    assert "if S > self.maxlen:" in src and "maxlen - S" not in src
    net = prog.module().Translator(emb_size=8, nhead=2, num_encoder_layers=1, num_decoder_layers=1,
                                   dim_feedforward=8, maxlen=5).eval()
    tgt = torch.ones(2, 3, dtype=torch.long)
    with pytest.raises(ValueError, match=r"^Translator needs S <= maxlen \(translator\.dl:30\), got S = 6$"):
        net(torch.ones(2, 6, dtype=torch.long), tgt)
    with torch.no_grad():
        assert net(torch.ones(2, 5, dtype=torch.long), tgt).shape == (2, 3, 16)
