"""The model zoo in specs/: every model against an independent, hand-written PyTorch twin.

The twins below use plain torch.nn and follow the papers and torchvision's
designs (in torchvision's or nanoGPT's own style where there is one), not
dslc's output. For every model in every spec file the test

- builds the dslc module and its twin on the meta device (no memory, no init
  time) and compares their parameter counts, and both with the published count
  where there is one;
- runs both forward passes on meta tensors and compares the output shapes with
  each other and with the checker's types (`prog.graph(name).outputs`), and
  the input and output shapes of every weighted layer call (a stride on the
  wrong convolution shows there, where counts and outputs agree);
- checks that the state-dict keys are readable names and hold the `as` names.

Every model but the largest defaults (ResNet34, ViT-B/16 and GPT-2 small, which
run shrunk) also runs for real on the CPU: the twin gets the dslc module's
weights and must compute the same outputs, whose shapes must be the checker's.
"""
from __future__ import annotations

import functools
import glob
import os
import re
from collections import OrderedDict
from typing import Callable

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from torch import nn
from zoo_case import SPECS, Case, CifarResNet18Twin

import dslc
from dslc.cli import main

SIZES = {"B": 2, "T": 5, "S": 3, "H": 20, "W": 24}  # run-time batch, sequence (S: a second, source) and image sizes


# ====================================================================== twins
# ---------------------------------------------------------------- MLPs


def digits_mlp_twin(hidden: int, classes: int) -> nn.Module:
    """specs/mlp.dl's MLP: 64 pixels, two hidden ReLU layers."""
    return nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, classes))


def mnist_mlp_twin(hidden: int = 128, classes: int = 10) -> nn.Module:
    """The PyTorch tutorial's MNIST classifier."""
    return nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, hidden), nn.ReLU(), nn.Linear(hidden, classes))


class TwoTowerTwin(nn.Module):
    def __init__(self):
        super().__init__()
        self.left = nn.Linear(32, 64)
        self.right = nn.Linear(32, 64)
        self.score = nn.Linear(128, 1)

    def forward(self, left, right):
        joined = torch.cat([F.relu(self.left(left)), F.relu(self.right(right))], dim=1)
        return torch.sigmoid(self.score(joined))


# ---------------------------------------------------------------- CIFAR ResNet-18 (He et al. 2015, CIFAR form)
# CifarResNet18Twin is in tests/zoo_case.py: the SimCLR twin (tests/zoo_sequence.py) uses it too.


# ---------------------------------------------------------------- ImageNet ResNets (torchvision's design, v1.5)


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)  # v1.5: the stride is on the 3×3
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNetTwin(nn.Module):
    def __init__(self, block, layers: list[int], classes: int = 1000):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, classes)

    def _make_layer(self, block, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(conv1x1(self.inplanes, planes * block.expansion, stride),
                                       nn.BatchNorm2d(planes * block.expansion))
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


# ---------------------------------------------------------------- VGG-16 and AlexNet (torchvision's design)

VGG_D = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


class VGGTwin(nn.Module):
    def __init__(self, cfg=VGG_D, classes: int = 1000, dropout: float = 0.5):
        super().__init__()
        layers, in_channels = [], 3
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(in_channels, v, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
                in_channels = v
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096), nn.ReLU(True), nn.Dropout(p=dropout),
            nn.Linear(4096, 4096), nn.ReLU(True), nn.Dropout(p=dropout),
            nn.Linear(4096, classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


class AlexNetTwin(nn.Module):
    def __init__(self, classes: int = 1000, dropout: float = 0.5):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(64, 192, kernel_size=5, padding=2), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(192, 384, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2))
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Dropout(p=dropout), nn.Linear(256 * 6 * 6, 4096), nn.ReLU(inplace=True),
            nn.Dropout(p=dropout), nn.Linear(4096, 4096), nn.ReLU(inplace=True),
            nn.Linear(4096, classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


# ---------------------------------------------------------------- MobileNetV2 (torchvision's design, width 1.0)


def make_divisible(v: float, divisor: int = 8) -> int:
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


def conv_bn_relu6(inp: int, oup: int, k: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(inp, oup, k, stride, (k - 1) // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(oup), nn.ReLU6(inplace=True))


class InvertedResidual(nn.Module):
    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int):
        super().__init__()
        hidden_dim = int(round(inp * expand_ratio))
        self.use_res_connect = stride == 1 and inp == oup
        layers = [conv_bn_relu6(inp, hidden_dim, k=1)] if expand_ratio != 1 else []
        layers += [conv_bn_relu6(hidden_dim, hidden_dim, stride=stride, groups=hidden_dim),  # depthwise
                   nn.Conv2d(hidden_dim, oup, 1, 1, 0, bias=False), nn.BatchNorm2d(oup)]   # linear projection
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2Twin(nn.Module):
    SETTINGS = [[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 3, 2], [6, 64, 4, 2], [6, 96, 3, 1], [6, 160, 3, 2],
                [6, 320, 1, 1]]

    def __init__(self, classes: int = 1000, dropout: float = 0.2, width_mult: float = 1.0):
        super().__init__()
        input_channel = make_divisible(32 * width_mult)
        self.last_channel = make_divisible(1280 * max(1.0, width_mult))
        features = [conv_bn_relu6(3, input_channel, stride=2)]
        for t, c, n, s in self.SETTINGS:
            output_channel = make_divisible(c * width_mult)
            for i in range(n):
                features.append(InvertedResidual(input_channel, output_channel, s if i == 0 else 1, t))
                input_channel = output_channel
        features.append(conv_bn_relu6(input_channel, self.last_channel, k=1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(p=dropout), nn.Linear(self.last_channel, classes))

    def forward(self, x):
        x = F.adaptive_avg_pool2d(self.features(x), (1, 1))
        return self.classifier(torch.flatten(x, 1))


# ---------------------------------------------------------------- ViT (torchvision's vision_transformer design)


class ViTMLPBlock(nn.Sequential):
    def __init__(self, in_dim: int, mlp_dim: int, dropout: float = 0.0):
        super().__init__(nn.Linear(in_dim, mlp_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(mlp_dim, in_dim),
                         nn.Dropout(dropout))


class EncoderBlock(nn.Module):
    def __init__(self, num_heads: int, hidden_dim: int, mlp_dim: int, eps: float = 1e-6):
        super().__init__()
        self.ln_1 = nn.LayerNorm(hidden_dim, eps=eps)
        self.self_attention = nn.MultiheadAttention(hidden_dim, num_heads, batch_first=True)
        self.dropout = nn.Dropout(0.0)
        self.ln_2 = nn.LayerNorm(hidden_dim, eps=eps)
        self.mlp = ViTMLPBlock(hidden_dim, mlp_dim)

    def forward(self, input):
        x = self.ln_1(input)
        x, _ = self.self_attention(x, x, x, need_weights=False)
        x = self.dropout(x) + input
        return x + self.mlp(self.ln_2(x))


class ViTEncoder(nn.Module):
    def __init__(self, seq_length: int, num_layers: int, num_heads: int, hidden_dim: int, mlp_dim: int,
                 eps: float = 1e-6):
        super().__init__()
        self.pos_embedding = nn.Parameter(torch.empty(1, seq_length, hidden_dim).normal_(std=0.02))
        self.dropout = nn.Dropout(0.0)
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        for i in range(num_layers):
            layers[f"encoder_layer_{i}"] = EncoderBlock(num_heads, hidden_dim, mlp_dim, eps)
        self.layers = nn.Sequential(layers)
        self.ln = nn.LayerNorm(hidden_dim, eps=eps)

    def forward(self, input):
        return self.ln(self.layers(self.dropout(input + self.pos_embedding)))


class ViTTwin(nn.Module):
    """torchvision's VisionTransformer (vit_b_16 at the defaults), its modules named as there."""

    def __init__(self, image: int = 224, patch: int = 16, dim: int = 768, depth: int = 12, heads: int = 12,
                 classes: int = 1000):
        super().__init__()
        self.patch_size, self.hidden_dim = patch, dim
        self.conv_proj = nn.Conv2d(3, dim, kernel_size=patch, stride=patch)
        seq_length = (image // patch) ** 2 + 1
        self.class_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.encoder = ViTEncoder(seq_length, depth, heads, dim, 4 * dim)
        self.heads = nn.Sequential(OrderedDict([("head", nn.Linear(dim, classes))]))

    def forward(self, x):
        n, _, h, w = x.shape
        x = self.conv_proj(x).reshape(n, self.hidden_dim, (h // self.patch_size) * (w // self.patch_size))
        x = x.permute(0, 2, 1)                                   # [n, patches, dim]
        x = torch.cat([self.class_token.expand(n, -1, -1), x], dim=1)
        return self.heads(self.encoder(x)[:, 0])


# ---------------------------------------------------------------- GPT-2 (nanoGPT's design)


class CausalSelfAttention(nn.Module):
    def __init__(self, n_embd: int, n_head: int):
        super().__init__()
        self.c_attn = nn.Linear(n_embd, 3 * n_embd)
        self.c_proj = nn.Linear(n_embd, n_embd)
        self.n_head = n_head

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.c_attn(x).split(c, dim=2)
        q, k, v = (z.view(b, t, self.n_head, c // self.n_head).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.c_proj(y.transpose(1, 2).contiguous().view(b, t, c))


class MLP(nn.Module):
    def __init__(self, n_embd: int):
        super().__init__()
        self.c_fc = nn.Linear(n_embd, 4 * n_embd)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * n_embd, n_embd)

    def forward(self, x):
        return self.c_proj(self.gelu(self.c_fc(x)))


class GPTBlock(nn.Module):
    def __init__(self, n_embd: int, n_head: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd)
        self.attn = CausalSelfAttention(n_embd, n_head)
        self.ln_2 = nn.LayerNorm(n_embd)
        self.mlp = MLP(n_embd)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPTTwin(nn.Module):
    def __init__(self, vocab: int = 50257, context: int = 1024, dim: int = 768, depth: int = 12, heads: int = 12):
        super().__init__()
        self.wte = nn.Embedding(vocab, dim)
        self.wpe = nn.Embedding(context, dim)
        self.h = nn.ModuleList([GPTBlock(dim, heads) for _ in range(depth)])
        self.ln_f = nn.LayerNorm(dim)

    def forward(self, idx):
        pos = torch.arange(idx.shape[1], dtype=torch.long, device=idx.device)
        x = self.wte(idx) + self.wpe(pos)
        for block in self.h:
            x = block(x)
        return F.linear(self.ln_f(x), self.wte.weight)  # the head is the embedding (GPT-2's weight tying)


# ---------------------------------------------------------------- sequence classifiers


class LSTMClassifierTwin(nn.Module):
    def __init__(self, vocab: int = 1000, embed: int = 64, hidden: int = 128, classes: int = 2):
        super().__init__()
        self.embedding = nn.Embedding(vocab, embed)
        self.lstm = nn.LSTM(embed, hidden, num_layers=2, bidirectional=True, dropout=0.5, batch_first=True)
        self.fc = nn.Linear(2 * hidden, classes)

    def forward(self, tokens):
        _, (h, _) = self.lstm(self.embedding(tokens))
        return self.fc(torch.cat([h[-2], h[-1]], dim=1))  # the top layer's forward and backward states


class TransformerClassifierTwin(nn.Module):
    """torch's own post-norm nn.TransformerEncoderLayer stands in for TransformerBlock."""

    def __init__(self, vocab: int = 10000, context: int = 512, dim: int = 128, depth: int = 4, heads: int = 4,
                 classes: int = 2):
        super().__init__()
        self.tok = nn.Embedding(vocab, dim)
        self.pos = nn.Embedding(context, dim)
        self.layers = nn.ModuleList([nn.TransformerEncoderLayer(dim, heads, 4 * dim, 0.1, activation="gelu",
                                                                batch_first=True) for _ in range(depth)])
        self.fc = nn.Linear(dim, classes)

    def forward(self, tokens):
        h = self.tok(tokens) + self.pos(torch.arange(tokens.shape[1], device=tokens.device))
        for layer in self.layers:
            h = layer(h)
        return self.fc(h.mean(dim=1))


def transformer_key(key: str) -> str:
    """A TransformerClassifier state-dict key in TransformerClassifierTwin's names."""
    for mine, theirs in ((".attn.", ".self_attn."), (".fc1.", ".linear1."), (".fc2.", ".linear2.")):
        key = key.replace(mine, theirs)
    return {"embed.weight": "tok.weight", "pos_embed.weight": "pos.weight", "head.weight": "fc.weight",
            "head.bias": "fc.bias"}.get(key, key)


# ---------------------------------------------------------------- generative models


class VAETwin(nn.Module):
    """The PyTorch examples' MNIST VAE, with 256 hidden units."""

    def __init__(self, input_dim: int = 784, latent: int = 20):
        super().__init__()
        self.fc1 = nn.Linear(input_dim, 256)
        self.fc21 = nn.Linear(256, latent)
        self.fc22 = nn.Linear(256, latent)
        self.fc3 = nn.Linear(latent, 256)
        self.fc4 = nn.Linear(256, input_dim)

    def forward(self, x):
        h = F.relu(self.fc1(x))
        mu, log_var = self.fc21(h), self.fc22(h)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * log_var) if self.training else mu
        return torch.sigmoid(self.fc4(F.relu(self.fc3(z)))), mu, log_var


def generator_twin(latent: int = 100, out: int = 784) -> nn.Module:
    return nn.Sequential(nn.Linear(latent, 256), nn.LeakyReLU(0.2), nn.Linear(256, 512), nn.LeakyReLU(0.2),
                         nn.Linear(512, out), nn.Tanh())


def discriminator_twin(inp: int = 784) -> nn.Module:
    return nn.Sequential(nn.Linear(inp, 512), nn.LeakyReLU(0.2), nn.Linear(512, 256), nn.LeakyReLU(0.2),
                         nn.Linear(256, 1), nn.Sigmoid())


# ---------------------------------------------------------------- segmentation


class UNetTwin(nn.Module):
    """The U-Net of milesial/Pytorch-UNet (transposed-convolution up-sampling), written here
    from its design: DoubleConv = (conv 3×3 → BN → ReLU) × 2; four max-pool steps down; four
    steps up that halve the channels with a 2×2 transposed conv and concatenate the skip."""

    def __init__(self, classes: int = 2, base: int = 64, channels: int = 3):
        super().__init__()

        def double(i, o):
            return nn.Sequential(nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(),
                                 nn.Conv2d(o, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU())
        self.inc = double(channels, base)
        self.downs = nn.ModuleList([nn.Sequential(nn.MaxPool2d(2), double(base * 2 ** i, base * 2 ** (i + 1)))
                                    for i in range(4)])
        self.ups = nn.ModuleList()
        for i in reversed(range(4)):
            c = base * 2 ** (i + 1)
            self.ups.append(nn.ModuleDict({"up": nn.ConvTranspose2d(c, c // 2, 2, stride=2),
                                           "conv": double(c, c // 2)}))
        self.outc = nn.Conv2d(base, classes, 1)

    def forward(self, x):
        levels = [self.inc(x)]
        for down in self.downs:
            levels.append(down(levels[-1]))
        h = levels.pop()
        for up in self.ups:
            h = up["conv"](torch.cat([levels.pop(), up["up"](h)], dim=1))
        return self.outc(h)


# ---------------------------------------------------------------- transfer learning


def digits_classifier_twin(classes: int = 10) -> nn.Module:
    def cbr(i, o, stride=1):
        return nn.Sequential(nn.Conv2d(i, o, 3, stride=stride, padding=1), nn.BatchNorm2d(o), nn.ReLU())
    backbone = nn.Sequential(cbr(1, 32), cbr(32, 64, 2), cbr(64, 128, 2), cbr(128, 128),
                             nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return nn.Sequential(backbone, nn.Linear(128, classes))


# ====================================================================== the cases




IMAGE = ("B", 3, 224, 224)
TOKENS = (("B", "T"), torch.long)

CASES = [
    # a model that is a chain of unnamed layers is an nn.Sequential, with the twin's keys (`1.weight`)
    Case("mlp.dl", "MLP", digits_mlp_twin, (("B", 1, 8, 8),), params={"hidden": 256, "classes": 10},
         small={"hidden": 32, "classes": 10}, rename=lambda key: key),
    Case("mnist_mlp.dl", "MnistMLP", mnist_mlp_twin, (("B", 1, 28, 28),), small={}, rename=lambda key: key),
    Case("mnist_mlp.dl", "TwoTower", TwoTowerTwin, (("B", 32), ("B", 32)), names=("left_proj.weight",
                                                                                  "right_proj.bias"), small={}),
    Case("cifar_resnet.dl", "ResNet18", CifarResNet18Twin, (("B", 3, 32, 32),), small={}),
    # torchvision's keys: the twin loads dslc's state dict strictly, by name (rename=identity)
    Case("resnet.dl", "ResNet18", lambda: ResNetTwin(BasicBlock, [2, 2, 2, 2]), (IMAGE,), published=11_689_512,
         names=("conv1.weight", "bn1.running_mean", "layer1.0.conv1.weight", "layer2.0.downsample.0.weight",
                "layer2.0.downsample.1.running_var", "fc.weight"), small={}, rename=lambda key: key),
    Case("resnet.dl", "ResNet34", lambda: ResNetTwin(BasicBlock, [3, 4, 6, 3]), (IMAGE,), published=21_797_672,
         names=("layer3.5.bn2.weight", "fc.bias"), rename=lambda key: key),
    Case("resnet.dl", "ResNet50", lambda: ResNetTwin(Bottleneck, [3, 4, 6, 3]), (IMAGE,), published=25_557_032,
         names=("layer1.0.downsample.1.weight", "layer4.2.conv3.weight", "fc.weight"), small={},
         rename=lambda key: key),
    Case("vgg.dl", "VGG16", VGGTwin, (IMAGE,), published=138_357_544,
         names=("features.0.weight", "features.28.bias", "classifier.6.weight"), small={}, rename=lambda key: key),
    Case("alexnet.dl", "AlexNet", AlexNetTwin, (IMAGE,), published=61_100_840,
         names=("features.0.weight", "features.10.bias", "classifier.1.weight", "classifier.6.bias"), small={},
         rename=lambda key: key),
    Case("mobilenet.dl", "MobileNetV2", MobileNetV2Twin, (IMAGE,), published=3_504_872,
         names=("features.0.0.weight", "features.2.conv.0.0.weight", "features.17.conv.1.1.weight",
                "features.3.conv.2.weight", "features.18.0.weight", "classifier.1.weight"),
         small={}, rename=lambda key: key),
    Case("vit.dl", "ViT", ViTTwin, (IMAGE,), published=86_567_656,
         names=("class_token", "conv_proj.weight", "encoder.pos_embedding",
                "encoder.layers.encoder_layer_0.self_attention.in_proj_weight",
                "encoder.layers.encoder_layer_11.mlp.3.bias", "encoder.ln.weight", "heads.head.weight"),
         small={"depth": 2, "dim": 64, "heads": 4, "image": 32, "patch": 8}, rename=lambda key: key),
    Case("gpt.dl", "GPT", GPTTwin, (TOKENS,), published=124_439_808,
         names=("wte.weight", "wpe.weight", "h.11.attn.c_attn.weight", "h.0.mlp.c_proj.bias", "ln_f.weight"),
         rename=lambda key: key,
         small={"vocab": 100, "context": 16, "depth": 2, "dim": 64, "heads": 4}),
    Case("lstm.dl", "LSTMClassifier", LSTMClassifierTwin, (TOKENS,), small={}),
    Case("transformer.dl", "TransformerClassifier", TransformerClassifierTwin, (TOKENS,),
         names=("embed.weight", "pos_embed.weight", "head.weight"), small={"depth": 2, "dim": 32},
         rename=transformer_key),
    Case("vae.dl", "VAE", VAETwin, (("B", 784),), small={}),
    Case("gan.dl", "Generator", generator_twin, (("B", 100),), small={}, rename=lambda key: key),
    Case("gan.dl", "Discriminator", discriminator_twin, (("B", 784),), small={}, rename=lambda key: key),
    Case("finetune.dl", "Classifier", digits_classifier_twin, (("B", 1, 8, 8),),
         names=("backbone.layer1.0.weight", "backbone.layer4.1.running_var", "head.weight"), small={}),
    Case("finetune.dl", "ResNet18", CifarResNet18Twin, (("B", 3, 32, 32),)),  # imported from cifar_resnet.dl
    Case("unet.dl", "UNet", UNetTwin, (("B", 3, 256, 256),),
         names=("inc.0.weight", "down4.1.4.running_mean", "up1.deconv.weight", "outc.weight"),
         small={"base": 8}),
]
# the rest of the zoo: twin modules beside this file (tests/zoo_*.py), each with its own CASES
for _module in sorted(glob.glob(os.path.join(os.path.dirname(os.path.abspath(__file__)), "zoo_*.py"))):
    _name = os.path.basename(_module)[:-3]
    if _name != "zoo_case":
        CASES += __import__(_name).CASES
SMALL = [c for c in CASES if c.small is not None]
SPEC_FILES = sorted(os.path.basename(p) for p in glob.glob(os.path.join(SPECS, "*.dl")))


# ====================================================================== helpers


@functools.lru_cache(maxsize=None)
def program(file: str):
    return dslc.load(os.path.join(SPECS, file))


def declared_inputs(case: Case) -> list[tuple]:
    """The case's input (shape, dtype) pairs at SIZES."""
    out = []
    for spec in case.inputs:
        shape, dtype = spec if isinstance(spec[-1], torch.dtype) else (spec, torch.float32)
        out.append((tuple(SIZES.get(d, d) for d in shape), dtype))
    return out


def checker_inputs(prog, name: str, **params) -> list[tuple]:
    """The model's input (shape, dtype) pairs as the checker types them, at SIZES."""
    graph = prog.graph(name, **params)
    return [(graph.type_of(ref).concrete(**SIZES), getattr(torch, graph.type_of(ref).dtype))
            for _, ref in graph.inputs]


def make_inputs(specs: list[tuple], device: str) -> list:
    if device == "meta":
        return [torch.empty(shape, device="meta", dtype=dtype) for shape, dtype in specs]
    # ids from 1: 0 is padding to the translator, and a row of padding alone is NaN in torch's eval path
    return [torch.randint(1, 10, shape) if dtype == torch.long else torch.rand(shape) for shape, dtype in specs]


def as_list(out) -> list:
    return list(out) if isinstance(out, tuple) else [out]


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())  # shared (tied) parameters once


def checker_shapes(prog, name: str, **params) -> list[tuple]:
    graph = prog.graph(name, **params)
    # a length may count a parameter's steps too (a scan's `future`: [B, T + future])
    ints = {k: int(v) for k, v in graph.params.items() if isinstance(v, int) and not isinstance(v, bool)}
    return [graph.type_of(ref).concrete(**{**ints, **SIZES}) for _, ref in graph.outputs]


_META: dict = {}


def built_on_meta(case: Case):
    """(dslc module, twin), both with the default parameters, on the meta device (built once)."""
    if case.id not in _META:
        with torch.device("meta"):
            _META[case.id] = program(case.file).build(case.model, **case.params), case.twin(**case.params)
    return _META[case.id]


def layer_trace(module: nn.Module, inputs: list) -> list:
    """Every call of a torch.nn layer that owns weights: (class, input shapes, output shapes), sorted.

    Independent of names and of the order in which branches run, it pins down where
    each convolution, norm and projection sits: a stride on the wrong conv shows."""
    def shapes(v):
        if isinstance(v, torch.Tensor):
            return (tuple(v.shape),)
        if isinstance(v, (tuple, list)):
            return tuple(s for x in v for s in shapes(x))
        return ()

    def owns_weights(m: nn.Module) -> bool:
        return type(m).__module__.startswith("torch.nn") and next(m.parameters(recurse=False), None) is not None

    calls, handles = [], []
    for m in module.modules():
        if m is not module and owns_weights(m):
            handles.append(m.register_forward_hook(
                lambda m, args, out: calls.append((type(m).__name__, shapes(args), shapes(out)))))
    try:
        with torch.no_grad():
            module(*inputs)
    finally:
        for h in handles:
            h.remove()
    return sorted(calls)


def liven(module: nn.Module, seed: int = 0) -> None:
    """Every parameter and buffer set: variance-keeping random weights and batch-norm statistics,
    so that signals survive depth.

    With torch's default initialization and fresh running statistics, a deep
    network's eval-mode activations shrink to almost nothing (MobileNetV2's to
    1e-8), and outputs would agree whatever the wiring."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=gen) * (2 / p[0].numel()) ** 0.5)
            elif name.endswith("weight"):  # norm scales
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
        for name, b in module.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(0.1 * torch.randn(b.shape, generator=gen))
            elif name.endswith("running_var"):
                b.copy_(0.5 + torch.rand(b.shape, generator=gen))
            else:
                b.zero_()


def copy_weights(src: nn.Module, dst: nn.Module, rename: Callable | None = None) -> None:
    """dst gets src's parameters and buffers: by key through `rename`, else in registration order."""
    if rename is not None:
        dst.load_state_dict({rename(k): v for k, v in src.state_dict().items()}, strict=True)
        return
    for what in ("named_parameters", "named_buffers"):
        theirs, mine = list(getattr(src, what)()), list(getattr(dst, what)())
        assert len(theirs) == len(mine), f"{what}: {len(theirs)} in dslc's module, {len(mine)} in the twin"
        with torch.no_grad():
            for (ks, s), (kd, d) in zip(theirs, mine):
                assert s.shape == d.shape, f"{ks} {tuple(s.shape)} vs the twin's {kd} {tuple(d.shape)}"
                d.copy_(s)


# ====================================================================== tests


@pytest.mark.parametrize("file", SPEC_FILES)
def test_spec_checks(file):
    result = CliRunner().invoke(main, ["check", os.path.join(SPECS, file)])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("ok: ")


@pytest.mark.parametrize("file", SPEC_FILES)
def test_every_model_has_a_twin(file):
    assert set(program(file).models) == {c.model for c in CASES if c.file == file}


@pytest.mark.parametrize("file", SPEC_FILES)
def test_spec_file_says_what_it_is(file):
    with open(os.path.join(SPECS, file), encoding="utf-8") as f:
        text = f.read()
    assert text.startswith("# ")
    header = text.split("\n\n")[0]
    assert re.search(r"\d{1,3}(,\d{3})+", header), "the opening comment gives the parameter count"


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_parameter_count(case):
    mine, twin = built_on_meta(case)
    assert count(mine) == count(twin)
    if case.published is not None:
        assert count(mine) == case.published


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_output_shapes_on_meta(case):
    mine, twin = built_on_meta(case)
    inputs = declared_inputs(case)
    assert checker_inputs(program(case.file), case.model, **case.params) == inputs
    with torch.no_grad():
        got = [tuple(o.shape) for o in as_list(mine(*make_inputs(inputs, "meta")))]
        want = [tuple(o.shape) for o in as_list(twin(*make_inputs(inputs, "meta")))]
    assert got == want
    assert got == checker_shapes(program(case.file), case.model, **case.params)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_layers_match_twin_on_meta(case):
    mine, twin = built_on_meta(case)
    inputs = declared_inputs(case)
    got = layer_trace(mine, make_inputs(inputs, "meta"))
    assert got == layer_trace(twin, make_inputs(inputs, "meta"))
    assert got, "no layers traced"


def _user_names(case: Case) -> set:
    """The names the spec file gives with `as` (any Python name the user chose)."""
    with open(os.path.join(SPECS, case.file), encoding="utf-8") as f:
        return set(re.findall(r"\bas\s+([A-Za-z_]\w*)", f.read()))


def _templates(case: Case) -> list:
    """The name templates of the spec file (`as "encoder_layer_{i}"`), as patterns of the names they make."""
    with open(os.path.join(SPECS, case.file), encoding="utf-8") as f:
        found = re.findall(r'\bas\s+"([^"]*)"', f.read())
    return [r"\d+".join(re.escape(text) for text in re.split(r"\{[^}]*\}", t)) for t in found]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_state_dict_keys_are_readable(case):
    mine, _ = built_on_meta(case)
    keys = list(mine.state_dict())
    for key in keys:
        for i, part in enumerate(key.split(".")):
            # snake_case words that start with a letter: `conv1`, `conv2d`, never `conv_1`; a number only as a
            # module list's index after its name (`h.3.attn`), as PyTorch keys one, or first in the keys of a
            # model that is an nn.Sequential (`1.weight`, as `nn.Sequential(nn.Flatten(), nn.Linear(...))`)
            if part.isdigit() and (i or isinstance(mine, nn.Sequential)):
                continue
            if part in _user_names(case):   # `ln_1`, `c_attn`: names the spec gives (nanoGPT's)
                continue
            if any(re.fullmatch(t, part) for t in _templates(case)):   # `as "encoder_layer_{i}"` (torchvision's)
                continue
            assert re.fullmatch(r"[a-z][a-z0-9]*(_[a-z][a-z0-9]*)*", part), key
            assert part not in ("torch", "ops", "aten"), key
    for name in case.names:
        assert name in keys, f"{name} not among {keys}"


@pytest.mark.parametrize("case", SMALL, ids=lambda c: c.id)
def test_cpu_forward_matches_twin(case):
    prog = program(case.file)
    with torch.device("meta"):  # no time spent on initial weights that are overwritten next
        mine, twin = prog.build(case.model, **case.small), case.twin(**case.small, **case.twin_small)
    mine, twin = mine.to_empty(device="cpu").eval(), twin.to_empty(device="cpu").eval()
    liven(mine)
    copy_weights(mine, twin, case.rename)
    inputs = make_inputs(checker_inputs(prog, case.model, **case.small), "cpu")
    with torch.no_grad():
        got, want = as_list(mine(*inputs)), as_list(twin(*inputs))
    assert [tuple(o.shape) for o in got] == checker_shapes(prog, case.model, **case.small)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("model", ["ResNet18", "ResNet34", "ResNet50"])
def test_resnet_state_dict_is_torchvisions(model):
    """The zoo's ResNets have torchvision's state-dict keys, in its order, with its shapes (the twins are
    written in torchvision's layout: conv1, bn1, layer1.0.conv1, layer2.0.downsample.0, ..., fc)."""
    mine, twin = built_on_meta(next(c for c in CASES if c.file == "resnet.dl" and c.model == model))
    assert [(k, tuple(v.shape)) for k, v in mine.state_dict().items()] == \
        [(k, tuple(v.shape)) for k, v in twin.state_dict().items()]


@pytest.mark.parametrize("file,model", [("mobilenet.dl", "MobileNetV2"), ("efficientnet.dl", "EfficientNetB0")])
def test_mobile_state_dicts_are_torchvisions(file, model):
    """MobileNetV2 and EfficientNet-B0 have torchvision's state-dict keys, in its order, with its shapes
    (the twins are written in torchvision's layout: features.0.0, features.1.conv.0.0 or
    features.1.0.block.0.0, ..., classifier.1)."""
    mine, twin = built_on_meta(next(c for c in CASES if c.file == file and c.model == model))
    assert [(k, tuple(v.shape)) for k, v in mine.state_dict().items()] == \
        [(k, tuple(v.shape)) for k, v in twin.state_dict().items()]


def test_vit_state_dict_is_torchvisions():
    """The zoo's ViT has torchvision's vit_b_16 state-dict keys, in its order, with its shapes (class_token,
    conv_proj, encoder.pos_embedding, encoder.layers.encoder_layer_0.ln_1, ..., encoder.ln, heads.head)."""
    mine, twin = built_on_meta(next(c for c in CASES if c.file == "vit.dl" and c.model == "ViT"))
    assert [(k, tuple(v.shape)) for k, v in mine.state_dict().items()] == \
        [(k, tuple(v.shape)) for k, v in twin.state_dict().items()]


@pytest.mark.parametrize("model", ["VGG11", "VGG11BN", "VGG16", "VGG16BN", "AlexNet"])
def test_vgg_and_alexnet_state_dicts_are_torchvisions(model):
    """VGG and AlexNet have torchvision's state-dict keys, in its order, with its shapes: one flat
    `features` Sequential (VGG16's convolutions at 0, 2, 5, ..., 28; VGG16BN's batch norms right after
    them), `avgpool`, and `classifier` (VGG's linear layers at 0, 3, 6; AlexNet's at 1, 4, 6)."""
    mine, twin = built_on_meta(next(c for c in CASES if c.file in ("vgg.dl", "alexnet.dl") and c.model == model))
    assert [(k, tuple(v.shape)) for k, v in mine.state_dict().items()] == \
        [(k, tuple(v.shape)) for k, v in twin.state_dict().items()]


@pytest.mark.parametrize("model", ["DenseNet121", "DenseNetBC100"])
def test_densenet_state_dict_is_torchvisions(model):
    """The zoo's DenseNets have torchvision's state-dict keys, in its order, with its shapes
    (features.conv0, features.norm0, features.denseblock1.denselayer1.norm1, ..., features.transition1.conv,
    ..., features.norm5, classifier; the CIFAR one without norm0)."""
    mine, twin = built_on_meta(next(c for c in CASES if c.file == "densenet.dl" and c.model == model))
    assert [(k, tuple(v.shape)) for k, v in mine.state_dict().items()] == \
        [(k, tuple(v.shape)) for k, v in twin.state_dict().items()]


def test_tied_head_is_one_parameter():
    """GPT's output head reads the embedding: no second vocab × dim matrix."""
    mine, _ = built_on_meta(next(c for c in CASES if c.model == "GPT"))
    assert [k for k, p in mine.named_parameters() if p.shape == (50257, 768)] == ["wte.weight"]


def test_vae_loss_is_the_negative_elbo(tmp_path):
    """The declared `vae_loss`, run by a plan's generated step, is the PyTorch example's
    BCE(recon, x, sum) + KL(N(mu, var) || N(0, I)), written out here."""
    import numpy as np

    from dslc.backends.pymodule import exec_source
    from dslc.runtime.trainer import plan_source
    x = np.random.default_rng(0).random((4, 784)).astype(np.float32)
    np.savez(tmp_path / "digits.npz", x=x)
    path = tmp_path / "plan.dl"
    path.write_text(f'import "{os.path.join(SPECS, "vae.dl")}"\n\ntrain v {{\n    model = VAE()\n'
                    '    data = npz("digits.npz")\n    loss = vae_loss\n    optimizer = Adam()\n    epochs = 1\n}\n')
    plan = dslc.load(str(path)).plan("v")
    module = exec_source(plan_source(plan, str(path)), "<vae plan>")
    torch.manual_seed(0)
    model = module.MODELS["model"]()
    step = module.STEPS[plan.steps[0].name](model).eval()   # eval: z is the mean, no noise
    batch = torch.from_numpy(x)
    with torch.no_grad():
        got = step(batch)
        got = got[0] if isinstance(got, tuple) else got
        recon, mu, log_var = model(batch)
        want = F.binary_cross_entropy(recon, batch, reduction="sum") \
            - 0.5 * torch.sum(1 + log_var - mu ** 2 - log_var.exp())
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-3)
    assert want > 0
