"""A block's condition is the spec's own condition in its generated class (frontend/conditions.py,
ir/dims.py Compound, backends/torch_codegen.py callee_decided).

`skip = (x -> Conv2d(out, 1, stride=stride) -> BatchNorm2d()) if stride != 1 or x.shape[1] != out else x`
was compiled for the operand Python's short circuit evaluated (`stride != 1` where it held), so the
class refused a new width at stride 1: "Residual does not take stride == 1 and in_channels != out".
The class now branches on the whole condition, as torchvision's BasicBlock and kuangliu's CIFAR
block do; the stage or model that calls such a block leaves the decision to the block's class.
"""
from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import ROOT, program_and_module
from torch import nn
from zoo_case import CifarBasicBlock

import dslc

torch.set_num_threads(1)
SPECS = os.path.join(ROOT, "specs")

STAGE = """block Residual(out: int, stride: int = 1) {
    input x
    main = x -> Conv2d(out, 3, stride=stride, padding=1) as conv1 -> BatchNorm2d() as bn1 -> ReLU() ->
        Conv2d(out, 3, padding=1) as conv2 -> BatchNorm2d() as bn2
    skip = ((x -> Conv2d(out, 1, stride=stride) as shortcut -> BatchNorm2d() as shortcut_bn)
            if stride != 1 or x.shape[1] != out
            else x)
    output relu(main + skip)
}

block Stage(out: int, stride: int) {
    Residual(out, stride=stride)
    Residual(out)
}

model Net(classes: int = 10) {
    input x: [B, 16, 16, 16]
    Stage(16, 1) as layer1
    Stage(32, 2) as layer2
    AdaptiveAvgPool2d(1)
    Flatten()
    Linear(classes)
}
"""


class StageTwin(nn.Sequential):
    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__(CifarBasicBlock(in_planes, planes, stride), CifarBasicBlock(planes, planes))


def _same_weights_same_outputs(mine: nn.Module, twin: nn.Module, x: torch.Tensor) -> None:
    assert [v.shape for v in mine.state_dict().values()] == [v.shape for v in twin.state_dict().values()]
    twin.load_state_dict(dict(zip(twin.state_dict(), mine.state_dict().values())))
    mine.eval(), twin.eval()
    with torch.no_grad():
        assert torch.equal(mine(x), twin(x))


def test_the_class_branches_on_the_specs_condition(tmp_path):
    prog, module = program_and_module(tmp_path, STAGE)
    src = prog.source()
    assert "if stride != 1 or in_channels != out" in src
    assert "does not take" not in src and "needs" not in src
    torch.manual_seed(0)
    # (16, 32, 1): a new width at stride 1, which no use compiled: the projection, as the spec says
    for inp, out, stride in ((16, 16, 1), (16, 32, 2), (16, 32, 1), (8, 8, 2)):
        mine = module.Residual(inp, out, stride=stride)
        assert (mine.shortcut is not None) == (stride != 1 or inp != out)
        _same_weights_same_outputs(mine, CifarBasicBlock(inp, out, stride), torch.randn(2, inp, 8, 8))


def test_the_block_that_calls_it_leaves_the_decision_to_it(tmp_path):
    """Stage's first block decides on Stage's arguments; Stage's class neither refuses them nor
    branches on them: the block's own constructor does."""
    prog, module = program_and_module(tmp_path, STAGE)
    stage = prog.source().split("class Stage(")[1].split("\nclass ")[0]
    assert "raise" not in stage and "if " not in stage
    torch.manual_seed(0)
    for inp, out, stride in ((16, 16, 1), (16, 32, 2), (8, 16, 1), (16, 16, 2)):
        _same_weights_same_outputs(module.Stage(inp, out, stride), StageTwin(inp, out, stride),
                                   torch.randn(2, inp, 8, 8))


SEPARABLE = """# timm's DepthwiseSeparableConv: the input added back where stride and width allow it.
block DepthwiseSeparable(out: int, stride: int = 1) {
    input x
    has_skip = stride == 1 and x.shape[1] == out
    h = x -> Conv2d(x.shape[1], 3, stride=stride, padding=1, groups=x.shape[1], bias=false) as conv_dw ->
        BatchNorm2d() as bn1 -> ReLU() -> Conv2d(out, 1, bias=false) as conv_pw -> BatchNorm2d() as bn2
    output (h + x) if has_skip else h
}

model Net(classes: int = 10) {
    input x: [B, 8, 16, 16]
    DepthwiseSeparable(8)
    DepthwiseSeparable(16, stride=2)
    AdaptiveAvgPool2d(1)
    Flatten()
    Linear(classes)
}
"""


class DepthwiseSeparableTwin(nn.Module):
    """timm's layout (efficientnet_blocks.py): the skip decided once, in the constructor."""

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1):
        super().__init__()
        self.has_skip = stride == 1 and in_chs == out_chs
        self.conv_dw = nn.Conv2d(in_chs, in_chs, 3, stride=stride, padding=1, groups=in_chs, bias=False)
        self.bn1 = nn.BatchNorm2d(in_chs)
        self.conv_pw = nn.Conv2d(in_chs, out_chs, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_chs)

    def forward(self, x):
        h = self.bn2(self.conv_pw(F.relu(self.bn1(self.conv_dw(x)))))
        return h + x if self.has_skip else h


def test_a_condition_the_spec_names_is_a_member_forward_reads(tmp_path):
    """`has_skip = stride == 1 and x.shape[1] == out` is kept as `self.has_skip`, not as the three
    arguments it reads (`self.stride == 1 and self.in_channels == self.out`), and the class builds
    every stride and width as the spec does, the ones no use compiled included."""
    prog, module = program_and_module(tmp_path, SEPARABLE)
    src = prog.source()
    assert "        self.has_skip = stride == 1 and in_channels == out\n" in src
    assert "return h + x if self.has_skip else h" in src
    assert "self.stride" not in src and "self.out" not in src
    torch.manual_seed(0)
    for inp, out, stride in ((8, 8, 1), (8, 16, 2), (8, 8, 2), (8, 16, 1), (4, 4, 1)):
        mine = module.DepthwiseSeparable(inp, out, stride=stride)
        assert mine.has_skip == (stride == 1 and inp == out)
        _same_weights_same_outputs(mine, DepthwiseSeparableTwin(inp, out, stride), torch.randn(2, inp, 8, 8))


def test_a_named_condition_reads_true_where_it_is(tmp_path):
    """A name for the other outcome (`projects = stride != 1 or ...`) is tested as it is, not negated."""
    spec = SEPARABLE.replace("has_skip = stride == 1 and x.shape[1] == out",
                             "projects = stride != 1 or x.shape[1] != out")
    prog, module = program_and_module(tmp_path, spec.replace("(h + x) if has_skip else h", "h if projects else (h + x)"))
    src = prog.source()
    assert "self.projects = stride != 1 or in_channels != out" in src
    assert "return h if self.projects else h + x" in src
    torch.manual_seed(0)
    for inp, out, stride in ((8, 8, 1), (8, 16, 2), (8, 16, 1)):
        _same_weights_same_outputs(module.DepthwiseSeparable(inp, out, stride=stride),
                                   DepthwiseSeparableTwin(inp, out, stride), torch.randn(2, inp, 8, 8))


def test_a_condition_whose_other_operand_was_skipped_is_still_checked(tmp_path):
    """One use only (stride 2): the class was compiled for `stride != 1 or in_channels != out` and
    checks that, not `stride != 1` (a new width at stride 1 builds the same code)."""
    text = STAGE.split("model Net")[0] + """model One {
    input x: [B, 16, 16, 16]
    Residual(32, stride=2)
}
"""
    prog, module = program_and_module(tmp_path, text)
    assert "if stride == 1 and in_channels == out:" in prog.source()
    module.Residual(16, 32, stride=1)
    with pytest.raises(ValueError, match=r"^Residual needs stride != 1 or in_channels != out \(m\.dl:1\)$"):
        module.Residual(16, 16, stride=1)


def test_a_decision_its_block_made_one_way_stays_the_callers(tmp_path):
    """The block's class, built for one outcome, would refuse the other as if the spec needed it; the
    model that decided it keeps saying what was compiled and how to change it."""
    text = STAGE.split("block Stage")[0] + """model M(w: int = 128) {
    input x: [B, 64, 8, 8]
    Residual(w)
    Flatten()
    Linear(10)
}
"""
    prog, module = program_and_module(tmp_path, text)
    assert "        if w == 64:\n" in prog.source()
    with pytest.raises(ValueError, match=r"^M was compiled for w != 64; compile it again with `dslc compile --set`"):
        module.M(w=64)
    torch.manual_seed(0)
    mine, built = module.M(w=32).eval(), prog.build("M", w=32).eval()
    built.load_state_dict(mine.state_dict())
    x = torch.randn(2, 64, 8, 8)
    with torch.no_grad():
        assert torch.equal(mine(x), built(x))


def test_the_zoo_blocks_take_every_width_at_stride_one():
    for file, block in (("resnet.dl", "BasicBlock"), ("cifar_resnet.dl", "Residual")):
        src = dslc.load(os.path.join(SPECS, file)).source()
        body = src.split(f"class {block}(")[1].split("\nclass ")[0]
        assert "does not take" not in body and "stride != 1 or in_channels != out" in body


def test_what_the_specs_own_checks_refuse_reads_as_a_need():
    """DDPM's ResnetBlock adds its input back (`skip + h`, ddpm.dl:43) where it has no shortcut: a
    width that changes there fails the spec's own check, and the class says so as a hand-written
    module would, with that line. dslc refuses the same arguments."""
    prog = dslc.load(os.path.join(SPECS, "ddpm.dl"))
    module = prog.module(["DDPMUNet"])
    module.ResnetBlock(64, 32, 128, True, 32, 0.0)
    module.ResnetBlock(64, 32, 64, False, 32, 0.0)
    with pytest.raises(ValueError, match=r"^ResnetBlock needs shortcut or num_channels == out \(ddpm\.dl:43\)$"):
        module.ResnetBlock(64, 32, 128, False, 32, 0.0)
    efficient = dslc.load(os.path.join(SPECS, "efficientnet.dl")).module(["EfficientNetB0"])
    with pytest.raises(ValueError, match=r"^MBConv needs stride != 1 or in_channels != out or k % 2 != 0 "
                                         r"\(efficientnet\.dl:67\)$"):
        efficient.MBConv(16, 16, 6, 4)


PREACT = """# kuangliu/pytorch-cifar's PreActResNet18 (He et al., "Identity Mappings in Deep Residual Networks").
block PreActBlock(planes: int, stride: int = 1) {
    input x
    out = x -> BatchNorm2d() as bn1 -> ReLU()
    skip = ((out -> Conv2d(planes, 1, stride=stride, bias=false) as shortcut)
            if stride != 1 or x.shape[1] != planes
            else x)
    out = out -> Conv2d(planes, 3, stride=stride, padding=1, bias=false) as conv1
    out = out -> BatchNorm2d() as bn2 -> ReLU() -> Conv2d(planes, 3, padding=1, bias=false) as conv2
    output out + skip
}

block Layer(planes: int, blocks: int, stride: int) {
    for i in range(blocks) {
        PreActBlock(planes, stride=stride if i == 0 else 1)
    }
}

model PreActResNet18(classes: int = 10) {
    input x: [B, 3, 32, 32]
    Conv2d(64, 3, padding=1, bias=false) as conv1
    Layer(64, 2, 1) as layer1
    Layer(128, 2, 2) as layer2
    Layer(256, 2, 2) as layer3
    Layer(512, 2, 2) as layer4
    BatchNorm2d() as bn
    ReLU()
    AvgPool2d(4)
    Flatten()
    Linear(classes) as linear
}
"""


class PreActBlockTwin(nn.Module):
    """kuangliu/pytorch-cifar's PreActBlock, as written there (its shortcut in an nn.Sequential)."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride, bias=False))

    def forward(self, x):
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(out) if hasattr(self, "shortcut") else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + shortcut


class PreActResNet18Twin(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.in_planes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.layer1 = self._make_layer(64, 2, 1)
        self.layer2 = self._make_layer(128, 2, 2)
        self.layer3 = self._make_layer(256, 2, 2)
        self.layer4 = self._make_layer(512, 2, 2)
        self.bn = nn.BatchNorm2d(512)
        self.linear = nn.Linear(512, num_classes)

    def _make_layer(self, planes: int, num_blocks: int, stride: int) -> nn.Sequential:
        layers = []
        for s in [stride] + [1] * (num_blocks - 1):
            layers.append(PreActBlockTwin(self.in_planes, planes, s))
            self.in_planes = planes
        return nn.Sequential(*layers)

    def forward(self, x):
        out = self.layer4(self.layer3(self.layer2(self.layer1(self.conv1(x)))))
        out = F.avg_pool2d(F.relu(self.bn(out)), 4)
        return self.linear(out.view(out.size(0), -1))


def _kuangliu(key: str) -> str:
    return key.replace("shortcut.0.", "shortcut.")


def test_a_public_preact_resnet_ports_and_its_block_takes_any_width(tmp_path):
    """kuangliu/pytorch-cifar's PreActResNet18: 11,172,170 parameters as the hand-written one, its
    keys (but the shortcut's nn.Sequential), bit-equal outputs; the generated block chooses its
    shortcut by the spec's condition, and builds a new width at stride 1 as kuangliu's does."""
    prog, module = program_and_module(tmp_path, PREACT, "preact.dl")
    assert "if stride != 1 or num_features != planes else None" in prog.source()
    torch.manual_seed(0)
    twin, mine = PreActResNet18Twin().eval(), module.PreActResNet18().eval()
    assert sum(p.numel() for p in mine.parameters()) == sum(p.numel() for p in twin.parameters()) == 11_172_170
    assert {_kuangliu(k): v.shape for k, v in twin.state_dict().items()} == \
        {k: v.shape for k, v in mine.state_dict().items()}
    twin.load_state_dict({k: mine.state_dict()[_kuangliu(k)] for k in twin.state_dict()})
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(twin(x), mine(x))
    for inp, out, stride in ((64, 128, 1), (64, 64, 2)):
        block, theirs = module.PreActBlock(inp, out, stride=stride).eval(), PreActBlockTwin(inp, out, stride).eval()
        theirs.load_state_dict({k: block.state_dict()[_kuangliu(k)] for k in theirs.state_dict()})
        y = torch.randn(2, inp, 8, 8)
        with torch.no_grad():
            assert torch.equal(theirs(y), block(y))


def test_a_long_condition_wraps_as_black_would_leave_it(tmp_path):
    """A condition of forty comparisons: the constructor's check is broken before its `and`s, inside
    parentheses, no line over 120 characters, and still checks what it says."""
    terms = " or ".join(f"x.shape[1] == {i}" for i in range(40))
    text = f"""block Wide(out: int) {{
    input x
    h = (x -> Conv2d(out, 1)) if {terms} or out > 12 else x
    output h
}}

model M {{
    input x: [B, 8, 4, 4]
    Wide(8)
    Wide(16)
}}
"""
    prog, module = program_and_module(tmp_path, text, "wide.dl")
    src = prog.source()
    assert max(len(line) for line in src.splitlines()) <= 120
    assert "        if (in_channels != 0 and in_channels != 1 and " in src and "\n                and in_channels != " in src
    assert isinstance(module.Wide(39, 4).conv, nn.Conv2d) and isinstance(module.Wide(50, 13).conv, nn.Conv2d)
    with pytest.raises(ValueError, match=r"^Wide needs in_channels == 0 or "):
        module.Wide(50, 8)


# ---------------------------------------------------------------- the property

ATOMS = ["stride != 1", "stride == 2", "x.shape[1] != out", "out > 8", "x.shape[1] < out", "out % 2 == 0"]


@st.composite
def conditions(draw, depth: int = 2):
    if depth == 0 or draw(st.booleans()):
        return draw(st.sampled_from(ATOMS))
    op = draw(st.sampled_from(["and", "or", "not"]))
    if op == "not":
        return f"not ({draw(conditions(depth - 1))})"
    return f"({draw(conditions(depth - 1))}) {op} ({draw(conditions(depth - 1))})"


def _spec(first: str, second: str, uses: list, third: str = "true", named: bool = False) -> str:
    """A block with two decisions that build layers and a third that only forward reads (bound to
    a name where `named`: `self.scale` in the class, else the arguments it reads as members)."""
    calls = "\n".join(f"    Block({out}, stride={stride})" for out, stride in uses)
    bind, test = (f"    scale = {third}\n", "scale") if named else ("", third)
    return f"""block Block(out: int, stride: int = 1) {{
    input x
    h = x -> Conv2d(out, 3, stride=stride, padding=1)
    h = (h -> BatchNorm2d()) if {first} else h
    if {second} {{
        h = h -> Conv2d(out, 1)
    }}
{bind}    output (h * 2.0) if {test} else (h * 3.0)
}}

model M(o: int = 8, s: int = 1) {{
    input x: [B, 8, 12, 12]
{calls}
    Block(o, stride=s)
}}
"""


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(conditions(), conditions(), st.lists(st.tuples(st.sampled_from([4, 8, 12]), st.sampled_from([1, 2])),
                                            max_size=2),
       st.lists(st.tuples(st.sampled_from([4, 6, 8, 12, 16]), st.sampled_from([1, 2, 3])), min_size=1, max_size=4),
       conditions(depth=1), st.booleans())
def test_a_class_builds_what_dslc_builds_or_refuses(tmp_path, first, second, uses, values, third, named):
    """Random conditions of the block's three decisions, a few uses: the model's class at other
    arguments builds what dslc builds there (same keys and shapes, bit-equal outputs), or refuses."""
    prog, module = program_and_module(tmp_path, _spec(first, second, uses, third, named))
    x = torch.randn(2, 8, 12, 12)
    for o, s in values:
        try:
            torch.manual_seed(0)
            mine = module.M(o=o, s=s).eval()
        except ValueError:
            continue    # refused: a case the file never compiled
        built = prog.build("M", o=o, s=s).eval()
        assert {k: v.shape for k, v in mine.state_dict().items()} == \
            {k: v.shape for k, v in built.state_dict().items()}, (first, second, third, named, uses, o, s)
        built.load_state_dict(mine.state_dict())
        with torch.no_grad():
            assert torch.equal(mine(x), built(x)), (first, second, third, named, uses, o, s)
