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

As in torch, each takes an optional initial state, h_0 (RNN, GRU) or the tuple
(h_0, c_0) (LSTM), each [D·layers, B, H] (zeros when not given): `out, h =
gru(x, h_0)`, `out, (h, c) = lstm(x, (h_0, c_0))`; an LSTM's h_0 has the
projection's size P. An unbatched input [T, F] is one sequence: its states
and h_n have no B either.
"""
from __future__ import annotations

from ..ir.dims import Sym, plain
from . import checks
from .ptypes import BOOL, FLOAT, INT, Str
from .registry import Example, OpDef, ParamSpec, S, ShapeError, TorchLayer, register
from .shapes import dim_text, need_rank, same_dim, shape_str, static

_GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}
_STEM = {"RNN": "rnn", "GRU": "gru", "LSTM": "lstm"}
_STATE = {"RNN": ("h_0",), "GRU": ("h_0",), "LSTM": ("h_0", "c_0")}  # the initial state's tensors, torch's names


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
        need_rank(b.x, (3, 2), name, "[B, T, features] (batch first), or [T, features] for one sequence")
        if "proj_size" in b.args and plain(b["proj_size"]) >= plain(b["hidden_size"]):
            raise ShapeError(f"`{name}`'s proj_size ({plain(b['proj_size'])}) must be smaller than "
                             f"hidden_size ({plain(b['hidden_size'])})", code="E0302", arg="proj_size",
                             label="not below hidden_size")
        return {"input_size": static(b.x.shape[-1], f"{name}'s input_size (the input's last dimension)")}
    return resolve


def _infer(b):
    a = b.args
    batch = b.x.shape[:-2]   # (B,), or () for one sequence
    stacked = _directions(a) * a["num_layers"]
    states = [(stacked,) + batch + (_out_size(a),)]
    if b.op.name == "LSTM":  # the cell state is never projected
        states.append((stacked,) + batch + (a["hidden_size"],))
    check_states(b, states, "num_layers · directions, B, hidden" if batch else "num_layers · directions, hidden")
    return [b.x.with_shape(batch + (b.x.shape[-2], _directions(a) * _out_size(a)))] + \
        [b.x.with_shape(s) for s in states]


def _agree(a, b) -> bool:
    """Equal sizes, or undecidable; static sizes compare by value (a check records nothing)."""
    if isinstance(a, Sym) or isinstance(b, Sym):
        return same_dim(a, b)
    return plain(a) == plain(b)


def check_states(b, wants: list, layout: str, what: str = "initial state") -> None:
    """The initial state, when given (the inputs after the first), has the shapes the layer returns
    its final state in, and the input's dtype."""
    names = b.op.input_names(len(b.inputs))[1:]
    for i, (t, want, name) in enumerate(zip(b.inputs[1:], wants, names), start=1):
        if t.rank != len(want) or not all(_agree(d, w) for d, w in zip(t.shape, want)):
            raise ShapeError(f"`{b.op.name}`'s {what} `{name}` should be {shape_str(want)} ({layout}) "
                             f"for the input {b.x.shape_str()}, got {t.shape_str()}",
                             input=i, label=f"expects {shape_str(want)}", help=_state_help(b, want))
        if t.dtype != b.x.dtype:
            raise ShapeError(f"`{b.op.name}`'s {what} `{name}` is {t.dtype} but its input is {b.x.dtype}",
                             code="E0310", input=i, label=f"this is {t.dtype}")


def _state_help(b, want: tuple) -> str:
    sizes = ", ".join(dim_text(d) for d in want)
    return f"it has the shape of the state this layer returns; leave the state out to start from zeros([{sizes}])"


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
        batch, steps = b.x.shape[0] if b.x.rank == 3 else 1, b.x.shape[-2]
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
        batch = (d.int(1, 3),) if d.bool() else ()   # a batch, or one sequence
        x = S(*batch, d.int(1, 5), d.int(1, 6))
        if not d.bool():
            return Example(args, (x,))
        stacked = (2 if args["bidirectional"] else 1) * layers
        states = [S(stacked, *batch, args.get("proj_size") or hidden), S(stacked, *batch, hidden)]
        return Example(args, (x, tuple(states)) if name == "LSTM" else (x, states[0]))
    return draw


def _params(name: str) -> tuple:
    ps = [ParamSpec("hidden_size", INT, check=checks.positive, doc="features of the hidden state h"),
          ParamSpec("num_layers", INT, 1, checks.layer_count, doc="stacked recurrent layers")]
    if name == "RNN":
        ps.append(ParamSpec("nonlinearity", Str(("tanh", "relu")), "tanh"))
    ps += [ParamSpec("bias", BOOL, True),
           ParamSpec("dropout", FLOAT, 0.0, checks.probability, doc="dropout on the outputs of all but the last layer"),
           ParamSpec("bidirectional", BOOL, False)]
    if name == "LSTM":
        ps.append(ParamSpec("proj_size", INT, 0, checks.non_negative, doc="project h_t to this size (0: none)"))
    return tuple(ps)


_DOC = {
    "RNN": "Elman RNN, h_t = act(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh), over a batch-first [B, T, F] input "
           "(or one sequence [T, F]) from the state h_0 (zeros when not given); returns (out, h_n).",
    "GRU": "Gated recurrent unit over a batch-first [B, T, F] input (or one sequence [T, F]) from the state h_0 "
           "(zeros when not given); returns (out, h_n).",
    "LSTM": "Long short-term memory over a batch-first [B, T, F] input (or one sequence [T, F]) from the state "
            "(h_0, c_0) (zeros when not given); returns (out, (h_n, c_n)). proj_size > 0 projects h_t to that size.",
}

_EXAMPLES = {
    "RNN": (Example({"hidden_size": 4}, (S(2, 5, 3),)),
            Example({"hidden_size": 3, "num_layers": 2, "nonlinearity": "relu", "bidirectional": True,
                     "dropout": 0.1}, (S(2, 4, 6),)),
            Example({"hidden_size": 3, "num_layers": 2, "bidirectional": True}, (S(2, 4, 6), S(4, 2, 3))),
            Example({"hidden_size": 4, "nonlinearity": "relu"}, (S(5, 3), S(1, 4)))),
    "GRU": (Example({"hidden_size": 4}, (S(2, 5, 3),)),
            Example({"hidden_size": 3, "num_layers": 3, "bias": False, "bidirectional": True}, (S(2, 4, 6),)),
            Example({"hidden_size": 4, "num_layers": 2}, (S(3, 5, 2), S(2, 3, 4))),
            Example({"hidden_size": 3, "bidirectional": True}, (S(4, 6),)),
            Example({"hidden_size": 3, "bidirectional": True}, (S(4, 6), S(2, 3)))),
    "LSTM": (Example({"hidden_size": 4}, (S(2, 5, 3),)),
             Example({"hidden_size": 5, "num_layers": 2, "bidirectional": True, "dropout": 0.2}, (S(2, 4, 6),)),
             Example({"hidden_size": 6, "num_layers": 2, "proj_size": 3, "bias": False}, (S(2, 3, 4),)),
             Example({"hidden_size": 5, "num_layers": 2, "bidirectional": True},
                     (S(2, 4, 6), (S(4, 2, 5), S(4, 2, 5)))),
             Example({"hidden_size": 6, "num_layers": 2, "proj_size": 3}, (S(2, 3, 4), (S(2, 2, 3), S(2, 2, 6)))),
             Example({"hidden_size": 4}, (S(5, 3), (S(1, 4), S(1, 4)))),
             Example({"hidden_size": 4, "proj_size": 2, "bidirectional": True}, (S(5, 3), (S(2, 2), S(2, 4))))),
}


# ---------------------------------------------------------------- ONNX (opset 18)
#
# ONNX's RNN, GRU and LSTM run one layer, sequence-first (onnxruntime rejects
# layout=1): X [T, B, in], W [D, gates·H, in], R [D, gates·H, H],
# B [D, 2·gates·H] = [Wb, Rb]; they return Y [T, D, B, H] and Y_h (Y_c) [D, B, H].
# A projected LSTM has no ONNX op: it is a Scan over time with the cell written out.

_ONNX_GATES = {"RNN": (0,), "GRU": (1, 0, 2), "LSTM": (0, 3, 1, 2)}  # torch's gate blocks, in ONNX's order
_SUFFIXES = ("", "_reverse")


def _onnx_gate_order(g, w, name: str) -> str:
    """A torch [gates·H, ...] weight or bias, gate blocks in ONNX's order (r z n -> z r h, i f g o -> i o f c)."""
    order = _ONNX_GATES[name]
    if len(order) == 1:
        return w
    blocks = g.op("Split", [w], n_out=len(order), axis=0, num_outputs=len(order), hint="gates")
    return g.op("Concat", [blocks[i] for i in order], axis=0, hint="onnx_gates")


def _onnx_stack(g, parts: list, hint: str) -> str:
    """Per-direction tensors stacked on a new axis 0 (ONNX's num_directions)."""
    axis0 = g.ints([0])
    if len(parts) == 1:
        return g.op("Unsqueeze", [parts[0], axis0], hint=hint)
    return g.op("Concat", [g.op("Unsqueeze", [p, axis0]) for p in parts], axis=0, hint=hint)


def _onnx_layer_weights(g, n, name: str, k: int) -> tuple:
    """W [D, gates·H, in_k], R [D, gates·H, H] and B [D, 2·gates·H] (or None) of layer k, in ONNX's gate order."""
    suffixes = _SUFFIXES[:_directions(n.args)]
    w = _onnx_stack(g, [_onnx_gate_order(g, n.weight(f"weight_ih_l{k}{s}"), name) for s in suffixes], f"W_l{k}")
    r = _onnx_stack(g, [_onnx_gate_order(g, n.weight(f"weight_hh_l{k}{s}"), name) for s in suffixes], f"R_l{k}")
    if not n["bias"]:
        return w, r, None
    b = _onnx_stack(g, [g.op("Concat", [_onnx_gate_order(g, n.weight(f"bias_ih_l{k}{s}"), name),
                                        _onnx_gate_order(g, n.weight(f"bias_hh_l{k}{s}"), name)], axis=0)
                        for s in suffixes], f"B_l{k}")
    return w, r, b


def _onnx_concat(g, parts: list, axis: int, hint: str) -> str:
    """Tensors side by side on `axis` (one stays as it is)."""
    return parts[0] if len(parts) == 1 else g.op("Concat", parts, axis=axis, hint=hint)


def _recurrent_onnx(name: str):
    def emit(g, n):
        """The layers over a batch-first input [B, T, F]; one sequence [T, F] runs as a batch of one,
        its states [D·layers, H] as [D·layers, 1, H]."""
        x, states = n.inputs[0], list(n.inputs[1:])
        batched = n.x.rank == 3
        if not batched:
            x = g.op("Unsqueeze", [x, g.ints([0])], hint="x_batch")
            states = [g.op("Unsqueeze", [state, g.ints([1])], hint="state_batch") for state in states]
        sizes = (n.x.shape[0] if batched else 1, n.x.shape[-2])
        run = _projected_lstm_onnx if name == "LSTM" and plain(n["proj_size"]) > 0 else _onnx_layers
        outs = run(g, n, name, x, states, sizes)
        if batched:
            return outs
        return [g.op("Squeeze", [outs[0], g.ints([0])], hint="out")] + \
            [g.op("Squeeze", [state, g.ints([1])], hint=hint) for state, hint in zip(outs[1:], ("h_n", "c_n"))]
    return emit


def _onnx_layers(g, n, name: str, x: str, states: list, sizes: tuple) -> list:
    """One ONNX RNN/GRU/LSTM per layer over the sequence-first [T, B, in] input, each starting from its
    slice of the initial state (when given); out back to [B, T, D·H]."""
    a = n.args
    d, hidden, layers = _directions(a), plain(a["hidden_size"]), plain(a["num_layers"])
    batch, steps = sizes
    attrs = {"hidden_size": hidden, "direction": "bidirectional" if d == 2 else "forward"}
    if name == "RNN":
        attrs["activations"] = [{"tanh": "Tanh", "relu": "Relu"}[a["nonlinearity"]]] * d
    if name == "GRU":
        attrs["linear_before_reset"] = 1  # torch: n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
    x = g.op("Transpose", [x], perm=[1, 0, 2], hint="x_seq_first")  # [T, B, F]
    finals: list = [[], []]
    for k in range(layers):
        w, r, b = _onnx_layer_weights(g, n, name, k)
        initial = [state if layers == 1 else  # layer k's directions: rows k·D .. k·D + D - 1
                   g.op("Slice", [state, g.ints([k * d]), g.ints([k * d + d]), g.ints([0])], hint=f"h0_l{k}")
                   for state in states]
        outs = g.op(name, [x, w, r, b, None] + initial, n_out=3 if name == "LSTM" else 2, hint=f"{name}_l{k}",
                    **attrs)
        y = outs[0]  # [T, D, B, H]
        for i, state in enumerate(outs[1:]):  # Y_h (and Y_c) [D, B, H]
            finals[i].append(state)
        if k + 1 < layers:  # the next layer reads [T, B, D·H]; dropout is off in eval
            x = g.op("Reshape", [g.op("Transpose", [y], perm=[0, 2, 1, 3]),
                                 g.shape((steps, batch, d * hidden))], hint=f"x_l{k + 1}")
    out = g.op("Reshape", [g.op("Transpose", [y], perm=[2, 0, 1, 3]), g.shape((batch, steps, d * hidden))],
               hint="out")
    # layer-major, then direction: torch's h_n [D·layers, B, H] order
    return [out] + [_onnx_concat(g, states, 0, hint) for states, hint in zip(finals, ("h_n", "c_n")) if states]


def _projected_lstm_onnx(g, n, name: str, x: str, states: list, sizes: tuple) -> list:
    """A projected LSTM, batch-first: per layer and direction, x W_ihᵀ + b for all steps, then a Scan over T
    from that direction's row of the initial state (or zeros)."""
    a = n.args
    dtype, elem = n.x.dtype, g.elem_type(n.x.dtype)
    hidden, proj, batch = plain(a["hidden_size"]), plain(a["proj_size"]), sizes[0]
    if not states:
        zero = g.const(0.0, dtype=dtype)
        h0 = g.op("Expand", [zero, g.shape((batch, proj))], hint="h0")    # [B, P]
        c0 = g.op("Expand", [zero, g.shape((batch, hidden))], hint="c0")  # [B, H]
    h_n, c_n = [], []
    axis0 = g.ints([0])
    for k in range(plain(a["num_layers"])):
        outs = []
        for reverse, s in enumerate(_SUFFIXES[:_directions(a)]):
            if states:  # row k·D + direction of [D·layers, B, P] and [D·layers, B, H]
                row = g.const(k * _directions(a) + reverse, dtype="int64", hint="row")
                h0, c0 = (g.op("Gather", [state, row], axis=0, hint=hint) for state, hint in zip(states, ("h0", "c0")))
            gates_x = g.op("MatMul", [x, _transposed(g, n, f"weight_ih_l{k}{s}")], hint="gates_x")  # [B, T, 4H]
            if a["bias"]:
                bias = g.op("Add", [n.weight(f"bias_ih_l{k}{s}"), n.weight(f"bias_hh_l{k}{s}")], hint="bias")
                gates_x = g.op("Add", [gates_x, bias], hint="gates_x")
            body = _lstm_step(g, elem, (batch, hidden, proj), _transposed(g, n, f"weight_hh_l{k}{s}"),
                              _transposed(g, n, f"weight_hr_l{k}{s}"), f"lstm_l{k}{s}_step")
            h, c, y = g.op("Scan", [h0, c0, gates_x], n_out=3, hint=f"lstm_l{k}{s}", body=body,
                           num_scan_inputs=1, scan_input_axes=[1], scan_output_axes=[1],
                           scan_input_directions=[1] if reverse else None,
                           scan_output_directions=[1] if reverse else None)  # y [B, T, P]
            outs.append(y)
            h_n.append(g.op("Unsqueeze", [h, axis0]))
            c_n.append(g.op("Unsqueeze", [c, axis0]))
        x = _onnx_concat(g, outs, 2, "out")  # [B, T, D·P]; dropout is off in eval
    return [x, _onnx_concat(g, h_n, 0, "h_n"), _onnx_concat(g, c_n, 0, "c_n")]


def _transposed(g, n, weight: str) -> str:
    """A [rows, cols] layer weight as [cols, rows], for x @ Wᵀ."""
    return g.op("Transpose", [n.weight(weight)], perm=[1, 0], hint=f"{weight}_t")


def _lstm_step(g, elem: int, sizes: tuple, hh_t: str, hr_t: str, name: str):
    """Scan body (h [B, P], c [B, H], x W_ihᵀ + b [B, 4H]) -> (h, c, h): one step of torch's i f g o cell."""
    from onnx import helper
    with g.subgraph() as nodes:
        h_prev, c_prev, gates_x = g.fresh("h_prev"), g.fresh("c_prev"), g.fresh("gates_x")
        gates = g.op("Add", [gates_x, g.op("MatMul", [h_prev, hh_t])], hint="gates")
        i, f, cell, o = g.op("Split", [gates], n_out=4, axis=1, num_outputs=4, hint="gate")
        c = g.op("Add", [g.op("Mul", [g.op("Sigmoid", [f]), c_prev]),
                         g.op("Mul", [g.op("Sigmoid", [i]), g.op("Tanh", [cell])])], hint="c")
        h = g.op("MatMul", [g.op("Mul", [g.op("Sigmoid", [o]), g.op("Tanh", [c])]), hr_t], hint="h")
        y = g.op("Identity", [h], hint="y")
    batch, hidden, proj = sizes
    batch = None if isinstance(batch, Sym) else plain(batch)  # a run-time batch stays unnamed in the body
    shapes = ([batch, proj], [batch, hidden], [batch, 4 * hidden], [batch, proj], [batch, hidden], [batch, proj])
    values = (h_prev, c_prev, gates_x, h, c, y)
    info = [helper.make_tensor_value_info(v, elem, shape) for v, shape in zip(values, shapes)]
    return helper.make_graph(nodes, g.fresh(name), info[:3], info[3:])


def _recurrent(name: str) -> None:
    keywords = tuple(p.name for p in _params(name)[1:])
    register(OpDef(
        name=name, kind="layer", family="recurrent", stem=_STEM[name], doc=_DOC[name],
        params=_params(name), resolve=_resolve(name), infer=_infer,
        weights=_weights(name), macs=_macs(name), label=_label(name),
        torch=TorchLayer(f"nn.{name}", ("input_size", "hidden_size"), keywords, fixed=(("batch_first", "True"),)),
        onnx=_recurrent_onnx(name),
        # the initial state: `h_0`, or LSTM's tuple `hx` = (h_0, c_0), as torch's forward takes them
        inputs=("input", "hx" if name == "LSTM" else "h_0"), min_inputs=1,
        tuple_inputs=(("hx", _STATE[name]),) if name == "LSTM" else (),
        results=(0, (1, 2)) if name == "LSTM" else (0, 1),
        pure=False,  # dropout between layers is random in training
        examples=_EXAMPLES[name], arbitrary=_arbitrary(name),
    ))


for _name in ("RNN", "LSTM", "GRU"):
    _recurrent(_name)
