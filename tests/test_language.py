"""The language contract: every example of LANGUAGE.md checks, and every model in it
compiles and runs a forward pass whose output shapes equal the checker's."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
from support import ROOT

import dslc
from dslc.diagnostics import DslcError

EXAMPLE = os.path.join(ROOT, "examples", "language.dl")
SIZES = {"B": 2, "T": 5}
# `MLP` (specs/mlp.dl, imported by the contract) has no defaults: the plan `digits` uses these.
PARAMS = {"MLP": {"hidden": 256, "classes": 10}}


def test_example_file_is_the_contract():
    r = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "extract_contract.py"), "--check"])
    assert r.returncode == 0, "examples/language.dl is stale: run tools/extract_contract.py"


@pytest.fixture(scope="module")
def prog():
    return dslc.load(EXAMPLE)


def test_contract_checks(prog):
    assert {"MnistMLP", "TwoTower", "ResNet18", "LSTMClassifier", "VAE", "Generator", "Discriminator",
            "Classifier", "ViT", "GPT", "MLP"} <= set(prog.models)
    assert set(prog.plans) == {"digits", "gan", "finetune"}


def _inputs(graph):
    import torch
    out = []
    for _, ref in graph.inputs:
        t = graph.type_of(ref)
        shape = t.concrete(**SIZES)
        if t.dtype == "int64":
            out.append(torch.randint(0, 2, shape))
        else:
            out.append(torch.rand(shape))
    return out


MODELS = ["MnistMLP", "TwoTower", "ResNet18", "LSTMClassifier", "VAE", "Generator", "Discriminator",
          "Classifier", "ViT", "GPT", "MLP"]


@pytest.mark.parametrize("name", MODELS)
def test_contract_model_runs(prog, name):
    import torch
    params = PARAMS.get(name, {})
    graph = prog.graph(name, **params)
    net = prog.build(name, seed=0, **params).eval()
    with torch.no_grad():
        out = net(*_inputs(graph))
    outs = list(out) if isinstance(out, tuple) else [out]
    want = [graph.type_of(ref) for _, ref in graph.outputs]
    assert [tuple(o.shape) for o in outs] == [t.concrete(**SIZES) for t in want]


def test_in_and_not_in_decide_at_compile_time(tmp_path):
    """`kind in [...]` and `i not in skips` choose layers as Python's operators would; a run-time size
    or a tensor on either side is an error, not a guess."""
    path = tmp_path / "in.dl"
    path.write_text('''
block Act(kind: str = "relu", skips: list[int] = [1, 3]) {
    input x
    for i in range(4) {
        x = x -> Linear(8)
        if kind in ["relu", "gelu"] and i not in skips {
            x = (x -> ReLU()) if kind == "relu" else (x -> GELU())
        }
    }
    output x
}
model M {
    input x: [B, 8]
    output x -> Act() -> Act("gelu", skips=[]) -> Act("tanh")
}
''')
    src = dslc.load(str(path)).source()
    # each Act is a chain of unnamed layers: an nn.Sequential, its activations modules
    # (the docstring of the `tanh` class says it was built for kind == "tanh": no tanh layer or call)
    assert src.count("nn.ReLU()") == 2 and src.count("nn.GELU()") == 4
    assert "nn.Tanh" not in src and "tanh(" not in src
    path.write_text("model M {\n    input x: [B, T]\n    output x * 2 if T in [1, 2] else x\n}\n")
    with pytest.raises(DslcError, match="E0311"):
        dslc.load(str(path))
    path.write_text("model M {\n    input x: [B, 4]\n    output x if 2 in x else x\n}\n")
    with pytest.raises(DslcError, match="`in` is not defined for tensors"):
        dslc.load(str(path))


def test_a_local_name_shadows_a_library_function_or_layer_but_not_a_declaration(tmp_path):
    """One rule, Python's: a tensor, a parameter or a loop variable may take the name of a library
    function or layer (`pad`, `relu`, `attention`) inside its scope, so that a name the library adds
    later never breaks a spec; the file's own blocks and models keep their names."""
    import torch
    path = tmp_path / "shadow.dl"
    path.write_text("model M(dropout: float = 0.5) {\n    input x: [B, 4]\n    pad = x > 0\n"
                    "    relu = x -> Linear(4) as fc\n    attention = relu + x * dropout\n    output attention, pad\n}\n")
    net = dslc.load(str(path)).build("M", seed=0).eval()
    x = torch.randn(3, 4)
    with torch.no_grad():
        got, mask = net(x)
        torch.testing.assert_close(got, net.fc(x) + x * 0.5)
        assert torch.equal(mask, x > 0)
    clash = tmp_path / "clash.dl"
    clash.write_text("block Head {\n    Linear(2)\n}\n\nmodel N {\n    input x: [B, 4]\n    Head = x\n"
                     "    output Head\n}\n")
    with pytest.raises(DslcError) as err:
        dslc.load(str(clash))
    assert "E0201" in str(err.value) and "already names a block" in str(err.value)


def test_an_equality_that_holds_for_the_parameters_given_is_accepted_with_its_condition(tmp_path):
    """One policy for shape equations over run-time sizes: equal at the parameters' values → accepted,
    and what the parameters must satisfy for every size is checked by the generated constructor
    (`stride == 1` for a residual sum, `d_model % 2 == 0` for interleaved sines); unequal → an error."""
    import torch
    from torch import nn
    res = tmp_path / "res.dl"
    res.write_text("model R(stride: int = 1) {\n    input x: [B, 8, H, W]\n"
                   "    y = (x -> Conv2d(8, 3, stride=stride, padding=1) as conv) + x\n    output y\n}\n")
    prog = dslc.load(str(res))
    net = prog.build("R", seed=0).eval()
    x = torch.randn(2, 8, 5, 7)
    with torch.no_grad():
        torch.testing.assert_close(net(x), net.conv(x) + x)
    from dslc.api import exec_source
    # a requirement of the sum (its other outcome is E0401 below), with the sum's line
    with pytest.raises(ValueError, match=r"^R needs stride == 1 \(res\.dl:3\)$"):
        exec_source(prog.source(), "<res>").R(stride=2)   # the generated class, run without dslc
    with pytest.raises(DslcError, match="E0401"):
        prog.graph("R", stride=2)
    pe = tmp_path / "pe.dl"
    pe.write_text("model P(d_model: int = 8) {\n    input t: [B, T]\n    a = unsqueeze(t, -1) * ones([d_model // 2])\n"
                  "    pe = reshape(stack([sin(a), cos(a)], dim=3), [B, T, d_model])\n    output pe\n}\n")
    prog = dslc.load(str(pe))
    t = torch.randn(2, 3)
    a = t.unsqueeze(-1) * torch.ones(4)
    with torch.no_grad():
        torch.testing.assert_close(prog.build("P", seed=0)(t), torch.stack([a.sin(), a.cos()], 3).reshape(2, 3, 8))
    assert "if d_model % 2 != 0:" in prog.source()
    with pytest.raises(DslcError, match="E0407"):
        prog.graph("P", d_model=7)
    _ = nn
