"""ONNX forms of the norm, dropout and embedding entries, beyond the registry conformance test.

A freshly built layer has trivial weights and running statistics (ones, zeros),
so here every float parameter and buffer is set to random values before the
export; inputs may have run-time sizes (`B`, `T`) and are fed at several sizes;
and the edge cases of eval mode are checked against torch: batch statistics
without tracked ones, InstanceNorm's running statistics, GroupNorm with one value
per group, and Embedding's max_norm renormalizing rows in place.
"""
from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
import torch
from support import ort_run, relative_error, single_op_graph

from dslc.api import exec_source
from dslc.backends.onnx_emit import OPSET, emit_model
from dslc.backends.torch_codegen import generate
from dslc.ir.dims import Sym
from dslc.ops import REGISTRY
from dslc.ops.registry import Example, S

B, T = Sym.var("B"), Sym.var("T")
TOLERANCE = 1e-4


def build(name: str, args: dict, shape: tuple, dtype: str = "float32", randomize: bool = True):
    """The one-op graph (its input may have run-time sizes) and its torch module, weights randomized."""
    graph, _ = single_op_graph(REGISTRY[name], Example(args, (S(*shape, dtype=dtype),)))
    net = exec_source(generate([graph], "test.dl", 0), f"<onnx {name}>").build(graph.name, seed=0).eval()
    if randomize:
        gen = torch.Generator().manual_seed(7)
        with torch.no_grad():
            for key, v in net.state_dict().items():
                if not v.is_floating_point():
                    continue
                r = torch.randn(v.shape, generator=gen)
                if key.endswith("running_var"):
                    v.copy_(torch.rand(v.shape, generator=gen) * 2 + 0.1)
                elif key.endswith("weight") and name != "Embedding":
                    v.copy_(r * 0.5 + 1)
                else:
                    v.copy_(r)
    return graph, net


def export(graph, net) -> onnx.ModelProto:
    """The ONNX model of `graph` with the module's current weights, fully checked, opset 18 operators only."""
    state = {k: v.detach().numpy().copy() for k, v in net.state_dict().items()}
    model = emit_model(graph, state)
    onnx.checker.check_model(model, full_check=True)
    for node in model.graph.node:
        assert node.domain == "", node.op_type
        assert onnx.defs.get_schema(node.op_type, OPSET).since_version <= OPSET
    return model


def run(model, graph, x: torch.Tensor) -> np.ndarray:
    return ort_run(model, {graph.inputs[0][0]: x.numpy()})[0]


def agree(model, graph, net, x: torch.Tensor) -> None:
    with torch.no_grad():
        want = net(x).numpy()
    got = run(model, graph, x)
    assert got.shape == want.shape and got.dtype == want.dtype
    err = relative_error(got, want)
    assert err < TOLERANCE, f"relative error {err:.2e}"


def check(name: str, args: dict, shape: tuple, sizes: tuple, offset: float = 0.0) -> None:
    """Export once, then compare with torch on inputs of each concrete size in `sizes`."""
    graph, net = build(name, args, shape)
    model = export(graph, net)
    gen = torch.Generator().manual_seed(3)
    for size in sizes:
        agree(model, graph, net, torch.randn(size, generator=gen) * 2 + offset)


# ---------------------------------------------------------------- BatchNorm

BN_FLAGS = [{"affine": a, "track_running_stats": t} for a in (True, False) for t in (True, False)]


@pytest.mark.parametrize("flags", BN_FLAGS, ids=lambda f: f"affine={f['affine']}-track={f['track_running_stats']}")
@pytest.mark.parametrize("name,shape,sizes", [
    ("BatchNorm1d", (B, 5), [(2, 5), (7, 5)]),
    ("BatchNorm1d", (B, 4, T), [(2, 4, 6), (3, 4, 1), (1, 4, 5)]),
    ("BatchNorm2d", (B, 3, 4, 5), [(2, 3, 4, 5), (5, 3, 4, 5)]),
    ("BatchNorm3d", (B, 2, 2, 3, 4), [(2, 2, 2, 3, 4), (1, 2, 2, 3, 4)]),
])
def test_batch_norm(name, shape, sizes, flags):
    check(name, {"eps": 1e-3, **flags}, shape, sizes, offset=1.5)


def test_batch_norm_uses_the_running_statistics():
    graph, net = build("BatchNorm2d", {}, (2, 3, 4, 4))
    model = export(graph, net)
    assert [n.op_type for n in model.graph.node].count("BatchNormalization") == 1
    x = torch.randn(2, 3, 4, 4)
    rm, rv = net.bn.running_mean.view(1, 3, 1, 1), net.bn.running_var.view(1, 3, 1, 1)
    w, b = net.bn.weight.view(1, 3, 1, 1), net.bn.bias.view(1, 3, 1, 1)
    with torch.no_grad():
        want = ((x - rm) / torch.sqrt(rv + net.bn.eps) * w + b).numpy()
    assert relative_error(run(model, graph, x), want) < TOLERANCE


def test_batch_norm_without_running_statistics_uses_the_batch():
    graph, net = build("BatchNorm1d", {"track_running_stats": False}, (B, 3, 5))
    model = export(graph, net)
    x = torch.randn(4, 3, 5) * 3 + 2
    mean, var = x.mean((0, 2), keepdim=True), x.var((0, 2), unbiased=False, keepdim=True)
    with torch.no_grad():
        want = ((x - mean) / torch.sqrt(var + 1e-5) * net.bn.weight.view(1, 3, 1) + net.bn.bias.view(1, 3, 1)).numpy()
    assert relative_error(run(model, graph, x), want) < TOLERANCE


# ---------------------------------------------------------------- InstanceNorm

@pytest.mark.parametrize("flags", BN_FLAGS, ids=lambda f: f"affine={f['affine']}-track={f['track_running_stats']}")
@pytest.mark.parametrize("name,shape,sizes", [
    ("InstanceNorm1d", (B, 4, T), [(2, 4, 6), (3, 4, 2)]),
    ("InstanceNorm2d", (B, 3, 4, 5), [(2, 3, 4, 5), (1, 3, 4, 5)]),
])
def test_instance_norm(name, shape, sizes, flags):
    check(name, {"eps": 1e-3, **flags}, shape, sizes, offset=-1.0)


def test_instance_norm_tracking_statistics_uses_them_in_eval():
    graph, net = build("InstanceNorm1d", {"track_running_stats": True, "affine": True}, (2, 3, 5))
    model = export(graph, net)
    x = torch.randn(2, 3, 5)
    m = net.inorm
    with torch.no_grad():
        want = ((x - m.running_mean.view(1, 3, 1)) / torch.sqrt(m.running_var.view(1, 3, 1) + m.eps)
                * m.weight.view(1, 3, 1) + m.bias.view(1, 3, 1)).numpy()
    assert relative_error(run(model, graph, x), want) < TOLERANCE


# ---------------------------------------------------------------- LayerNorm

@pytest.mark.parametrize("args", [{}, {"elementwise_affine": False}, {"bias": False}, {"eps": 1e-6}],
                         ids=["affine", "no-affine", "no-bias", "eps"])
@pytest.mark.parametrize("ns,shape,sizes", [
    (None, (B, T, 8), [(2, 3, 8), (1, 5, 8)]),
    ([3, 4], (B, 3, 4), [(2, 3, 4), (5, 3, 4)]),
    ([2, 3, 4], (B, 2, 3, 4), [(3, 2, 3, 4)]),
    (1, (B, 1), [(4, 1)]),  # a single value: the output is the bias
])
def test_layer_norm(ns, shape, sizes, args):
    check("LayerNorm", {**({"normalized_shape": ns} if ns is not None else {}), **args}, shape, sizes, offset=3.0)


def test_layer_norm_exports_layer_normalization():
    graph, net = build("LayerNorm", {"normalized_shape": [3, 4], "bias": False}, (2, 3, 4))
    node, = [n for n in export(graph, net).graph.node if n.op_type == "LayerNormalization"]
    assert len(node.input) == 2  # no empty B input
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    assert attrs["axis"] == -2 and attrs["epsilon"] == pytest.approx(1e-5)


# ---------------------------------------------------------------- GroupNorm

@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("groups,shape,sizes", [
    (2, (B, 4, 3, 3), [(2, 4, 3, 3), (1, 4, 3, 3)]),
    (3, (B, 6), [(2, 6), (5, 6)]),
    (1, (B, 4, T), [(2, 4, 5), (3, 4, 1)]),
    (4, (B, 4, T), [(2, 4, 5), (3, 4, 2)]),
    (2, (B, 6, 2, 3, 2), [(2, 6, 2, 3, 2)]),
])
def test_group_norm(groups, shape, sizes, affine):
    check("GroupNorm", {"num_groups": groups, "affine": affine, "eps": 1e-3}, shape, sizes, offset=2.0)


@pytest.mark.parametrize("randomize", [True, False])
@pytest.mark.parametrize("shape", [(2, 3), (5, 4), (3, 2, 1, 1), (B, 4)])
def test_group_norm_with_one_value_per_group(shape, randomize):
    """Each output is the bias; torch's fused multiply-add leaves rounding noise, which the export matches."""
    channels = shape[1]
    graph, net = build("GroupNorm", {"num_groups": channels}, shape, randomize=randomize)
    model = export(graph, net)
    gen = torch.Generator().manual_seed(5)
    for _ in range(20):
        x = torch.randn((3,) + tuple(shape[1:]) if shape[0] is B else shape, generator=gen)
        agree(model, graph, net, x)


def test_group_norm_matches_its_definition():
    graph, net = build("GroupNorm", {"num_groups": 2}, (B, 4, 3))
    model = export(graph, net)
    x = torch.randn(3, 4, 3) + 1
    xr = x.reshape(3, 2, -1)
    std = torch.sqrt(xr.var(-1, unbiased=False, keepdim=True) + 1e-5)
    y = ((xr - xr.mean(-1, keepdim=True)) / std).reshape(3, 4, 3)
    with torch.no_grad():
        want = (y * net.gn.weight.view(1, 4, 1) + net.gn.bias.view(1, 4, 1)).numpy()
    assert relative_error(run(model, graph, x), want) < TOLERANCE


# ---------------------------------------------------------------- Dropout

@pytest.mark.parametrize("name,shape", [("Dropout", (B, T, 4)), ("Dropout1d", (B, 3, T)),
                                        ("Dropout2d", (B, 2, 3, 4)), ("AlphaDropout", (B, 6))])
@pytest.mark.parametrize("p", [0.0, 0.5, 1.0])
def test_dropout_is_the_identity(name, shape, p):
    graph, net = build(name, {"p": p}, shape)
    model = export(graph, net)
    assert [n.op_type for n in model.graph.node] == ["Identity", "Identity"]
    x = torch.randn(3, *[4 if isinstance(d, Sym) else d for d in shape[1:]])
    assert np.array_equal(run(model, graph, x), x.numpy())
    agree(model, graph, net, x)


def test_dropout_function_is_the_identity():
    graph, _ = single_op_graph(REGISTRY["dropout"], Example({"input": S(B, 5), "p": 0.3}))
    model = emit_model(graph, {})
    onnx.checker.check_model(model, full_check=True)
    x = np.random.default_rng(0).standard_normal((4, 5)).astype(np.float32)
    assert np.array_equal(ort_run(model, {graph.inputs[0][0]: x})[0], x)


# ---------------------------------------------------------------- Embedding

def ids(shape, n, dtype, seed=0):
    return torch.randint(0, n, shape, generator=torch.Generator().manual_seed(seed), dtype=getattr(torch, dtype))


@pytest.mark.parametrize("dtype", ["int64", "int32"])
@pytest.mark.parametrize("padding_idx", [None, 0, -1])
def test_embedding(dtype, padding_idx):
    graph, net = build("Embedding", {"num_embeddings": 9, "embedding_dim": 4, "padding_idx": padding_idx},
                       (B, T), dtype)
    model = export(graph, net)
    for shape in [(2, 5), (1, 1), (4, 3)]:
        agree(model, graph, net, ids(shape, 9, dtype))
    assert [n.op_type for n in model.graph.node].count("Cast") == (dtype == "int32")


@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, 0.5])
@pytest.mark.parametrize("dtype", ["int64", "int32"])
def test_embedding_max_norm_renormalizes_the_rows_as_torch_does(norm_type, dtype):
    """torch renormalizes the looked-up rows of the table in place, in eval too: the export sees the
    weights from before the call, scales the gathered rows the same way, and gives the same output."""
    graph, net = build("Embedding", {"num_embeddings": 12, "embedding_dim": 5, "max_norm": 1.5,
                                     "norm_type": norm_type}, (B, T), dtype)
    with torch.no_grad():
        net.embedding.weight[:6] *= 0.1  # some rows within the limit, some beyond it
    before = net.embedding.weight.detach().clone()
    model = export(graph, net)
    x = torch.tensor([[0, 7, 7, 3], [11, 0, 5, 8]], dtype=getattr(torch, dtype))  # repeated ids too
    with torch.no_grad():
        want = net(x).numpy()
    assert not torch.equal(before, net.embedding.weight)  # torch did change the table
    got = run(model, graph, x)
    assert relative_error(got, want) < TOLERANCE
    norms = np.linalg.norm(got.astype(np.float64), ord=norm_type, axis=-1)
    assert (norms <= 1.5 + 1e-5).all()
    # later calls: torch's table is already renormalized, the exported one renormalizes again, same values
    y = torch.tensor([[7, 1], [2, 11]], dtype=getattr(torch, dtype))
    agree(model, graph, net, y)
    # exporting the mutated table gives the same model outputs (the renormalization is idempotent)
    assert relative_error(run(export(graph, net), graph, x), want) < TOLERANCE


def test_embedding_max_norm_with_the_infinity_norm():
    graph, net = build("Embedding", {"num_embeddings": 6, "embedding_dim": 3, "max_norm": 0.8}, (B,), "int64")
    net.embedding.norm_type = math.inf
    next(n for n in graph if n.kind == "op").args["norm_type"] = math.inf  # the language writes no inf
    model = export(graph, net)
    x = torch.tensor([0, 1, 2, 3, 4, 5, 2])
    with torch.no_grad():
        want = net(x).numpy()
    assert relative_error(run(model, graph, x), want) < TOLERANCE
    assert (np.abs(want).max(-1) <= 0.8 + 1e-6).all()


def test_a_renormalized_table_read_elsewhere_is_not_exported(tmp_path):
    """torch rewrites max_norm's rows during forward, so a tied head reads the rewritten table;
    an ONNX initializer cannot change, so the export is refused (E0902), naming the layer."""
    import dslc
    from dslc.diagnostics import DslcError
    path = tmp_path / "tied.dl"
    path.write_text("model Tied {\n    input tokens: [B, T] of int64\n"
                    "    h = tokens -> Embedding(10, 4, max_norm=1.0) as wte\n"
                    "    output h @ transpose(wte.weight, 0, 1)\n}\n")
    prog = dslc.load(str(path))
    with pytest.raises(DslcError) as e:
        prog.onnx("Tied")
    assert e.value.codes == ["E0902"]
    assert "`wte` renormalizes its table (max_norm) while its weight `wte.weight` is read elsewhere" in e.value.render()
    path.write_text(path.read_text().replace(", max_norm=1.0", ""))
    onnx.checker.check_model(dslc.load(str(path)).onnx("Tied"), full_check=True)
