"""Run-time requirements (issue #11): a static index or slice on a run-time size (`x[:, 3]` on
[B, T, 4]) has a static result only if the size is long enough, so the checker records what it
relies on (`T > 3`), the generated model's forward checks it first, with the spec line, and the
trainer refuses data whose batches cannot meet it. Parameter facts stay in `__init__`."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from support import ort_run

import dslc
from dslc.api import exec_source, train
from dslc.diagnostics import DslcError
from dslc.ir.dims import Guard, Poly, Sym, Var, recording, require, requirements, unmet
from dslc.runtime.trainer import Options

SPEC = """\
model M {
    input x: [B, T, 4]
    a = x[:, 3]
    b = x[:, -2:]
    c = x[:, 1:-2]
    d = x[:, 5:2]
    e = x[:, -1]
    output a, b, c, d, e
}

block Pick(k: int = 2) {
    input x: [B, T, 4]
    output x[:, k] -> Linear(8)
}

model Blocked(depth: int = 2) {
    input x: [B, S, 4]
    h = x
    repeat depth {
        h = h -> ReLU()
    }
    output h -> Pick(k=6) as pick   # named: Blocked keeps its attributes (unnamed, it is an nn.Sequential)
}

model Huge {
    input x: [B, T, 4]
    h = x[:, 4294967296]
    output h
}
"""


def twin(x: torch.Tensor) -> tuple:
    """M written by hand in PyTorch."""
    return x[:, 3], x[:, -2:], x[:, 1:-2], x[:, 5:2], x[:, -1]


@pytest.fixture(scope="module")
def prog(tmp_path_factory):
    path = tmp_path_factory.mktemp("req") / "req.dl"
    path.write_text(SPEC)
    return dslc.load(str(path))


def _needs(graph) -> list[str]:
    return [g.to_python() for g in requirements(graph.guards)]


# ---------------------------------------------------------------- the checker

def test_the_checker_records_what_an_index_relies_on(prog):
    g = prog.graph("M")
    shapes = [str(g.type_of(ref)) for _, ref in g.outputs]
    assert shapes == ["[B, 4]", "[B, 2, 4]", "[B, T - 3, 4]", "[B, 0, 4]", "[B, 4]"]
    # x[:, 3] needs T > 3, x[:, 1:-2] T >= 3 and x[:, -2:] T >= 2: the strongest is kept; x[:, -1]
    # needs T >= 1, which every size meets, and x[:, 5:2] is empty whatever T is
    assert sorted(x.to_python() for x in g.guards) == ["T > 3", "T >= 2", "T >= 3"]
    assert _needs(g) == ["T > 3"]
    assert g.guards[0].where.line == 3 and g.guards[0].where.text == "x[:, 3]"


@pytest.mark.parametrize("index, length, least", [
    ((None, None), "T", None), ((0, 4), 4, 4), ((2, 6), 4, 6), ((5, 2), 0, None), ((3, 3), 0, None),
    ((2, None), "T - 2", 2), ((1, -2), "T - 3", 3), ((-3, None), 3, 3), ((-3, -1), 2, 3),
    ((-1, -3), 0, None), ((None, -1), "T - 1", None), ((1, None), "T - 1", None), ((None, 1), 1, None)])
def test_slices_of_a_run_time_size(tmp_path, index, length, least):
    lo, hi = ("" if v is None else v for v in index)
    path = tmp_path / "s.dl"
    path.write_text(f"model S {{\n    input x: [B, T]\n    output x[:, {lo}:{hi}]\n}}\n")
    g = dslc.load(str(path)).graph("S")
    assert str(g.type_of(g.outputs[0][1])) == f"[B, {length}]"
    assert _needs(g) == ([] if least is None else [f"T >= {least}"])


def test_what_every_size_meets_is_not_recorded():
    T, B = Sym.var("T"), Sym.var("B")
    with recording() as found:
        require(T, ">", 0)
        require(T, ">=", 1)
        require(2 * T + 1, ">=", 3)      # T >= 1 makes it at least 3
        require(5, ">", 9)               # a static size is the checker's: nothing to record
        require(B * T, ">=", 2)
        require(T - 2, ">=", 1)          # a size computed from T may be 0: recorded, in T's terms
    assert [g.to_python() for g in found] == ["B * T >= 2", "T >= 3"]


def test_requirements_are_evaluated_at_given_sizes():
    t = Poly.atom(Var("T"))
    guards = [Guard(t, ">", Poly.const(3)), Guard(t, ">=", Poly.const(9)), Guard(Poly.atom(Var("B")), ">", Poly.const(1))]
    assert [g.is_requirement() for g in guards] == [True, True, True]
    assert [g.to_python() for g in requirements(guards)] == ["T >= 9", "B > 1"]
    assert unmet(guards, {Var("T"): 8, Var("B"): 2}.get) == [guards[1]]
    assert unmet(guards, {Var("T"): 9, Var("B"): 1}.get) == [guards[2]]
    assert unmet(guards, {Var("T"): 9}.get) == []
    assert unmet(guards, {}.get) == []   # unknown sizes: nothing to say


# ---------------------------------------------------------------- the generated PyTorch

def test_forward_checks_first_and_then_equals_torch(prog):
    net = prog.build("M", seed=0)
    with pytest.raises(ValueError, match=r"^M needs T > 3 \(req\.dl:3\), got T = 3$"):
        net(torch.randn(2, 3, 4))
    for t in (4, 5, 9):
        x = torch.randn(2, t, 4)
        for got, want in zip(net(x), twin(x), strict=True):
            assert torch.equal(got, want)
    huge = prog.build("Huge", seed=0)
    with pytest.raises(ValueError, match=r"^Huge needs T > 4294967296 \(req\.dl:27\), got T = 5$"):
        huge(torch.randn(2, 5, 4))


def test_the_check_reads_as_a_person_would_write_it(prog):
    src = prog.source(["M"])
    forward = src[src.index("def forward"):]
    assert forward.splitlines()[1:4] == [
        "        T = x.shape[1]",
        "        if T <= 3:",
        '            raise ValueError(f"M needs T > 3 (req.dl:3), got T = {T}")']
    for opt in (1, 2):    # the passes keep it
        assert 'raise ValueError(f"M needs T > 3' in prog.source(["M"], opt=opt)


def test_requirements_flow_from_a_block_to_its_caller(prog):
    g = prog.graph("Blocked")
    assert _needs(g) == ["S > 6"] and requirements(g.guards)[0].where.line == 13
    src = prog.source(["Blocked"])
    pick = src[src.index("class Pick"):src.index("class Blocked")]
    assert "S > 6" not in pick and "built for" in pick   # the caller checks
    # what the block's declared input fixes, its constructor checks (`x: [B, T, 4]`)
    assert [line.strip() for line in pick.splitlines() if "raise" in line] == \
        ['raise ValueError("Pick needs in_features == 4 (req.dl:11)")']
    net = prog.build("Blocked", seed=0)
    with pytest.raises(ValueError, match=r"^Blocked needs S > 6 \(req\.dl:13\), got S = 6$"):
        net(torch.randn(2, 6, 4))
    x = torch.randn(2, 7, 4)
    assert torch.equal(net(x), net.pick.fc(torch.relu(x)[:, 6]))


def _init_of(src: str, cls: str) -> str:
    body = src[src.index(f"class {cls}"):]
    return body[:body.index("def forward")]


def test_init_keeps_the_parameter_facts_and_only_them(prog, tmp_path):
    src = prog.source(["Blocked"])
    init = _init_of(src, "Blocked")
    assert 'if depth != 2:' in init and "S > 6" not in init
    (tmp_path / "req.dl").write_text(SPEC.replace("Pick(k=6)", "Pick(k=0)"))   # x[:, 0]: no requirement
    plain = dslc.load(str(tmp_path / "req.dl")).source(["Blocked"])
    assert "raise ValueError(f" not in plain and _init_of(plain, "Blocked") == init
    mod = exec_source(src, "<blocked>")
    with pytest.raises(ValueError, match="Blocked was compiled for depth == 2"):
        mod.Blocked(depth=3)
    mod.Blocked(depth=2)


# ---------------------------------------------------------------- ONNX

def test_onnx_agrees_with_torch_where_the_requirement_holds(prog):
    model = prog.onnx("M")
    net = prog.build("M", seed=0)
    for t in (4, 7):
        x = torch.randn(2, t, 4)
        got = ort_run(model, {"x": x.numpy()})
        want = [w.numpy() for w in net(x)]
        assert [a.shape for a in got] == [w.shape for w in want]
        for a, w in zip(got, want, strict=True):
            np.testing.assert_array_equal(a, w)
    assert got[3].shape == (2, 0, 4)   # x[:, 5:2]: empty in the checker, torch and ONNX


def test_onnx_raises_on_an_index_past_the_end(prog):
    model = prog.onnx("M")
    with pytest.raises(Exception):   # noqa: B017 - onnxruntime's own error: ONNX has no check of its own
        ort_run(model, {"x": np.zeros((2, 3, 4), np.float32)})


# ---------------------------------------------------------------- the trainer

PLAN = """\
model Small {
    input x: [B, 1, 8, 8]
    h = x -> Flatten() -> Linear(10)
    output h + h[7]
}

train p {
    model      = Small()
    data       = digits(val=0.2, test=0.2)
    loss       = cross_entropy(out, batch.y)
    optimizer  = Adam(lr=3e-3)
    epochs     = 1
    batch_size = 64
}
"""


def _train(tmp_path, text: str, sets=()):
    path = tmp_path / "plan.dl"
    path.write_text(text)
    return train(str(path), None, Options(out=str(tmp_path / "run"), sets=tuple(sets), progress=False),
                          out=lambda line: None)


def test_the_trainer_refuses_batches_too_small_for_the_model(tmp_path):
    with pytest.raises(DslcError) as e:
        _train(tmp_path, PLAN, sets=["batch_size=5"])
    text = e.value.render()
    assert "error[E0504]: the data is too small for this model: it needs B > 7" in text
    assert "plan.dl:4:16" in text and "output h + h[7]" in text and "the data" in text
    assert not (tmp_path / "run").exists()    # refused before the run started


def test_the_trainer_accepts_batches_that_meet_it(tmp_path):
    # 1078 training examples: batches of 64 and a last one of 54; validation and test 359 each: 39
    assert _train(tmp_path, PLAN)["epochs_run"] == 1


def test_a_sequence_shorter_than_the_spec_needs_is_refused_by_check(tmp_path):
    """The data's other sizes are known when the plan is checked: the model is specialized to them and
    the index is checked there (E0406 at the spec line), before any training."""
    text = """\
model L {
    input x: [B, T] of int64
    h = x -> Embedding(76, 8)
    output h[:, 10] -> Linear(76)
}

train p {
    model      = L()
    data       = shakespeare(context=8, chars=2000)
    loss       = cross_entropy(out, batch.y[:, 0])
    optimizer  = Adam(lr=3e-3)
    epochs     = 1
}
"""
    with pytest.raises(DslcError) as e:
        _train(tmp_path, text)
    assert "plan.dl:4:12: error[E0406]: index 10 is out of range for dimension 1 of size 8" in e.value.render()


def test_a_kernel_or_a_reflection_over_a_run_time_size_is_a_requirement(tmp_path):
    """torch refuses a kernel wider than its (padded) input and a reflection as wide as the input;
    over a run-time size both become checks in forward, named by the spec line, and the model equals
    torch where the sizes suffice."""
    import torch
    from torch import nn
    path = tmp_path / "k.dl"
    path.write_text("model M {\n    input x: [B, 3, T]\n    ReflectionPad1d(4)\n    Conv1d(4, 7, padding=1) as conv\n"
                    "    MaxPool1d(3)\n}\n")
    prog = dslc.load(str(path))
    src = prog.source()
    assert "if T < 5:" in src or "if T <= 4:" in src
    net = prog.build("M", seed=0).eval()
    with pytest.raises(ValueError, match=r"M needs T > 4 \(k\.dl:3\), got T = 4"):
        net(torch.randn(1, 3, 4))
    x = torch.randn(2, 3, 5)
    with torch.no_grad():
        want = nn.functional.max_pool1d(net.conv(nn.functional.pad(x, (4, 4), mode="reflect")), 3)
        assert torch.equal(net(x), want)


def test_a_requirement_on_one_size_reads_as_its_least_value():
    T, S = Sym.var("T"), Sym.var("S")
    with recording() as found:
        require((T - 1) // 2, ">", 0)
        require(T // 2 + 3, ">=", 5)
        require(T * S - 4, ">=", 2)      # two sizes: only the constant moves
    assert [g.to_python() for g in found] == ["T >= 3", "T >= 4", "S * T >= 6"]


@pytest.mark.parametrize("layer,twin", [
    ("Conv1d(2, 7, padding=1)", lambda x, m: m.conv(x)),
    ("MaxPool1d(2, stride=3, dilation=2, ceil_mode=true)",
     lambda x, m: F.max_pool1d(x, 2, stride=3, dilation=2, ceil_mode=True)),
    ("AvgPool1d(4, stride=2)", lambda x, m: F.avg_pool1d(x, 4, stride=2)),
    ("ReflectionPad1d(3)", lambda x, m: F.pad(x, (3, 3), mode="reflect")),
    ("CircularPad1d([2, 4])", lambda x, m: F.pad(x, (2, 4), mode="circular")),
    ("Upsample(scale_factor=0.25)", lambda x, m: F.interpolate(x, scale_factor=0.25)),
])
def test_the_forward_refuses_exactly_the_sizes_torch_refuses(tmp_path, layer, twin):
    """For each length, the generated model raises its ValueError exactly when torch itself fails on
    that input, and otherwise equals torch."""
    path = tmp_path / "k.dl"
    path.write_text(f"model M {{\n    input x: [B, 3, T]\n    {layer} as conv\n}}\n")
    net = dslc.load(str(path)).build("M", seed=0).eval()
    for t in range(1, 13):
        x = torch.randn(2, 3, t)
        try:
            with torch.no_grad():
                want = twin(x, net)
        except RuntimeError:
            with pytest.raises(ValueError, match=r"M needs T"):
                net(x)
            continue
        with torch.no_grad():
            assert torch.equal(net(x), want), (layer, t)


def test_a_slice_to_a_run_time_size_as_in_nanogpt(tmp_path):
    """`pe[:T]` (a learned position table cut to the sequence) and `x[:, 2:T]`: the length is T (or
    T - 2), which needs T <= 64 and T >= 2 when the model runs; equal to torch and to onnxruntime."""
    path = tmp_path / "pe.dl"
    path.write_text("model M {\n    input x: [B, T, 8]\n    param pe: [64, 8] = normal(std=0.02)\n"
                    "    y = x + pe[:T]\n    z = x[:, 2:T]\n    output y, z\n}\n")
    prog = dslc.load(str(path))
    graph = prog.graph("M")
    assert [str(graph.type_of(r)) for _, r in graph.outputs] == ["[B, T, 8]", "[B, T - 2, 8]"]
    net = prog.build("M", seed=0).eval()
    model = prog.onnx("M", seed=0)
    for t in (2, 5, 64):
        x = torch.randn(2, t, 8)
        with torch.no_grad():
            y, z = net(x)
            assert torch.equal(y, x + net.pe[:t]) and torch.equal(z, x[:, 2:t])
        got = ort_run(model, {"x": x.numpy()})
        assert np.allclose(got[0], y.numpy(), atol=1e-6) and np.array_equal(got[1], z.numpy())
    with pytest.raises(ValueError, match=r"M needs T <= 64 \(pe\.dl:4\), got T = 65"):
        net(torch.randn(1, 65, 8))
    with pytest.raises(ValueError, match=r"M needs T >= 2 \(pe\.dl:5\), got T = 1"):
        net(torch.randn(1, 1, 8))


def test_layer_norm_over_a_run_time_size_requires_its_normalized_shape(tmp_path):
    """`LayerNorm(normalized_shape=4)` over `[B, T]` runs in torch only when T is 4: a requirement,
    not an assumption (the soundness property found `B * 18` normalized as 2, which check accepted)."""
    path = tmp_path / "ln.dl"
    path.write_text("model M {\n    input x: [B, T]\n    LayerNorm(normalized_shape=4) as norm\n}\n")
    net = dslc.load(str(path)).build("M", seed=0).eval()
    x = torch.randn(3, 4)
    with torch.no_grad():
        assert torch.equal(net(x), net.norm(x))
    with pytest.raises(ValueError, match=r"M needs T == 4 \(ln\.dl:3\), got T = 5"):
        net(torch.randn(3, 5))


def test_topk_over_a_run_time_size_requires_k_values(tmp_path):
    """topk(k=6) over `B` needs B >= 6: the generated forward says so instead of torch's "selected index k
    out of range" (found by tools/soundness.py, seed 43)."""
    path = tmp_path / "tk.dl"
    path.write_text("model M {\n    input x: [B]\n    output topk(x, 6)\n}\n", encoding="utf-8")
    prog = dslc.load(str(path))
    net = prog.build("M", seed=0)
    with pytest.raises(ValueError, match=r"M needs B >= 6 \(tk.dl:3\), got B = 4"):
        net(torch.randn(4))
    values, indices = net(torch.arange(8.0))
    assert values.tolist() == [7.0, 6.0, 5.0, 4.0, 3.0, 2.0] and indices.tolist() == [7, 6, 5, 4, 3, 2]


BATCH_STATISTICS = """model M {
    input x: [B, 4]
    BatchNorm1d(affine=false, track_running_stats=false)
}
"""


def test_batch_statistics_need_more_than_one_sample(tmp_path):
    """BatchNorm1d without running statistics normalizes over the batch in eval mode too, and torch
    raises for one sample ("Expected more than 1 value per channel"). `check` passed such a spec
    (tools/soundness.py found it); the model now requires B > 1 and its forward says so first."""
    path = tmp_path / "m.dl"
    path.write_text(BATCH_STATISTICS, encoding="utf-8")
    prog = dslc.load(str(path))
    module = exec_source(prog.source(), "<m>")
    net = module.build("M").eval()
    with pytest.raises(ValueError, match=r"^M needs B > 1 \(m\.dl:3\), got B = 1$"):
        net(torch.randn(1, 4))
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        torch.nn.BatchNorm1d(4, affine=False, track_running_stats=False).eval()(torch.randn(1, 4))
    x = torch.randn(3, 4)
    assert torch.allclose(net(x), F.batch_norm(x, None, None, training=True), atol=1e-6)
