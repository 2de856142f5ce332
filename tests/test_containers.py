"""Repeats kept as module lists (frontend/containers.py): `repeat depth as h { x = x -> Block(dim) }`
is `self.h = nn.ModuleList([Block(dim) for _ in range(depth)])` and `for block in self.h: x = block(x)`,
keyed `h.0.fc.weight` as PyTorch keys it, with `depth` a live constructor argument."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import dslc
from dslc.diagnostics import DslcError

SPEC = """
block Block(dim: int) {
    input x
    output x + (x -> LayerNorm() as ln -> Linear(dim) as fc -> GELU())
}
model Stack(dim: int = 8, depth: int = 3) {
    input x: [B, dim]
    repeat depth as h { x = x -> Block(dim) }
    output x -> Linear(2) as head
}
"""


class BlockTwin(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.ln = nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, dim)

    def forward(self, x):
        return x + nn.functional.gelu(self.fc(self.ln(x)))


class StackTwin(nn.Module):
    def __init__(self, dim: int = 8, depth: int = 3):
        super().__init__()
        self.h = nn.ModuleList([BlockTwin(dim) for _ in range(depth)])
        self.head = nn.Linear(dim, 2)

    def forward(self, x):
        for block in self.h:
            x = block(x)
        return self.head(x)


def _load(tmp_path, text: str):
    path = tmp_path / "m.dl"
    path.write_text(text, encoding="utf-8")
    return dslc.load(str(path))


def _same_module(mine: nn.Module, built: nn.Module, *inputs) -> None:
    """The generated class, made with torch's seed 0, is dslc's own build with seed 0: the same keys and
    weights, and the same outputs."""
    assert list(mine.state_dict()) == list(built.state_dict())
    for key, value in built.state_dict().items():
        assert torch.equal(value, mine.state_dict()[key]), key
    with torch.no_grad():
        assert torch.equal(mine.eval()(*inputs), built.eval()(*inputs))


def _error(tmp_path, text: str) -> str:
    with pytest.raises(DslcError) as e:
        _load(tmp_path, text)
    return str(e.value)


def test_a_repeat_of_one_block_is_a_module_list_with_torch_keys_and_a_live_count(tmp_path):
    prog = _load(tmp_path, SPEC)
    src = prog.source()
    assert "self.h = nn.ModuleList([Block(dim) for _ in range(depth)])" in src
    assert "for block in self.h:\n            x = block(x)" in src
    assert "depth !=" not in src   # the count is not fixed
    for depth in (3, 1, 5, 0):
        twin = StackTwin(depth=depth).eval()
        torch.manual_seed(0)
        mine = prog.module().Stack(depth=depth).eval()
        built = prog.build("Stack", seed=0, depth=depth).eval()
        assert list(mine.state_dict()) == list(twin.state_dict()) == list(built.state_dict())
        twin.load_state_dict(mine.state_dict())       # both ways, strictly by name
        mine.load_state_dict(twin.state_dict())
        x = torch.randn(4, 8)
        with torch.no_grad():
            assert torch.equal(mine(x), twin(x))
        for key, value in built.state_dict().items():   # the same initial weights as dslc's own build
            assert torch.equal(value, mine.state_dict()[key]), key


def test_an_unnamed_repeat_of_one_layer_is_a_list_named_after_it(tmp_path):
    prog = _load(tmp_path, """
model M(width: int = 6, n: int = 2) {
    input x: [B, width]
    repeat n { x = x -> Linear(width) }
    output x
}
""")
    src = prog.source()
    assert "self.fcs = nn.ModuleList([nn.Linear(width, width) for _ in range(n)])" in src
    assert "for layer in self.fcs:" in src
    assert list(prog.build("M", n=3).state_dict()) == [f"fcs.{i}.{w}" for i in range(3) for w in ("weight", "bias")]


def test_a_first_pass_that_differs_keeps_the_count_live(tmp_path):
    """The first Linear maps 4 to 8, the others 8 to 8 (torchvision's first block with a stride): the
    list is the first element and then the alike rest, `range(1, n)`, and the class builds any n >= 1."""
    prog = _load(tmp_path, """
model M(n: int = 3) {
    input x: [B, 4]
    repeat n as layers { x = x -> Linear(8) }
    output x
}
""")
    src = prog.source()
    assert "self.layers = nn.ModuleList([nn.Linear(4, 8), *[nn.Linear(8, 8) for _ in range(1, n)]])" in src
    assert "if n !=" not in src
    for n in (3, 1, 4):
        torch.manual_seed(0)
        mine = prog.module().M(n=n)
        built = prog.build("M", seed=0, n=n)
        assert [k for k in mine.state_dict() if k.endswith("weight")] == [f"layers.{i}.weight" for i in range(n)]
        _same_module(mine, built, torch.randn(2, 4))


def test_passes_that_differ_are_listed_and_the_count_stays_fixed(tmp_path):
    """Widths that grow with the loop variable: the list holds what was made, and the constructor
    fixes the count it was made for."""
    prog = _load(tmp_path, """
model M(n: int = 3) {
    input x: [B, 4]
    for i in range(n) as layers { x = x -> Linear(8 * (i + 1)) }
    output x
}
""")
    src = prog.source()
    assert "nn.Linear(4, 8),\n            nn.Linear(8, 16),\n            nn.Linear(16, 24),\n        ])" in src
    assert "if n != 3:" in src
    net = prog.build("M", seed=0)
    assert [k for k in net.state_dict() if k.endswith("weight")] == ["layers.0.weight", "layers.1.weight",
                                                                      "layers.2.weight"]
    x = torch.randn(2, 4)
    want = x
    for layer in net.layers:
        want = layer(want)
    assert torch.equal(net(x), want)


def test_a_named_repeat_that_is_not_one_block_per_pass_is_E0212(tmp_path):
    msg = _error(tmp_path, """
model M(n: int = 2) {
    input x: [B, 4]
    repeat n as h { x = x -> Linear(4) -> ReLU() }
    output x
}
""")
    assert "E0212" in msg and "m.dl:4:17" in msg and "2 operations" in msg
    msg = _error(tmp_path, """
model M(n: int = 2) {
    input x: [B, 4]
    seen = []
    repeat n as h {
        x = x -> Linear(4)
        seen = seen + [x]
    }
    output concat(seen, dim=1)
}
""")
    assert "E0212" in msg and "read by more than the next pass" in msg


def test_a_repeat_whose_results_are_kept_unrolls_when_unnamed(tmp_path):
    prog = _load(tmp_path, """
model M(n: int = 2) {
    input x: [B, 4]
    seen = []
    repeat n {
        x = x -> Linear(4)
        seen = seen + [x]
    }
    output concat(seen, dim=1)
}
""")
    src = prog.source()
    assert "ModuleList" not in src and "self.fc1 = nn.Linear(4, 4)" in src and "if n != 2:" in src


def test_module_list_names_in_onnx_and_the_summary(tmp_path):
    import onnx
    import onnxruntime as ort
    prog = _load(tmp_path, SPEC)
    model = prog.onnx("Stack", seed=0)
    onnx.checker.check_model(model, full_check=True)
    names = {i.name for i in model.graph.initializer}
    assert {"h.0.fc.weight", "h.2.ln.bias", "head.weight"} <= names
    net = prog.build("Stack", seed=0).eval()
    x = np.random.default_rng(0).standard_normal((3, 8)).astype(np.float32)
    got = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, net(torch.from_numpy(x)).detach().numpy(), rtol=1e-5, atol=1e-5)
    rows = [r.name for r in prog.summary("Stack").layers]
    assert [r for r in rows if r.count(".") == 1 and r.startswith("h.")] == ["h.0", "h.1", "h.2"]


def test_gpt_is_laid_out_as_nanogpt(tmp_path):
    prog = dslc.load(os.path.join(os.path.dirname(os.path.dirname(__file__)), "specs", "gpt.dl"))
    src = prog.source()
    assert "self.h = nn.ModuleList([Block(dim, heads) for _ in range(depth)])" in src
    assert "depth !=" not in src


# ---------------------------------------------------------------- `for` loops, nn.Sequential blocks

STAGES = """
block Block(out: int, stride: int = 1) {
    input x
    h = x -> Conv2d(out, 3, stride=stride, padding=1, bias=false) as conv1 -> BatchNorm2d() as bn1 -> ReLU()
    skip = (x -> Proj(out, stride) as downsample) if stride != 1 or x.shape[1] != out else x
    output relu(h + skip)
}
block Proj(out: int, stride: int) {
    Conv2d(out, 1, stride=stride, bias=false)
    BatchNorm2d()
}
block Stage(width: int, blocks: int, stride: int = 1) {
    for i in range(blocks) {
        Block(width, stride=stride if i == 0 else 1)
    }
}
model Net(blocks: int = 3) {
    input x: [B, 3, 16, 16]
    Conv2d(8, 3, padding=1) as conv1
    Stage(8, 2) as layer1
    Stage(16, blocks, stride=2) as layer2
    AdaptiveAvgPool2d(1)
    Flatten()
    Linear(4) as fc
}
"""


class ProjTwin(nn.Sequential):
    def __init__(self, cin: int, out: int, stride: int):
        super().__init__(nn.Conv2d(cin, out, 1, stride=stride, bias=False), nn.BatchNorm2d(out))


class StageBlockTwin(nn.Module):
    def __init__(self, cin: int, out: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out)
        self.downsample = ProjTwin(cin, out, stride) if stride != 1 or cin != out else None

    def forward(self, x):
        skip = x if self.downsample is None else self.downsample(x)
        return torch.relu(torch.relu(self.bn1(self.conv1(x))) + skip)


class NetTwin(nn.Module):
    """torchvision's layout: `_make_layer` stages as nn.Sequential, keys layer2.0.downsample.1.weight."""
    def __init__(self, blocks: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.layer1 = nn.Sequential(*[StageBlockTwin(8, 8) for _ in range(2)])
        self.layer2 = nn.Sequential(StageBlockTwin(8, 16, 2), *[StageBlockTwin(16, 16) for _ in range(1, blocks)])
        self.fc = nn.Linear(16, 4)

    def forward(self, x):
        x = self.layer2(self.layer1(self.conv1(x)))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def test_a_stage_is_an_nn_sequential_with_a_live_count_and_torchvisions_keys(tmp_path):
    prog = _load(tmp_path, STAGES)
    src = prog.source()
    assert "class Stage(nn.Sequential):" in src and "class Proj(nn.Sequential):" in src
    assert "*[Block(width, width) for _ in range(1, blocks)])" in src
    assert "blocks !=" not in src
    for blocks in (3, 1, 4):
        twin = NetTwin(blocks).eval()
        torch.manual_seed(0)
        mine = prog.module().Net(blocks=blocks).eval()
        assert [(k, v.shape) for k, v in mine.state_dict().items()] == \
            [(k, v.shape) for k, v in twin.state_dict().items()]
        assert "layer2.0.downsample.1.running_var" in mine.state_dict()
        twin.load_state_dict(mine.state_dict())   # strictly, by name
        x = torch.randn(2, 3, 16, 16)
        with torch.no_grad():
            assert torch.equal(mine(x), twin(x))
        _same_module(mine, prog.build("Net", seed=0, blocks=blocks), x)


def test_sequential_names_in_onnx_the_summary_and_the_diagram(tmp_path):
    import onnx
    import onnxruntime as ort
    prog = _load(tmp_path, STAGES)
    model = prog.onnx("Net", seed=0)
    onnx.checker.check_model(model, full_check=True)
    net = prog.build("Net", seed=0).eval()
    assert {i.name for i in model.graph.initializer} == {k for k in net.state_dict() if "num_batches" not in k}
    x = np.random.default_rng(0).standard_normal((2, 3, 16, 16)).astype(np.float32)
    got = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, net(torch.from_numpy(x)).detach().numpy(), rtol=1e-4, atol=1e-5)
    rows = [r.name for r in prog.summary("Net").layers]
    assert {"layer1.0", "layer2.2", "layer2.0.downsample", "layer2.0.downsample.0", "layer2.0.downsample.1",
            "layer2.1.conv1"} <= set(rows)
    dot = prog.diagram("Net", depth=4)
    assert "cluster_layer2_0_downsample" in dot and 'label="0: Block' in dot and 'label="1 … 2\\nBlock ×2' in dot


def test_the_count_stays_fixed_where_a_later_pass_would_differ(tmp_path):
    """`i < 3` decides alike only from i = 3, and `k` changes from pass to pass: the passes that ran are
    alike after the first, but more of them would not be, so the count is fixed."""
    for loop in ("for i in range(n) as layers { x = x -> Linear(8 if i < 3 else 16) }",
                 "k = 0\n    repeat n as layers {\n        x = x -> Linear(8 if k < 3 else 16)\n        k = k + 1\n    }"):
        prog = _load(tmp_path, f"""
model M(n: int = 3) {{
    input x: [B, 4]
    {loop}
    output x
}}
""")
        src = prog.source()
        assert "if n != 3:" in src and "range(" not in src, src
        assert list(prog.build("M", n=5).state_dict())[-2:] == ["layers.4.weight", "layers.4.bias"]
        assert prog.build("M", n=5).layers[4].in_features == 16


def test_the_loop_variable_may_decide_the_first_pass(tmp_path):
    """Comparisons of the loop variable with constants that come out alike from the second pass on, and
    a name assigned before it is read in each pass, keep the count live."""
    prog = _load(tmp_path, """
model M(n: int = 3) {
    input x: [B, 4]
    for i in range(n) as layers {
        w = 8 if 0 == i or i < 1 else 8
        x = x -> Linear(w, bias=i != 0)
    }
    output x
}
""")
    src = prog.source()
    assert "nn.ModuleList([nn.Linear(4, 8, bias=False), *[nn.Linear(8, 8) for _ in range(1, n)]])" in src
    torch.manual_seed(0)
    _same_module(prog.module().M(n=5), prog.build("M", seed=0, n=5), torch.randn(2, 4))


def test_an_unnamed_for_in_a_model_unrolls(tmp_path):
    prog = _load(tmp_path, """
model M(n: int = 2) {
    input x: [B, 4]
    for i in range(n) { x = x -> Linear(4) }
    output x
}
""")
    src = prog.source()
    # unrolled, its count fixed: the model is then a chain of two unnamed layers, an nn.Sequential of them
    assert "ModuleList" not in src and "super().__init__(nn.Linear(4, 4), nn.Linear(4, 4))" in src
    assert "if n != 2:" in src


def test_a_named_loop_that_is_a_blocks_whole_body_keeps_its_name(tmp_path):
    prog = _load(tmp_path, """
block Stack(n: int) {
    repeat n as layers { Linear(4) }
}
model M {
    input x: [B, 4]
    Stack(2) as stack
}
""")
    assert "class Stack(nn.Module):" in prog.source()
    assert list(prog.build("M").state_dict()) == ["stack.layers.0.weight", "stack.layers.0.bias",
                                                  "stack.layers.1.weight", "stack.layers.1.bias"]


def test_only_chains_of_unnamed_layers_are_sequential(tmp_path):
    """A chain of two or more unnamed layers, one with weights, is an nn.Sequential; the layers without
    weights are modules in their places (`act.1` is the ReLU), as PyTorch numbers them. One layer, a
    layer named with `as`, or a chain without weights keeps the class form."""
    prog = _load(tmp_path, """
block Proj {
    Linear(8)
    LayerNorm()
}
block Act {
    Linear(8)
    ReLU()
    Linear(8)
}
block Named {
    Linear(8) as fc
    ReLU()
}
block Plain {
    ReLU()
    Tanh()
}
block One { Linear(8) }
model M {
    input x: [B, 4]
    x -> Proj() as proj -> Act() as act -> Named() as named -> Plain() as plain -> One() as one
}
""")
    src = prog.source()
    assert "class Proj(nn.Sequential):" in src and "class Act(nn.Sequential):" in src
    assert "super().__init__(nn.Linear(in_features, 8), nn.ReLU(), nn.Linear(8, 8))" in src
    assert "class Named(nn.Module):" in src and "class Plain(nn.Module):" in src and "class One(nn.Module):" in src
    assert list(prog.build("M").state_dict()) == ["proj.0.weight", "proj.0.bias", "proj.1.weight", "proj.1.bias",
                                                  "act.0.weight", "act.0.bias", "act.2.weight", "act.2.bias",
                                                  "named.fc.weight", "named.fc.bias", "one.fc.weight", "one.fc.bias"]
    x = torch.randn(3, 4)
    net = prog.build("M", seed=0)
    h = F.layer_norm(F.linear(x, net.proj[0].weight, net.proj[0].bias), (8,), net.proj[1].weight, net.proj[1].bias)
    h = F.linear(F.relu(F.linear(h, net.act[0].weight, net.act[0].bias)), net.act[2].weight, net.act[2].bias)
    h = torch.tanh(F.relu(F.relu(F.linear(h, net.named.fc.weight, net.named.fc.bias))))
    torch.testing.assert_close(net(x), F.linear(h, net.one.fc.weight, net.one.fc.bias))


def test_folding_a_batch_norm_in_a_sequential_block_keeps_the_keys(tmp_path):
    """-O2 folds each batch norm into the layer before it: the layers keep their places' keys (`0`, `2`),
    and a checkpoint of the unoptimized model loads into the folded one."""
    prog = _load(tmp_path, """
block Down {
    Linear(8)
    BatchNorm1d()
    Linear(8)
    BatchNorm1d()
}
model M {
    input x: [B, 4]
    Down() as down
}
""")
    src = prog.source(opt=2)
    assert 'self.add_module("0", fold_batchnorm(nn.Linear(in_features, 8), nn.BatchNorm1d(8)))' in src
    assert 'self.add_module("2", fold_batchnorm(nn.Linear(8, 8), nn.BatchNorm1d(8)))' in src
    full = prog.build("M", seed=0).eval()
    with torch.no_grad():
        for name, buf in full.named_buffers():
            if name.endswith("running_mean") or name.endswith("running_var"):
                buf.uniform_(0.5, 1.5)
    folded = prog.build("M", seed=1, opt=2)
    assert list(folded.state_dict()) == ["down.0.weight", "down.0.bias", "down.2.weight", "down.2.bias"]
    folded.load_state_dict(full.state_dict())
    x = torch.randn(3, 4)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), full(x))


def test_a_named_for_that_is_not_one_block_per_pass_is_E0212(tmp_path):
    msg = _error(tmp_path, """
model M(n: int = 2) {
    input x: [B, 4]
    for i in range(n) as layers { x = x -> Linear(4) -> ReLU() }
    output x
}
""")
    assert "E0212" in msg and "`for ... as layers` keeps one layer or block per pass" in msg and "2 operations" in msg
    assert "leave the loop unnamed to unroll it" in msg
    msg = _error(tmp_path, """
model M(n: int = 2) {
    input x: [B, 4]
    for i in range(n) as forward { x = x -> Linear(4) }
    output x
}
""")
    assert "E0211" in msg and "`forward` cannot name a list of layers" in msg
    msg = _error(tmp_path, """
model M(n: int = 2) {
    input x: [B, 4]
    for j in range(2) {
        for i in range(n) as layers { x = x -> Linear(4) }
    }
    output x
}
""")
    assert "E0210" in msg and "`layers` already names a layer" in msg
