"""The zoo's multimodal and diffusion models: CLIP (specs/clip.dl) and a DDPM U-Net (specs/ddpm.dl).

tests/test_specs.py runs every case in CASES (parameter counts, meta-device shapes and layer
calls, readable state-dict keys and, with `small`, a CPU forward against the twin). The twins
use plain torch.nn and follow the papers and their reference code, not dslc's output: OpenAI's
CLIP (openai/CLIP, clip/model.py) and the PyTorch port of the DDPM U-Net
(pesser/pytorch_diffusion, itself a transcription of hojonathanho/diffusion). Their module
names are those implementations'; `clip_key` and `ddpm_key` translate dslc's state-dict keys
into them. The tests at the end render both models, summarize them as JSON, and check what
the cases cannot state: the published sizes, the causal text tower, and the timestep
embedding at real timesteps.
"""
from __future__ import annotations

import math
import os
import re

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from torch import nn
from zoo_case import SPECS, Case, check_header_counts, render_and_summary

import dslc
from dslc.cli import main

# ====================================================================== CLIP (specs/clip.dl)


class ResidualAttentionBlockTwin(nn.Module):
    """CLIP's pre-LN ResidualAttentionBlock. Its nn.MultiheadAttention is written out as the same
    fused q/k/v projection (`in_proj`), scaled dot-product attention and output projection, so that
    the text tower can be causal without a mask buffer; the MLP keeps CLIP's c_fc/c_proj names,
    with nn.GELU (open_clip's choice) for OpenAI's QuickGELU."""

    def __init__(self, width: int, heads: int, causal: bool):
        super().__init__()
        self.heads, self.causal = heads, causal
        self.attn = nn.ModuleDict({"in_proj": nn.Linear(width, 3 * width), "out_proj": nn.Linear(width, width)})
        self.ln_1 = nn.LayerNorm(width)
        self.mlp = nn.Sequential()
        self.mlp.add_module("c_fc", nn.Linear(width, 4 * width))
        self.mlp.add_module("gelu", nn.GELU())
        self.mlp.add_module("c_proj", nn.Linear(4 * width, width))
        self.ln_2 = nn.LayerNorm(width)

    def attention(self, x):
        n, length, width = x.shape
        q, k, v = self.attn["in_proj"](x).split(width, dim=-1)
        q, k, v = (z.view(n, length, self.heads, width // self.heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        return self.attn["out_proj"](y.transpose(1, 2).reshape(n, length, width))

    def forward(self, x):
        x = x + self.attention(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class TransformerTwin(nn.Module):
    def __init__(self, width: int, layers: int, heads: int, causal: bool = False):
        super().__init__()
        self.resblocks = nn.Sequential(*[ResidualAttentionBlockTwin(width, heads, causal) for _ in range(layers)])

    def forward(self, x):
        return self.resblocks(x)


class VisionTransformerTwin(nn.Module):
    """CLIP's VisionTransformer; `proj` is an nn.Linear without bias (OpenAI: `x @ self.proj`)."""

    def __init__(self, input_resolution: int, patch_size: int, width: int, layers: int, heads: int,
                 output_dim: int):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size, bias=False)
        scale = width ** -0.5
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn((input_resolution // patch_size) ** 2 + 1,
                                                                     width))
        self.ln_pre = nn.LayerNorm(width)
        self.transformer = TransformerTwin(width, layers, heads)
        self.ln_post = nn.LayerNorm(width)
        self.proj = nn.Linear(width, output_dim, bias=False)

    def forward(self, x):
        x = self.conv1(x)                                        # [n, width, grid, grid]
        x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)  # [n, grid², width]
        cls = self.class_embedding.to(x.dtype) + torch.zeros(x.shape[0], 1, x.shape[-1], dtype=x.dtype,
                                                             device=x.device)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
        x = self.transformer(self.ln_pre(x))
        return self.proj(self.ln_post(x[:, 0, :]))


class CLIPTwin(nn.Module):
    """OpenAI's CLIP (Radford et al. 2021) with a ViT image tower. The text positions are an
    nn.Embedding (OpenAI: a parameter sliced to the length), and the text features are read at the
    last position, where CLIP reads the [EOT] token (`text.argmax(dim=-1)`): the spec's texts end there."""

    def __init__(self, image: int = 32, patch: int = 8, vision_dim: int = 64, vision_depth: int = 2,
                 vision_heads: int = 4, vocab: int = 1000, context: int = 16, text_dim: int = 64,
                 text_depth: int = 2, text_heads: int = 4, embed: int = 32):
        super().__init__()
        self.visual = VisionTransformerTwin(image, patch, vision_dim, vision_depth, vision_heads, embed)
        self.transformer = TransformerTwin(text_dim, text_depth, text_heads, causal=True)
        self.token_embedding = nn.Embedding(vocab, text_dim)
        self.positional_embedding = nn.Embedding(context, text_dim)
        self.ln_final = nn.LayerNorm(text_dim)
        self.text_projection = nn.Linear(text_dim, embed, bias=False)
        self.logit_scale = nn.Parameter(torch.ones([]) * math.log(1 / 0.07))

    def encode_image(self, image):
        return self.visual(image)

    def encode_text(self, text):
        x = self.token_embedding(text) + self.positional_embedding(torch.arange(text.shape[1], device=text.device))
        x = self.transformer(x)
        # OpenAI normalizes every token, then reads one: the same, as LayerNorm acts on each token alone
        return self.text_projection(self.ln_final(x[:, -1]))

    def forward(self, image, text):
        image_features = self.encode_image(image)
        text_features = self.encode_text(text)
        image_features = image_features / image_features.norm(dim=1, keepdim=True)
        text_features = text_features / text_features.norm(dim=1, keepdim=True)
        logit_scale = self.logit_scale.exp()
        logits_per_image = logit_scale * image_features @ text_features.t()
        return logits_per_image, logits_per_image.t()


def clip_key(key: str) -> str:
    """A CLIP state-dict key in CLIPTwin's (OpenAI's) names."""
    key = re.sub(r"^(visual\.|text\.)resblocks\.", lambda m: f"{'visual.' if m[1] == 'visual.' else ''}transformer.resblocks.",
                 key)
    key = re.sub(r"\.(in_proj|out_proj)\.", r".attn.\1.", key)
    key = re.sub(r"\.ln(\d)\.", r".ln_\1.", key)
    key = re.sub(r"\.(c_fc|c_proj)\.", r".mlp.\1.", key)
    return key.removeprefix("text.")


# ====================================================================== DDPM (specs/ddpm.dl)


def get_timestep_embedding(timesteps, embedding_dim: int):
    """DDPM's sinusoidal timestep embedding (from Fairseq, via the Tensor2Tensor one)."""
    assert len(timesteps.shape) == 1
    half_dim = embedding_dim // 2
    emb = math.log(10000) / (half_dim - 1)
    emb = torch.exp(torch.arange(half_dim, dtype=torch.float32, device=timesteps.device) * -emb)
    emb = timesteps.float()[:, None] * emb[None, :]
    return torch.cat([torch.sin(emb), torch.cos(emb)], dim=1)


def nonlinearity(x):
    return x * torch.sigmoid(x)  # swish


def normalize(in_channels: int, groups: int = 32):
    return nn.GroupNorm(num_groups=groups, num_channels=in_channels, eps=1e-6, affine=True)


class Upsample(nn.Module):
    def __init__(self, in_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, in_channels, kernel_size=3, stride=1, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Downsample(nn.Module):
    """A stride-2 3×3 convolution padded by 1 on every side, as openai/improved-diffusion pads it
    (the TF original pads only the bottom and right)."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, in_channels, kernel_size=3, stride=2, padding=1)

    def forward(self, x):
        return self.conv(x)


class ResnetBlock(nn.Module):
    def __init__(self, *, in_channels: int, out_channels: int, temb_channels: int, dropout: float, groups: int):
        super().__init__()
        self.norm1 = normalize(in_channels, groups)
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1)
        self.temb_proj = nn.Linear(temb_channels, out_channels)
        self.norm2 = normalize(out_channels, groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, stride=1, padding=1)
        if in_channels != out_channels:
            self.nin_shortcut = nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=1, padding=0)

    def forward(self, x, temb):
        h = self.conv1(nonlinearity(self.norm1(x)))
        h = h + self.temb_proj(nonlinearity(temb))[:, :, None, None]
        h = self.conv2(self.dropout(nonlinearity(self.norm2(h))))
        if hasattr(self, "nin_shortcut"):
            x = self.nin_shortcut(x)
        return x + h


class AttnBlock(nn.Module):
    def __init__(self, in_channels: int, groups: int):
        super().__init__()
        self.norm = normalize(in_channels, groups)
        self.q = nn.Conv2d(in_channels, in_channels, kernel_size=1)
        self.k = nn.Conv2d(in_channels, in_channels, kernel_size=1)
        self.v = nn.Conv2d(in_channels, in_channels, kernel_size=1)
        self.proj_out = nn.Conv2d(in_channels, in_channels, kernel_size=1)

    def forward(self, x):
        h_ = self.norm(x)
        q, k, v = self.q(h_), self.k(h_), self.v(h_)
        b, c, h, w = q.shape
        q = q.reshape(b, c, h * w).permute(0, 2, 1)   # b, hw, c
        k = k.reshape(b, c, h * w)                    # b, c, hw
        w_ = torch.bmm(q, k) * (int(c) ** (-0.5))     # b, hw (queries), hw (keys)
        w_ = torch.softmax(w_, dim=2)
        v = v.reshape(b, c, h * w)
        h_ = torch.bmm(v, w_.permute(0, 2, 1))        # b, c, hw
        return x + self.proj_out(h_.reshape(b, c, h, w))


class DDPMUNetTwin(nn.Module):
    """pesser/pytorch_diffusion's `Model` (Ho et al. 2020's U-Net). The arguments are the spec's:
    base = ch, mults = ch_mult, blocks = num_res_blocks, and `attention` marks the levels whose
    resolution is in attn_resolutions."""

    def __init__(self, channels: int = 3, base: int = 32, mults=(1, 2, 2), blocks: int = 1,
                 attention=(False, True, False), groups: int = 32, dropout: float = 0.1, resolution: int = 32):
        super().__init__()
        ch, ch_mult, num_res_blocks = base, tuple(mults), blocks
        attn_resolutions = [resolution // 2 ** i for i, a in enumerate(attention) if a]
        self.ch = ch
        self.temb_ch = ch * 4
        self.num_resolutions = len(ch_mult)
        self.num_res_blocks = num_res_blocks

        def res(i, o):
            return ResnetBlock(in_channels=i, out_channels=o, temb_channels=self.temb_ch, dropout=dropout,
                               groups=groups)

        self.temb = nn.Module()
        self.temb.dense = nn.ModuleList([nn.Linear(ch, self.temb_ch), nn.Linear(self.temb_ch, self.temb_ch)])
        self.conv_in = nn.Conv2d(channels, ch, kernel_size=3, stride=1, padding=1)

        curr_res = resolution
        in_ch_mult = (1,) + ch_mult
        self.down = nn.ModuleList()
        for i_level in range(self.num_resolutions):
            block, attn = nn.ModuleList(), nn.ModuleList()
            block_in, block_out = ch * in_ch_mult[i_level], ch * ch_mult[i_level]
            for _ in range(num_res_blocks):
                block.append(res(block_in, block_out))
                block_in = block_out
                if curr_res in attn_resolutions:
                    attn.append(AttnBlock(block_in, groups))
            down = nn.Module()
            down.block, down.attn = block, attn
            if i_level != self.num_resolutions - 1:
                down.downsample = Downsample(block_in)
                curr_res = curr_res // 2
            self.down.append(down)

        self.mid = nn.Module()
        self.mid.block_1 = res(block_in, block_in)
        self.mid.attn_1 = AttnBlock(block_in, groups)
        self.mid.block_2 = res(block_in, block_in)

        self.up = nn.ModuleList()
        for i_level in reversed(range(self.num_resolutions)):
            block, attn = nn.ModuleList(), nn.ModuleList()
            block_out = ch * ch_mult[i_level]
            skip_in = ch * ch_mult[i_level]
            for i_block in range(num_res_blocks + 1):
                if i_block == num_res_blocks:
                    skip_in = ch * in_ch_mult[i_level]
                block.append(res(block_in + skip_in, block_out))
                block_in = block_out
                if curr_res in attn_resolutions:
                    attn.append(AttnBlock(block_in, groups))
            up = nn.Module()
            up.block, up.attn = block, attn
            if i_level != 0:
                up.upsample = Upsample(block_in)
                curr_res = curr_res * 2
            self.up.insert(0, up)  # prepend to get consistent order

        self.norm_out = normalize(block_in, groups)
        self.conv_out = nn.Conv2d(block_in, channels, kernel_size=3, stride=1, padding=1)

    def forward(self, x, t):
        temb = get_timestep_embedding(t, self.ch)
        temb = self.temb.dense[1](nonlinearity(self.temb.dense[0](temb)))

        hs = [self.conv_in(x)]
        for i_level in range(self.num_resolutions):
            for i_block in range(self.num_res_blocks):
                h = self.down[i_level].block[i_block](hs[-1], temb)
                if len(self.down[i_level].attn) > 0:
                    h = self.down[i_level].attn[i_block](h)
                hs.append(h)
            if i_level != self.num_resolutions - 1:
                hs.append(self.down[i_level].downsample(hs[-1]))

        h = hs[-1]
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h, temb)), temb)

        for i_level in reversed(range(self.num_resolutions)):
            for i_block in range(self.num_res_blocks + 1):
                h = self.up[i_level].block[i_block](torch.cat([h, hs.pop()], dim=1), temb)
                if len(self.up[i_level].attn) > 0:
                    h = self.up[i_level].attn[i_block](h)
            if i_level != 0:
                h = self.up[i_level].upsample(h)

        return self.conv_out(nonlinearity(self.norm_out(h)))


def ddpm_names(mults=(1, 2, 2), blocks: int = 1, attention=(False, True, False)) -> dict:
    """dslc's layer names (numbered in the order the spec applies them) → the twin's, for one configuration."""
    names = {"temb_dense1": "temb.dense.0", "temb_dense2": "temb.dense.1"}
    count = {"resnet_block": 0, "attn_block": 0, "downsample": 0, "upsample_conv": 0}

    def add(kind: str, theirs: str):
        count[kind] += 1
        names[f"{kind}{count[kind]}"] = theirs

    for level in range(len(mults)):
        for i in range(blocks):
            add("resnet_block", f"down.{level}.block.{i}")
            if attention[level]:
                add("attn_block", f"down.{level}.attn.{i}")
        if level < len(mults) - 1:
            add("downsample", f"down.{level}.downsample")
    add("resnet_block", "mid.block_1")
    add("attn_block", "mid.attn_1")
    add("resnet_block", "mid.block_2")
    for level in reversed(range(len(mults))):
        for i in range(blocks + 1):
            add("resnet_block", f"up.{level}.block.{i}")
            if attention[level]:
                add("attn_block", f"up.{level}.attn.{i}")
        if level > 0:
            add("upsample_conv", f"up.{level}.upsample")
    return names


_DDPM_NAMES = ddpm_names()


def ddpm_key(key: str) -> str:
    """A DDPMUNet state-dict key (at the default configuration) in DDPMUNetTwin's names."""
    first, _, rest = key.partition(".")
    return f"{_DDPM_NAMES.get(first, first)}.{rest}"


# ====================================================================== the cases

CLIP_VIT_B32 = {"image": 224, "patch": 32, "vision_dim": 768, "vision_depth": 12, "vision_heads": 12,
                "vocab": 49408, "context": 77, "text_dim": 512, "text_depth": 12, "text_heads": 8, "embed": 512}
DDPM_CIFAR10 = {"base": 128, "mults": [1, 2, 2, 2], "blocks": 2, "attention": [False, True, False, False]}

CASES = [
    Case("clip.dl", "CLIP", CLIPTwin, (("B", 3, 32, 32), (("B", "T"), torch.long)),
         names=("logit_scale", "visual.class_embedding", "visual.positional_embedding", "visual.conv1.weight",
                "visual.proj.weight", "text.token_embedding.weight", "text.text_projection.weight"),
         small={}, rename=clip_key),
    Case("ddpm.dl", "DDPMUNet", DDPMUNetTwin, (("B", 3, 32, 32), ("B",)),
         names=("temb_dense1.weight", "conv_in.weight", "resnet_block2.nin_shortcut.weight", "attn_block1.q.weight",
                "attn_block1.proj_out.weight", "downsample1.conv.weight", "norm_out.weight", "conv_out.weight"),
         small={}, rename=ddpm_key),
]


# ====================================================================== tests of these specs

MODELS = sorted({(c.file, c.model) for c in CASES})


@pytest.mark.parametrize("file,model", MODELS, ids=[f"{f[:-3]}-{m}" for f, m in MODELS])
def test_render_and_summary(file, model, tmp_path):
    render_and_summary(file, model, tmp_path)


@pytest.mark.parametrize("file", sorted({f for f, _ in MODELS}))
def test_header_gives_each_models_parameter_count(file):
    check_header_counts(file)


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_clip_vit_b32_is_openai_sized():
    """With ViT-B/32's sizes, CLIP has OpenAI's 151,277,313 parameters (the header says so)."""
    with torch.device("meta"):
        mine = dslc.load(os.path.join(SPECS, "clip.dl")).build("CLIP", **CLIP_VIT_B32)
        twin = CLIPTwin(**CLIP_VIT_B32)
    assert _count(mine) == _count(twin) == 151_277_313
    assert {clip_key(k): tuple(v.shape) for k, v in mine.state_dict().items()} == \
        {k: tuple(v.shape) for k, v in twin.state_dict().items()}


def test_ddpm_cifar10_is_paper_sized():
    """With the paper's CIFAR-10 configuration, the U-Net has its 35.7M (35,746,307) parameters."""
    with torch.device("meta"):
        mine = dslc.load(os.path.join(SPECS, "ddpm.dl")).build("DDPMUNet", **DDPM_CIFAR10)
        twin = DDPMUNetTwin(**DDPM_CIFAR10)
    assert _count(mine) == _count(twin) == 35_746_307
    names = ddpm_names(DDPM_CIFAR10["mults"], DDPM_CIFAR10["blocks"], DDPM_CIFAR10["attention"])
    renamed = {}
    for key, value in mine.state_dict().items():
        first, _, rest = key.partition(".")
        renamed[f"{names.get(first, first)}.{rest}"] = tuple(value.shape)
    assert renamed == {k: tuple(v.shape) for k, v in twin.state_dict().items()}


def test_clip_logit_scale_starts_at_the_papers_temperature():
    net = dslc.load(os.path.join(SPECS, "clip.dl")).build("CLIP", seed=0)
    assert net.logit_scale.shape == ()
    torch.testing.assert_close(net.logit_scale.exp(), torch.tensor(1 / 0.07))


def test_clip_text_tower_is_causal():
    """Each text position sees only those up to it: a prefix's states are the full text's first states,
    and changing a later token leaves the earlier states alone."""
    net = dslc.load(os.path.join(SPECS, "clip.dl")).build("CLIP", seed=0).eval()
    states = []
    net.text.resblocks[1].register_forward_hook(lambda m, args, out: states.append(out))
    tokens = torch.randint(0, 1000, (2, 7))
    changed = tokens.clone()
    changed[:, 5] = (changed[:, 5] + 1) % 1000
    with torch.no_grad():
        net.text(tokens)
        net.text(tokens[:, :4])
        net.text(changed)
    full, prefix, other = states
    torch.testing.assert_close(prefix, full[:, :4])
    torch.testing.assert_close(other[:, :5], full[:, :5])
    assert not torch.allclose(other[:, 5:], full[:, 5:])


def test_clip_embeddings_are_unit_vectors():
    """logits / exp(logit_scale) are cosine similarities: in [-1, 1]."""
    net = dslc.load(os.path.join(SPECS, "clip.dl")).build("CLIP", seed=0).eval()
    with torch.no_grad():
        logits_per_image, logits_per_text = net(torch.rand(3, 3, 32, 32), torch.randint(0, 1000, (3, 5)))
    assert logits_per_image.shape == (3, 3)
    torch.testing.assert_close(logits_per_text, logits_per_image.T)
    cosines = logits_per_image / net.logit_scale.exp()
    assert cosines.abs().max() <= 1 + 1e-5


def test_ddpm_timestep_embedding_matches_at_real_timesteps():
    """At DDPM's timesteps 0 .. 999 the sinusoids turn fast: the embedding is get_timestep_embedding's
    exactly, and the whole U-Net still matches its twin."""
    from test_specs import (  # at run time: test_specs imports this module
        copy_weights,
        liven,
    )
    mine = dslc.load(os.path.join(SPECS, "ddpm.dl")).build("DDPMUNet", seed=0).eval()
    t = torch.tensor([0.0, 1.0, 250.0, 999.0])
    with torch.no_grad():
        torch.testing.assert_close(mine.timestep_embedding(t), get_timestep_embedding(t, 32), rtol=0, atol=0)
    twin = DDPMUNetTwin().eval()
    liven(mine)
    copy_weights(mine, twin, ddpm_key)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(mine(x, t), twin(x, t), rtol=1e-4, atol=1e-4)


def test_clip_loss_checks_in_a_plan(tmp_path):
    """clip_loss reduces CLIP's two [B, B] logits against the targets 0 .. B - 1 to one number, so a plan
    over (images, texts) pairs checks."""
    import numpy as np
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "pairs.npz", images=rng.random((8, 3, 32, 32)).astype(np.float32),
             texts=rng.integers(0, 1000, (8, 6)))
    plan = tmp_path / "plan.dl"
    plan.write_text(f'import "{os.path.join(SPECS, "clip.dl")}"\n\n'
                    "train pairs {\n    model = CLIP()\n    data = npz(\"pairs.npz\")\n    loss = clip_loss\n"
                    "    optimizer = AdamW(lr=1e-3)\n    epochs = 1\n}\n", encoding="utf-8")
    r = CliRunner().invoke(main, ["check", str(plan)])
    assert r.exit_code == 0, r.output
