"""TransformerDecoderLayer and TransformerDecoder against torch's modules with the same weights (masks, state
dicts both ways, eval and training, onnxruntime), and the stacks in torch's form: a layer, num_layers and
norm=LayerNorm(d)."""
from __future__ import annotations

import pytest
import torch
from support import ort_run, unwrapped

import dslc

SPEC = """
model Layer {
    input tgt: [B, T, 16]
    input memory: [B, S, 16]
    input tpad: [B, T] of bool
    input mpad: [B, S] of bool
    output TransformerDecoderLayer(16, 4, dim_feedforward=32)(tgt, memory, tgt_mask=square_subsequent_mask(T),
        tgt_key_padding_mask=tpad, memory_key_padding_mask=mpad, tgt_is_causal=true)
}

model Stack {
    input tgt: [B, T, 16]
    input memory: [B, S, 16]
    input tpad: [B, T] of bool
    input mpad: [B, S] of bool
    output TransformerDecoder(TransformerDecoderLayer(16, 4, dim_feedforward=32, norm_first=true, activation="gelu"),
                              num_layers=2, norm=LayerNorm(16))(
        tgt, memory, tgt_mask=square_subsequent_mask(T), tgt_key_padding_mask=tpad, memory_key_padding_mask=mpad)
}

model Flat {
    input tgt: [B, T, 16]
    input memory: [B, S, 16]
    input tpad: [B, T] of bool
    input mpad: [B, S] of bool
    output TransformerDecoder(16, 4, 2, dim_feedforward=32, norm_first=true, activation="gelu", norm=true)(
        tgt, memory, tgt_mask=square_subsequent_mask(T), tgt_key_padding_mask=tpad, memory_key_padding_mask=mpad)
}

model HeadMasks {
    input tgt: [B, T, 8]
    input memory: [B, S, 8]
    input self_mask: [B * 2, T, T] of bool
    input cross_mask: [B * 2, T, S]
    output TransformerDecoderLayer(8, 2, dim_feedforward=16, dropout=0.0)(tgt, memory, tgt_mask=self_mask,
                                                                          memory_mask=cross_mask)
}

model Encoders {
    input src: [B, S, 16]
    layer = TransformerEncoderLayer(16, 4, dim_feedforward=32)
    a = TransformerEncoder(layer, 2, norm=LayerNorm(16))(src)
    b = TransformerEncoder(encoder_layer=TransformerEncoderLayer(16, 4, dim_feedforward=32), num_layers=2,
                           enable_nested_tensor=false)(src)
    output a + b
}
"""


@pytest.fixture(scope="module")
def prog(tmp_path_factory):
    path = tmp_path_factory.mktemp("d") / "d.dl"
    path.write_text(SPEC)
    return dslc.load(str(path))


def _data(seed: int = 0):
    """tgt [2, 5, 16], memory [2, 6, 16], padding at the end of the second rows (no query sees no key)."""
    g = torch.Generator().manual_seed(seed)
    tgt, memory = torch.randn(2, 5, 16, generator=g), torch.randn(2, 6, 16, generator=g)
    tpad, mpad = torch.zeros(2, 5, dtype=torch.bool), torch.zeros(2, 6, dtype=torch.bool)
    tpad[1, 3:], mpad[1, 4:] = True, True
    return tgt, memory, tpad, mpad


def _causal(n: int) -> torch.Tensor:
    return torch.nn.Transformer.generate_square_subsequent_mask(n)


def _inner(net, cls):
    return next(m for m in net.modules() if isinstance(m, cls))


def _twin_load(inner, twin):
    """The state dict loads both ways, keys equal: torch's weights into dslc's module, then back."""
    assert set(inner.state_dict()) == set(twin.state_dict())
    torch.manual_seed(9)
    for p in twin.parameters():   # weights of torch's own, so loading into dslc's is seen
        p.data.normal_(0, 0.2)
    inner.load_state_dict(twin.state_dict())
    twin.load_state_dict(inner.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(inner.state_dict().values(), twin.state_dict().values()))


def _stack_twin():
    layer = torch.nn.TransformerDecoderLayer(16, 4, 32, activation="gelu", norm_first=True, batch_first=True)
    return torch.nn.TransformerDecoder(layer, 2, norm=torch.nn.LayerNorm(16))


def _close(got, want, tol=1e-5):
    got = torch.as_tensor(got)
    assert got.shape == want.shape
    assert torch.allclose(got, want, atol=tol, rtol=tol), (got - want).abs().max()


def _ort(prog, name, net, feeds: dict, tmp_path):
    """onnxruntime's result with the module's weights (torch's, loaded into it), given as a checkpoint."""
    weights = tmp_path / f"{name}.pt"
    torch.save(net.state_dict(), weights)
    return ort_run(prog.onnx(name, weights=str(weights)), {k: v.numpy() for k, v in feeds.items()})


def test_decoder_layer_matches_torch_with_masks_and_onnxruntime(prog, tmp_path):
    assert "tgt_mask=x, tgt_key_padding_mask=tpad, memory_key_padding_mask=mpad, tgt_is_causal=True)" in \
        unwrapped(prog.source(["Layer"]))
    net = prog.build("Layer", seed=0).eval()
    twin = torch.nn.TransformerDecoderLayer(16, 4, 32, batch_first=True).eval()
    _twin_load(_inner(net, torch.nn.TransformerDecoderLayer), twin)
    tgt, memory, tpad, mpad = _data(1)
    with torch.no_grad():
        out = net(tgt, memory, tpad, mpad)
        want = twin(tgt, memory, tgt_mask=_causal(5), tgt_key_padding_mask=tpad, memory_key_padding_mask=mpad,
                    tgt_is_causal=True)
    assert torch.equal(out, want)
    _close(_ort(prog, "Layer", net, {"tgt": tgt, "memory": memory, "tpad": tpad, "mpad": mpad}, tmp_path)[0], want)


def test_decoder_stack_in_torchs_form_matches_torch_eval_training_and_onnxruntime(prog, tmp_path):
    net = prog.build("Stack", seed=0)
    inner, twin = _inner(net, torch.nn.TransformerDecoder), _stack_twin()
    _twin_load(inner, twin)
    assert {"layers.1.multihead_attn.in_proj_weight", "layers.0.norm3.weight", "norm.bias"} <= set(twin.state_dict())
    tgt, memory, tpad, mpad = _data(2)
    kw = {"tgt_mask": _causal(5), "tgt_key_padding_mask": tpad, "memory_key_padding_mask": mpad}
    net.eval(), twin.eval()
    with torch.no_grad():
        want = twin(tgt, memory, **kw)
        assert torch.equal(net(tgt, memory, tpad, mpad), want)
    _close(_ort(prog, "Stack", net, {"tgt": tgt, "memory": memory, "tpad": tpad, "mpad": mpad}, tmp_path)[0], want)
    net.train(), twin.train()
    torch.manual_seed(3)
    out = net(tgt, memory, tpad, mpad)
    torch.manual_seed(3)
    want = twin(tgt, memory, **kw)
    assert torch.equal(out, want)   # dropout draws the same masks
    out.square().sum().backward(), want.square().sum().backward()
    for (name, p), q in zip(inner.named_parameters(), twin.parameters()):
        assert torch.equal(p.grad, q.grad), name


def test_the_layer_form_and_the_flat_form_are_one_module(prog):
    spec, flat = unwrapped(prog.source(["Stack"])), unwrapped(prog.source(["Flat"]))
    ctor = ("nn.TransformerDecoder(nn.TransformerDecoderLayer(16, 4, dim_feedforward=32, activation=\"gelu\", "
            "norm_first=True, batch_first=True), num_layers=2, norm=nn.LayerNorm(16))")
    assert ctor in spec and ctor in flat, spec
    a, b = prog.build("Stack", seed=0).state_dict(), prog.build("Flat", seed=0).state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_encoder_in_torchs_form_with_a_named_layer_and_keywords(prog, tmp_path):
    src = unwrapped(prog.source(["Encoders"]))
    assert src.count("nn.TransformerEncoder(nn.TransformerEncoderLayer(16, 4, dim_feedforward=32, "
                     "batch_first=True), num_layers=2") == 2 and "norm=nn.LayerNorm(16), enable_nested" in src, src
    net = prog.build("Encoders", seed=0).eval()
    stacks = [m for m in net.modules() if isinstance(m, torch.nn.TransformerEncoder)]
    twins = [torch.nn.TransformerEncoder(torch.nn.TransformerEncoderLayer(16, 4, 32, batch_first=True), 2,
                                         norm=norm, enable_nested_tensor=False).eval()
             for norm in (torch.nn.LayerNorm(16), None)]
    for stack, twin in zip(stacks, twins):
        _twin_load(stack, twin)
    x = torch.randn(2, 5, 16)
    with torch.no_grad():
        assert torch.equal(net(x), twins[0](x) + twins[1](x))
    _close(_ort(prog, "Encoders", net, {"src": x}, tmp_path)[0], twins[0](x).detach() + twins[1](x).detach())


def test_per_head_masks_on_the_decoder_layer(prog, tmp_path):
    """tgt_mask and memory_mask [B * nhead, T, S]: a bool one (true hides) and a float one (added)."""
    net = prog.build("HeadMasks", seed=0).eval()
    twin = torch.nn.TransformerDecoderLayer(8, 2, 16, dropout=0.0, batch_first=True).eval()
    _twin_load(_inner(net, torch.nn.TransformerDecoderLayer), twin)
    g = torch.Generator().manual_seed(4)
    tgt, memory = torch.randn(3, 4, 8, generator=g), torch.randn(3, 5, 8, generator=g)
    self_mask = torch.rand(6, 4, 4, generator=g) < 0.3
    self_mask[:, :, 0] = False   # every query sees a key
    cross_mask = torch.randn(6, 4, 5, generator=g)
    with torch.no_grad():
        want = twin(tgt, memory, tgt_mask=self_mask, memory_mask=cross_mask)
        assert torch.equal(net(tgt, memory, self_mask, cross_mask), want)
    _close(_ort(prog, "HeadMasks", net, {"tgt": tgt, "memory": memory, "self_mask": self_mask,
                                         "cross_mask": cross_mask}, tmp_path)[0], want)


@pytest.mark.parametrize("call,code,text,caret", [
    ("TransformerDecoder(TransformerEncoderLayer(8, 2), 2)", "E0301",
     "`decoder_layer` of `TransformerDecoder` expects a `TransformerDecoderLayer(...)` layer", "TransformerEncoderLayer"),
    ("TransformerDecoder(TransformerDecoderLayer(8, 2), 2, norm=LayerNorm(4))", "E0403",
     "the final `norm` normalizes 4 but the layers' d_model is 8", "LayerNorm(4)"),
    ("TransformerDecoder(TransformerDecoderLayer(8, 2), 2, norm=LayerNorm(8, bias=false))", "E0302",
     "with the layer's eps and bias", "LayerNorm(8, bias=false)"),
    ("TransformerDecoder(TransformerDecoderLayer(8, 2), 2, norm=BatchNorm1d())", "E0301",
     "expects a `LayerNorm(...)` layer", "BatchNorm1d()"),
    ("TransformerDecoder(TransformerDecoderLayer(8, 3), 2)", "E0405", "heads do not divide", "3"),
    ("TransformerDecoder(TransformerDecoderLayer(8, 2), 2, enable_nested_tensor=false)", "E0305",
     "no parameter `enable_nested_tensor`", "enable_nested_tensor"),
])
def test_a_wrong_layer_argument_is_a_clean_diagnostic(tmp_path, call, code, text, caret):
    path = tmp_path / "m.dl"
    line = f"    output {call}(x, m)"
    path.write_text(f"model M {{\n    input x: [B, T, 8]\n    input m: [B, S, 8]\n{line}\n}}\n")
    with pytest.raises(dslc.DslcError) as err:
        dslc.load(str(path)).graph("M")
    message = str(err.value)
    col = line.index(caret) + 1
    assert f"error[{code}]" in message and text in message and f"m.dl:4:{col}:" in message, message
