"""Recurrent layers: RNN, LSTM and GRU, always batch-first.

Each layer k and direction runs over the sequence x_1..x_T (reversed for the
`_reverse` direction) with a hidden state h_t of size H:

    RNN   h_t = act(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)             act = tanh | relu
    GRU   r, z, n gates: n = tanh(W_in x + b_in + r * (W_hn h + b_hn)),
          h_t = (1 - z) * n + z * h_{t-1}
    LSTM  i, f, g, o gates: c_t = f * c_{t-1} + i * g,  h_t = o * tanh(c_t)
          (with proj_size P > 0, h_t = W_hr (o * tanh(c_t)) has size P)

so W_ih is (gates·H, in_k) and W_hh is (gates·H, H) with gates = 1, 3, 4.
Layer 0 reads the input's F features; layer k > 0 reads the D·H outputs of
the layer below (D = 2 when bidirectional). For an input [B, T, F] the
outputs are out [B, T, D·H] and h_n [D·layers, B, H] (plus c_n for LSTM),
unpacked as torch does: `out, h = rnn(x)`, `out, (h, c) = lstm(x)`.

MACs (fvcore's counting): T · gates · H · (in_k + H) per layer, direction
and batch element (plus T · P · H for an LSTM projection).
"""
from __future__ import annotations

from ..ir.dims import plain
from . import checks
from .ptypes import BOOL, FLOAT, INT, Str
from .registry import Example, OpDef, ParamSpec, S, ShapeError, TorchLayer, register
from .shapes import need_rank, static

_GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}
_STEM = {"RNN": "rnn", "GRU": "gru", "LSTM": "lstm"}


def _directions(a) -> int:
    return 2 if a["bidirectional"] else 1


def _out_size(a):
    """The size of h_t: the projection's when an LSTM has one."""
    proj = a.get("proj_size", 0)
    return proj if plain(proj) > 0 else a["hidden_size"]


def _layer_inputs(a) -> list:
    """in_k for each layer: the input's features, then the D·h_t outputs of the layer below."""
    below = _directions(a) * _out_size(a)
    return [a["input_size"]] + [below] * (plain(a["num_layers"]) - 1)


def _resolve(name: str):
    def resolve(b):
        need_rank(b.x, 3, name, "[B, T, features] (batch first)")
        if "proj_size" in b.args and plain(b["proj_size"]) >= plain(b["hidden_size"]):
            raise ShapeError(f"`{name}`'s proj_size ({plain(b['proj_size'])}) must be smaller than "
                             f"hidden_size ({plain(b['hidden_size'])})", code="E0302", arg="proj_size",
                             label="not below hidden_size")
        return {"input_size": static(b.x.shape[-1], f"{name}'s input_size (the input's last dimension)")}
    return resolve


def _infer(b):
    a = b.args
    batch, steps = b.x.shape[0], b.x.shape[1]
    stacked = _directions(a) * a["num_layers"]
    out = [b.x.with_shape((batch, steps, _directions(a) * _out_size(a))),
           b.x.with_shape((stacked, batch, _out_size(a)))]
    if b.op.name == "LSTM":  # the cell state is never projected
        out.append(b.x.with_shape((stacked, batch, a["hidden_size"])))
    return out


def _weights(name: str):
    def weights(a):
        gates, hidden, out = _GATES[name], a["hidden_size"], _out_size(a)
        projected = plain(a.get("proj_size", 0)) > 0
        w = {}
        for k, in_k in enumerate(_layer_inputs(a)):
            for suffix in ("", "_reverse")[:_directions(a)]:
                w[f"weight_ih_l{k}{suffix}"] = (gates * hidden, in_k)
                w[f"weight_hh_l{k}{suffix}"] = (gates * hidden, out)
                if a["bias"]:
                    w[f"bias_ih_l{k}{suffix}"] = (gates * hidden,)
                    w[f"bias_hh_l{k}{suffix}"] = (gates * hidden,)
                if projected:
                    w[f"weight_hr_l{k}{suffix}"] = (out, hidden)
        return w
    return weights


def _macs(name: str):
    def macs(b, outs):
        a = b.args
        gates, hidden, out = _GATES[name], a["hidden_size"], _out_size(a)
        batch, steps = b.x.shape[0], b.x.shape[1]
        projection = out * hidden if plain(out) != plain(hidden) else 0  # h = W_hr h' of an LSTM
        first = gates * hidden * (a["input_size"] + out) + projection
        rest = gates * hidden * (_directions(a) * out + out) + projection
        # written with num_layers itself, so the count stays a formula in the model's parameters
        return batch * steps * _directions(a) * (first + (a["num_layers"] - 1) * rest)
    return macs


def _label(name: str):
    def label(a):
        text = f"{name} {plain(a['hidden_size'])}"
        if plain(a["num_layers"]) > 1:
            text += f" ×{plain(a['num_layers'])}"
        if a["bidirectional"]:
            text += " bi"
        if plain(a.get("proj_size", 0)) > 0:
            text += f" →{plain(a['proj_size'])}"
        return text
    return label


def _arbitrary(name: str):
    def draw(d):
        hidden, layers = d.int(1, 6), d.int(1, 3)
        args = {"hidden_size": hidden, "num_layers": layers, "bias": d.bool(), "bidirectional": d.bool(),
                # dropout acts between layers only: torch warns about it on a single layer
                "dropout": d.choice([0.0, 0.3]) if layers > 1 else 0.0}
        if name == "RNN":
            args["nonlinearity"] = d.choice(["tanh", "relu"])
        if name == "LSTM" and hidden > 1 and d.bool():
            args["proj_size"] = d.int(1, hidden - 1)
        return Example(args, (S(d.int(1, 3), d.int(1, 5), d.int(1, 6)),))
    return draw


def _params(name: str) -> tuple:
    ps = [ParamSpec("hidden_size", INT, check=checks.positive, doc="features of the hidden state h"),
          ParamSpec("num_layers", INT, 1, checks.positive, doc="stacked recurrent layers")]
    if name == "RNN":
        ps.append(ParamSpec("nonlinearity", Str(("tanh", "relu")), "tanh"))
    ps += [ParamSpec("bias", BOOL, True),
           ParamSpec("dropout", FLOAT, 0.0, checks.probability, doc="dropout on the outputs of all but the last layer"),
           ParamSpec("bidirectional", BOOL, False)]
    if name == "LSTM":
        ps.append(ParamSpec("proj_size", INT, 0, checks.non_negative, doc="project h_t to this size (0: none)"))
    return tuple(ps)


_DOC = {
    "RNN": "Elman RNN, h_t = act(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh), over a batch-first [B, T, F] input; "
           "returns (out, h_n).",
    "GRU": "Gated recurrent unit over a batch-first [B, T, F] input; returns (out, h_n).",
    "LSTM": "Long short-term memory over a batch-first [B, T, F] input; returns (out, (h_n, c_n)). "
            "proj_size > 0 projects h_t to that size.",
}

_EXAMPLES = {
    "RNN": (Example({"hidden_size": 4}, (S(2, 5, 3),)),
            Example({"hidden_size": 3, "num_layers": 2, "nonlinearity": "relu", "bidirectional": True,
                     "dropout": 0.1}, (S(2, 4, 6),))),
    "GRU": (Example({"hidden_size": 4}, (S(2, 5, 3),)),
            Example({"hidden_size": 3, "num_layers": 3, "bias": False, "bidirectional": True}, (S(2, 4, 6),))),
    "LSTM": (Example({"hidden_size": 4}, (S(2, 5, 3),)),
             Example({"hidden_size": 5, "num_layers": 2, "bidirectional": True, "dropout": 0.2}, (S(2, 4, 6),)),
             Example({"hidden_size": 6, "num_layers": 2, "proj_size": 3, "bias": False}, (S(2, 3, 4),))),
}


def _recurrent(name: str) -> None:
    keywords = tuple(p.name for p in _params(name)[1:])
    register(OpDef(
        name=name, kind="layer", family="recurrent", stem=_STEM[name], doc=_DOC[name],
        params=_params(name), resolve=_resolve(name), infer=_infer,
        weights=_weights(name), macs=_macs(name), label=_label(name),
        torch=TorchLayer(f"nn.{name}", ("input_size", "hidden_size"), keywords, fixed=(("batch_first", "True"),)),
        results=(0, (1, 2)) if name == "LSTM" else (0, 1),
        pure=False,  # dropout between layers is random in training
        examples=_EXAMPLES[name], arbitrary=_arbitrary(name),
    ))


for _name in ("RNN", "LSTM", "GRU"):
    _recurrent(_name)
