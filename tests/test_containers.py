"""Repeats kept as module lists (frontend/containers.py): `repeat depth as h { x = x -> Block(dim) }`
is `self.h = nn.ModuleList([Block(dim) for _ in range(depth)])` and `for block in self.h: x = block(x)`,
keyed `h.0.fc.weight` as PyTorch keys it, with `depth` a live constructor argument."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
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


def test_passes_that_differ_are_listed_and_the_count_stays_fixed(tmp_path):
    """The first Linear maps 4 to 8, the others 8 to 8 (torchvision's first block with a stride):
    the list holds what was made, and the constructor fixes the count it was made for."""
    prog = _load(tmp_path, """
model M(n: int = 3) {
    input x: [B, 4]
    repeat n as layers { x = x -> Linear(8) }
    output x
}
""")
    src = prog.source()
    assert "nn.Linear(4, 8),\n            nn.Linear(8, 8),\n            nn.Linear(8, 8),\n        ])" in src
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
