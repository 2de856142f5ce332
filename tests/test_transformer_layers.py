"""MultiheadAttention's keyword inputs and torch's Transformer layers against real torch modules with the
same weights (state dicts loaded both ways) and against onnxruntime."""
from __future__ import annotations

import pytest
import torch
from support import ort_run, unwrapped

import dslc

SPEC = """
model Attend {
    input q: [B, T, 8]
    input kv: [B, S, 8]
    input pad: [B, S] of bool
    input future: [T, S] of bool
    output MultiheadAttention(8, 2)(q, kv, kv, key_padding_mask=pad, attn_mask=future, need_weights=true,
                                    average_attn_weights=false)
}

model Encode {
    input src: [B, S, 16]
    input pad: [B, S] of bool
    output TransformerEncoder(16, 4, 2, dim_feedforward=32, norm_first=true, activation="gelu", norm=true)(
        src, mask=square_subsequent_mask(S), src_key_padding_mask=pad)
}

model Translate {
    input src: [B, S, 16]
    input tgt: [B, T, 16]
    input pad: [B, S] of bool
    output Transformer(16, 4, 2, 1, dim_feedforward=32)(src, tgt, tgt_mask=square_subsequent_mask(T),
                                                         src_key_padding_mask=pad, memory_key_padding_mask=pad)
}
"""


@pytest.fixture(scope="module")
def prog(tmp_path_factory):
    path = tmp_path_factory.mktemp("t") / "t.dl"
    path.write_text(SPEC)
    return dslc.load(str(path))


def _pad(batch: int, steps: int) -> torch.Tensor:
    """Padding at the end of the second row; no row hides every key (torch's paths differ there)."""
    pad = torch.zeros(batch, steps, dtype=torch.bool)
    pad[1, steps - 2:] = True
    return pad


def _ort(prog, name: str, feeds: dict) -> list:
    return ort_run(prog.onnx(name, seed=0), {k: v.numpy() for k, v in feeds.items()})


def _close(got, want, tol=1e-5):
    got, want = torch.as_tensor(got), want.detach()
    assert got.shape == want.shape
    assert torch.allclose(got, want, atol=tol, rtol=tol), (got - want).abs().max()


def _twin_load(net, twin):
    """The state dict loads both ways: dslc's module into torch's and back, keys equal."""
    assert set(net.state_dict()) == set(twin.state_dict())
    twin.load_state_dict(net.state_dict())
    net.load_state_dict(twin.state_dict())


def test_multihead_attention_masks_and_weights_match_torch_and_onnxruntime(prog):
    net = prog.build("Attend", seed=0).eval()
    twin = torch.nn.MultiheadAttention(8, 2, batch_first=True).eval()
    _twin_load(net.multihead_attention if hasattr(net, "multihead_attention") else net.attn, twin)
    torch.manual_seed(1)
    q, kv = torch.randn(2, 3, 8), torch.randn(2, 5, 8)
    pad, future = _pad(2, 5), torch.triu(torch.ones(3, 5, dtype=torch.bool), diagonal=1)
    with torch.no_grad():
        out, weights = net(q, kv, pad, future)
        want, want_w = twin(q, kv, kv, key_padding_mask=pad, attn_mask=future, need_weights=True,
                            average_attn_weights=False)
    assert weights.shape == (2, 2, 3, 5)
    assert torch.equal(out, want) and torch.equal(weights, want_w)
    got = _ort(prog, "Attend", {"q": q, "kv": kv, "pad": pad, "future": future})
    _close(got[0], want)
    _close(got[1], want_w)


def test_a_query_that_sees_no_key_attends_to_nothing_in_onnx_as_torchs_slow_path(tmp_path):
    """need_weights=false: torch's scaled_dot_product_attention (its path in training) gives 0 there;
    its eval fast path gives NaN (docs/language.md says so); ONNX follows the former."""
    path = tmp_path / "m.dl"
    path.write_text("model M {\n input x: [B, T, 4]\n input pad: [B, T] of bool\n"
                    "    output MultiheadAttention(4, 2)(x, key_padding_mask=pad)\n}\n")
    prog = dslc.load(str(path))
    net = prog.build("M", seed=0).train()   # dropout 0: training mode is only torch's slow path
    x, pad = torch.randn(2, 3, 4), torch.tensor([[False, False, True], [True, True, True]])
    with torch.no_grad():
        want = net(x, pad)
    assert not want.isnan().any()
    _close(ort_run(prog.onnx("M"), {"x": x.numpy(), "pad": pad.numpy()})[0], want)


def test_transformer_encoder_matches_torchs_modules_bit_for_bit(prog):
    net = prog.build("Encode", seed=0).eval()
    layer = torch.nn.TransformerEncoderLayer(16, 4, 32, activation="gelu", norm_first=True, batch_first=True)
    twin = torch.nn.TransformerEncoder(layer, 2, norm=torch.nn.LayerNorm(16), enable_nested_tensor=False).eval()
    inner = next(m for m in net.modules() if isinstance(m, torch.nn.TransformerEncoder))
    _twin_load(inner, twin)
    assert {k for k in twin.state_dict()} >= {"layers.0.self_attn.in_proj_weight", "layers.1.linear1.weight",
                                              "layers.0.norm1.weight", "norm.weight"}
    torch.manual_seed(2)
    src, pad = torch.randn(2, 6, 16), _pad(2, 6)
    mask = torch.nn.Transformer.generate_square_subsequent_mask(6)
    with torch.no_grad():
        out = net(src, pad)
        want = twin(src, mask=mask, src_key_padding_mask=pad)
    assert torch.equal(out, want)
    _close(_ort(prog, "Encode", {"src": src, "pad": pad})[0], want)


def test_transformer_encoder_trains_like_torchs_with_the_same_seed(prog):
    net = prog.build("Encode", seed=0).train()
    inner = next(m for m in net.modules() if isinstance(m, torch.nn.TransformerEncoder))
    layer = torch.nn.TransformerEncoderLayer(16, 4, 32, activation="gelu", norm_first=True, batch_first=True)
    twin = torch.nn.TransformerEncoder(layer, 2, norm=torch.nn.LayerNorm(16), enable_nested_tensor=False).train()
    _twin_load(inner, twin)
    src, pad = torch.randn(2, 6, 16), _pad(2, 6)
    mask = torch.nn.Transformer.generate_square_subsequent_mask(6)
    torch.manual_seed(3)
    out = net(src, pad)
    torch.manual_seed(3)
    want = twin(src, mask=mask, src_key_padding_mask=pad)
    assert torch.equal(out, want)   # dropout draws the same masks
    out.sum().backward()


def test_transformer_matches_nn_transformer_and_onnxruntime(prog):
    net = prog.build("Translate", seed=0).eval()
    twin = torch.nn.Transformer(16, 4, 2, 1, 32, batch_first=True).eval()
    inner = next(m for m in net.modules() if isinstance(m, torch.nn.Transformer))
    _twin_load(inner, twin)
    assert "encoder.norm.weight" in twin.state_dict() and "decoder.layers.0.multihead_attn.in_proj_weight" in \
        twin.state_dict()
    torch.manual_seed(4)
    src, tgt = torch.randn(2, 5, 16), torch.randn(2, 4, 16)
    pad = torch.zeros(2, 5, dtype=torch.bool)   # no padding: nn.Transformer's encoder runs nested tensors in eval
    with torch.no_grad():
        out = net(src, tgt, pad)
        want = twin(src, tgt, tgt_mask=torch.nn.Transformer.generate_square_subsequent_mask(4),
                    src_key_padding_mask=pad, memory_key_padding_mask=pad)
    assert torch.equal(out, want)
    _close(_ort(prog, "Translate", {"src": src, "tgt": tgt, "pad": pad})[0], want)


def test_the_generated_code_reads_as_torch_written_by_hand(prog):
    src = unwrapped(prog.source(["Encode", "Translate", "Attend"]))
    assert "nn.TransformerEncoder(nn.TransformerEncoderLayer(16, 4, dim_feedforward=32, activation=\"gelu\", " \
           "norm_first=True, batch_first=True), num_layers=2, norm=nn.LayerNorm(16), enable_nested_tensor=False)" \
        in src, src
    assert "key_padding_mask=pad, need_weights=True, attn_mask=future, average_attn_weights=False)" in src
    assert "tgt_mask=" in src and "memory_key_padding_mask=pad)" in src


@pytest.mark.parametrize("body,code,text", [
    ("input x: [B, T, 8]\n input pad: [B, 4] of bool\n output TransformerEncoderLayer(8, 2)(x, src_key_padding_mask=pad)",
     "E0403", "src_key_padding_mask must be [B, S] = [B, T]"),
    ("input x: [B, T, 8]\n input m: [T, T] of int64\n output TransformerEncoderLayer(8, 2)(x, src_mask=m)",
     "E0310", "must be bool or float32"),
    ("input x: [B, T, 8]\n output TransformerEncoderLayer(8, 2, batch_first=false)(x)", "E0302", "batch-first"),
    ("input x: [B, T, 8]\n input m: [B, T, 8]\n output TransformerDecoderLayer(8, 2)(x, m, tgt_is_causal=true)",
     "E0403", "tgt_is_causal=true is torch's hint"),
    ("input x: [B, T, 8]\n output TransformerEncoderLayer(8, 3)(x)", "E0405", "heads do not divide"),
])
def test_wrong_masks_and_settings_are_clean_diagnostics(tmp_path, body, code, text):
    path = tmp_path / "m.dl"
    path.write_text("model M {\n " + body + "\n}\n")
    with pytest.raises(dslc.DslcError) as err:
        dslc.load(str(path)).graph("M")
    message = str(err.value)
    assert f"error[{code}]" in message and text in message and "m.dl:" in message, message
