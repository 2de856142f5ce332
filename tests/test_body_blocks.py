"""A `repeat` whose body spells out several layers is one block per pass (frontend/bodyblocks.py).

The language contract's GPT writes its layer inline in `repeat depth { ... }`. The generated module
keeps the passes as an nn.ModuleList of one class, its count a live argument, as nanoGPT writes its
Block; proven against a GPT written by hand in nanoGPT's layout at depths the file was not compiled for.
"""
from __future__ import annotations

import os
import re

import pytest
import torch
import torch.nn.functional as F
from support import ROOT
from torch import nn

import dslc

torch.set_num_threads(1)
SMALL = {"vocab": 50, "context": 16, "dim": 32, "heads": 4}


class TwinAttention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.c_attn, self.c_proj, self.heads = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim), heads

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = (z.view(b, t, self.heads, -1).transpose(1, 2) for z in self.c_attn(x).split(c, dim=2))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.c_proj(y.transpose(1, 2).reshape(b, t, c))


class TwinBlock(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.ln_1, self.attn, self.ln_2 = nn.LayerNorm(dim), TwinAttention(dim, heads), nn.LayerNorm(dim)
        self.c_fc, self.c_proj = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.c_proj(F.gelu(self.c_fc(self.ln_2(x))))


class TwinGPT(nn.Module):
    def __init__(self, vocab: int, context: int, dim: int, depth: int, heads: int):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, dim), nn.Embedding(context, dim)
        self.h = nn.ModuleList([TwinBlock(dim, heads) for _ in range(depth)])
        self.ln_f = nn.LayerNorm(dim)

    def forward(self, idx):
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
        for block in self.h:
            x = block(x)
        return F.linear(self.ln_f(x), self.wte.weight)


@pytest.fixture(scope="module")
def contract():
    prog = dslc.load(os.path.join(ROOT, "examples", "language.dl"))
    return prog, prog.source(["GPT"])


def test_the_contract_gpt_is_a_module_list_of_one_block_class(contract):
    _, src = contract
    assert "self.gpt_blocks = nn.ModuleList([GPTBlock(dim, heads) for _ in range(depth)])" in src
    assert "for block in self.gpt_blocks:" in src and "was compiled for depth" not in src
    assert len(re.findall(r"^class GPTBlock\(nn\.Module\):", src, re.M)) == 1
    assert '"""One pass of `GPT`\'s `repeat` (language.dl:192).' in src


@pytest.mark.parametrize("depth", [1, 3])
def test_the_generated_gpt_builds_other_depths_like_a_hand_written_one(contract, depth):
    prog, src = contract
    module = dslc.api.exec_source(src, "<contract gpt>")
    torch.manual_seed(0)
    mine = module.GPT(depth=depth, **SMALL).eval()
    twin = TwinGPT(depth=depth, **SMALL).eval()
    keys = list(mine.state_dict())
    assert keys[2:7] == ["gpt_blocks.0.norm1.weight", "gpt_blocks.0.norm1.bias",
                         "gpt_blocks.0.causal_self_attention.fc1.weight",
                         "gpt_blocks.0.causal_self_attention.fc1.bias",
                         "gpt_blocks.0.causal_self_attention.fc2.weight"]
    assert [v.shape for v in mine.state_dict().values()] == [v.shape for v in twin.state_dict().values()]
    twin.load_state_dict(dict(zip(twin.state_dict(), mine.state_dict().values())))
    tokens = torch.randint(0, SMALL["vocab"], (2, 10))
    with torch.no_grad():
        torch.testing.assert_close(mine(tokens), twin(tokens), rtol=1e-5, atol=1e-5)
    # dslc's own build at that depth: the same keys and, from the same weights, the same outputs
    built = prog.build("GPT", depth=depth, **SMALL).eval()
    assert list(built.state_dict()) == keys
    built.load_state_dict(mine.state_dict())
    with torch.no_grad():
        assert torch.equal(built(tokens), mine(tokens))


def _source(tmp_path, body: str) -> str:
    path = tmp_path / "m.dl"
    path.write_text("model M(dim: int = 8, depth: int = 3) {\n    input x: [B, dim]\n    y = x -> Linear(dim)\n"
                    f"    h = x\n    repeat depth {{\n{body}    }}\n    output h\n}}\n")
    return dslc.load(str(path)).source()


def test_a_body_that_reads_another_tensor_or_makes_one_layer_runs_as_written(tmp_path):
    two = "        h = (h -> Linear(dim) -> ReLU() -> Linear(dim)) + h\n"
    assert "MBlock(dim) for _ in range(depth)" in _source(tmp_path, two)
    # `y` is another tensor of the model: the passes stay unrolled, as before
    reads_y = "        h = (h -> Linear(dim) -> ReLU() -> Linear(dim)) + y\n"
    assert "class MBlock" not in _source(tmp_path, reads_y)
    # one layer a pass is a list of that layer already
    one = "        h = h -> Linear(dim)\n"
    src = _source(tmp_path, one)
    assert "class MBlock" not in src and "nn.ModuleList([nn.Linear(dim, dim) for _ in range(depth)])" in src


def _error(tmp_path, text: str) -> str:
    """The diagnostics of a spec whose model `M` does not check."""
    path = tmp_path / "bad.dl"
    path.write_text(text)
    with pytest.raises(dslc.diagnostics.DslcError) as e:
        dslc.load(str(path)).graph("M")
    return str(e.value)


def test_an_error_in_the_body_points_at_the_body_and_the_repeat(tmp_path):
    text = _error(tmp_path, "model M(dim: int = 8, depth: int = 3) {\n    input x: [B, dim]\n    h = x\n"
                            "    repeat depth {\n        h = h + (h -> Linear(3))\n        h = h -> Linear(dim)\n"
                            "    }\n    output h\n}\n")
    assert "bad.dl:5:13: error[E0401]: cannot broadcast [B, 8] with [B, 3]" in text
    assert "in a pass of the `repeat` at" in text and "bad.dl:4:5" in text and "MBlock" not in text


def test_a_body_with_a_nested_repeat_is_one_block_too(tmp_path):
    """The outer pass holds an inner repeat (itself a block a pass): both counts stay live, and the
    generated class builds other counts with dslc's parameter counts."""
    path = tmp_path / "n.dl"
    path.write_text("model N(d: int = 4, n: int = 2, inner: int = 2) {\n    input x: [B, d]\n    h = x\n"
                    "    repeat n {\n        h = h -> LayerNorm() -> Linear(d)\n        repeat inner {\n"
                    "            h = h -> Linear(d) -> ReLU()\n            h = h -> Linear(d)\n        }\n    }\n"
                    "    output h\n}\n")
    prog = dslc.load(str(path))
    src = prog.source()
    assert "was compiled for" not in src and "for _ in range(n)" in src and "for _ in range(inner)" in src
    module = dslc.api.exec_source(src, "<nested>")
    for n, inner in ((0, 1), (1, 3), (3, 2)):
        mine = module.N(n=n, inner=inner)
        built = prog.build("N", n=n, inner=inner)
        assert list(mine.state_dict()) == list(built.state_dict())
        assert sum(p.numel() for p in mine.parameters()) == n * (8 + 20 + inner * 40)   # by hand: d = 4


def test_a_recursive_body_names_only_the_users_blocks(tmp_path):
    text = _error(tmp_path, "model M(d: int = 4, n: int = 3) {\n    input x: [B, d]\n    h = x\n    repeat n {\n"
                            "        h = h -> Linear(d)\n        h = h -> M()\n    }\n    output h\n}\n")
    assert "E0207" in text and "the cycle: M -> M" in text and "MBlock" not in text
