"""argmax, argmin, gather, DropPath and causal MultiheadAttention in models, against torch's own
functions and modules (the registry's conformance tests cover each op alone; these cover the language
use and the corners: ties, a run-time batch, training mode, add_bias_kv)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from support import ort_run

import dslc

SOURCE = """
model Pick {
    input x: [B, 10]
    input y: [B] of int64
    logp = log_softmax(x, dim=1)
    by_hand = -mean(gather(logp, 1, unsqueeze(y, 1)))      # cross-entropy written by hand
    output argmax(x, dim=1), argmin(x, dim=-1, keepdim=true), argmax(x), by_hand
}
"""


@pytest.fixture(scope="module")
def prog(tmp_path_factory):
    path = tmp_path_factory.mktemp("index") / "pick.dl"
    path.write_text(SOURCE)
    return dslc.load(str(path))


def _inputs(b: int):
    g = torch.Generator().manual_seed(b)
    x = torch.randn(b, 10, generator=g).round(decimals=0)   # rounded: many ties
    return x, torch.randint(0, 10, (b,), generator=g)


def test_against_torch(prog):
    net = prog.build("Pick", seed=0)
    for b in (3, 7):
        x, y = _inputs(b)
        top, low, flat, nll = net(x, y)
        assert torch.equal(top, torch.argmax(x, dim=1))          # the first of equal values
        assert torch.equal(low, torch.argmin(x, dim=-1, keepdim=True))
        assert torch.equal(flat, torch.argmax(x))
        torch.testing.assert_close(nll, F.cross_entropy(x, y))


def test_onnx_matches_at_two_batch_sizes(prog):
    model = prog.onnx("Pick")
    net = prog.build("Pick", seed=0)
    for b in (3, 7):
        x, y = _inputs(b)
        got = ort_run(model, {"x": x.numpy(), "y": y.numpy()})
        want = [t.numpy() for t in net(x, y)]
        for g, w in zip(got, want):
            assert g.dtype == w.dtype and g.shape == w.shape
            np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------- DropPath (stochastic depth)

def stochastic_depth(x, p: float, training: bool):
    """torchvision.ops.stochastic_depth(mode="row"), written out (torchvision is not installed here)."""
    if not training or p == 0.0:
        return x
    survival = 1.0 - p
    noise = torch.empty([x.shape[0]] + [1] * (x.ndim - 1), dtype=x.dtype, device=x.device).bernoulli_(survival)
    return x * noise.div_(survival)


def test_drop_path_is_torchvisions_stochastic_depth(tmp_path):
    path = tmp_path / "dp.dl"
    path.write_text("model R {\n    input x: [B, T, 8]\n    output x + (x -> Linear(8) as fc -> DropPath(0.3))\n}\n")
    prog = dslc.load(str(path))
    net = prog.build("R", seed=0).train()
    x = torch.randn(64, 5, 8)
    torch.manual_seed(1)
    got = net(x)
    torch.manual_seed(1)
    want = x + stochastic_depth(net.fc(x), 0.3, True)
    torch.testing.assert_close(got, want)
    dropped = (got - x).abs().sum(dim=(1, 2)) == 0        # whole samples skip the branch
    assert 0.1 < dropped.float().mean() < 0.5
    net.eval()
    torch.testing.assert_close(net(x), x + net.fc(x))      # the identity in eval mode
    assert "drop_path" not in prog.source(opt=2)            # -O2 (eval only) removes it, as dropout
    model = prog.onnx("R")
    (out,) = ort_run(model, {"x": x.numpy()})
    np.testing.assert_allclose(out, (x + net.fc(x)).detach().numpy(), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- MultiheadAttention(causal=true)

def test_causal_multihead_attention_is_torchs_with_a_causal_mask(tmp_path):
    path = tmp_path / "mha.dl"
    path.write_text("model D {\n    input x: [B, T, 8]\n"
                    "    output x -> MultiheadAttention(8, 2, causal=true) as attn\n}\n"
                    "model E {\n    input x: [B, T, 8]\n"
                    "    output x -> MultiheadAttention(8, 2, causal=true, add_bias_kv=true) as attn\n}\n")
    prog = dslc.load(str(path))
    for name in ("D", "E"):
        net = prog.build(name, seed=0).eval()
        for t in (3, 6):
            x = torch.randn(2, t, 8)
            future = torch.triu(torch.ones(t, t, dtype=torch.bool), diagonal=1)
            want = net.attn(x, x, x, attn_mask=future, need_weights=False)[0]   # torch's own, mask spelled out
            got = net(x)
            torch.testing.assert_close(got, want)
            later = x.clone()
            later[:, -1] += 1.0                                                 # the last token changes...
            torch.testing.assert_close(net(later)[:, :-1], got[:, :-1])        # ...and no earlier output does
            (out,) = ort_run(prog.onnx(name), {"x": x.numpy()})
            np.testing.assert_allclose(out, got.detach().numpy(), rtol=1e-5, atol=1e-5)
    path.write_text("model F {\n    input q: [B, 3, 8]\n    input m: [B, 5, 8]\n"
                    "    output MultiheadAttention(8, 2, causal=true)(q, m)\n}\n")
    with pytest.raises(dslc.DslcError, match="causal=true needs as many queries as keys"):
        dslc.load(str(path))


# ---------------------------------------------------------------- attention(..., mask=) and tensor comparisons

MASKED = """
model Enc {
    input x: [B, T, 8]
    input tokens: [B, T] of int64
    pad = tokens == 0
    a = attention(x, x, x, heads=2, mask=pad)
    c = attention(x, x, x, heads=2, causal=true, mask=pad)
    output a, c, tokens != 0, x > 0.5, tokens <= 1
}
"""


def _masked_reference(x, pad, heads: int, causal: bool):
    """Attention written out: hidden keys get -inf scores; a query that sees no key gives 0."""
    b, t, w = x.shape
    q = x.reshape(b, t, heads, -1).transpose(1, 2)
    scores = q @ q.transpose(-2, -1) / (w // heads) ** 0.5
    hidden = pad[:, None, None, :].expand(b, heads, t, t)
    if causal:
        hidden = hidden | torch.ones(t, t, dtype=torch.bool).triu(1)
    weights = torch.softmax(scores.masked_fill(hidden, float("-inf")), dim=-1)
    weights = torch.where(hidden.all(-1, keepdim=True), torch.zeros_like(weights), weights)
    return (weights @ q).transpose(1, 2).reshape(b, t, w)


def test_attention_mask_hides_padding_at_every_level_and_in_onnx(tmp_path):
    path = tmp_path / "enc.dl"
    path.write_text(MASKED)
    prog = dslc.load(str(path))
    x = torch.randn(3, 5, 8)
    tokens = torch.tensor([[4, 2, 7, 0, 0], [3, 1, 1, 1, 9], [0, 0, 0, 0, 0]])   # the last row is all padding
    pad = tokens == 0
    want = (_masked_reference(x, pad, 2, False), _masked_reference(x, pad, 2, True), tokens != 0, x > 0.5,
            tokens <= 1)
    for level in (0, 1):
        got = prog.build("Enc", seed=0, opt=level)(x, tokens)
        for g, w in zip(got, want):
            assert g.dtype == w.dtype
            torch.testing.assert_close(g, w)
    assert torch.equal(got[0][2], torch.zeros(5, 8))        # no key to attend to: zeros, not NaN
    later = x.clone()
    later[0, 3:] += 1.0                                       # padding positions change...
    torch.testing.assert_close(prog.build("Enc", seed=0)(later, tokens)[0][0, :3], got[0][0, :3])  # ...nothing sees it
    outs = ort_run(prog.onnx("Enc"), {"x": x.numpy(), "tokens": tokens.numpy()})
    for o, w in zip(outs, want):
        assert o.dtype == w.numpy().dtype
        np.testing.assert_allclose(o, w.numpy(), rtol=1e-5, atol=1e-5)


def test_attention_mask_must_be_bool_b_by_s(tmp_path):
    path = tmp_path / "bad.dl"
    path.write_text("model M {\n    input x: [B, T, 8]\n    output attention(x, x, x, heads=2, mask=x)\n}\n")
    with pytest.raises(dslc.DslcError, match="mask must be bool"):
        dslc.load(str(path))
