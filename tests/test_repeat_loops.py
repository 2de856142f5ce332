"""An unrolled `repeat` over a parameter, in a model or block that is a chain of layers, is a Python
loop in the generated constructor (backends/loops.py), as torchvision's `make_layers` writes VGG:

    layers, in_features = [], 64
    for _ in range(depth):
        layers += [nn.Linear(in_features, width), nn.Sigmoid()]
        in_features = width
    super().__init__(*layers, nn.Linear(in_features, classes))

The count stays a constructor argument (depth 0 included: the last layer then reads the input's
size); the guard `depth == 30` the unrolled form needed goes, and only that loop's guard
(ir/dims.py LoopCount): a decision of its own on the count keeps refusing other values.
"""
from __future__ import annotations

import os

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import ROOT, program_and_module
from torch import nn

import dslc
from dslc.api import exec_source

torch.set_num_threads(1)

DEEP = """model Deep(depth: int = 30, width: int = 32, classes: int = 10) {
    input x: [B, 1, 8, 8]
    Flatten()
    repeat depth {
        Linear(width)
        Sigmoid()
    }
    Linear(classes)
}
"""


def deep_twin(depth: int, width: int, classes: int) -> nn.Sequential:
    """The same network written by hand."""
    layers, n = [nn.Flatten()], 64
    for _ in range(depth):
        layers += [nn.Linear(n, width), nn.Sigmoid()]
        n = width
    return nn.Sequential(*layers, nn.Linear(n, classes))


def _same_as_dslc(prog, module, name: str, x: torch.Tensor, **params) -> nn.Module:
    """The generated class at `params`: dslc's own build there has its keys and shapes, and from the
    same weights gives the same outputs."""
    mine = getattr(module, name)(**params).eval()
    built = prog.build(name, **params).eval()
    assert {k: v.shape for k, v in mine.state_dict().items()} == {k: v.shape for k, v in built.state_dict().items()}
    built.load_state_dict(mine.state_dict())
    with torch.no_grad():
        assert torch.equal(mine(x), built(x))
    return mine


def test_a_chain_repeat_is_a_loop_and_its_count_a_live_argument(tmp_path):
    prog, module = program_and_module(tmp_path, DEEP)
    src = prog.source()
    assert "        for _ in range(depth):\n            layers += [nn.Linear(in_features, width), nn.Sigmoid()]" in src
    assert "compiled for" not in src
    x = torch.randn(3, 1, 8, 8)
    for depth, width in ((0, 32), (1, 16), (4, 8), (30, 32)):
        mine = _same_as_dslc(prog, module, "Deep", x, depth=depth, width=width)
        twin = deep_twin(depth, width, 10).eval()
        twin.load_state_dict(mine.state_dict())   # keyed by position, as nn.Sequential keys them
        with torch.no_grad():
            assert torch.equal(twin(x), mine(x))
    assert sum(p.numel() for p in module.Deep(depth=3).parameters()) == (64 * 32 + 32) + 2 * (32 * 32 + 32) + 330


def test_a_repeat_of_one_block_a_pass_is_a_loop_too(tmp_path):
    """`h = h -> Linear(width) -> Sigmoid()` in the repeat is one block a pass (frontend/bodyblocks.py),
    appended in the loop."""
    text = ("model M(depth: int = 3, width: int = 16) {\n    input x: [B, 64]\n    h = x\n"
            "    repeat depth { h = h -> Linear(width) -> Sigmoid() }\n    output h -> Linear(10)\n}\n")
    prog, module = program_and_module(tmp_path, text)
    src = prog.source()
    assert "for _ in range(depth):\n            layers.append(MBlock(in_features, width))" in src
    x = torch.randn(2, 64)
    for depth in (1, 2, 5):
        _same_as_dslc(prog, module, "M", x, depth=depth)
    # at depth 0 dslc's model is one layer, which is no chain (`fc`); the class keys it by position
    with torch.no_grad():
        assert module.M(depth=0)(x).shape == (2, 10)


def test_a_block_that_loops_leaves_its_callers_count_live(tmp_path):
    """A block's unrolled count, called with the model's `depth`, was the model's guard as well."""
    text = ("block Stage(width: int, convs: int) {\n    repeat convs {\n        Conv2d(width, 3, padding=1)\n"
            "        ReLU()\n    }\n    MaxPool2d(2)\n}\n\nmodel Net(depth: int = 2) {\n    input x: [B, 3, 16, 16]\n"
            "    Stage(8, depth) as stage1\n    Stage(16, 2) as stage2\n}\n")
    prog, module = program_and_module(tmp_path, text)
    src = prog.source()
    assert src.count("class Stage") == 1 and "compiled for" not in src
    x = torch.randn(2, 3, 16, 16)
    for depth in (1, 2, 3):
        net = _same_as_dslc(prog, module, "Net", x, depth=depth)
        assert len(net.stage1) == 2 * depth + 1


@pytest.mark.parametrize("other", [
    "    if depth == 2 {\n        Linear(8)\n    }\n",            # a decision on the count itself
    "    for i in range(depth) {\n        Linear(4)\n    }\n",     # a loop over it that is no repeat
])
def test_another_use_of_the_count_keeps_its_guard(tmp_path, other):
    text = ("model M(depth: int = 2) {\n    input x: [B, 4]\n    repeat depth {\n        Linear(4)\n"
            "        ReLU()\n    }\n" + other + "}\n")
    prog, module = program_and_module(tmp_path, text)
    assert "for _ in range(depth):" in prog.source()
    module.M(depth=2)
    with pytest.raises(ValueError, match="M was compiled for depth == 2"):
        module.M(depth=3)


def test_the_debugging_example_builds_other_depths():
    """examples/debugging's 30-layer sigmoid MLP (the vanishing-gradient warning's example)."""
    prog = dslc.load(os.path.join(ROOT, "examples", "debugging", "debugging.dl"))
    module = exec_source(prog.source(["DeepSigmoid", "DeepReLU"]), "<debugging>")
    assert "compiled for depth" not in prog.source(["DeepSigmoid", "DeepReLU"])
    x = torch.randn(2, 1, 8, 8)
    for name in ("DeepSigmoid", "DeepReLU"):
        _same_as_dslc(prog, module, name, x, depth=5)


def test_a_repeat_inside_a_loop_over_a_list_keeps_its_count_live(tmp_path):
    """VGG's stages: `for width in widths { repeat convs { ... } MaxPool2d(2) }`."""
    text = ("model M(widths: list[int] = [8, 16], convs: int = 2) {\n    input x: [B, 3, 16, 16]\n"
            "    for width in widths {\n        repeat convs {\n            Conv2d(width, 3, padding=1)\n"
            "            ReLU()\n        }\n        MaxPool2d(2)\n    }\n}\n")
    prog, module = program_and_module(tmp_path, text)
    src = prog.source()
    assert "for width in widths:\n            for _ in range(convs):" in src and "compiled for" not in src
    x = torch.randn(2, 3, 16, 16)
    for widths, convs in (([8, 16], 1), ([4, 8, 8], 3), ([8], 0)):
        _same_as_dslc(prog, module, "M", x, widths=widths, convs=convs)


def test_a_size_the_layer_infers_after_the_loop_follows_the_loop(tmp_path):
    """LayerNorm's `normalized_shape`, which a spec may give, was taken from the IR after a loop over a
    list: `nn.LayerNorm(4)` for every list (the last width compiled). It reads the running size."""
    text = ("model M(widths: list[int] = [8, 4]) {\n    input x: [B, 12]\n    for w in widths {\n        Linear(w)\n"
            "        ReLU()\n    }\n    LayerNorm()\n}\n")
    prog, module = program_and_module(tmp_path, text)
    assert "nn.LayerNorm(in_features)" in prog.source()
    for widths in ([8, 16], [5]):
        _same_as_dslc(prog, module, "M", torch.randn(2, 12), widths=widths)
    assert module.M(widths=[]).state_dict()["0.weight"].shape == (12,)   # dslc's one-layer model: `norm`


LAYERS_1D = ["Linear(w)", "ReLU()", "Tanh()", "LayerNorm()", "BatchNorm1d()", "Linear(8)", "GELU()"]
LAYERS_2D = ["Conv2d(w, 3, padding=1)", "ReLU()", "BatchNorm2d()", "Conv2d(8, 1)", "Dropout(0.1)"]


@st.composite
def chains(draw):
    """A chain model with a loop (a `repeat depth` or a `for` over a list) between random layers."""
    conv = draw(st.booleans())
    layer = st.sampled_from(LAYERS_2D if conv else LAYERS_1D)
    body = draw(st.lists(layer, min_size=1, max_size=3))
    before, after = draw(st.lists(layer, max_size=2)), draw(st.lists(layer, max_size=2))
    repeat = draw(st.booleans())
    head = "repeat depth {" if repeat else "for w in widths {"
    lines = ["model M(depth: int = 2, widths: list[int] = [6, 4], w: int = 5) {",
             f"    input x: {'[B, 3, 8, 8]' if conv else '[B, 12]'}"]
    lines += [f"    {x}" for x in before] + [f"    {head}"] + [f"        {x}" for x in body] + ["    }"]
    lines += [f"    {x}" for x in after] + ["}"]
    values = [{"depth": d} for d in (0, 1, 3)] if repeat else [{"widths": v} for v in ([], [3], [7, 2, 5])]
    return "\n".join(lines) + "\n", conv, values


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(chains())
def test_a_looped_class_builds_every_count_and_list_as_dslc_does(tmp_path, chain):
    """Whatever the layers around and in the loop, the generated class either refuses a value (its
    guard) or builds what dslc builds for it: the same parameter shapes in order, the same outputs."""
    text, conv, values = chain
    path = tmp_path / "m.dl"
    path.write_text(text, encoding="utf-8")
    prog = dslc.load(str(path))
    module = exec_source(prog.source(), "<chain>")
    x = torch.randn(2, 3, 8, 8) if conv else torch.randn(2, 12)
    for params in values:
        try:
            built = prog.build("M", **params).eval()
        except dslc.diagnostics.DslcError:
            continue   # not a legal value of the spec
        try:
            mine = module.M(**params).eval()
        except ValueError:
            continue   # refused by a guard: the class says so
        assert [v.shape for v in mine.state_dict().values()] == [v.shape for v in built.state_dict().values()], text
        mine.load_state_dict(dict(zip(mine.state_dict(), built.state_dict().values())))
        with torch.no_grad():
            assert torch.equal(mine(x), built(x)), text
