"""`buffer` declarations (register_buffer): checked against hand-written PyTorch twins of the
word_language_model's PositionalEncoding and nanoGPT's causal-mask buffer, in torch (state dict,
load_state_dict both ways, forward, `.to()`) and in onnxruntime; the passes, summary, diagnostics
and a training run that checkpoints and resumes."""
from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch
from support import ort_run, run_without_dslc
from torch import nn
from torch.nn import functional as F

import dslc
from dslc.api import train
from dslc.diagnostics import DslcError
from dslc.runtime.trainer import Options

# curves.png and confusion.png are left out of these runs (tests/conftest.py: no_figures)
pytestmark = pytest.mark.usefixtures("no_figures")

PE = """
block PositionalEncoding(d_model: int, dropout: float = 0.1, max_len: int = 5000) {
    input x: [T, B, D]
    position = unsqueeze(arange(max_len), 1)
    div_term = exp(arange(0, d_model, 2) * (-log(10000.0) / d_model))
    angles = position * div_term
    buffer PERSISTENCE pe = transpose(unsqueeze(reshape(stack([sin(angles), cos(angles)], dim=2),
                                                        [max_len, d_model]), 0), 0, 1)
    output Dropout(dropout)(x + pe[:T])
}

model PETagger(vocab: int = 50, dim: int = 16, max_len: int = 64) {
    input tokens: [T, B] of int64
    h = (tokens -> Embedding(vocab, dim) as encoder) * sqrt(dim)
    h = h -> PositionalEncoding(dim, max_len=max_len) as pos_encoder
    output h -> Linear(vocab) as decoder
}
"""


class PositionalEncoding(nn.Module):
    """pytorch/examples word_language_model/model.py, as written there (persistent flag added)."""

    def __init__(self, d_model, dropout=0.1, max_len=5000, persistent=True):
        super().__init__()
        self.dropout = nn.Dropout(p=dropout)
        pe = torch.zeros(max_len, d_model)
        position = torch.arange(0, max_len, dtype=torch.float).unsqueeze(1)
        div_term = torch.exp(torch.arange(0, d_model, 2).float() * (-math.log(10000.0) / d_model))
        pe[:, 0::2] = torch.sin(position * div_term)
        pe[:, 1::2] = torch.cos(position * div_term)
        pe = pe.unsqueeze(0).transpose(0, 1)
        self.register_buffer("pe", pe, persistent=persistent)

    def forward(self, x):
        x = x + self.pe[:x.size(0), :]
        return self.dropout(x)


class PETaggerTwin(nn.Module):
    def __init__(self, vocab=50, dim=16, max_len=64, persistent=True):
        super().__init__()
        self.dim = dim
        self.encoder = nn.Embedding(vocab, dim)
        self.pos_encoder = PositionalEncoding(dim, max_len=max_len, persistent=persistent)
        self.decoder = nn.Linear(dim, vocab)

    def forward(self, tokens):
        return self.decoder(self.pos_encoder(self.encoder(tokens) * math.sqrt(self.dim)))


def _prog(tmp_path, text: str, name: str = "m.dl"):
    path = tmp_path / name
    path.write_text(text)
    return dslc.load(str(path))


def _pe_prog(tmp_path, persistent: bool = True):
    return _prog(tmp_path, PE.replace("PERSISTENCE ", "" if persistent else "(persistent=false) "))


def _tokens(t=7, b=3, seed=0):
    return torch.randint(0, 50, (t, b), generator=torch.Generator().manual_seed(seed))


def test_positional_encoding_equals_the_word_language_model_one(tmp_path):
    net = _pe_prog(tmp_path).build("PETagger", seed=0).eval()
    twin = PETaggerTwin().eval()
    assert list(net.state_dict()) == list(twin.state_dict())
    assert torch.equal(net.state_dict()["pos_encoder.pe"], twin.pos_encoder.pe)  # bit-equal buffer
    assert [n for n, _ in net.named_parameters()] == [n for n, _ in twin.named_parameters()]  # not a parameter
    twin.load_state_dict(net.state_dict())
    x = _tokens()
    with torch.no_grad():
        assert torch.equal(net(x), twin(x))
    other = PETaggerTwin().eval()
    torch.nn.init.normal_(other.decoder.weight)
    net.load_state_dict(other.state_dict())
    with torch.no_grad():
        assert torch.equal(net(x), other(x))


def test_to_moves_the_buffer(tmp_path):
    net = _pe_prog(tmp_path).build("PETagger", seed=0).eval().to(torch.float64)
    twin = PETaggerTwin().eval()
    twin.load_state_dict(_pe_prog(tmp_path).build("PETagger", seed=0).state_dict())
    twin = twin.to(torch.float64)
    assert net.pos_encoder.pe.dtype == torch.float64
    x = _tokens()
    with torch.no_grad():
        out = net(x)
        assert out.dtype == torch.float64 and torch.equal(out, twin(x))


def test_a_non_persistent_buffer_is_not_in_the_state_dict(tmp_path):
    net = _pe_prog(tmp_path, persistent=False).build("PETagger", seed=0).eval()
    twin = PETaggerTwin(persistent=False).eval()
    assert "pos_encoder.pe" not in net.state_dict()
    assert list(net.state_dict()) == list(twin.state_dict())
    assert [n for n, _ in net.named_buffers()] == ["pos_encoder.pe"]
    twin.load_state_dict(net.state_dict())
    net.load_state_dict(twin.state_dict())
    x = _tokens()
    with torch.no_grad():
        assert torch.equal(net(x), twin(x))


@pytest.mark.parametrize("persistent", [True, False])
def test_onnx_holds_the_buffer_as_an_initializer(tmp_path, persistent):
    prog = _pe_prog(tmp_path, persistent)
    model = prog.onnx("PETagger", seed=0)
    assert "pos_encoder.pe" in {i.name for i in model.graph.initializer}
    net = prog.build("PETagger", seed=0).eval()
    for t in (5, 64):
        x = _tokens(t=t)
        with torch.no_grad():
            want = net(x).numpy()
        got = ort_run(model, {"tokens": x.numpy()})[0]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_the_generated_constructor_computes_it_as_written_by_hand(tmp_path):
    src = _pe_prog(tmp_path).source(["PETagger"])
    init = src[src.index("def __init__(self, d_model"):src.index("def forward")]
    assert 'self.register_buffer("pe", ' in init
    assert "torch.sin(angles)" in init and "position = " in init and "div_term = " in init
    forward = src[src.index("def forward"):src.index("class PETagger")]
    assert "self.pe[:T]" in forward and "sin" not in forward and "arange" not in forward
    unsaved = _pe_prog(tmp_path, persistent=False).source(["PETagger"])
    assert ", persistent=False)" in unsaved
    done = run_without_dslc(src + "\nnet = build()\nprint(sorted(net.state_dict()))\n")
    assert done.returncode == 0, done.stderr
    assert "'pos_encoder.pe'" in done.stdout


@pytest.mark.parametrize("opt", [1, 2])
def test_passes_keep_a_buffer_as_state(tmp_path, opt):
    """Constant folding, CSE and DCE treat a buffer as a weight: never folded into forward, never
    dropped (an unused one stays, as torch keeps it)."""
    prog = _prog(tmp_path, """
model M(n: int = 6) {
    input x: [B, T]
    buffer ones_ = ones([n])
    buffer twos = ones([n]) + ones([n])
    buffer(persistent=false) unused = zeros([n])
    output x * ones_[:T] + x * twos[:T]
}
""")
    plain = prog.build("M", seed=0).eval()
    net = prog.build("M", seed=0, opt=opt).eval()
    assert list(net.state_dict()) == list(plain.state_dict()) == ["ones_", "twos"]
    assert [n for n, _ in net.named_buffers()] == ["ones_", "twos", "unused"]
    src = prog.source(["M"], opt=opt)
    forward = src[src.index("def forward"):]
    assert "self.ones_" in forward and "self.twos" in forward and "torch.ones" not in forward
    x = torch.randn(2, 5)
    with torch.no_grad():
        assert torch.equal(net(x), plain(x))
        assert torch.equal(net(x), x * 3)


NANOGPT = """
block CausalSelfAttention(dim: int, heads: int, context: int) {
    input x: [B, T, C]
    buffer bias = reshape(tril(ones([context, context])), [1, 1, context, context])
    q, k, v = x -> Linear(3 * dim) as c_attn -> chunk(3, dim=2)
    q = transpose(reshape(q, [B, T, heads, dim // heads]), 1, 2)
    k = transpose(reshape(k, [B, T, heads, dim // heads]), 1, 2)
    v = transpose(reshape(v, [B, T, heads, dim // heads]), 1, 2)
    att = (q @ transpose(k, -2, -1)) * (1.0 / sqrt(dim // heads))
    att = masked_fill(att, bias[:, :, :T, :T] == 0, -inf)
    att = softmax(att, dim=-1)
    y = reshape(transpose(att @ v, 1, 2), [B, T, dim])
    output y -> Linear(dim) as c_proj
}

model TinyGPT(vocab: int = 30, context: int = 16, dim: int = 32, heads: int = 4) {
    input idx: [B, T] of int64
    h = idx -> Embedding(vocab, dim) as wte
    h = h + (h -> CausalSelfAttention(dim, heads, context) as attn1)
    h = h + (h -> CausalSelfAttention(dim, heads, context) as attn2)
    output h -> Linear(vocab) as lm_head
}
"""


class CausalSelfAttention(nn.Module):
    """nanoGPT's model.py attention, its slow path (the one with the `bias` buffer)."""

    def __init__(self, dim, heads, context):
        super().__init__()
        self.c_attn = nn.Linear(dim, 3 * dim)
        self.c_proj = nn.Linear(dim, dim)
        self.n_head, self.n_embd = heads, dim
        self.register_buffer("bias", torch.tril(torch.ones(context, context)).view(1, 1, context, context))

    def forward(self, x):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
        att = att.masked_fill(self.bias[:, :, :T, :T] == 0, float("-inf"))
        att = F.softmax(att, dim=-1)
        y = (att @ v).transpose(1, 2).contiguous().view(B, T, C)
        return self.c_proj(y)


class TinyGPTTwin(nn.Module):
    def __init__(self, vocab=30, context=16, dim=32, heads=4):
        super().__init__()
        self.wte = nn.Embedding(vocab, dim)
        self.attn1 = CausalSelfAttention(dim, heads, context)
        self.attn2 = CausalSelfAttention(dim, heads, context)
        self.lm_head = nn.Linear(dim, vocab)

    def forward(self, idx):
        h = self.wte(idx)
        h = h + self.attn1(h)
        h = h + self.attn2(h)
        return self.lm_head(h)


def test_nanogpt_causal_mask_buffer_one_per_block_instance(tmp_path):
    prog = _prog(tmp_path, NANOGPT)
    net = prog.build("TinyGPT", seed=0).eval()
    twin = TinyGPTTwin().eval()
    assert list(net.state_dict()) == list(twin.state_dict())
    assert "attn1.bias" in net.state_dict() and "attn2.bias" in net.state_dict()
    assert net.attn1.bias is not net.attn2.bias
    assert torch.equal(net.attn1.bias, twin.attn1.bias)
    twin.load_state_dict(net.state_dict())
    idx = torch.randint(0, 30, (2, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = twin(idx)
        torch.testing.assert_close(net(idx), want, rtol=1e-6, atol=1e-6)
        # the mask is causal: a later token never changes an earlier position's output
        changed = idx.clone()
        changed[:, -1] = (changed[:, -1] + 1) % 30
        assert torch.equal(net(changed)[:, :-1], net(idx)[:, :-1])
    got = ort_run(prog.onnx("TinyGPT", seed=0), {"idx": idx.numpy()})[0]
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-5, atol=1e-5)


def test_summary_counts_buffers_as_torch_does(tmp_path):
    prog = _prog(tmp_path, NANOGPT + """
model WithNorm {
    input x: [B, 3, 8, 8]
    buffer(persistent=false) scale = full([1, 3, 1, 1], 0.5)
    h = x * scale
    output h -> Conv2d(4, 3) -> BatchNorm2d()
}
""")
    for name in ("TinyGPT", "WithNorm"):
        net = prog.build(name, seed=0)
        s = prog.summary(name)
        assert s.buffers == sum(b.numel() for b in net.buffers())
        assert s.total_params == sum(p.numel() for p in net.parameters())
    rows = {r.name: r for r in prog.summary("TinyGPT").layers}
    assert rows["attn1.bias"].type == "buffer" and rows["attn1.bias"].params == 0
    assert prog.summary("WithNorm").buffers == 3 + 4 + 4 + 1
    assert {"name": "scale", "type": "buffer (not persistent)", "output_shape": "[1, 3, 1, 1]", "params": 0,
            "macs": 0} in prog.summary("WithNorm").as_json()["layers"]
    assert "buffer" in prog.diagram("TinyGPT", depth=2)


def _error(tmp_path, body: str) -> str:
    path = tmp_path / "bad.dl"
    path.write_text("model Bad(n: int = 4) {\n    input x: [B, T, 4]\n" + body + "\n    output x\n}\n")
    with pytest.raises(DslcError) as err:
        dslc.load(str(path))
    return str(err.value)


def test_a_buffer_that_reads_an_input_is_refused_at_the_name(tmp_path):
    text = _error(tmp_path, "    h = x * 2\n    buffer b = ones([n]) + h[0, 0]")
    assert "error[E0307]: a buffer's value cannot depend on the input `x`" in text
    assert "bad.dl:4:28" in text   # the caret is under `h`
    assert "^ `h` depends on the input `x`" in text and "Traceback" not in text


def test_a_buffer_of_a_run_time_size_is_refused(tmp_path):
    text = _error(tmp_path, "    buffer b = arange(T)")
    assert "E0307" in text and "run-time size `T`" in text and "bad.dl:3:23" in text
    text = _error(tmp_path, "    buffer b = arange(x.shape[1])")
    assert "E0307" in text and "run-time size" in text


@pytest.mark.parametrize("body, code, words", [
    ("    buffer fc = ones([n])\n    h = x -> Linear(4) as fc", "E0210", "`fc` already names a buffer"),
    ("    h = x -> Linear(4) as fc\n    buffer fc = ones([n])", "E0210", "`fc` already names a layer"),
    ("    param w: [n] = zeros\n    buffer w = ones([n])", "E0210", "`w` already names a `param`"),
    ("    buffer w = ones([n])\n    param w: [n] = zeros", "E0210", "`w` already names a buffer"),
    ("    param w: [n] = zeros\n    buffer b = w * 2", "E0307", "cannot depend on the param `w`"),
    ("    buffer a = ones([n])\n    buffer b = a * 2", "E0307", "cannot depend on the buffer `a`"),
    ("    buffer b = ones([n]) -> ReLU()", "E0307", "buffers are made with functions"),
    ("    buffer b = 3", "E0307", "a buffer holds a tensor, got"),
    ("    repeat 2 {\n        buffer b = ones([n])\n    }", "E0107", "cannot be declared inside a loop"),
    ("    buffer(persistent=1) b = ones([n])", "E0301", "persistent"),
    ("    buffer(persist=false) b = ones([n])", "E0305", "persistent"),
    ("    buffer training = ones([n])", "E0211", "cannot name a `buffer`"),
])
def test_buffer_diagnostics(tmp_path, body, code, words):
    text = _error(tmp_path, body)
    assert f"error[{code}]" in text and words in text and "Traceback" not in text


def test_buffer_is_a_reserved_word(tmp_path):
    text = _error(tmp_path, "    buffer = ones([n])")
    assert "E0101" in text and "`buffer` is a reserved word" in text and "buf = ..." in text


TRAIN = """
model Scaled(hidden: int = 16) {
    input x: [B, 1, 8, 8]
    buffer mean = full([1, 1, 8, 8], 0.25)
    buffer(persistent=false) inv_std = full([1, 1, 8, 8], 2.0)
    h = (x - mean) * inv_std
    output h -> Flatten() -> Linear(hidden) -> ReLU() -> Linear(10) as head
}

train p {
    model      = Scaled()
    data       = digits(val=0.2)
    loss       = cross_entropy(out, batch.y)
    optimizer  = Adam(lr=3e-3)
    epochs     = 2
    batch_size = 256
    seed       = 0
}
"""


def test_a_persistent_buffer_is_checkpointed_and_resume_is_exact(tmp_path):
    from dslc.runtime import checkpoint
    path = tmp_path / "plan.dl"
    path.write_text(TRAIN)

    def run(out, **opts):
        return train(str(path), None, Options(out=str(tmp_path / out), progress=False, **opts), out=lambda _: None)
    run("whole")
    run("parts", max_epochs=1)
    run("parts", resume=True)
    last = {}
    for out in ("whole", "parts"):
        found = checkpoint.checkpoints(os.path.join(tmp_path, out, "checkpoints"))[-1][2]
        last[out] = checkpoint.load(found)[0]
    assert "mean" in last["whole"] and "inv_std" not in last["whole"]
    assert torch.equal(last["whole"]["mean"], torch.full((1, 1, 8, 8), 0.25))
    assert last["whole"].keys() == last["parts"].keys()
    assert all(torch.equal(last["whole"][k], last["parts"][k]) for k in last["whole"])
    net = dslc.load(str(path)).build("Scaled")
    net.load_state_dict(last["whole"])
    assert torch.equal(net.inv_std, torch.full((1, 1, 8, 8), 2.0))
