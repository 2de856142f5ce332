"""Recurrent state in and out, as torch does it: RNN, LSTM and GRU applied to an initial state,
and the cells RNNCell, LSTMCell and GRUCell, each against torch's own module with the same weights
(the state dict loads both ways and the outputs are equal), and against onnxruntime."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from support import error_codes, ort_run, relative_error
from torch import nn

import dslc
from dslc.diagnostics import DslcError

TOLERANCE = 1e-5


def load(tmp_path, source: str):
    path = tmp_path / "m.dl"
    path.write_text(source)
    return dslc.load(str(path))


def same_weights(ours: nn.Module, module: nn.Module, prefix: str) -> None:
    """Both state dicts hold the same names and shapes, and load into each other."""
    mine = {k[len(prefix):]: v for k, v in ours.state_dict().items() if k.startswith(prefix)}
    theirs = module.state_dict()
    assert {k: tuple(v.shape) for k, v in mine.items()} == {k: tuple(v.shape) for k, v in theirs.items()}
    module.load_state_dict(mine)
    ours.load_state_dict({prefix + k: v for k, v in theirs.items()})


def flat(out) -> list:
    if isinstance(out, torch.Tensor):
        return [out]
    return [t for item in out for t in flat(item)]


def onnx_matches(program, name: str, net, inputs: list) -> None:
    """onnxruntime's outputs on the model's flat inputs (a tuple's tensors one by one) equal torch's."""
    model = program.onnx(name)
    with torch.no_grad():
        want = flat(net(*inputs))
    got = ort_run(model, {i.name: x.numpy() for i, x in zip(model.graph.input, flat(inputs))})
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == tuple(w.shape)
        assert relative_error(g, w.numpy()) < TOLERANCE, name


# ---------------------------------------------------------------- RNN, LSTM, GRU with a state

SEQUENCE = [
    # layer, settings (as .dl and as torch keywords), batched
    ("LSTM", "num_layers=2", {"num_layers": 2}, True),
    ("LSTM", "bidirectional=true", {"bidirectional": True}, True),
    ("LSTM", "num_layers=2, proj_size=3, bidirectional=true", {"num_layers": 2, "proj_size": 3,
                                                              "bidirectional": True}, True),
    ("LSTM", "num_layers=2", {"num_layers": 2}, False),
    ("LSTM", "proj_size=2", {"proj_size": 2}, False),
    ("GRU", "num_layers=3, bidirectional=true", {"num_layers": 3, "bidirectional": True}, True),
    ("GRU", "bias=false", {"bias": False}, False),
    ("RNN", "num_layers=2, nonlinearity=\"relu\"", {"num_layers": 2, "nonlinearity": "relu"}, True),
    ("RNN", "bidirectional=true", {"bidirectional": True}, False),
]
HIDDEN, FEATURES = 5, 4


def _sequence_source(layer: str, settings: str, kw: dict, batched: bool) -> tuple[str, list]:
    stacked = kw.get("num_layers", 1) * (2 if kw.get("bidirectional") else 1)
    batch = "B, " if batched else ""
    h = kw.get("proj_size") or HIDDEN
    ins = [f"input x: [{batch}T, {FEATURES}]", f"input h0: [{stacked}, {batch}{h}]"]
    shapes = [(stacked, 3, h) if batched else (stacked, h)]
    if layer == "LSTM":
        ins.append(f"input c0: [{stacked}, {batch}{HIDDEN}]")
        shapes.append((stacked, 3, HIDDEN) if batched else (stacked, HIDDEN))
        apply = f"out, (h, c) = {layer}({HIDDEN}, {settings})(x, (h0, c0))\n    output out, h, c"
    else:
        apply = f"out, h = {layer}({HIDDEN}, {settings})(x, h0)\n    output out, h"
    body = "\n    ".join(ins)
    return f"model M {{\n    {body}\n    {apply}\n}}\n", shapes


@pytest.mark.parametrize("layer,settings,kw,batched", SEQUENCE,
                         ids=[f"{s[0]}-{s[1]}-{'batched' if s[3] else 'one'}" for s in SEQUENCE])
def test_sequence_layers_take_and_return_a_state_as_torch_does(tmp_path, layer, settings, kw, batched):
    source, state_shapes = _sequence_source(layer, settings, kw, batched)
    program = load(tmp_path, source)
    assert f"self.{layer.lower()}(x, (h0, c0))" in program.source() if layer == "LSTM" else \
        f"self.{layer.lower()}(x, h0)" in program.source()
    ours = program.build("M", seed=0).eval()
    ref = getattr(nn, layer)(FEATURES, HIDDEN, batch_first=True, **kw).eval()
    same_weights(ours, ref, f"{layer.lower()}.")
    torch.manual_seed(1)
    x = torch.randn(3, 6, FEATURES) if batched else torch.randn(6, FEATURES)
    states = [torch.randn(s) for s in state_shapes]
    with torch.no_grad():
        got = ours(x, *states)
        want = flat(ref(x, tuple(states) if layer == "LSTM" else states[0]))
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert torch.equal(g, w)
    onnx_matches(program, "M", ours, [x] + states)


def test_a_state_changes_the_result(tmp_path):
    """The state reaches the layer: zeros give torch's stateless result, another state another."""
    program = load(tmp_path, _sequence_source("GRU", "num_layers=2", {"num_layers": 2}, True)[0])
    net = program.build("M", seed=0).eval()
    x = torch.randn(2, 4, FEATURES)
    with torch.no_grad():
        zero = net(x, torch.zeros(2, 2, HIDDEN))
        other = net(x, torch.ones(2, 2, HIDDEN))
        stateless = net.gru(x)
    assert torch.equal(zero[0], stateless[0]) and not torch.allclose(zero[0], other[0])


def test_the_final_state_carries_on(tmp_path):
    """Running a sequence in two halves, the second from the first's final state, is running it whole."""
    program = load(tmp_path, '''
model Halves {
    input x: [B, 8, 4]
    first, (h, c) = x[:, :3] -> LSTM(6, num_layers=2) as lstm
    second, (h2, c2) = lstm(x[:, 3:], (h, c))
    whole, (hw, cw) = lstm(x)
    output concat([first, second], dim=1), whole, h2, hw
}
''')
    net = program.build("Halves", seed=0).eval()
    with torch.no_grad():
        halves, whole, h2, hw = net(torch.randn(2, 8, 4))
    torch.testing.assert_close(halves, whole)
    torch.testing.assert_close(h2, hw)
    onnx_matches(program, "Halves", net, [torch.randn(3, 8, 4)])


# ---------------------------------------------------------------- the cells

CELLS = [
    ("LSTMCell", "", {}, True, True),
    ("LSTMCell", "bias=false", {"bias": False}, False, True),
    ("LSTMCell", "", {}, True, False),
    ("GRUCell", "", {}, True, True),
    ("GRUCell", "bias=false", {"bias": False}, False, True),
    ("GRUCell", "", {}, False, False),
    ("RNNCell", "nonlinearity=\"relu\"", {"nonlinearity": "relu"}, True, True),
    ("RNNCell", "", {}, False, True),
    ("RNNCell", "bias=false", {"bias": False}, True, False),
]


def _cell_source(cell: str, settings: str, batched: bool, with_state: bool) -> str:
    batch = "B, " if batched else ""
    ins = [f"input x: [{batch}{FEATURES}]"]
    if with_state:
        ins.append(f"input h: [{batch}{HIDDEN}]")
    if cell == "LSTMCell":
        if with_state:
            ins.append(f"input c: [{batch}{HIDDEN}]")
        apply = f"h1, c1 = {cell}({HIDDEN}{', ' + settings if settings else ''})" \
                f"({'x, (h, c)' if with_state else 'x'})\n    output h1, c1"
    else:
        apply = f"output {cell}({HIDDEN}{', ' + settings if settings else ''})({'x, h' if with_state else 'x'})"
    body = "\n    ".join(ins)
    return f"model M {{\n    {body}\n    {apply}\n}}\n"


@pytest.mark.parametrize("cell,settings,kw,batched,with_state", CELLS,
                         ids=[f"{c[0]}-{c[1] or 'default'}-{'batched' if c[3] else 'one'}-"
                              f"{'state' if c[4] else 'zeros'}" for c in CELLS])
def test_cells_match_torch(tmp_path, cell, settings, kw, batched, with_state):
    program = load(tmp_path, _cell_source(cell, settings, batched, with_state))
    stem = {"LSTMCell": "lstm_cell", "GRUCell": "gru_cell", "RNNCell": "rnn_cell"}[cell]
    ours = program.build("M", seed=0).eval()
    ref = getattr(nn, cell)(FEATURES, HIDDEN, **kw).eval()
    assert set(ref.state_dict()) == ({"weight_ih", "weight_hh"} | ({"bias_ih", "bias_hh"} if kw.get("bias", True)
                                                                    else set()))
    same_weights(ours, ref, f"{stem}.")
    torch.manual_seed(1)
    lead = (3,) if batched else ()
    x = torch.randn(*lead, FEATURES)
    states = [torch.randn(*lead, HIDDEN) for _ in range(2 if cell == "LSTMCell" else 1)] if with_state else []
    with torch.no_grad():
        got = flat(ours(x, *states))
        arg = () if not states else ((tuple(states),) if cell == "LSTMCell" else (states[0],))
        want = flat(ref(x, *arg))
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert torch.equal(g, w)
    onnx_matches(program, "M", ours, [x] + states)


def test_an_lstm_cell_stepped_over_a_sequence_is_an_lstm(tmp_path):
    """One shared LSTMCell applied at each step of an unrolled loop gives nn.LSTM's outputs and final
    state with the same weights (weight_ih is weight_ih_l0, ...)."""
    program = load(tmp_path, '''
model Stepped(steps: int = 5) {
    input x: [B, 5, 4]
    input h: [B, 6]
    input c: [B, 6]
    h, c = LSTMCell(6)(x[:, 0], (h, c)) as cell
    outs = [h]
    for t in range(1, steps) {
        h, c = cell(x[:, t], (h, c))
        outs = outs + [h]
    }
    output stack(outs, dim=1), h, c
}
''')
    net = program.build("Stepped", seed=0).eval()
    lstm = nn.LSTM(4, 6, batch_first=True).eval()
    lstm.load_state_dict({f"{k}_l0": v for k, v in net.cell.state_dict().items()})
    x, h0, c0 = torch.randn(2, 5, 4), torch.randn(2, 6), torch.randn(2, 6)
    with torch.no_grad():
        out, h, c = net(x, h0, c0)
        want, (wh, wc) = lstm(x, (h0[None], c0[None]))
    torch.testing.assert_close(out, want)
    torch.testing.assert_close(h, wh[0])
    torch.testing.assert_close(c, wc[0])
    onnx_matches(program, "Stepped", net, [x, h0, c0])


def test_cells_in_the_summary_and_the_diagram(tmp_path):
    program = load(tmp_path, _cell_source("LSTMCell", "", True, True))
    rows = {row.type: row for row in program.summary("M").layers}
    assert rows["LSTMCell"].params == 4 * HIDDEN * (FEATURES + HIDDEN) + 8 * HIDDEN
    assert rows["LSTMCell"].macs == 4 * HIDDEN * (FEATURES + HIDDEN)
    assert f"LSTMCell {HIDDEN}" in program.diagram("M")


# ---------------------------------------------------------------- mistakes

@pytest.mark.parametrize("body,code", [
    # a state of the wrong shape: layers, directions, batch, width
    ("input x: [B, T, 4]\n    input h: [1, B, 5]\n    out, g = GRU(5, num_layers=2)(x, h)\n    output out", "E0403"),
    ("input x: [B, T, 4]\n    input h: [1, B, 5]\n    out, g = GRU(5, bidirectional=true)(x, h)\n    output out",
     "E0403"),
    ("input x: [B, T, 4]\n    input h: [1, N, 5]\n    out, g = RNN(5)(x, h)\n    output out", "E0403"),
    ("input x: [B, T, 4]\n    input h: [1, B, 5]\n    input c: [1, B, 5]\n"
     "    out, (g, d) = LSTM(5, proj_size=3)(x, (h, c))\n    output out", "E0403"),
    ("input x: [T, 4]\n    input h: [1, 2, 5]\n    out, g = GRU(5)(x, h)\n    output out", "E0403"),
    ("input x: [B, 4]\n    input h: [B, 6]\n    output GRUCell(5)(x, h)", "E0403"),
    ("input x: [4]\n    input h: [1, 5]\n    output RNNCell(5)(x, h)", "E0403"),
    # not the tuple the layer takes
    ("input x: [B, T, 4]\n    input h: [1, B, 5]\n    out, (g, d) = LSTM(5)(x, h)\n    output out", "E0307"),
    ("input x: [B, T, 4]\n    input h: [1, B, 5]\n    out, (g, d) = LSTM(5)(x, (h, h, h))\n    output out", "E0307"),
    ("input x: [B, T, 4]\n    input h: [1, B, 5]\n    out, g = GRU(5)(x, (h, h))\n    output out", "E0307"),
    ("input x: [B, 4]\n    input h: [B, 5]\n    output LSTMCell(5)(x, h)", "E0307"),
    ("input x: [B, T, 4]\n    input h: [1, B, 5]\n    out, g = GRU(5)(x, h, h)\n    output out", "E0409"),
    # dtypes
    ("input x: [B, T, 4]\n    input h: [1, B, 5] of float64\n    out, g = GRU(5)(x, h)\n    output out", "E0310"),
    # a pipe never fills the state: `x -> GRU -> GRU` would start the second from the first's state
    ("input x: [B, T, 4]\n    output x -> GRU(4) -> GRU(4)", "E0307"),
])
def test_state_mistakes(tmp_path, body, code):
    assert code in error_codes(tmp_path, body)


def test_a_wrong_state_is_reported_where_it_is_passed(tmp_path):
    path = tmp_path / "bad.dl"
    path.write_text("model Bad {\n    input x: [B, T, 4]\n    input h0: [1, B, 5]\n    input c0: [2, B, 5]\n"
                    "    out, (h, c) = LSTM(5, num_layers=2)(x, (h0, c0))\n    output out\n}\n")
    with pytest.raises(DslcError) as err:
        dslc.load(str(path))
    text = str(err.value)
    assert "bad.dl:5:19: error[E0403]: `LSTM`'s initial state `h_0` should be [2, B, 5]" in text
    assert "this is [1, B, 5]" in text and "zeros([2, B, 5])" in text


def test_one_sequence_has_no_batch(tmp_path):
    program = load(tmp_path, "model M {\n    input x: [T, 4]\n    out, h = x -> GRU(5, num_layers=2)\n"
                             "    output out, h\n}\n")
    net = program.build("M", seed=0).eval()
    x = torch.randn(7, 4)
    with torch.no_grad():
        out, h = net(x)
    assert out.shape == (7, 5) and h.shape == (2, 5)
    onnx_matches(program, "M", net, [x])
    assert np.isfinite(out.numpy()).all()


# ---------------------------------------------------------------- models that take and return tuples

LANGUAGE_MODEL = '''
model LM(vocab: int = 30, size: int = 6, layers: int = 2) {
    input tokens: [B, T] of int64
    input hidden: ([layers, B, size], [layers, B, size])
    x = tokens -> Embedding(vocab, 4)
    out, hidden = LSTM(size, num_layers=layers)(x, hidden)
    output out -> Linear(vocab) as head, hidden
}

block Step(size: int) {
    input x
    input state
    out, state = LSTM(size)(x, state)
    output out, state
}

model Twice {
    input x: [B, T, 4]
    input state: ([1, B, 5], [1, B, 5])
    out, (h, c) = Step(5)(x, state)
    output Step(5)(out, (h, c))
}
'''


def test_a_model_takes_and_returns_a_tuple_as_torch_does(tmp_path):
    program = load(tmp_path, LANGUAGE_MODEL)
    source = program.source(["LM"])
    assert "def forward(self, tokens, hidden: tuple[torch.Tensor, torch.Tensor]):" in source   # TorchScript needs it
    assert "out, (hidden_0, hidden_1) = self.lstm(x, hidden)" in source
    assert "return h, (hidden_0, hidden_1)" in source
    net = program.build("LM", seed=0).eval()
    lstm = nn.LSTM(4, 6, num_layers=2, batch_first=True).eval()
    lstm.load_state_dict({k[len("lstm."):]: v for k, v in net.state_dict().items() if k.startswith("lstm.")})
    tokens, h0, c0 = torch.randint(0, 30, (3, 7)), torch.randn(2, 3, 6), torch.randn(2, 3, 6)
    with torch.no_grad():
        logits, (h, c) = net(tokens, (h0, c0))
        out, (wh, wc) = lstm(net.embedding(tokens), (h0, c0))
    assert torch.equal(logits, net.head(out)) and torch.equal(h, wh) and torch.equal(c, wc)
    # the state carries on: two calls are one over the whole sequence
    with torch.no_grad():
        first, state = net(tokens[:, :3], (h0, c0))
        second, (h2, c2) = net(tokens[:, 3:], state)
    torch.testing.assert_close(torch.cat([first, second], dim=1), logits)
    torch.testing.assert_close(h2, h)


def test_onnx_flattens_a_tuple_into_dotted_names(tmp_path):
    program = load(tmp_path, LANGUAGE_MODEL)
    model = program.onnx("LM")
    assert [i.name for i in model.graph.input] == ["tokens", "hidden.0", "hidden.1"]
    assert [o.name for o in model.graph.output] == ["out1", "hidden_out.0", "hidden_out.1"]
    net = program.build("LM", seed=0).eval()
    tokens, h0, c0 = torch.randint(0, 30, (2, 5)), torch.randn(2, 2, 6), torch.randn(2, 2, 6)
    with torch.no_grad():
        want = flat(net(tokens, (h0, c0)))
    got = ort_run(model, {"tokens": tokens.numpy(), "hidden.0": h0.numpy(), "hidden.1": c0.numpy()})
    for g, w in zip(got, want):
        assert relative_error(g, w.numpy()) < TOLERANCE
    assert program.summary("LM").inputs == {"tokens": "[B, T]", "hidden.0": "[2, B, 6]", "hidden.1": "[2, B, 6]"}


def test_a_block_takes_and_returns_a_tuple(tmp_path):
    program = load(tmp_path, LANGUAGE_MODEL)
    source = program.source(["Twice"])
    assert "def forward(self, x, state: tuple[torch.Tensor, torch.Tensor]):" in source
    assert "out, (h, c) = self.step1(x, state)" in source
    assert "self.step2(out, (h, c))" in source
    net = program.build("Twice", seed=0).eval()
    x, state = torch.randn(2, 6, 4), (torch.randn(1, 2, 5), torch.randn(1, 2, 5))
    with torch.no_grad():
        out, (h, c) = net(x, state)
        mid, (mh, mc) = net.step1.lstm(x, state)
        want, (wh, wc) = net.step2.lstm(mid, (mh, mc))
    assert torch.equal(out, want) and torch.equal(h, wh) and torch.equal(c, wc)
    onnx_matches(program, "Twice", net, [x, state])


def test_a_plan_reads_a_tuple_output_by_its_name(tmp_path):
    program = load(tmp_path, '''
model CharLM(vocab: int = 76) {
    input x: [B, T] of int64
    out, state = x -> Embedding(vocab, 8) -> LSTM(16)
    logits = out -> Linear(vocab)
    output logits, state
}

train lm {
    model = CharLM()
    data = shakespeare(context=8)
    loss = cross_entropy(transpose(out.logits, 1, 2), batch.y) + 0 * mean(out.state[1])
    optimizer = Adam(lr=1e-3)
    epochs = 1
}
''')
    from dslc.runtime.trainer import plan_source
    source = plan_source(program.plan("lm"), str(tmp_path / "m.dl"))
    assert "return logits, (state_0, state_1)" in source
    assert "= self.model(batch_x)" in source


@pytest.mark.parametrize("body,code", [
    ("input x: [B, 4]\n    output (x, 3)", "E0307"),
    ("input x: [B, 4]\n    input s: ([B, 4], 3)\n    output x", "E0301"),
])
def test_tuple_mistakes_in_models(tmp_path, body, code):
    assert code in error_codes(tmp_path, body)


def test_a_block_input_declared_as_a_tuple_needs_one(tmp_path):
    path = tmp_path / "bad.dl"
    path.write_text("block Two {\n    input x\n    input s: ([B, 4], [B, 4])\n    output x\n}\n"
                    "model M {\n    input x: [B, 4]\n    output Two()(x, x)\n}\n")
    with pytest.raises(DslcError) as err:
        dslc.load(str(path))
    assert "E0307" in err.value.codes and "declared as a tuple of 2 tensors but receives a tensor" in str(err.value)
