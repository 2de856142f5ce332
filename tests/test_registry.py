"""Registry conformance: every entry's shape rule and weights against real torch.

For each op and each of its examples (and hypothesis-drawn arguments from
its `arbitrary`), a one-op graph goes through the production PyTorch
backend; the output shapes and dtypes torch produces must equal the shape
rule's, and the module's parameters must equal the entry's weights.
"""
from __future__ import annotations

import functools
import math

import pytest
from hypothesis import given, reject
from hypothesis import strategies as st
from support import Drawer, layer_inputs, run_generated, single_op_graph

from dslc.frontend.errors import EvalError
from dslc.ir.dims import plain
from dslc.ir.types import TensorType
from dslc.ops import REGISTRY
from dslc.ops.registry import Constants, Elementwise, Example, S, ShapeError

OPS = sorted(REGISTRY.values(), key=lambda op: op.name)
CASES = [(op, i) for op in OPS for i in range(len(op.examples))]


def _check(op, example):
    import torch
    graph, specs = single_op_graph(op, example)
    model, outs, src = run_generated(graph, specs)
    want = [graph.type_of(ref) for _, ref in graph.outputs]
    assert len(outs) == len(want), src
    for got, t in zip(outs, want):
        assert tuple(got.shape) == tuple(plain(d) for d in t.shape), (op.name, example, src)
        assert str(got.dtype) == f"torch.{t.dtype}", (op.name, example, src)
    inst = next(iter(graph.instances.values()), None)
    expected = inst.weights() if inst else {}
    n_expected = sum(math.prod(plain(d) for d in s) for s in expected.values())
    assert sum(p.numel() for p in model.parameters()) == n_expected, src
    if inst is not None and (expected or inst.buffers()):
        keys = {f"{inst.name}.{k}" for k in list(expected) + list(inst.buffers())}
        assert set(model.state_dict()) == keys, src
        for k, shape in expected.items():
            assert tuple(model.state_dict()[f"{inst.name}.{k}"].shape) == tuple(plain(d) for d in shape)
    _ = torch


@pytest.mark.parametrize("op,i", CASES, ids=[f"{op.name}-{i}" for op, i in CASES])
def test_examples_match_torch(op, i):
    _check(op, op.examples[i])


ARBITRARY = [op for op in OPS if op.arbitrary is not None]


@pytest.mark.parametrize("op", ARBITRARY, ids=[op.name for op in ARBITRARY])
@given(data=st.data())
def test_drawn_arguments_match_torch(op, data):
    example = op.arbitrary(Drawer(data))
    try:
        single_op_graph(op, example)
    except (ShapeError, EvalError):
        reject()
    _check(op, example)


def test_every_op_has_hypothesis_arguments():
    missing = [op.name for op in OPS if op.arbitrary is None]
    assert not missing, f"ops without `arbitrary`: {missing}"


def test_every_op_has_a_doc_and_a_module_name_stem():
    for op in OPS:
        assert op.doc and op.source, op.name
        if op.kind == "layer":
            assert op.stem.isidentifier(), op.name


def test_every_example_draws_with_its_label():
    """Each example's one-op diagram holds the entry's label (a layer's starts with its name),
    and Graphviz renders all of them (one `dot` run over every graph)."""
    import shutil
    import subprocess

    from dslc.backends.diagram import to_dot
    from dslc.ir.values import plain_args
    dots = []
    for op, i in CASES:
        graph, _ = single_op_graph(op, op.examples[i])
        node = next(n for n in graph if n.kind not in ("input", "weight"))
        dot = to_dot(graph)
        if op.label is not None:
            label = op.label_text(plain_args(node.args))
            assert label.strip() and label.isprintable(), (op.name, label)
            assert label.replace("\n", "\\n").replace('"', '\\"') in dot.replace("\n", "\\n"), (op.name, label)
            if op.kind == "layer":
                assert label.split()[0] == op.name, (op.name, label)
        dots.append(dot)
    if shutil.which("dot") is None:
        pytest.skip("Graphviz `dot` is not installed (make install puts it there)")
    r = subprocess.run(["dot", "-Tsvg"], input="\n".join(dots), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.count("</svg>") == len(dots)


# ---------------------------------------------------------------- MACs against independent counts

def _arg(op, example, name):
    return example.args[name] if name in example.args else op.param(name).default


def _shapes(op, example) -> list:
    tensors = [t for _, t in layer_inputs(example)] if op.is_layer else \
        [v for v in example.args.values() if hasattr(v, "shape")]
    return [tuple(t.shape) for t in tensors]


def _numel(shape) -> int:
    return math.prod(shape)


def _affine_norm(flag: str):
    # an affine normalization scales and shifts each element once
    return lambda op, ex, ins, out: _numel(out[0]) if _arg(op, ex, flag) else 0


def _recurrent(gates: int):
    """Every step of every layer and direction: gates·H·(input + state) products, plus an LSTM's
    projection P·H (batch-first input [B, T, I])."""
    def count(op, ex, ins, out):
        *batch, steps, width = ins[0]
        batch = batch[0] if batch else 1   # one sequence [T, F]
        hidden, layers = _arg(op, ex, "hidden_size"), _arg(op, ex, "num_layers")
        dirs = 2 if _arg(op, ex, "bidirectional") else 1
        proj = _arg(op, ex, "proj_size") if op.param("proj_size") else 0
        total = 0
        for _ in range(layers):
            state = proj or hidden
            total += dirs * (gates * hidden * (width + state) + proj * hidden)
            width = dirs * state
        return batch * steps * total
    return count


def _cell(gates: int):
    """One step: gates·H·(input + state) products per example ([B, F], or one example [F])."""
    def count(op, ex, ins, out):
        *batch, width = ins[0]
        hidden = _arg(op, ex, "hidden_size")
        return (batch[0] if batch else 1) * gates * hidden * (width + hidden)
    return count


def _bilinear(op, ex, ins, out):
    return _numel(out[0]) * ins[0][-1] * ins[1][-1]


def _sdpa(op, ex, ins, out):
    (batch, steps, e), (_, keys, _), (_, _, ev) = ins[:3]
    return batch * steps * keys * (e + ev)   # q·kᵀ over e, then the weights times v over ev


def _mha(op, ex, ins, out):
    e = _arg(op, ex, "embed_dim")
    q, k = ins[0], ins[1] if len(ins) > 1 else ins[0]
    v = ins[2] if len(ins) > 2 else k
    batch, steps, keys = q[0], q[1], k[1]
    attended = keys + (1 if _arg(op, ex, "add_bias_kv") else 0)  # torch appends the bias key
    projections = steps * e * e + keys * k[2] * e + keys * v[2] * e + steps * e * e
    return batch * (projections + steps * attended * 2 * e)


def _transformer_layer(e: int, f: int, steps: int, keys: int | None) -> int:
    """One layer at batch 1: self-attention (q, k, v, out projections; scores; weighted values), over a
    memory of `keys` tokens for a decoder layer (q and out projections over the queries, k and v over
    the memory), the two linear maps of the feed-forward network, and each LayerNorm's affine map."""
    total = 4 * steps * e * e + 2 * steps * steps * e + 2 * steps * e * f + 2 * steps * e
    if keys is not None:
        total += 2 * steps * e * e + 2 * keys * e * e + 2 * steps * keys * e + steps * e
    return total


def _transformer(op, ex, ins, out):
    e, f = _arg(op, ex, "d_model"), _arg(op, ex, "dim_feedforward")
    if op.name == "Transformer":
        (batch, keys, _), (_, steps, _) = ins
        n_enc, n_dec = _arg(op, ex, "num_encoder_layers"), _arg(op, ex, "num_decoder_layers")
        return batch * (n_enc * _transformer_layer(e, f, keys, None) + keys * e
                        + n_dec * _transformer_layer(e, f, steps, keys) + steps * e)
    batch, steps = ins[0][0], ins[0][1]
    keys = ins[1][1] if len(ins) > 1 else None
    layers = _arg(op, ex, "num_layers") if op.param("num_layers") else 1
    norm = steps * e if op.param("norm") and _arg(op, ex, "norm") else 0
    return batch * (layers * _transformer_layer(e, f, steps, keys) + norm)


def _matmul(op, ex, ins, out):
    a, b = ins
    return _numel(out[0]) * a[-1] if out[0] else a[-1]


# torch's counter does not see these: oneDNN's fused recurrent kernels (the cells' two matrix products it
# sees, and must count the same), the fused and CPU
# attention kernels, matrix-vector products, bilinear maps, normalization's affine maps.
HAND = {"GroupNorm": _affine_norm("affine"), "LayerNorm": _affine_norm("elementwise_affine"),
        "InstanceNorm1d": _affine_norm("affine"), "InstanceNorm2d": _affine_norm("affine"),
        "LSTM": _recurrent(4), "GRU": _recurrent(3), "RNN": _recurrent(1), "Bilinear": _bilinear,
        "LSTMCell": _cell(4), "GRUCell": _cell(3), "RNNCell": _cell(1),
        "sdpa": _sdpa, "MultiheadAttention": _mha, "matmul": _matmul,
        **{name: _transformer for name in ("TransformerEncoderLayer", "TransformerDecoderLayer", "TransformerEncoder",
                                           "TransformerDecoder", "Transformer")}}
# where torch runs attention in its own kernel, the counter sees only the projections
PARTLY_SEEN = {"MultiheadAttention", "TransformerEncoderLayer", "TransformerDecoderLayer", "TransformerEncoder",
               "TransformerDecoder", "Transformer"}
COUNTED = [(op, i) for op, i in CASES if op.macs is not None]


@pytest.mark.parametrize("op,i", COUNTED, ids=[f"{op.name}-{i}" for op, i in COUNTED])
def test_macs_match_torchs_flop_counter_or_a_hand_count(op, i):
    """An entry's MACs equal torch's FlopCounterMode (2 FLOPs a MAC) on the generated module, or,
    for what that counter cannot see, a count written here from the layer's definition."""
    import torch
    from support import random_input
    from torch.utils.flop_counter import FlopCounterMode

    from dslc.ops.cost import node_macs
    example = op.examples[i]
    graph, specs = single_op_graph(op, example)
    node = next(n for n in graph if n.kind not in ("input", "weight"))
    ours = node_macs(graph, node, {})
    if op.name in HAND:
        out = [tuple(plain(d) for d in t.shape) for t in node.outputs]
        assert ours == HAND[op.name](op, example, _shapes(op, example), out), (op.name, example)
    model, _, _ = run_generated(graph, specs)
    inputs = [random_input(s) for s in specs]
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(*inputs)
    flops = counter.get_total_flops()
    if op.name not in HAND or (flops and op.name not in PARTLY_SEEN):
        assert 2 * ours == flops, (op.name, example)


def test_the_flop_counter_sees_the_work_of_each_family():
    """The reference above is not a row of zeros: among the entries checked against torch's
    counter alone are convolutions, linear maps and attention with work to count."""
    seen = {op.family for op, _ in COUNTED if op.name not in HAND and any(
        node_macs_of(op, i) for i in range(len(op.examples)))}
    assert {"conv", "linear", "attention"} <= seen, seen


def node_macs_of(op, i) -> int:
    from dslc.ops.cost import node_macs
    graph, _ = single_op_graph(op, op.examples[i])
    return node_macs(graph, next(n for n in graph if n.kind not in ("input", "weight")), {})


# ---------------------------------------------------------------- the facts passes read, against torch

def test_an_operator_symbol_means_torchs_function_of_that_name():
    """`a <symbol> b` (or `<symbol>a` for an op of one operand) is torch's function of the entry's name,
    on float tensors, and on bool and integer ones where the op takes no floats (`&`, `~`)."""
    import torch
    floats = torch.tensor([[1.5, -2.0], [3.0, 0.5]]), torch.tensor([[0.5, 4.0], [2.0, 0.25]])
    others = [(torch.tensor([[True, False], [True, True]]), torch.tensor([[False, False], [True, False]])),
              (torch.tensor([[6, -3], [0, 12]]), torch.tensor([[3, 5], [-1, 10]]))]
    with_symbol = [op for op in OPS if op.symbol]
    assert {op.symbol for op in with_symbol} >= {"+", "-", "*", "/", "**", "@", "==", "<", "&", "|", "^", "~"}
    for op in with_symbol:
        for a, b in ([floats] if op.name not in _LOGIC else others):
            unary = len(op.params) == 1
            got = eval(f"{op.symbol}a" if unary else f"a {op.symbol} b", {"a": a, "b": b})   # noqa: S307 - our symbols
            want = getattr(torch, op.name)(a) if unary else getattr(torch, op.name)(a, b)
            torch.testing.assert_close(got, want, msg=op.name)


_LOGIC = ("bitwise_and", "bitwise_or", "bitwise_xor", "bitwise_not")


def test_an_identity_operand_leaves_the_other_operand_unchanged_in_torch():
    import torch
    x = torch.tensor([[1.5, -2.0], [3.0, 0.25]])
    with_identity = [op for op in OPS if op.identity is not None]
    assert {op.name for op in with_identity} >= {"add", "mul"}
    for op in with_identity:
        unit, sides = op.identity
        f = getattr(torch, op.name)
        for side in sides:
            got = f(x, unit) if side == "other" else f(torch.tensor(float(unit)), x)
            torch.testing.assert_close(got, x, msg=f"{op.name} with {unit} as {side}")


def test_a_scalar_fold_matches_torch_on_that_value():
    import torch
    import torch.nn.functional as F
    folded = [op for op in OPS if isinstance(op.fold, Elementwise)]
    assert len(folded) >= 10
    for op in folded:
        args = {p.name: p.default for p in op.params if p.name != "input"}
        if op.kind == "layer":   # nn.ReLU() and the like, with the entry's defaults
            layer = getattr(torch.nn, op.name)(**args)
        else:
            layer = functools.partial(getattr(F, op.name, None) or getattr(torch, op.name), **args)
        for v in (-3.0, -0.5, 0.0, 0.7, 2.5):
            if op.name in ("log", "sqrt") and v <= 0:
                continue
            want = layer(torch.tensor(v, dtype=torch.float64)).item()
            got = op.fold(Constants(args, [TensorType(())], [v], "float64"))
            assert math.isclose(got, want, rel_tol=1e-12, abs_tol=1e-12), (op.name, v)


@pytest.mark.parametrize("op,i", [(op, i) for op, i in CASES if op.category in ("view", "dropout", "identity",
                                                                                 "stop_gradient")],
                         ids=[f"{op.name}-{i}" for op, i in CASES if op.category in ("view", "dropout", "identity",
                                                                                     "stop_gradient")])
def test_a_view_keeps_the_order_of_elements_and_the_others_are_the_identity_in_eval_mode(op, i):
    """What noops and constant folding assume of these categories, in the generated module."""
    import torch
    from support import random_input
    example = op.examples[i]
    graph, specs = single_op_graph(op, example)
    model, _, _ = run_generated(graph, specs)
    inputs = [random_input(s) for s in specs]
    with torch.no_grad():
        out = model(*inputs)
    x = inputs[0]
    if op.category == "view":
        assert torch.equal(out.flatten(), x.flatten())
    else:
        assert torch.equal(out, x)


def _scalar_input_cases():
    """Every example with its (first) tensor input made 0-d, with dim 0 and -1 where the op has a dim."""
    cases = []
    for op, i in CASES:
        example = op.examples[i]
        args, inputs = dict(example.args), example.inputs
        if op.is_layer:
            if not inputs:
                continue
            inputs = (S(dtype=inputs[0].dtype),) + tuple(inputs[1:])
        else:
            key = next((p.name for p in op.params if p.is_tensor and isinstance(args.get(p.name), type(S(1)))), None)
            if key is None:
                continue
            args[key] = S(dtype=args[key].dtype)
        for dims in ([{}] + ([{"dim": 0}, {"dim": -1}] if op.param("dim") is not None else [])):
            cases.append((op, i, Example({**args, **dims}, inputs)))
    return cases


SCALAR_CASES = _scalar_input_cases()


@pytest.mark.parametrize("op,i,example", SCALAR_CASES, ids=[f"{op.name}-{i}-{k}" for k, (op, i, _) in
                                                           enumerate(SCALAR_CASES)])
def test_a_0d_input_is_refused_cleanly_or_runs_as_in_torch(op, i, example):
    """The fuzzer found `chunk` of a loss (a 0-d tensor) crashing the checker: for every op, a 0-d
    input is a shape error, or the generated module runs on it with the shapes the checker gave."""
    try:
        graph, specs = single_op_graph(op, example)
    except (ShapeError, EvalError):
        return
    _check(op, example)
