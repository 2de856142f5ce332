"""docs/language.md's "Coming from PyTorch": its example model against the same model written
with the PyTorch idioms the table pairs it with (state dicts load both ways, bit-equal forward),
and the generated class at other parameter values."""
from __future__ import annotations

import math
import os
import re

import torch
from support import ROOT, unwrapped
from test_buffers import CausalSelfAttention as NanoGPTAttention  # nanoGPT's own layout
from torch import nn

import dslc


class TaggerTwin(nn.Module):
    def __init__(self, vocab: int = 100, dim: int = 32, heads: int = 4, depth: int = 2, tags: int = 5):
        super().__init__()
        self.register_buffer("scale", torch.full((1,), math.sqrt(dim)), persistent=False)
        self.embed = nn.Embedding(vocab, dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.layers = nn.ModuleList([nn.Linear(dim, dim) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, tags)

    def forward(self, tokens):
        x = self.embed(tokens) * self.scale
        pad = tokens == 0
        x = x.masked_fill(pad.unsqueeze(-1), 0.0)
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        x = x + self.attn(q, k, v, key_padding_mask=pad, need_weights=False)[0]
        for layer in self.layers:
            x = layer(x)
        return self.head(self.norm(x))


def _example(tmp_path):
    with open(os.path.join(ROOT, "docs", "language.md"), encoding="utf-8") as f:
        text = f.read()
    section = text.split("## Coming from PyTorch")[1].split("\n## ")[0]
    block = re.search(r"```dl\n(.*?)```", section, re.S).group(1)
    path = tmp_path / "tagger.dl"
    path.write_text(block, encoding="utf-8")
    return dslc.load(str(path))


def _tokens(batch: int, steps: int, vocab: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(1, vocab, (batch, steps), generator=g)
    tokens[0, -2:] = 0   # padding at the end of the first row: key_padding_mask matters
    return tokens


def test_the_guide_example_is_the_pytorch_model(tmp_path):
    prog = _example(tmp_path)
    for params in ({}, {"dim": 16, "heads": 2, "depth": 3, "vocab": 50}):
        mine = prog.build("Tagger", seed=0, **params).eval()
        twin = TaggerTwin(**params).eval()
        assert list(mine.state_dict()) == list(twin.state_dict())
        twin.load_state_dict(mine.state_dict())
        mine.load_state_dict(twin.state_dict())
        tokens = _tokens(3, 7, params.get("vocab", 100))
        with torch.no_grad():
            assert torch.equal(mine(tokens), twin(tokens))


def test_the_class_compiled_at_the_defaults_serves_other_values(tmp_path):
    """The buffer `full([1], sqrt(dim))` is `torch.full((1,), math.sqrt(dim))` in the constructor, not
    the number 5.656854249492381 of dim = 32."""
    prog = _example(tmp_path)
    src = prog.source()
    assert "torch.full((1,), math.sqrt(dim))" in src
    torch.manual_seed(0)
    mine = prog.module().Tagger(dim=16, heads=2).eval()
    built = prog.build("Tagger", seed=0, dim=16, heads=2).eval()
    tokens = _tokens(2, 5, 100)
    with torch.no_grad():
        assert torch.equal(mine(tokens), built(tokens))
    assert torch.equal(mine.scale, torch.full((1,), 4.0))


def test_fills_and_ranges_of_parameters_stay_expressions(tmp_path):
    path = tmp_path / "m.dl"
    path.write_text("""
model M(n: int = 4, start: int = 0, v: float = 0.5) {
    input x: [B, n]
    a = full([n], float(n)) + full([n], v * 2.0)
    r = float(arange(start, start + n)) / n
    output x * a + r
}
""", encoding="utf-8")
    prog = dslc.load(str(path))
    src = prog.source()
    assert "torch.full((self.n,), float(self.n)" in src and "torch.full((self.n,), self.v * 2.0" in src
    assert "torch.arange(self.start, self.n + self.start, dtype=torch.float32" in src   # start 0 is still written
    x = torch.randn(2, 6)
    other = prog.module().M(n=6, start=2, v=1.5)
    want = x * (torch.full((6,), 6.0) + 3.0) + torch.arange(2, 8).float() / 6
    torch.testing.assert_close(other(x), want, rtol=0, atol=0)
    torch.testing.assert_close(prog.build("M", n=6, start=2, v=1.5)(x), want, rtol=0, atol=0)


# nanoGPT's CausalSelfAttention (model.py, its manual-attention path), as its forward reads:
# torch's method forms (`.view`, `.transpose`, `.masked_fill`, `.size`, `.contiguous`) in a spec.
NANOGPT_ATTENTION = """
block CausalSelfAttention(n_embd: int, n_head: int, block_size: int) {
    input x
    B, T, C = x.size()
    buffer bias = tril(ones([block_size, block_size])).view(1, 1, block_size, block_size)
    q, k, v = x -> Linear(3 * n_embd) as c_attn -> chunk(3, dim=2)
    k = k.view(B, T, n_head, C // n_head).transpose(1, 2)
    q = q.view(B, T, n_head, C // n_head).transpose(1, 2)
    v = v.view(B, T, n_head, C // n_head).transpose(1, 2)
    att = (q @ k.transpose(-2, -1)) * (1.0 / sqrt(k.size(-1)))
    att = att.masked_fill(bias[:, :, :T, :T] == 0, -inf)
    att = att.softmax(dim=-1)
    y = att @ v
    y = y.transpose(1, 2).contiguous().view(B, T, C)
    output y -> Linear(n_embd) as c_proj
}

model Attention(n_embd: int = 48, n_head: int = 6, block_size: int = 16) {
    input x: [B, T, n_embd]
    CausalSelfAttention(n_embd, n_head, block_size) as attn
}
"""


def test_nanogpts_attention_written_with_torchs_method_forms(tmp_path):
    path = tmp_path / "attn.dl"
    path.write_text(NANOGPT_ATTENTION)
    prog = dslc.load(str(path))
    for n_embd, n_head in [(48, 6), (32, 4)]:   # the generated class at another size too
        net = prog.module().Attention(n_embd=n_embd, n_head=n_head).eval()
        twin = NanoGPTAttention(n_embd, n_head, 16).eval()
        twin.load_state_dict({k.removeprefix("attn."): v for k, v in net.state_dict().items()}, strict=True)
        x = torch.randn(2, 11, n_embd)
        with torch.no_grad():
            torch.testing.assert_close(net(x), twin(x), rtol=1e-6, atol=1e-6)
    assert "n_embd % n_head == 0" in prog.source()
    # the mask is computed from block_size, not baked, and registered in one statement as nanoGPT's is
    assert ('self.register_buffer("bias", torch.tril(torch.ones(block_size, block_size)).reshape(1, 1, block_size, '
            'block_size))') in unwrapped(prog.source())
