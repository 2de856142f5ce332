"""ONNX export of the recurrent and attention ops in whole `.dl` models whose sequence
lengths are run-time sizes: one exported model must match the PyTorch build in
onnxruntime at several lengths, so no Reshape may hold a baked T."""
from __future__ import annotations

import numpy as np
import pytest
from support import ort_run, relative_error

TOLERANCE = 1e-4
LENGTHS = (3, 7)

SOURCE = '''
model Rnn {
    input x: [B, T, 5]
    out, h = x -> RNN(4, num_layers=2, nonlinearity="relu", bidirectional=true, dropout=0.2)
    output out, h
}

model RnnTanh {
    input x: [B, T, 5]
    out, h = x -> RNN(3)
    output out, h
}

model Gru {
    input x: [B, T, 5]
    out, h = x -> GRU(4, num_layers=3, bidirectional=true, bias=false)
    output out, h
}

model GruBias {
    input x: [B, T, 5]
    out, h = x -> GRU(6, num_layers=2)
    output out, h
}

model Lstm {
    input x: [B, T, 5]
    out, (h, c) = x -> LSTM(4, num_layers=2, bidirectional=true, dropout=0.5)
    output out, h, c
}

model LstmProjected {
    input x: [B, T, 5]
    out, (h, c) = x -> LSTM(6, num_layers=2, proj_size=3, bidirectional=true)
    output out, h, c
}

model LstmProjectedNoBias {
    input x: [B, T, 5]
    out, (h, c) = x -> LSTM(5, proj_size=2, bias=false)
    output out, h, c
}

model SelfAttention {
    input x: [B, T, 8]
    x -> MultiheadAttention(8, 2)
}

model SelfAttentionThree {
    input x: [B, T, 8]
    output MultiheadAttention(8, 4, add_bias_kv=true)(x, x, x)
}

model CrossAttention {
    input x: [B, T, 6]
    input memory: [B, S, 6]
    output MultiheadAttention(6, 3, add_bias_kv=true)(x, memory)
}

model CrossAttentionWidths {
    input x: [B, T, 4]
    input key: [B, S, 3]
    input value: [B, S, 7]
    output MultiheadAttention(4, 2, bias=false, add_bias_kv=true)(x, key, value)
}

block CausalSelfAttention(dim: int, heads: int) {
    input x
    q, k, v = x -> Linear(3 * dim) -> chunk(3, dim=-1)
    output attention(q, k, v, heads=heads, causal=true, dropout=0.1) -> Linear(dim)
}

model Causal {
    input x: [B, T, 8]
    x -> CausalSelfAttention(8, 2)
}

model Attend {
    input q: [B, T, 6]
    input k: [B, S, 6]
    input v: [B, S, 4]
    output attention(q, k, v, heads=2)
}

model AttendRunTimeWidth {
    input q: [B, T, D]
    input k: [B, S, D]
    input v: [B, S, D]
    output attention(q, k, v, heads=1, causal=true)    # T ≠ S at run time: torch's triu(ones(T, S), 1)
}
'''

MODELS = ["Rnn", "RnnTanh", "Gru", "GruBias", "Lstm", "LstmProjected", "LstmProjectedNoBias", "SelfAttention",
          "SelfAttentionThree", "CrossAttention", "CrossAttentionWidths", "Causal", "Attend", "AttendRunTimeWidth"]


@pytest.fixture(scope="module")
def program(tmp_path_factory):
    import dslc
    path = tmp_path_factory.mktemp("onnx_recurrent") / "models.dl"
    path.write_text(SOURCE)
    return dslc.load(str(path))


def _inputs(model, steps: int, seed: int) -> list:
    """Random float inputs for the model's graph inputs: batch 2, T = `steps`, S = `steps` + 2, D = `steps` - 1."""
    rng = np.random.default_rng(seed)
    sizes = {"B": 2, "T": steps, "S": steps + 2, "D": steps - 1}
    out = []
    for inp in model.graph.input:
        dims = [d.dim_value if d.HasField("dim_value") else sizes[d.dim_param] for d in inp.type.tensor_type.shape.dim]
        out.append(rng.standard_normal(dims).astype(np.float32))
    return out


def _parity(name: str, model, net, xs: list, steps: int) -> None:
    import torch
    with torch.no_grad():
        want = net(*[torch.from_numpy(x) for x in xs])
    want = [w.numpy() for w in (want if isinstance(want, tuple) else (want,))]
    got = ort_run(model, {inp.name: x for inp, x in zip(model.graph.input, xs)})
    assert len(got) == len(want)
    for g_, w_ in zip(got, want):
        assert g_.shape == w_.shape, (name, steps, g_.shape, w_.shape)
        err = relative_error(g_, w_)
        assert err < TOLERANCE, f"{name} at T={steps}: relative error {err:.2e}"


@pytest.mark.parametrize("name", MODELS)
def test_one_export_matches_torch_at_every_length(program, name):
    model = program.onnx(name)
    dynamic = {d.dim_param for inp in model.graph.input for d in inp.type.tensor_type.shape.dim}
    assert "T" in dynamic, "the sequence length must stay a run-time size"
    net = program.build(name, seed=0).eval()
    for steps in LENGTHS:
        _parity(name, model, net, _inputs(model, steps, seed=steps), steps)


SPECS = [("lstm.dl", "LSTMClassifier", {"vocab": 50, "embed": 8, "hidden": 6}),
         ("gpt.dl", "GPT", {"vocab": 50, "context": 16, "dim": 8, "depth": 2, "heads": 2}),
         ("transformer.dl", "TransformerClassifier", {"vocab": 50, "context": 16, "dim": 8, "depth": 2, "heads": 2})]


@pytest.mark.parametrize("spec,name,params", SPECS, ids=[s[1] for s in SPECS])
def test_specs_over_token_sequences(spec, name, params):
    """The specs that use these ops, made small, over [B, T] token ids at two lengths."""
    import os

    import dslc
    program = dslc.load(os.path.join(os.path.dirname(os.path.dirname(__file__)), "specs", spec))
    model = program.onnx(name, **params)
    net = program.build(name, seed=0, **params).eval()
    for steps in LENGTHS:
        tokens = np.random.default_rng(steps).integers(0, params["vocab"], (2, steps)).astype(np.int64)
        _parity(name, model, net, [tokens], steps)


def test_recurrent_ops_are_onnx_recurrent_ops(program):
    """RNN, GRU and LSTM lower to ONNX's own ops, one per layer; a projected LSTM to a Scan per layer and direction."""
    def ops(name):
        return [node.op_type for node in program.onnx(name).graph.node]
    assert ops("Rnn").count("RNN") == 2
    assert ops("Gru").count("GRU") == 3
    assert ops("Lstm").count("LSTM") == 2
    assert ops("LstmProjected").count("Scan") == 4 and "LSTM" not in ops("LstmProjected")
    gru = next(node for node in program.onnx("Gru").graph.node if node.op_type == "GRU")
    attrs = {a.name: a for a in gru.attribute}
    assert attrs["linear_before_reset"].i == 1 and attrs["direction"].s == b"bidirectional"


def test_exported_graph_is_inference_mode(program):
    """Dropout between recurrent layers and on attention weights is gone from the export."""
    for name in ("Rnn", "Lstm", "Causal"):
        assert not any(node.op_type == "Dropout" for node in program.onnx(name).graph.node), name
