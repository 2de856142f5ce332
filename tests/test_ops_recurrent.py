"""RNN, LSTM, GRU, MultiheadAttention and `attention` against hand-built torch.

The torch modules here are constructed directly (not through dslc) and
compared with the registry entries' shape rules, weights and MACs; the
`multi_head_attention` helper is compared numerically with torch's
scaled_dot_product_attention; shape errors carry their codes.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from support import error_codes
from torch import nn

from dslc import api
from dslc.ir.dims import Sym, plain
from dslc.ir.types import TensorType
from dslc.ir.values import Ref, TensorValue
from dslc.ops import HELPERS, REGISTRY
from dslc.ops.registry import Bound, ShapeError


def bind(name: str, inputs: list, **args) -> Bound:
    """The op's arguments (defaults filled in) bound to inputs of the given shapes, resolved."""
    op = REGISTRY[name]
    full = {p.name: args.get(p.name, p.default) for p in op.params}
    b = Bound(op, full, [TensorType(tuple(s)) for s in inputs])
    if op.resolve:
        b.args.update(op.resolve(b))
    return b


def infer(name: str, inputs: list, **args) -> tuple[Bound, list]:
    b = bind(name, inputs, **args)
    return b, b.op.infer(b)


def shapes(types) -> list[tuple]:
    return [tuple(plain(d) for d in t.shape) for t in types]


def state_shapes(module: nn.Module) -> dict:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def weight_shapes(b: Bound) -> dict:
    return {k: tuple(plain(d) for d in s) for k, s in b.op.weights(b.args).items()}


def flat(out) -> list:
    """torch's `(out, h)` / `(out, (h, c))` as a flat list of tensors."""
    if isinstance(out, torch.Tensor):
        return [out]
    return [t for item in out for t in flat(item)]


# ---------------------------------------------------------------- recurrent layers

RECURRENT = [
    (name, layers, bi, bias)
    for name in ("RNN", "GRU", "LSTM")
    for layers in (1, 2, 3)
    for bi in (False, True)
    for bias in (True, False)
]


@pytest.mark.parametrize("name,layers,bi,bias", RECURRENT)
def test_recurrent_matches_torch(name, layers, bi, bias):
    features, hidden = 5, 7
    b, outs = infer(name, [(2, 4, features)], hidden_size=hidden, num_layers=layers, bidirectional=bi, bias=bias)
    ref = getattr(nn, name)(features, hidden, num_layers=layers, bias=bias, bidirectional=bi, batch_first=True)
    got = flat(ref(torch.randn(2, 4, features)))
    assert shapes(outs) == [tuple(t.shape) for t in got]
    assert weight_shapes(b) == state_shapes(ref)
    assert list(weight_shapes(b)) == list(state_shapes(ref))  # same order as torch registers them
    assert sum(math.prod(s) for s in weight_shapes(b).values()) == sum(p.numel() for p in ref.parameters())


@pytest.mark.parametrize("layers,bi", [(1, False), (2, True), (3, False)])
def test_lstm_projection_matches_torch(layers, bi):
    b, outs = infer("LSTM", [(3, 6, 4)], hidden_size=8, num_layers=layers, bidirectional=bi, proj_size=3)
    ref = nn.LSTM(4, 8, num_layers=layers, bidirectional=bi, proj_size=3, batch_first=True)
    got = flat(ref(torch.randn(3, 6, 4)))
    assert shapes(outs) == [tuple(t.shape) for t in got]
    assert weight_shapes(b) == state_shapes(ref)


def test_recurrent_results_nest_as_torch_does():
    assert REGISTRY["LSTM"].results == (0, (1, 2))
    assert REGISTRY["RNN"].results == REGISTRY["GRU"].results == (0, 1)


@pytest.mark.parametrize("name,gates", [("RNN", 1), ("GRU", 3), ("LSTM", 4)])
def test_recurrent_shapes_and_macs_keep_the_run_time_length(name, gates):
    steps = Sym.var("T")
    b, outs = infer(name, [(2, steps, 5)], hidden_size=6, num_layers=2, bidirectional=True)
    assert outs[0].shape[1] == steps and isinstance(outs[0].shape[1], Sym)
    assert outs[0].concrete(T=9) == (2, 9, 12)
    macs = b.op.macs(b, outs)
    value = macs.poly.evaluate(lambda a: {"T": 9}.get(a.name))
    per_direction = gates * 6 * (5 + 6) + gates * 6 * (12 + 6)  # layer 0 reads 5, layer 1 reads 2·6
    assert value == 2 * 9 * 2 * per_direction


def test_recurrent_labels():
    assert REGISTRY["LSTM"].label_text(bind("LSTM", [(2, 3, 4)], hidden_size=128, num_layers=2,
                                            bidirectional=True).args) == "LSTM 128 ×2 bi"
    assert REGISTRY["GRU"].label_text(bind("GRU", [(2, 3, 4)], hidden_size=16).args) == "GRU 16"


def test_recurrent_emission_is_batch_first():
    for name in ("RNN", "LSTM", "GRU"):
        assert ("batch_first", "True") in REGISTRY[name].torch.fixed


@pytest.mark.parametrize("name", ["RNN", "LSTM", "GRU"])
@pytest.mark.parametrize("shape", [(5,), (2, 3, 4, 5)])
def test_recurrent_needs_a_sequence(name, shape):
    with pytest.raises(ShapeError) as err:
        infer(name, [shape], hidden_size=3)
    assert err.value.code == "E0402" and name in err.value.message


@pytest.mark.parametrize("name", ["RNN", "LSTM", "GRU"])
def test_one_sequence_is_unbatched_as_in_torch(name):
    _, outs = infer(name, [(4, 5)], hidden_size=3, num_layers=2, bidirectional=True)
    got = flat(getattr(nn, name)(5, 3, num_layers=2, bidirectional=True, batch_first=True)(torch.randn(4, 5)))
    assert shapes(outs) == [tuple(t.shape) for t in got]


def test_lstm_projection_must_be_below_hidden_size():
    with pytest.raises(ShapeError) as err:
        infer("LSTM", [(2, 3, 4)], hidden_size=4, proj_size=4)
    assert err.value.code == "E0302" and err.value.arg == "proj_size"


def test_recurrent_input_size_must_be_static():
    with pytest.raises(ShapeError) as err:
        infer("GRU", [(2, 3, Sym.var("F"))], hidden_size=4)
    assert err.value.code == "E0403" and "input_size" in err.value.message


# ---------------------------------------------------------------- MultiheadAttention

ATTENTION = [
    # embed, heads, kdim, vdim, bias, add_bias_kv
    (8, 2, 8, 8, True, False),
    (8, 4, 8, 8, False, False),
    (6, 3, 5, 7, True, False),
    (6, 2, 6, 3, False, True),
    (4, 1, 9, 9, True, True),
]


@pytest.mark.parametrize("embed,heads,kdim,vdim,bias,bias_kv", ATTENTION)
def test_multihead_attention_matches_torch(embed, heads, kdim, vdim, bias, bias_kv):
    b, outs = infer("MultiheadAttention", [(2, 3, embed), (2, 5, kdim), (2, 5, vdim)],
                    embed_dim=embed, num_heads=heads, bias=bias, add_bias_kv=bias_kv)
    ref = nn.MultiheadAttention(embed, heads, bias=bias, add_bias_kv=bias_kv, kdim=kdim, vdim=vdim,
                                batch_first=True)
    got = ref(torch.randn(2, 3, embed), torch.randn(2, 5, kdim), torch.randn(2, 5, vdim), need_weights=False)[0]
    assert shapes(outs) == [tuple(got.shape)]
    assert weight_shapes(b) == state_shapes(ref)
    assert sum(math.prod(s) for s in weight_shapes(b).values()) == sum(p.numel() for p in ref.parameters())


def test_multihead_attention_one_input_is_self_attention():
    b, outs = infer("MultiheadAttention", [(2, Sym.var("T"), 8)], embed_dim=8, num_heads=2)
    assert (b["kdim"], b["vdim"]) == (None, None)  # torch's default: the same width as the query
    assert "in_proj_weight" in b.op.weights(b.args)
    assert outs[0].concrete(T=5) == (2, 5, 8)
    macs = b.op.macs(b, outs).poly.evaluate(lambda a: {"T": 5}.get(a.name))
    assert macs == 2 * (3 * 5 * 8 * 8 + 2 * 5 * 5 * 8 + 5 * 8 * 8)


def test_multihead_attention_two_inputs_attend_over_a_memory():
    b, outs = infer("MultiheadAttention", [(2, 3, 8), (2, 6, 5)], embed_dim=8, num_heads=4)
    assert (b["kdim"], b["vdim"]) == (5, 5)
    assert shapes(outs) == [(2, 3, 8)]


def test_multihead_attention_heads_must_divide_embed_dim():
    with pytest.raises(ShapeError) as err:
        infer("MultiheadAttention", [(2, 3, 6)], embed_dim=6, num_heads=4)
    assert err.value.code == "E0405" and "MultiheadAttention" in err.value.message
    assert err.value.arg == "num_heads"


def test_multihead_attention_query_width_must_be_embed_dim():
    with pytest.raises(ShapeError) as err:
        infer("MultiheadAttention", [(2, 3, 6)], embed_dim=8, num_heads=2)
    assert err.value.code == "E0403" and err.value.input == 0


def test_multihead_attention_key_and_value_must_agree():
    with pytest.raises(ShapeError) as err:
        infer("MultiheadAttention", [(2, 3, 8), (2, 5, 8), (2, 4, 8)], embed_dim=8, num_heads=2)
    assert err.value.code == "E0403" and err.value.input == 2


def test_multihead_attention_needs_batched_sequences():
    with pytest.raises(ShapeError) as err:
        infer("MultiheadAttention", [(3, 8)], embed_dim=8, num_heads=2)
    assert err.value.code == "E0402"


# ---------------------------------------------------------------- attention(q, k, v, heads)

def helper_function(key: str = "multi_head_attention"):
    namespace = {"torch": torch, "F": F}
    exec(HELPERS[key].source, namespace)  # noqa: S102 - our own helper
    return namespace["multi_head_attention"]


def split(x, heads):
    b, t, d = x.shape
    return x.view(b, t, heads, d // heads).transpose(1, 2)


def merge(x):
    b, h, t, d = x.shape
    return x.transpose(1, 2).reshape(b, t, h * d)


@pytest.mark.parametrize("heads,steps,keys,width,vwidth,causal", [
    (1, 4, 4, 6, 6, False), (2, 5, 3, 8, 8, False), (4, 3, 7, 8, 12, False),
    (2, 6, 6, 8, 8, True), (3, 1, 1, 9, 6, True),
])
@pytest.mark.parametrize("key", ["multi_head_attention", "multi_head_attention/unmasked"])
def test_attention_helper_matches_scaled_dot_product_attention(heads, steps, keys, width, vwidth, causal, key):
    torch.manual_seed(0)
    q, k, v = torch.randn(2, steps, width), torch.randn(2, keys, width), torch.randn(2, keys, vwidth)
    got = helper_function(key)(q, k, v, heads, causal=causal)
    # the form written where no call passes a mask computes what the full one does without one
    assert torch.equal(got, helper_function()(q, k, v, heads, causal=causal))
    want = merge(F.scaled_dot_product_attention(split(q, heads), split(k, heads), split(v, heads),
                                                is_causal=causal))
    assert got.shape == (2, steps, vwidth)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_attention_helper_drops_out_only_in_training():
    q = torch.randn(2, 4, 8)
    attend = helper_function()
    torch.testing.assert_close(attend(q, q, q, 2, dropout=0.5, training=False), attend(q, q, q, 2))
    torch.manual_seed(0)
    assert not torch.allclose(attend(q, q, q, 2, dropout=0.5, training=True), attend(q, q, q, 2))


def fn_bind(q, k, v, **args):
    op = REGISTRY["attention"]
    tensors = {n: TensorValue(Ref(i), TensorType(tuple(s)), None) for i, (n, s) in enumerate(zip("qkv", (q, k, v)))}
    full = {p.name: args.get(p.name, p.default) for p in op.params if not p.is_tensor}
    return Bound(op, {**tensors, **full}, [t.type for t in tensors.values()])


def test_attention_shape_rule_and_macs():
    steps = Sym.var("T")
    b = fn_bind((2, steps, 8), (2, steps, 8), (2, steps, 8), heads=2, causal=True)
    (out,) = b.op.infer(b)
    assert out.concrete(T=5) == (2, 5, 8)
    assert b.op.macs(b, [out]).poly.evaluate(lambda a: {"T": 5}.get(a.name)) == 2 * 2 * 5 * 5 * 8
    assert not b.op.pure


@pytest.mark.parametrize("shapes_,args,code", [
    (((2, 5, 6), (2, 5, 6), (2, 5, 6)), {"heads": 4}, "E0405"),
    (((2, 5, 8), (2, 5, 6), (2, 5, 8)), {"heads": 2}, "E0403"),
    (((2, 5, 8), (2, 4, 8), (2, 3, 8)), {"heads": 2}, "E0403"),
    (((2, 5, 8), (2, 4, 8), (2, 4, 8)), {"heads": 2, "causal": True}, "E0403"),
    (((5, 8), (2, 4, 8), (2, 4, 8)), {"heads": 2}, "E0402"),
])
def test_attention_shape_errors(shapes_, args, code):
    b = fn_bind(*shapes_, **args)
    with pytest.raises(ShapeError) as err:
        b.op.infer(b)
    assert err.value.code == code and "attention" in err.value.message


# ---------------------------------------------------------------- through the language

MODEL = """
model Tagger(hidden = 8, layers = 2, heads = 2) {
    input x: [B, T, 5]
    input memory: [B, S, 3]
    out, (h, c) = x -> LSTM(hidden, num_layers=layers, bidirectional=true)
    y = MultiheadAttention(2 * hidden, heads)(out, memory)
    z = attention(y, y, y, heads, causal=true)
    o, g = z -> GRU(hidden)
    output o, h, c, g
}
"""


def test_compiled_model_runs_with_run_time_lengths(tmp_path):
    path = tmp_path / "tagger.dl"
    path.write_text(MODEL)
    program = api.load(str(path))
    source = program.source()
    assert "out, (h, c) = self.lstm(x)" in source
    assert "need_weights=False)[0]" in source and "def multi_head_attention(" in source
    assert "nn.LSTM(5, hidden, num_layers=layers, bidirectional=True, batch_first=True)" in source
    model = program.build("Tagger", seed=0)
    o, h, c, g = model(torch.randn(3, 7, 5), torch.randn(3, 4, 3))
    assert (o.shape, h.shape, c.shape, g.shape) == ((3, 7, 8), (4, 3, 8), (4, 3, 8), (1, 3, 8))


@pytest.mark.parametrize("body,code", [
    ("input x: [B, T, 5, 1]\n    output x -> LSTM(4)", "E0402"),
    ("input x: [B, T, 5]\n    out, h = x -> GRU(4, dropout=1.5)\n    output out", "E0302"),
    ("input x: [B, T, 6]\n    output x -> MultiheadAttention(6, 4)", "E0405"),
])
def test_language_errors(tmp_path, body, code):
    assert code in error_codes(tmp_path, body)


def test_a_file_writes_the_attention_helper_once_and_with_a_mask_only_where_a_call_passes_one(tmp_path):
    plain = """model Plain {
    input x: [B, T, 8]
    output attention(x, x, x, heads=2)
}
"""
    masked = """model Masked {
    input x: [B, T, 8]
    output attention(x, x, x, heads=2, mask=x[:, :, 0] == 0)
}
"""
    (tmp_path / "a.dl").write_text(plain)
    (tmp_path / "b.dl").write_text(plain + "\n" + masked)
    alone = api.load(str(tmp_path / "a.dl")).source()
    both = api.load(str(tmp_path / "b.dl")).source()
    assert alone.count("def multi_head_attention(") == 1 and "mask=" not in alone and "mask:" not in alone
    assert both.count("def multi_head_attention(") == 1 and "mask: torch.Tensor | None = None" in both
