"""A layer's own initialization (`Linear(64, init=normal(std=0.02))`) and the initializers.

Checked against independent references: a hand-written PyTorch twin that makes the same layers
and calls torch.nn.init on them in the same order (the same seed must give the same weights),
and the published formulas of each scheme (Glorot's and He's bounds and deviations, an
orthogonal matrix's Q Qᵀ = I), not against dslc's own output.
"""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import dslc

SOURCE = """
block Head(std: float = 0.02) {
    Linear(10, init=normal(std=std))
}
model M {
    input x: [B, 16]
    h = x -> Linear(32, init=xavier_uniform(gain=2.0)) -> LayerNorm(init={weight: constant(0.5), bias: ones}) -> ReLU()
    h = h -> Linear(32, init={bias: zeros()}) -> BatchNorm1d(init=zeros)
    output h -> Head() -> Linear(4, bias=false, init=kaiming_normal(mode="fan_out", nonlinearity="relu"))
}
model Big {
    input x: [B, 600]
    a = x -> Linear(400, init=normal(mean=0.5, std=0.02))
    b = x -> Linear(400, init=xavier_uniform)
    c = x -> Linear(400, init=kaiming_normal(mode="fan_out", nonlinearity="relu"))
    d = x -> Linear(400, init=trunc_normal(std=1.0, a=-0.5, b=0.5))
    e = x -> Linear(400, init=orthogonal(gain=3.0))
    f = x -> Linear(400, init=kaiming_uniform(a=math_sqrt5))
    output a, b, c, d, e, f
}
"""


@pytest.fixture(scope="module")
def prog(tmp_path_factory):
    path = tmp_path_factory.mktemp("init") / "init.dl"
    path.write_text(SOURCE.replace("math_sqrt5", repr(math.sqrt(5))))
    return dslc.load(str(path))


class Twin(nn.Module):
    """specs in SOURCE's model M, written by hand: layers made in order, each initialized right after."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(16, 32)
        nn.init.xavier_uniform_(self.fc.weight, gain=2.0)
        self.norm = nn.LayerNorm(32)
        nn.init.constant_(self.norm.weight, 0.5)
        nn.init.ones_(self.norm.bias)
        self.fc1 = nn.Linear(32, 32)
        nn.init.zeros_(self.fc1.bias)
        self.bn = nn.BatchNorm1d(32)
        nn.init.zeros_(self.bn.weight)
        self.head = nn.Linear(32, 10)
        nn.init.normal_(self.head.weight, std=0.02)
        self.out = nn.Linear(10, 4, bias=False)
        nn.init.kaiming_normal_(self.out.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        h = torch.relu(self.norm(self.fc(x)))
        return self.out(self.head(self.bn(self.fc1(h))))


def test_seeded_weights_equal_a_hand_written_twins(prog):
    net = prog.build("M", seed=0)
    torch.manual_seed(0)
    twin = Twin()
    ours = list(net.state_dict().values())
    theirs = list(twin.state_dict().values())
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        assert torch.equal(a, b)
    x = torch.randn(5, 16)
    net.eval(), twin.eval()
    torch.testing.assert_close(net(x), twin(x))


def test_generated_code_calls_torch_nn_init_after_each_layer(prog):
    src = prog.source(["M"])
    assert "self.fc1 = nn.Linear(16, 32)\n        nn.init.xavier_uniform_(self.fc1.weight, gain=2.0)\n" in src
    assert "nn.init.constant_(self.norm.weight, val=0.5)" in src
    assert "nn.init.ones_(self.norm.bias)" in src
    assert "nn.init.zeros_(self.fc2.bias)" in src and "self.fc2.weight" not in src
    assert "nn.init.normal_(self.fc.weight, std=std)" in src        # in the block, its parameter
    assert 'nn.init.kaiming_normal_(self.fc3.weight, mode="fan_out", nonlinearity="relu")' in src


def test_the_schemes_follow_their_published_formulas(prog):
    a, b, c, d, e, f = (layer.weight.detach() for layer in _linears(prog.build("Big", seed=0)))
    fan_in, fan_out = 600, 400
    assert abs(a.mean() - 0.5) < 0.001 and abs(a.std() - 0.02) < 0.0005
    bound = math.sqrt(6 / (fan_in + fan_out))                    # Glorot & Bengio (2010)
    assert b.abs().max() <= bound and b.abs().max() > 0.99 * bound
    assert abs(c.std() - math.sqrt(2 / fan_out)) < 0.002          # He et al. (2015), fan_out, ReLU gain √2
    assert d.min() >= -0.5 and d.max() <= 0.5 and d.std() > 0.25  # truncated to [a, b]
    torch.testing.assert_close(e @ e.T, 9.0 * torch.eye(400), atol=1e-3, rtol=0)  # rows orthogonal, gain 3
    bound = math.sqrt(6 / ((1 + 5) * fan_in))                     # torch's nn.Linear default: a = √5
    assert f.abs().max() <= bound and f.abs().max() > 0.99 * bound
    for layer in _linears(prog.build("Big", seed=0)):
        assert layer.bias.abs().max() <= 1 / math.sqrt(fan_in)    # biases keep nn.Linear's own init


def _linears(net):
    return [m for m in net.modules() if isinstance(m, nn.Linear)]


def test_params_take_the_new_initializers_too(tmp_path):
    path = tmp_path / "p.dl"
    path.write_text("model P {\n    input x: [B, 6]\n    param w: [6, 6] = orthogonal\n"
                    "    param v: [4, 6] = xavier_normal(gain=0.5)\n    output x @ w, x @ transpose(v, 0, 1)\n}\n")
    prog = dslc.load(str(path))
    net = prog.build("P", seed=0)
    torch.testing.assert_close(net.w @ net.w.T, torch.eye(6), atol=1e-5, rtol=0)
    assert "nn.Parameter(nn.init.orthogonal_(torch.empty(6, 6)))" in prog.source()


def test_o2_does_not_fold_a_batch_norm_into_a_layer_with_its_own_init(tmp_path):
    path = tmp_path / "f.dl"
    path.write_text("model F {\n    input x: [B, 3, 8, 8]\n"
                    "    output x -> Conv2d(4, 3, init=kaiming_normal) -> BatchNorm2d() -> Flatten() -> Linear(2)\n}\n")
    prog = dslc.load(str(path))
    assert "`bn` (BatchNorm2d) not folded: `conv` has its own `init=`" in prog.optimized("F", 2).report()
    plain, fast = prog.build("F", seed=0).eval(), prog.build("F", seed=0, opt=2)
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(fast(x), plain(x))


def test_onnx_export_carries_the_initialized_weights(prog):
    from support import ort_run
    model = prog.onnx("M", seed=0)
    net = prog.build("M", seed=0).eval()
    x = torch.randn(3, 16)
    (got,) = ort_run(model, {model.graph.input[0].name: x.numpy()})
    torch.testing.assert_close(torch.from_numpy(got), net(x).detach(), atol=1e-5, rtol=1e-5)


def test_unused_blocks_resolve_names_inside_init(tmp_path):
    """An unevaluated block's `init=` is not a call of unknown functions; a typo in its arguments is found."""
    path = tmp_path / "u.dl"
    path.write_text("block Unused(std: float) {\n    Linear(10, init={weight: trunc_normal(std=std), bias: zeros})\n"
                    "}\nblock Typo(std: float) {\n    Linear(10, init=normal(std=sdt))\n}\n")
    with pytest.raises(dslc.DslcError, match="`sdt` is not defined"):
        dslc.load(str(path))
    path.write_text("block Unused(std: float) {\n"
                    "    Linear(10, init={weight: trunc_normal(std=std), bias: zeros})\n}\n")
    dslc.load(str(path))


def test_an_integer_constant_makes_a_float_parameter(tmp_path):
    # torch.full takes its dtype from the value: `constant(7)` made an int64 tensor, which
    # cannot be a Parameter (check and compile passed, build failed)
    import torch

    import dslc
    spec = tmp_path / "c.dl"
    spec.write_text("model M(k: int = 3) {\n    input x: [B, 4]\n    param s: [] = constant(7)\n"
                    "    param t: [4] = constant(k)\n    output x * s * t\n}\n")
    prog = dslc.load(str(spec))
    assert "torch.full((), 7.0)" in prog.source(["M"]) and "torch.full((4,), float(k))" in prog.source(["M"])
    net = prog.build("M", params={"k": 5})
    assert net.s.dtype == net.t.dtype == torch.float32
    assert torch.equal(net(torch.ones(1, 4)), torch.full((1, 4), 35.0))
