"""Optimization passes (dslc/passes): each pass on a tiny program, before and after, with its log;
why a rewrite did not apply; random graphs whose outputs the passes preserve; batch-norm folding
on ResNet-18; the -O levels through the API and the command line.

Goldens: tests/golden/passes/*.ir, refreshed with `pytest tests/test_passes.py --update-goldens`.
"""
from __future__ import annotations

import ast
import dataclasses
import os

import pytest
from conftest import golden
from hypothesis import given, settings
from hypothesis import strategies as st
from support import ROOT, run_without_dslc

import dslc
from dslc.ir.printer import print_graph
from dslc.ops import REGISTRY
from dslc.passes import PassManager, VerifyError, constants, optimize, verify

GOLDEN = os.path.join(ROOT, "tests", "golden", "passes")

# One tiny program per pass: the golden holds the IR before and after, and the pass log.
CASES = {
    "noop": ("""
model NoOps(p: float = 0.0) {
    input x: [B, 4, 6]
    a = x -> Identity() -> Dropout(0.0)
    b = transpose(transpose(a, 1, 2), 1, 2)
    c = reshape(b, [B, 4, 6]) * 1
    d = squeeze(unsqueeze(c, 1), 1)
    e = dropout(d, p)
    output e + 0
}
""", 1),
    "constants": ("""
model Constants {
    input x: [B, 4, 6]
    bias = relu(ones([4, 6]) * 3.0 - 1.0)
    scale = transpose(zeros([6, 4]) + 0.5, 0, 1)
    output x * scale + bias + sum(ones([2, 3]))
}
""", 1),
    "cse": ("""
model Common {
    input x: [B, 6]
    a = relu(x) + relu(x)
    b = (x -> Linear(6) as fc) + fc(x)
    c = (x -> Linear(6)) + (x -> Linear(6))
    n = x -> BatchNorm1d()
    output a + b + c + n + (x -> BatchNorm1d() as bn) + bn(x)
}
""", 1),
    "dce": ("""
block Two {
    input x
    first = x -> Linear(3)
    second = x -> Linear(5)
    output first, second
}

model Dead {
    input x: [B, 6]
    unused = x -> Linear(8) -> ReLU()
    kept = dropout(x, 0.5)
    a, b = x -> Two()
    output a
}
""", 1),
    "fold_bn": ("""
model Folding {
    input x: [B, 3, 8, 8]
    input v: [B, 5]
    h = x -> Conv2d(4, 3, padding=1, bias=false) -> BatchNorm2d() -> ReLU()
    shared = h -> Conv2d(4, 1)
    twice = (shared -> BatchNorm2d()) + shared
    stats = twice -> Conv2d(4, 1) -> BatchNorm2d(track_running_stats=false)
    after = relu(stats) -> BatchNorm2d()
    w = v -> Linear(7) -> BatchNorm1d() -> Dropout(0.2)
    output after, w
}
""", 2),
    "sdpa": ("""
model Attend {
    input x: [B, T, 8]
    q, k, v = x -> Linear(24) -> chunk(3, dim=-1)
    a = attention(q, k, v, heads=2, causal=true)
    output a + (x -> MultiheadAttention(8, 2))
}
""", 1),
}


def _load(tmp_path, name: str, text: str):
    path = tmp_path / f"{name}.dl"
    path.write_text(text.lstrip())
    return dslc.load(str(path))


def _dump(prog, name: str, level: int, channels_last: bool = False) -> str:
    before = print_graph(prog.graph(name))
    result = prog.optimized(name, level, channels_last)
    return (f"# before\n{before}\n# after -O{level}{' --channels-last' if channels_last else ''}\n"
            f"{print_graph(result.graph)}\n# log\n{result.report()}")


@pytest.mark.parametrize("case", sorted(CASES))
def test_pass_before_and_after(case, tmp_path, update_goldens):
    text, level = CASES[case]
    prog = _load(tmp_path, case, text)
    name = prog.models[-1]
    golden(os.path.join(GOLDEN, f"{case}.ir"), _dump(prog, name, level), update_goldens)
    _same_outputs(prog, name, level)


def _declined(prog, name: str, level: int, channels_last: bool = False) -> list[str]:
    return [e.text for e in prog.optimized(name, level, channels_last).declined]


def _applied(prog, name: str, level: int, channels_last: bool = False) -> list[str]:
    return [e.text for e in prog.optimized(name, level, channels_last).applied]


def test_why_no_ops_were_kept(tmp_path):
    prog = _load(tmp_path, "noop", CASES["noop"][0])
    assert "kept `dropout` at noop.dl:7: p is the parameter `p`, 0 now, which the generated constructor can " \
           "change" in _declined(prog, "NoOps", 1)
    prog = _load(tmp_path, "perm", "model P {\n    input x: [B, 2, 3, 4]\n"
                                   "    output transpose(transpose(x, 1, 2), 2, 3)\n}\n")
    assert _declined(prog, "P", 1) == ["kept `transpose` at perm.dl:3 after `transpose` at perm.dl:3: together they "
                                       "permute the dims to [0, 2, 3, 1], not the identity"]
    prog = _load(tmp_path, "bcast", "model M {\n    input x: [B, 1, 4]\n    output x * ones([3, 4])\n}\n")
    assert _declined(prog, "M", 1) == ["kept `mul` at bcast.dl:3: with 1 it still changes the shape or dtype of its "
                                       "operand ([B, 1, 4] to [B, 3, 4])"]


def test_why_constants_were_not_folded(tmp_path):
    prog = _load(tmp_path, "c", "model C {\n    input x: [B, 4]\n"
                                "    output x + dropout(ones([4]), 0.5) + (ones([4]) / 0.0)\n}\n")
    assert _declined(prog, "C", 1) == ["kept `dropout` at c.dl:3 of constants: it is random",
                                       "kept `div` at c.dl:3 of constants: its value is not finite"]



def test_constant_folding_asks_the_entrys_fold(tmp_path):
    """An op is folded by its registry entry's `fold` alone: hardswish has none and is kept; given one
    (here a made-up value, from the input's value and type), it is folded to what that fold says."""
    prog = _load(tmp_path, "f", "model F {\n    input x: [B, 4, 3]\n    output x + hardswish(ones([4, 3]) * 2.0)\n}\n")
    assert not any("hardswish" in e.text for e in prog.optimized("F", 1).applied)
    graph = prog.graph("F")
    for node in graph:
        if node.kind == "op" and node.op.name == "hardswish":
            node.op = dataclasses.replace(node.op, fold=lambda c: c.x * c.static(c.inputs[0].shape[-1]))
    assert "folded `hardswish` at f.dl:3 into full([4, 3], 6.0)" in [e.text for e in optimize(graph, 1).applied]


def test_constant_folding_names_no_op():
    """What constant folding knows of an op comes from its registry entry: no op's name is in the pass."""
    with open(constants.__file__, encoding="utf-8") as f:
        literals = {n.value for n in ast.walk(ast.parse(f.read())) if isinstance(n, ast.Constant)}
    assert len(REGISTRY) > 100 and literals & set(REGISTRY) == set()

def test_why_common_subexpressions_were_not_merged(tmp_path):
    prog = _load(tmp_path, "cse", CASES["cse"][0])
    assert _declined(prog, "Common", 1) == [
        "kept `fc1` (Linear) beside `fc` (Linear) on the same input: they have their own weights",
        "kept `fc2` (Linear) beside `fc` (Linear) on the same input: they have their own weights",
        "kept `bn` (BatchNorm1d) beside `bn1` (BatchNorm1d) on the same input: it updates running statistics "
        "while training"]


def test_why_dead_code_was_kept(tmp_path):
    prog = _load(tmp_path, "dce", CASES["dce"][0])
    assert _declined(prog, "Dead", 1) == ["kept `dropout` at dce.dl:11: its result is unused, but it is random"]
    assert "dropped `fc` and its weights: nothing applies it" in _applied(prog, "Dead", 1)


def test_why_batch_norms_were_not_folded(tmp_path):
    prog = _load(tmp_path, "fold", CASES["fold_bn"][0])
    assert _declined(prog, "Folding", 2) == [
        "`bn2` (BatchNorm2d) not folded: `conv2`'s output has another user",
        "`bn3` (BatchNorm2d) not folded: it keeps no running statistics (track_running_stats=false), so eval mode "
        "still normalizes by the batch",
        "`bn4` (BatchNorm2d) not folded: its input comes from `relu` at fold.dl:8, not a convolution or linear layer"]
    prog = _load(tmp_path, "seq", "model S {\n    input x: [B, 5, 6]\n    output x -> Linear(4) -> BatchNorm1d()\n}\n")
    # a model that is a chain of unnamed layers is an nn.Sequential: its layers are named by their places
    assert _declined(prog, "S", 2) == ["`1` (BatchNorm1d) not folded: `0`'s output is 3-d: BatchNorm1d normalizes "
                                       "its dimension 1, not the features"]


def test_multihead_attention_already_uses_sdpa(tmp_path):
    prog = _load(tmp_path, "sdpa", CASES["sdpa"][0])
    assert _declined(prog, "Attend", 1) == ["`attn` (MultiheadAttention) left as it is: nn.MultiheadAttention "
                                            "already calls scaled_dot_product_attention"]
    assert "sdpa_attention(q, k, v, 2, causal=True)" in prog.source(opt=1)


def test_channels_last(tmp_path, update_goldens):
    prog = _load(tmp_path, "cnn", """
model Cnn {
    input x: [B, 3, 8, 8]
    output x -> Conv2d(4, 3) -> BatchNorm2d() -> ReLU() -> Flatten() -> Linear(2)
}
model Mlp {
    input x: [B, 3]
    output x -> Linear(2)
}
""")
    golden(os.path.join(GOLDEN, "channels_last.ir"), _dump(prog, "Cnn", 0, channels_last=True), update_goldens)
    src = prog.source(["Cnn"], channels_last=True)
    assert "x = x.contiguous(memory_format=torch.channels_last)" in src
    assert "self.to(memory_format=torch.channels_last)" in src
    net = prog.build("Cnn", seed=0, channels_last=True)
    assert net[0].weight.is_contiguous(memory_format=__import__("torch").channels_last)   # an nn.Sequential
    _same_outputs(prog, "Cnn", 0, channels_last=True)
    assert _declined(prog, "Mlp", 0, channels_last=True) == ["channels_last not used: the model has no 4-d input"]
    assert "channels_last" not in prog.source(["Mlp"], channels_last=True)


def test_o2_chooses_channels_last_by_the_share_of_convolution(tmp_path):
    """-O2 without a layout flag uses channels_last where 2-d convolutions do most of the MACs (counted
    here by hand), never with --no-channels-last, and always with --channels-last."""
    prog = _load(tmp_path, "share", """
model Conv {
    input x: [B, 3, 8, 8]
    output x -> Conv2d(4, 3) -> ReLU() -> Flatten() -> Linear(2)
}
model Head {
    input x: [B, 3, 8, 8]
    output x -> Conv2d(4, 3) -> Flatten() -> Linear(64) -> Linear(2)
}
""")
    # Conv: the convolution is 4·3·3·3 · 6·6 = 3888 MACs, the linear layer 144·2 = 288: 93%.
    assert _applied(prog, "Conv", 2, None)[-1] == "weights and 4-d inputs in the channels_last memory format"
    assert "torch.channels_last" in prog.source(["Conv"], opt=2)
    assert "torch.channels_last" not in prog.source(["Conv"], opt=2, channels_last=False)
    assert "torch.channels_last" not in prog.source(["Conv"], opt=1)
    # Head: 3888 against 144·64 + 64·2 = 9344 in the linear layers: 29%.
    assert _declined(prog, "Head", 2, None) == [
        "channels_last not used: 2-d convolutions are 29% of the MACs (-O2 uses it from 50%; "
        "--channels-last forces it)"]
    assert "torch.channels_last" in prog.source(["Head"], opt=2, channels_last=True)
    net = prog.build("Conv", seed=0, opt=2)
    assert net[0].weight.is_contiguous(memory_format=__import__("torch").channels_last)
    _same_outputs(prog, "Conv", 2, channels_last=None)
    from click.testing import CliRunner

    from dslc.cli import main
    path = str(tmp_path / "share.dl")
    auto = CliRunner().invoke(main, ["compile", path, "--model", "Conv", "-O2", "-o", "-"])
    assert auto.exit_code == 0 and "torch.channels_last" in auto.stdout
    off = CliRunner().invoke(main, ["compile", path, "--model", "Conv", "-O2", "--no-channels-last", "--dump-ir",
                                    "-o", "-"])
    assert off.exit_code == 0 and "torch.channels_last" not in off.stdout
    assert "# IR of Conv after -O2 --no-channels-last" in off.stderr


# ---------------------------------------------------------------- outputs are preserved

def _same_outputs(prog, name: str, level: int, channels_last: bool = False, train: bool = False, atol=1e-5):
    """The -O`level` module, loaded with the unoptimized one's weights, computes the same outputs."""
    import torch
    plain = prog.build(name, seed=0)
    _randomize_statistics(plain)
    fast = prog.build(name, seed=1, opt=level, channels_last=channels_last)
    fast.load_state_dict(plain.state_dict())
    modes = [False] + ([True] if train else [])
    for mode in modes:
        plain.train(mode)
        if level < 2:
            fast.train(mode)
        inputs = _inputs(prog.graph(name))
        torch.manual_seed(0)
        with torch.no_grad():
            want = plain(*inputs)
        torch.manual_seed(0)
        with torch.no_grad():
            got = fast(*inputs)
        want = want if isinstance(want, tuple) else (want,)
        got = got if isinstance(got, tuple) else (got,)
        assert len(got) == len(want)
        for a, b in zip(got, want):
            assert a.shape == b.shape
            assert torch.allclose(a, b, atol=atol, rtol=1e-4), (name, level, mode, (a - b).abs().max())


def _randomize_statistics(net) -> None:
    """Running statistics and affine maps other than their initial 0/1, so folding has something to fold."""
    import torch
    g = torch.Generator().manual_seed(7)
    for m in net.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
            m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            if m.affine:
                with torch.no_grad():
                    m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                    m.bias.copy_(torch.rand(m.bias.shape, generator=g) - 0.5)


def _inputs(graph, batch: int = 2, steps: int = 5) -> list:
    import torch

    from dslc.ir.dims import Sym
    out = []
    g = torch.Generator().manual_seed(3)
    for t in graph.input_types().values():
        shape = [batch if isinstance(d, Sym) and str(d) == "B" else steps if isinstance(d, Sym) else int(d)
                 for d in t.shape]
        out.append(torch.randn(shape, generator=g) if t.is_float else torch.randint(0, 4, shape, generator=g))
    return out


# Random small graphs: chains and diamonds over [B, 4, 6] values.
_OPS = [
    "{v} -> Linear(6)", "relu({v})", "{v} -> ReLU()", "{v} + {w}", "{v} * {w}", "{v} -> Identity()",
    "{v} -> Dropout(0.0)", "dropout({v}, 0.0)", "transpose(transpose({v}, 1, 2), 2, 1)",
    "transpose(transpose({v}, 0, 2), 2, 0)", "transpose(transpose({v}, 1, 2) -> Linear(4), 1, 2)",
    "reshape(reshape({v}, [B, 24]), [B, 4, 6])",
    "reshape({v}, [B, 4, 6])", "flatten({v}, 1) -> unflatten(1, [4, 6])", "squeeze(unsqueeze({v}, 2), 2)",
    "{v} * 1", "{v} + 0", "{v} / 1.0", "{v} * ones([4, 6])", "zeros([6]) + {v}",
    "{v} + (ones([4, 6]) * 2.0 - 1.5)", "sigmoid({v}) + sigmoid({v})", "tanh({v}) - tanh({v})",
    "attention({v}, {w}, {w}, heads=2)", "attention({v}, {v}, {v}, heads=3, causal=true)",
    "{v} -> Linear(6) -> LayerNorm()", "{v} -> Conv1d(4, 3, padding=1) -> BatchNorm1d()", "{v} -> BatchNorm1d()",
    "permute({v}, [0, 2, 1]) -> Linear(4) -> transpose(1, 2)",
]


@st.composite
def random_program(draw):
    n = draw(st.integers(1, 7))
    lines, names = [], ["x"]
    for i in range(n):
        op = draw(st.sampled_from(_OPS))
        v, w = draw(st.sampled_from(names)), draw(st.sampled_from(names))
        lines.append(f"    h{i} = {op.format(v=v, w=w)}")
        names.append(f"h{i}")
    outs = draw(st.lists(st.sampled_from(names[1:]), min_size=1, max_size=2, unique=True))
    body = "\n".join(lines)
    return f"model R {{\n    input x: [B, 4, 6]\n{body}\n    output {' + '.join(outs)}\n}}\n"


@settings(max_examples=50)
@given(text=random_program(), level=st.sampled_from([1, 2]))
def test_random_graphs_keep_their_outputs(tmp_path_factory, text, level):
    path = tmp_path_factory.mktemp("random") / "r.dl"
    path.write_text(text)
    prog = dslc.load(str(path))
    _same_outputs(prog, "R", level, train=level == 1)
    result = prog.optimized("R", level)
    again = optimize(result.graph, level)
    assert again.applied == [], text
    assert print_graph(again.graph) == print_graph(result.graph)


# ---------------------------------------------------------------- batch-norm folding on ResNet-18

def test_folded_cifar_resnet_matches_the_unfolded_one():
    prog = dslc.load(os.path.join(ROOT, "specs", "cifar_resnet.dl"))
    _same_outputs(prog, "ResNet18", 2, atol=1e-4)
    plain, folded = prog.build("ResNet18", seed=0), prog.build("ResNet18", seed=0, opt=2)
    assert sum(p.numel() for p in folded.parameters()) < sum(p.numel() for p in plain.parameters())
    assert not any(isinstance(m, __import__("torch").nn.BatchNorm2d) for m in folded.modules())
    assert prog.optimized("ResNet18", 2).declined == []
    assert prog.summary("ResNet18").total_params == 11_178_762  # the cached graph is untouched


def test_folded_imagenet_resnet_block_without_conv_bias(tmp_path):
    """torchvision-style convolutions have no bias: the folded one gains one."""
    prog = _load(tmp_path, "r", """
block Basic(out: int) {
    input x
    h = x -> Conv2d(out, 3, padding=1, bias=false) -> BatchNorm2d() -> ReLU()
    main = h -> Conv2d(out, 3, padding=1, bias=false) -> BatchNorm2d()
    output relu(main + x)
}
model Tiny {
    input x: [B, 3, 16, 16]
    h = x -> Conv2d(8, 3, padding=1, bias=false) -> BatchNorm2d() -> ReLU()
    output h -> Basic(8) -> Basic(8) -> AdaptiveAvgPool2d(1) -> Flatten() -> Linear(5) -> BatchNorm1d()
}
""")
    _same_outputs(prog, "Tiny", 2, atol=1e-4)
    folded = prog.build("Tiny", seed=0, opt=2)
    # Tiny is a chain of unnamed layers and blocks, an nn.Sequential: the folded batch norm's place `1`
    # is left empty, the other elements keep their keys
    children = dict(folded.named_children())
    assert children["0"].bias is not None and "1" not in children and "3" in children
    src = prog.source(["Tiny"], opt=2)
    assert "fold_batchnorm(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8))" in src
    assert "fold_batchnorm(nn.Linear(8, 5), nn.BatchNorm1d(5))" in src


def test_a_dead_folded_layer_drops_its_batch_norm_too(tmp_path):
    """Folded first, found dead after: the unoptimized checkpoint's entries of both are skipped."""
    prog = _load(tmp_path, "r", "model R {\n    input x: [B, 4, 6]\n    h0 = x -> Linear(6)\n"
                                "    h1 = x -> Conv1d(4, 3, padding=1) -> BatchNorm1d()\n    output h0\n}\n")
    assert "  dropped conv, bn\n" in print_graph(prog.optimized("R", 2).graph)
    _same_outputs(prog, "R", 2)


def test_o2_module_refuses_training(tmp_path):
    prog = _load(tmp_path, "m", "model M {\n    input x: [B, 3]\n    output x -> Linear(2) -> Dropout(0.5)\n}\n")
    net = prog.build("M", seed=0, opt=2)
    assert not net.training
    with pytest.raises(RuntimeError, match="compiled with -O2 for inference"):
        net.train()
    net.eval()  # fine


def test_o2_file_runs_without_dslc(tmp_path):
    prog = dslc.load(os.path.join(ROOT, "specs", "cifar_resnet.dl"))
    (tmp_path / "net.py").write_text(prog.source(opt=2, channels_last=True))
    r = run_without_dslc("import torch, net\nm = net.build()\nprint(tuple(m(torch.randn(2, 3, 32, 32)).shape), "
                         "m.training)", cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "(2, 10) False"


# ---------------------------------------------------------------- the pass manager

def test_passes_never_touch_the_cached_graph(tmp_path):
    prog = _load(tmp_path, "fold", CASES["fold_bn"][0])
    before = print_graph(prog.graph("Folding"))
    prog.optimized("Folding", 2)
    assert print_graph(prog.graph("Folding")) == before
    assert prog.source() == prog.source(opt=0)


def test_verify_catches_a_broken_graph(tmp_path):
    from dslc.ir.types import TensorType
    prog = _load(tmp_path, "m", "model M {\n    input x: [B, 3]\n    output relu(x -> Linear(2))\n}\n")
    g = optimize(prog.graph("M"), 0).graph
    node = [n for n in g if n.kind == "op"][-1]
    node.outputs = [TensorType((5,))]
    with pytest.raises(VerifyError, match="its shape rule gives"):
        verify(g, "a test")


def test_a_pass_that_never_settles_is_an_error(tmp_path):
    from dslc.passes import Pass

    class Restless(Pass):
        name = "restless"

        def run(self, root, log):
            return True
    prog = _load(tmp_path, "m", "model M {\n    input x: [B, 3]\n    output relu(x)\n}\n")
    with pytest.raises(RuntimeError, match="fixed point"):
        PassManager([Restless()], max_rounds=3).run(optimize(prog.graph("M"), 0).graph)


def test_levels_are_checked(tmp_path):
    prog = _load(tmp_path, "m", "model M {\n    input x: [B, 3]\n    output relu(x)\n}\n")
    with pytest.raises(ValueError, match="no optimization level 3"):
        prog.optimized("M", 3)


# ---------------------------------------------------------------- the command line

def test_compile_with_dump_ir(tmp_path):
    from click.testing import CliRunner

    from dslc.cli import main
    path = tmp_path / "fold.dl"
    path.write_text(CASES["fold_bn"][0].lstrip())
    out = tmp_path / "fold.py"
    result = CliRunner().invoke(main, ["compile", str(path), "-O2", "--dump-ir", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "# IR of Folding before the passes" in result.stderr
    assert "# IR of Folding after -O2" in result.stderr
    assert "applied   fold-bn: Folding: folded `bn1` (BatchNorm2d) into `conv1` (Conv2d)" in result.stderr
    assert "not done  fold-bn: Folding: `bn2` (BatchNorm2d) not folded: `conv2`'s output has another user" \
        in result.stderr
    assert "fold_batchnorm(" in out.read_text()
    plain = CliRunner().invoke(main, ["compile", str(path), "-o", "-"])
    assert plain.stdout == dslc.load(str(path)).source()
    bad = CliRunner().invoke(main, ["compile", str(path), "--target", "onnx", "--channels-last",
                                    "-o", str(tmp_path / "m.onnx")])
    assert bad.exit_code == 2 and "--channels-last applies to --target pytorch" in bad.output


def test_onnx_at_o2_is_folded_and_matches_torch(tmp_path):
    """A checkpoint of the unoptimized model, exported at -O2: no BatchNormalization left, same outputs."""
    import numpy as np
    import torch
    from click.testing import CliRunner
    from support import ort_run

    from dslc.cli import main
    path = tmp_path / "fold.dl"
    path.write_text(CASES["fold_bn"][0].lstrip())
    prog = dslc.load(str(path))
    net = prog.build("Folding", seed=0)
    _randomize_statistics(net)
    torch.save(net.state_dict(), tmp_path / "ckpt.pt")
    out = tmp_path / "fold.onnx"
    result = CliRunner().invoke(main, ["compile", str(path), "--target", "onnx", "-O2", "--weights",
                                       str(tmp_path / "ckpt.pt"), "-o", str(out)])
    assert result.exit_code == 0, result.output
    import onnx
    model = onnx.load(str(out))
    assert [n.op_type for n in model.graph.node].count("BatchNormalization") == 2   # bn2 and bn4: not foldable
    x, v = _inputs(prog.graph("Folding"))
    net.eval()
    with torch.no_grad():
        want = net(x, v)
    got = ort_run(model, {"x": x.numpy(), "v": v.numpy()})
    for a, b in zip(got, want):
        assert np.allclose(a, b.numpy(), atol=1e-5)


# ---------------------------------------------------------------- every spec

SPECS = sorted(p for p in os.listdir(os.path.join(ROOT, "specs")) if p.endswith(".dl"))
ARGUMENTS = {"MLP": {"hidden": 256, "classes": 10}}


@pytest.mark.parametrize("spec", SPECS)
def test_every_spec_optimizes_to_a_fixed_point(spec):
    """Each level verifies after every pass (inside optimize), a second run changes nothing,
    and the optimized file is valid Python."""
    prog = dslc.load(os.path.join(ROOT, "specs", spec))
    names = list(prog.buildable) + [n for n in prog.needs_arguments() if n in ARGUMENTS]
    for name in names:
        for level in (1, 2):
            result = prog.optimized(name, level, channels_last=level == 2, **ARGUMENTS.get(name, {}))
            again = optimize(result.graph, level, channels_last=level == 2)
            assert again.applied == [], (spec, name, level)
            compile(prog.source([name], opt=level, channels_last=level == 2, **ARGUMENTS.get(name, {})), spec, "exec")


SMALL = [("gpt.dl", "GPT", {"vocab": 50, "context": 8, "depth": 2, "dim": 32, "heads": 4}),
         ("vit.dl", "ViT", {"depth": 2, "dim": 32, "heads": 4, "image": 16, "patch": 8, "classes": 5}),
         ("transformer.dl", "TransformerClassifier", {"depth": 2, "dim": 32}),
         ("vae.dl", "VAE", {}), ("lstm.dl", "LSTMClassifier", {}), ("mobilenet.dl", "MobileNetV2", {})]


@pytest.mark.parametrize("spec,name,params", SMALL, ids=[f"{s}-{n}" for s, n, _ in SMALL])
def test_small_zoo_models_keep_their_outputs(spec, name, params):
    prog = dslc.load(os.path.join(ROOT, "specs", spec))
    for level in (1, 2):
        _same_outputs_with(prog, name, level, params)


def _same_outputs_with(prog, name: str, level: int, params: dict):
    import torch
    plain = prog.build(name, seed=0, **params)
    _randomize_statistics(plain)
    fast = prog.build(name, seed=1, opt=level, **params)
    fast.load_state_dict(plain.state_dict())
    plain.eval()
    fast.eval()
    graph = prog.graph(name, **params)
    inputs = _inputs(graph, steps=8)
    if name == "MobileNetV2":
        inputs = [torch.randn(1, 3, 64, 64)]
    with torch.no_grad():
        want, got = plain(*inputs), fast(*inputs)
    want, got = (want if isinstance(want, tuple) else (want,)), (got if isinstance(got, tuple) else (got,))
    for a, b in zip(got, want):
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-4), (name, level, (a - b).abs().max())
