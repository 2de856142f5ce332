"""Recurrent cells: RNNCell, LSTMCell and GRUCell, one time step of RNN, LSTM and GRU.

A cell maps an input x [B, F] (or one example [F]) and a state to the next
state, with torch's weights and equations (W_ih is (gates·H, F), W_hh is
(gates·H, H), gates = 1, 3, 4):

    RNNCell   h' = act(W_ih x + b_ih + W_hh h + b_hh)                act = tanh | relu
    GRUCell   r, z, n: n = tanh(W_in x + b_in + r * (W_hn h + b_hn)),  h' = (1 - z) * n + z * h
    LSTMCell  i, f, g, o: c' = f * c + i * g,  h' = o * tanh(c')

applied as in torch: `h = GRUCell(64)(x, h)`, `h, c = LSTMCell(64)(x, (h, c))`;
without a state, the state is zeros. MACs: gates · H · (F + H) per example.

ONNX has no cell op. A cell is emitted as its equations (MatMul, Add, Sigmoid,
Tanh, Relu), which serve [B, F] and [F] alike; a one-step ONNX LSTM would need
the input reshaped to [1, B, F] and the gates reordered, for no gain.
"""
from __future__ import annotations

from ..ir.dims import plain
from . import checks
from .ptypes import BOOL, INT, Str
from .recurrent import check_states
from .registry import Example, OpDef, ParamSpec, S, TorchLayer, register
from .shapes import need_rank, static

_GATES = {"RNNCell": 1, "GRUCell": 3, "LSTMCell": 4}
_STEM = {"RNNCell": "rnn_cell", "GRUCell": "gru_cell", "LSTMCell": "lstm_cell"}


def _resolve(name: str):
    def resolve(b):
        need_rank(b.x, (2, 1), name, "[B, features], or [features] for one example")
        return {"input_size": static(b.x.shape[-1], f"{name}'s input_size (the input's last dimension)")}
    return resolve


def _infer(b):
    states = [b.x.shape[:-1] + (b["hidden_size"],)] * (2 if b.op.name == "LSTMCell" else 1)
    check_states(b, states, "B, hidden" if b.x.rank == 2 else "hidden", what="state")
    return [b.x.with_shape(s) for s in states]


def _weights(name: str):
    def weights(a):
        rows = _GATES[name] * a["hidden_size"]
        w = {"weight_ih": (rows, a["input_size"]), "weight_hh": (rows, a["hidden_size"])}
        if a["bias"]:
            w.update(bias_ih=(rows,), bias_hh=(rows,))
        return w
    return weights


def _macs(name: str):
    def macs(b, outs):
        batch = b.x.shape[0] if b.x.rank == 2 else 1
        return batch * _GATES[name] * b["hidden_size"] * (b["input_size"] + b["hidden_size"])
    return macs


def _params(name: str) -> tuple:
    ps = [ParamSpec("hidden_size", INT, check=checks.positive, doc="features of the hidden state h"),
          ParamSpec("bias", BOOL, True)]
    if name == "RNNCell":
        ps.append(ParamSpec("nonlinearity", Str(("tanh", "relu")), "tanh"))
    return tuple(ps)


def _arbitrary(name: str):
    def draw(d):
        hidden = d.int(1, 6)
        args = {"hidden_size": hidden, "bias": d.bool()}
        if name == "RNNCell":
            args["nonlinearity"] = d.choice(["tanh", "relu"])
        batch = (d.int(1, 3),) if d.bool() else ()   # a batch, or one example
        x = S(*batch, d.int(1, 6))
        if not d.bool():
            return Example(args, (x,))
        state = S(*batch, hidden)
        return Example(args, (x, (state, S(*batch, hidden))) if name == "LSTMCell" else (x, state))
    return draw


_DOC = {
    "RNNCell": "One step of an Elman RNN, h_1 = act(W_ih x + b_ih + W_hh h_0 + b_hh), over [B, F] (or one example "
               "[F]) from the state h_0 (zeros when not given); returns h_1.",
    "GRUCell": "One step of a GRU over [B, F] (or one example [F]) from the state h_0 (zeros when not given); "
               "returns h_1.",
    "LSTMCell": "One step of an LSTM over [B, F] (or one example [F]) from the state (h_0, c_0) (zeros when not "
                "given); returns (h_1, c_1).",
}

_EXAMPLES = {
    "RNNCell": (Example({"hidden_size": 4}, (S(2, 3),)),
                Example({"hidden_size": 3, "nonlinearity": "relu"}, (S(2, 5), S(2, 3))),
                Example({"hidden_size": 4, "bias": False}, (S(3,), S(4,)))),
    "GRUCell": (Example({"hidden_size": 4}, (S(2, 3),)),
                Example({"hidden_size": 3}, (S(2, 5), S(2, 3))),
                Example({"hidden_size": 4, "bias": False}, (S(3,), S(4,))),
                Example({"hidden_size": 2}, (S(6,),))),
    "LSTMCell": (Example({"hidden_size": 4}, (S(2, 3),)),
                 Example({"hidden_size": 3}, (S(2, 5), (S(2, 3), S(2, 3)))),
                 Example({"hidden_size": 4, "bias": False}, (S(3,), (S(4,), S(4,)))),
                 Example({"hidden_size": 2}, (S(6,),))),
}


# ---------------------------------------------------------------- ONNX: the cell's equations

def _onnx(name: str):
    def emit(g, n):
        """x W_ihᵀ + b_ih and h W_hhᵀ + b_hh, then the cell's gates (a missing state is zeros)."""
        hidden = plain(n["hidden_size"])
        states = list(n.inputs[1:])
        if not states:
            zeros = g.op("Expand", [g.const(0.0, dtype=n.x.dtype), g.shape(n.x.shape[:-1] + (hidden,))],
                         hint="zeros")
            states = [zeros] * (2 if name == "LSTMCell" else 1)
        gx = _affine(g, n, n.inputs[0], "ih")
        gh = _affine(g, n, states[0], "hh")
        if name == "RNNCell":
            act = {"tanh": "Tanh", "relu": "Relu"}[n["nonlinearity"]]
            return [g.op(act, [g.op("Add", [gx, gh], hint="gates")], hint="h")]
        if name == "GRUCell":
            return [_gru(g, gx, gh, states[0])]
        return _lstm(g, g.op("Add", [gx, gh], hint="gates"), states[1])
    return emit


def _affine(g, n, v: str, which: str) -> str:
    """v W_{which}ᵀ (+ b_{which}): [..., gates·H]."""
    w = g.op("Transpose", [n.weight(f"weight_{which}")], perm=[1, 0], hint=f"weight_{which}_t")
    out = g.op("MatMul", [v, w], hint=f"gates_{which}")
    return g.op("Add", [out, n.weight(f"bias_{which}")], hint=f"gates_{which}") if n["bias"] else out


def _gru(g, gx: str, gh: str, h: str) -> str:
    """torch's r z n: n = tanh(x_n + r * h_n), h' = n + z * (h - n)."""
    xr, xz, xn = g.op("Split", [gx], n_out=3, axis=-1, num_outputs=3, hint="x_gate")
    hr, hz, hn = g.op("Split", [gh], n_out=3, axis=-1, num_outputs=3, hint="h_gate")
    r = g.op("Sigmoid", [g.op("Add", [xr, hr])], hint="r")
    z = g.op("Sigmoid", [g.op("Add", [xz, hz])], hint="z")
    new = g.op("Tanh", [g.op("Add", [xn, g.op("Mul", [r, hn])])], hint="n")
    return g.op("Add", [new, g.op("Mul", [z, g.op("Sub", [h, new])])], hint="h")


def _lstm(g, gates: str, c: str) -> list:
    """torch's i f g o: c' = σ(f) c + σ(i) tanh(g), h' = σ(o) tanh(c')."""
    i, f, cell, o = g.op("Split", [gates], n_out=4, axis=-1, num_outputs=4, hint="gate")
    c_new = g.op("Add", [g.op("Mul", [g.op("Sigmoid", [f]), c]),
                         g.op("Mul", [g.op("Sigmoid", [i]), g.op("Tanh", [cell])])], hint="c")
    return [g.op("Mul", [g.op("Sigmoid", [o]), g.op("Tanh", [c_new])], hint="h"), c_new]


def _cell(name: str) -> None:
    register(OpDef(
        name=name, kind="layer", family="recurrent", stem=_STEM[name], doc=_DOC[name],
        params=_params(name), resolve=_resolve(name), infer=_infer,
        weights=_weights(name), macs=_macs(name),
        label=lambda a, name=name: f"{name} {plain(a['hidden_size'])}",
        torch=TorchLayer(f"nn.{name}", ("input_size", "hidden_size"), tuple(p.name for p in _params(name)[1:])),
        onnx=_onnx(name),
        # the state: `h_0`, or LSTMCell's tuple `hx` = (h_0, c_0), as torch's forward takes them
        inputs=("input", "hx" if name == "LSTMCell" else "h_0"), min_inputs=1,
        tuple_inputs=(("hx", ("h_0", "c_0")),) if name == "LSTMCell" else (),
        results=(0, 1) if name == "LSTMCell" else None,
        examples=_EXAMPLES[name], arbitrary=_arbitrary(name),
    ))


for _name in ("RNNCell", "LSTMCell", "GRUCell"):
    _cell(_name)
