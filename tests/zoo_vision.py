"""The vision half of the zoo (issue #6): independent twins of the models in specs/perceptron.dl,
lenet.dl, small_cnn.dl, vgg.dl, inception.dl, densenet.dl, efficientnet.dl and unet.dl
(UNetBilinear), and the CASES that tests/test_specs.py checks against them.

The twins use plain torch.nn and follow the papers and torchvision's (or, for U-Net,
milesial/Pytorch-UNet's) own designs and names, not dslc's output. The module also checks
that `dslc render` and `dslc summary --format json` work for every one of these models.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from zoo_case import IMAGE, Case, render_and_summary

CIFAR = ("B", 3, 32, 32)


# ---------------------------------------------------------------- perceptron.dl


class PerceptronTwin(nn.Module):
    """Rosenblatt's perceptron, multi-class: one affine map from the features to one score per class."""

    def __init__(self, features: int = 4, classes: int = 3):
        super().__init__()
        self.fc = nn.Linear(features, classes)

    def forward(self, x):
        return self.fc(x)


def deep_mlp_twin(widths=(512, 256, 128), classes: int = 10, dropout: float = 0.2) -> nn.Module:
    layers, width_in = [nn.Flatten()], 28 * 28
    for width in widths:
        layers += [nn.Linear(width_in, width), nn.ReLU(), nn.Dropout(dropout)]
        width_in = width
    return nn.Sequential(*layers, nn.Linear(width_in, classes))


# ---------------------------------------------------------------- lenet.dl (LeCun et al. 1998)


class LeNet5Twin(nn.Module):
    """C1-S2-C3-S4-C5-F6-output, tanh squashing and average-pool subsampling, 32×32 input."""

    def __init__(self, classes: int = 10):
        super().__init__()
        self.c1 = nn.Conv2d(1, 6, kernel_size=5)      # 32 → 28
        self.s2 = nn.AvgPool2d(2)                     # → 14
        self.c3 = nn.Conv2d(6, 16, kernel_size=5)     # → 10
        self.s4 = nn.AvgPool2d(2)                     # → 5
        self.c5 = nn.Conv2d(16, 120, kernel_size=5)   # → 1
        self.f6 = nn.Linear(120, 84)
        self.out = nn.Linear(84, classes)

    def forward(self, x):
        x = self.s2(torch.tanh(self.c1(x)))
        x = self.s4(torch.tanh(self.c3(x)))
        x = torch.tanh(self.c5(x)).flatten(1)
        return self.out(torch.tanh(self.f6(x)))


# ---------------------------------------------------------------- small_cnn.dl


class SmallCNNTwin(nn.Module):
    """Keras-tutorial style: (conv 3×3 → ReLU → max pool 2) × 3, then dropout, dense 256, dropout, dense."""

    def __init__(self, classes: int = 10, widths=(32, 64, 128), hidden: int = 256, dropout: float = 0.5):
        super().__init__()
        layers, c = [], 3
        for w in widths:
            layers += [nn.Conv2d(c, w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
            c = w
        self.features = nn.Sequential(*layers)
        side = 32 // 2 ** len(widths)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(c * side * side, hidden), nn.ReLU(),
                                        nn.Dropout(dropout), nn.Linear(hidden, classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


# ---------------------------------------------------------------- vgg.dl (torchvision's vgg.py design)

VGG_CFGS = {
    "A": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "D": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
}


def vgg_make_layers(cfg, batch_norm: bool) -> nn.Sequential:
    layers, in_channels = [], 3
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            conv = nn.Conv2d(in_channels, v, kernel_size=3, padding=1)
            layers += [conv, nn.BatchNorm2d(v), nn.ReLU(inplace=True)] if batch_norm else [conv, nn.ReLU(inplace=True)]
            in_channels = v
    return nn.Sequential(*layers)


class VGGTwin(nn.Module):
    def __init__(self, cfg: str, batch_norm: bool, classes: int = 1000, dropout: float = 0.5):
        super().__init__()
        self.features = vgg_make_layers(VGG_CFGS[cfg], batch_norm)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096), nn.ReLU(True), nn.Dropout(p=dropout),
            nn.Linear(4096, 4096), nn.ReLU(True), nn.Dropout(p=dropout),
            nn.Linear(4096, classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


# ---------------------------------------------------------------- inception.dl (torchvision's googlenet.py design)


class BasicConv2d(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, **kwargs):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, bias=False, **kwargs)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)), inplace=True)


class InceptionTwin(nn.Module):
    def __init__(self, in_channels, ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj, k5: int = 5):
        super().__init__()
        self.branch1 = BasicConv2d(in_channels, ch1x1, kernel_size=1)
        self.branch2 = nn.Sequential(BasicConv2d(in_channels, ch3x3red, kernel_size=1),
                                     BasicConv2d(ch3x3red, ch3x3, kernel_size=3, padding=1))
        # torchvision uses kernel_size=3 here (pytorch/vision#906); the paper's is 5
        self.branch3 = nn.Sequential(BasicConv2d(in_channels, ch5x5red, kernel_size=1),
                                     BasicConv2d(ch5x5red, ch5x5, kernel_size=k5, padding=k5 // 2))
        self.branch4 = nn.Sequential(nn.MaxPool2d(kernel_size=3, stride=1, padding=1, ceil_mode=True),
                                     BasicConv2d(in_channels, pool_proj, kernel_size=1))

    def forward(self, x):
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class GoogLeNetTwin(nn.Module):
    """torchvision's GoogLeNet with aux_logits=False and transform_input=False."""

    def __init__(self, classes: int = 1000, dropout: float = 0.2, k5: int = 3):
        super().__init__()
        self.conv1 = BasicConv2d(3, 64, kernel_size=7, stride=2, padding=3)
        self.maxpool1 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.conv2 = BasicConv2d(64, 64, kernel_size=1)
        self.conv3 = BasicConv2d(64, 192, kernel_size=3, padding=1)
        self.maxpool2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.inception3a = InceptionTwin(192, 64, 96, 128, 16, 32, 32, k5)
        self.inception3b = InceptionTwin(256, 128, 128, 192, 32, 96, 64, k5)
        self.maxpool3 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.inception4a = InceptionTwin(480, 192, 96, 208, 16, 48, 64, k5)
        self.inception4b = InceptionTwin(512, 160, 112, 224, 24, 64, 64, k5)
        self.inception4c = InceptionTwin(512, 128, 128, 256, 24, 64, 64, k5)
        self.inception4d = InceptionTwin(512, 112, 144, 288, 32, 64, 64, k5)
        self.inception4e = InceptionTwin(528, 256, 160, 320, 32, 128, 128, k5)
        self.maxpool4 = nn.MaxPool2d(2, stride=2, ceil_mode=True)
        self.inception5a = InceptionTwin(832, 256, 160, 320, 32, 128, 128, k5)
        self.inception5b = InceptionTwin(832, 384, 192, 384, 48, 128, 128, k5)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(1024, classes)

    def forward(self, x):
        x = self.maxpool1(self.conv1(x))
        x = self.maxpool2(self.conv3(self.conv2(x)))
        x = self.maxpool3(self.inception3b(self.inception3a(x)))
        x = self.inception4a(x)
        x = self.inception4b(x)
        x = self.inception4c(x)
        x = self.inception4d(x)
        x = self.maxpool4(self.inception4e(x))
        x = self.inception5b(self.inception5a(x))
        return self.fc(self.dropout(torch.flatten(self.avgpool(x), 1)))


class MiniGoogLeNetTwin(nn.Module):
    """A 3×3 stem and five Inception modules (half of GoogLeNet's 3a, 3b, 4a, 4e and 5b) on 32×32 images."""

    def __init__(self, classes: int = 10, dropout: float = 0.2):
        super().__init__()
        self.pre_layers = BasicConv2d(3, 64, kernel_size=3, padding=1)
        self.a3 = InceptionTwin(64, 32, 48, 64, 8, 16, 16)
        self.b3 = InceptionTwin(128, 64, 64, 96, 16, 48, 32)
        self.a4 = InceptionTwin(240, 96, 48, 104, 8, 24, 32)
        self.b4 = InceptionTwin(256, 128, 80, 160, 16, 64, 64)
        self.a5 = InceptionTwin(416, 192, 96, 192, 24, 64, 64)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(512, classes)

    def forward(self, x):
        x = self.maxpool(self.b3(self.a3(self.pre_layers(x))))
        x = self.maxpool(self.b4(self.a4(x)))
        x = F.adaptive_avg_pool2d(self.a5(x), 1)
        return self.linear(self.dropout(torch.flatten(x, 1)))


# ---------------------------------------------------------------- densenet.dl (torchvision's densenet.py design)


class DenseLayerTwin(nn.Module):
    def __init__(self, num_input_features: int, growth_rate: int, bn_size: int):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(num_input_features)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(num_input_features, bn_size * growth_rate, kernel_size=1, stride=1, bias=False)
        self.norm2 = nn.BatchNorm2d(bn_size * growth_rate)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(bn_size * growth_rate, growth_rate, kernel_size=3, stride=1, padding=1, bias=False)

    def forward(self, features: list):
        bottleneck = self.conv1(self.relu1(self.norm1(torch.cat(features, 1))))
        return self.conv2(self.relu2(self.norm2(bottleneck)))


class DenseBlockTwin(nn.ModuleDict):
    def __init__(self, num_layers: int, num_input_features: int, bn_size: int, growth_rate: int):
        super().__init__()
        for i in range(num_layers):
            self.add_module(f"denselayer{i + 1}",
                            DenseLayerTwin(num_input_features + i * growth_rate, growth_rate, bn_size))

    def forward(self, init_features):
        features = [init_features]
        for layer in self.values():
            features.append(layer(features))
        return torch.cat(features, 1)


class TransitionTwin(nn.Sequential):
    def __init__(self, num_input_features: int, num_output_features: int):
        super().__init__()
        self.norm = nn.BatchNorm2d(num_input_features)
        self.relu = nn.ReLU(inplace=True)
        self.conv = nn.Conv2d(num_input_features, num_output_features, kernel_size=1, stride=1, bias=False)
        self.pool = nn.AvgPool2d(kernel_size=2, stride=2)


class DenseNetTwin(nn.Module):
    """torchvision's DenseNet; `cifar` swaps the 7×7/2 stem and max pool for one 3×3 convolution."""

    def __init__(self, growth_rate: int = 32, block_config=(6, 12, 24, 16), num_init_features: int = 64,
                 bn_size: int = 4, classes: int = 1000, cifar: bool = False):
        super().__init__()
        if cifar:
            stem = [("conv0", nn.Conv2d(3, num_init_features, kernel_size=3, padding=1, bias=False))]
        else:
            stem = [("conv0", nn.Conv2d(3, num_init_features, kernel_size=7, stride=2, padding=3, bias=False)),
                    ("norm0", nn.BatchNorm2d(num_init_features)), ("relu0", nn.ReLU(inplace=True)),
                    ("pool0", nn.MaxPool2d(kernel_size=3, stride=2, padding=1))]
        self.features = nn.Sequential()
        for name, module in stem:
            self.features.add_module(name, module)
        num_features = num_init_features
        for i, num_layers in enumerate(block_config):
            self.features.add_module(f"denseblock{i + 1}",
                                     DenseBlockTwin(num_layers, num_features, bn_size, growth_rate))
            num_features += num_layers * growth_rate
            if i != len(block_config) - 1:
                self.features.add_module(f"transition{i + 1}", TransitionTwin(num_features, num_features // 2))
                num_features //= 2
        self.features.add_module("norm5", nn.BatchNorm2d(num_features))
        self.classifier = nn.Linear(num_features, classes)

    def forward(self, x):
        out = F.relu(self.features(x), inplace=True)
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(out, (1, 1)), 1))


def densenet121_twin(classes: int = 1000, growth: int = 32, blocks=(6, 12, 24, 16)) -> nn.Module:
    return DenseNetTwin(growth, tuple(blocks), 2 * growth, classes=classes)


def densenet_bc100_twin(classes: int = 10, growth: int = 12, blocks=(16, 16, 16)) -> nn.Module:
    """DenseNet-BC (L=100, k=12) for CIFAR (Huang et al. 2017, §3 and Table 2): 2k stem channels."""
    return DenseNetTwin(growth, tuple(blocks), 2 * growth, classes=classes, cifar=True)


# ---------------------------------------------------------------- efficientnet.dl (torchvision's efficientnet.py design)


class ConvNormActivation(nn.Sequential):
    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 1, stride: int = 1, groups: int = 1,
                 activation: bool = True):
        layers = [nn.Conv2d(in_ch, out_ch, kernel_size, stride, (kernel_size - 1) // 2, groups=groups, bias=False),
                  nn.BatchNorm2d(out_ch)]
        super().__init__(*layers, *([nn.SiLU(inplace=True)] if activation else []))


class SqueezeExcitationTwin(nn.Module):
    def __init__(self, input_channels: int, squeeze_channels: int):
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(input_channels, squeeze_channels, 1)
        self.fc2 = nn.Conv2d(squeeze_channels, input_channels, 1)
        self.activation = nn.SiLU(inplace=True)
        self.scale_activation = nn.Sigmoid()

    def forward(self, x):
        scale = self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x)))))
        return scale * x


class MBConvTwin(nn.Module):
    def __init__(self, expand_ratio: int, kernel: int, stride: int, input_channels: int, out_channels: int):
        super().__init__()
        self.use_res_connect = stride == 1 and input_channels == out_channels
        expanded = input_channels * expand_ratio
        layers = []
        if expanded != input_channels:
            layers.append(ConvNormActivation(input_channels, expanded, kernel_size=1))
        layers.append(ConvNormActivation(expanded, expanded, kernel_size=kernel, stride=stride, groups=expanded))
        layers.append(SqueezeExcitationTwin(expanded, max(1, input_channels // 4)))
        layers.append(ConvNormActivation(expanded, out_channels, kernel_size=1, activation=False))
        self.block = nn.Sequential(*layers)

    def forward(self, x):
        result = self.block(x)
        return result + x if self.use_res_connect else result  # stochastic depth is the identity at inference


class EfficientNetB0Twin(nn.Module):
    # expand_ratio, kernel, stride, input_channels, out_channels, num_layers (torchvision's B0 table)
    SETTING = [(1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 2), (6, 5, 2, 24, 40, 2), (6, 3, 2, 40, 80, 3),
               (6, 5, 1, 80, 112, 3), (6, 5, 2, 112, 192, 4), (6, 3, 1, 192, 320, 1)]

    def __init__(self, classes: int = 1000, dropout: float = 0.2):
        super().__init__()
        layers = [ConvNormActivation(3, 32, kernel_size=3, stride=2)]
        for expand, kernel, stride, cin, cout, n in self.SETTING:
            layers.append(nn.Sequential(*[MBConvTwin(expand, kernel, stride if i == 0 else 1, cin if i == 0 else cout,
                                                     cout) for i in range(n)]))
        layers.append(ConvNormActivation(320, 4 * 320, kernel_size=1))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(p=dropout, inplace=True), nn.Linear(1280, classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


# ---------------------------------------------------------------- unet.dl's UNetBilinear (milesial/Pytorch-UNet, bilinear=True)


class DoubleConvTwin(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int, mid_channels: int | None = None):
        mid_channels = mid_channels or out_channels
        super().__init__(nn.Conv2d(in_channels, mid_channels, 3, padding=1, bias=False), nn.BatchNorm2d(mid_channels),
                         nn.ReLU(inplace=True),
                         nn.Conv2d(mid_channels, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels),
                         nn.ReLU(inplace=True))


class UpTwin(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, bilinear: bool = True):
        super().__init__()
        if bilinear:
            self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)
            self.conv = DoubleConvTwin(in_channels, out_channels, in_channels // 2)
        else:
            self.up = nn.ConvTranspose2d(in_channels, in_channels // 2, kernel_size=2, stride=2)
            self.conv = DoubleConvTwin(in_channels, out_channels)

    def forward(self, x1, x2):
        return self.conv(torch.cat([x2, self.up(x1)], dim=1))


class UNetBilinearTwin(nn.Module):
    def __init__(self, classes: int = 2, base: int = 64, channels: int = 3, bilinear: bool = True):
        super().__init__()
        factor = 2 if bilinear else 1
        self.inc = DoubleConvTwin(channels, base)
        self.down1 = nn.Sequential(nn.MaxPool2d(2), DoubleConvTwin(base, 2 * base))
        self.down2 = nn.Sequential(nn.MaxPool2d(2), DoubleConvTwin(2 * base, 4 * base))
        self.down3 = nn.Sequential(nn.MaxPool2d(2), DoubleConvTwin(4 * base, 8 * base))
        self.down4 = nn.Sequential(nn.MaxPool2d(2), DoubleConvTwin(8 * base, 16 * base // factor))
        self.up1 = UpTwin(16 * base, 8 * base // factor, bilinear)
        self.up2 = UpTwin(8 * base, 4 * base // factor, bilinear)
        self.up3 = UpTwin(4 * base, 2 * base // factor, bilinear)
        self.up4 = UpTwin(2 * base, base, bilinear)
        self.outc = nn.Conv2d(base, classes, kernel_size=1)

    def forward(self, x):
        x1 = self.inc(x)
        x2 = self.down1(x1)
        x3 = self.down2(x2)
        x4 = self.down3(x3)
        x5 = self.down4(x4)
        x = self.up1(x5, x4)
        x = self.up2(x, x3)
        x = self.up3(x, x2)
        return self.outc(self.up4(x, x1))


# ====================================================================== the cases


# ---------------------------------------------------------------- fast neural style's TransformerNet
# Written from the PyTorch examples' fast_neural_style/transformer_net.py: its module names, so that
# the state dicts load both ways by key.

class StyleConvLayer(nn.Module):
    def __init__(self, cin: int, cout: int, k: int, stride: int = 1):
        super().__init__()
        self.reflection_pad = nn.ReflectionPad2d(k // 2)
        self.conv2d = nn.Conv2d(cin, cout, k, stride)

    def forward(self, x):
        return self.conv2d(self.reflection_pad(x))


class StyleResidualBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = StyleConvLayer(channels, channels, 3)
        self.in1 = nn.InstanceNorm2d(channels, affine=True)
        self.conv2 = StyleConvLayer(channels, channels, 3)
        self.in2 = nn.InstanceNorm2d(channels, affine=True)

    def forward(self, x):
        y = F.relu(self.in1(self.conv1(x)))
        return self.in2(self.conv2(y)) + x


class StyleUpsampleConvLayer(nn.Module):
    def __init__(self, cin: int, cout: int, k: int, upsample: int):
        super().__init__()
        self.upsample = upsample
        self.reflection_pad = nn.ReflectionPad2d(k // 2)
        self.conv2d = nn.Conv2d(cin, cout, k, 1)

    def forward(self, x):
        x = F.interpolate(x, mode="nearest", scale_factor=self.upsample)
        return self.conv2d(self.reflection_pad(x))


class TransformerNetTwin(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.in1 = StyleConvLayer(3, 32, 9), nn.InstanceNorm2d(32, affine=True)
        self.conv2, self.in2 = StyleConvLayer(32, 64, 3, 2), nn.InstanceNorm2d(64, affine=True)
        self.conv3, self.in3 = StyleConvLayer(64, 128, 3, 2), nn.InstanceNorm2d(128, affine=True)
        for i in range(1, 6):
            setattr(self, f"res{i}", StyleResidualBlock(128))
        self.deconv1, self.in4 = StyleUpsampleConvLayer(128, 64, 3, 2), nn.InstanceNorm2d(64, affine=True)
        self.deconv2, self.in5 = StyleUpsampleConvLayer(64, 32, 3, 2), nn.InstanceNorm2d(32, affine=True)
        self.deconv3 = StyleConvLayer(32, 3, 9)

    def forward(self, x):
        y = F.relu(self.in1(self.conv1(x)))
        y = F.relu(self.in2(self.conv2(y)))
        y = F.relu(self.in3(self.conv3(y)))
        for i in range(1, 6):
            y = getattr(self, f"res{i}")(y)
        y = F.relu(self.in4(self.deconv1(y)))
        y = F.relu(self.in5(self.deconv2(y)))
        return self.deconv3(y)

CASES = [
    Case("perceptron.dl", "Perceptron", PerceptronTwin, (("B", 4),), names=("fc.weight",), small={}),
    Case("perceptron.dl", "DeepMLP", deep_mlp_twin, (("B", 1, 28, 28),), small={"widths": [64, 32]},
         rename=lambda key: key),
    Case("lenet.dl", "LeNet5", LeNet5Twin, (("B", 1, 32, 32),), published=61_706,
         names=("c1.weight", "c3.bias", "c5.weight", "f6.weight", "classifier.weight"), small={}),
    Case("small_cnn.dl", "SmallCNN", SmallCNNTwin, (CIFAR,), small={"widths": [8, 16]}),
    # torchvision's keys: the twin loads dslc's state dict strictly, by name
    Case("vgg.dl", "VGG11", lambda **kw: VGGTwin("A", False, **kw), (IMAGE,), published=132_863_336,
         names=("features.0.weight", "features.18.bias", "classifier.6.bias"), rename=lambda key: key),
    Case("vgg.dl", "VGG11BN", lambda **kw: VGGTwin("A", True, **kw), (IMAGE,), published=132_868_840,
         names=("features.1.running_var", "features.25.weight", "classifier.0.weight"), rename=lambda key: key),
    Case("vgg.dl", "VGG16BN", lambda **kw: VGGTwin("D", True, **kw), (IMAGE,), published=138_365_992,
         names=("features.40.weight", "features.41.running_mean"), rename=lambda key: key),
    Case("inception.dl", "GoogLeNet", GoogLeNetTwin, (IMAGE,), published=6_624_904,
         names=("conv1.conv.weight", "inception1.branch1.conv.weight", "inception7.branch5.bn.running_mean",
                "inception9.pool_proj.bn.weight", "fc.weight"), small={"classes": 10}),
    Case("inception.dl", "MiniGoogLeNet", MiniGoogLeNetTwin, (CIFAR,),
         names=("stem.conv.weight", "inception1.reduce5.conv.weight", "fc.bias"), small={}),
    # torchvision's keys: the twins load dslc's state dicts strictly, by name (rename=identity)
    Case("densenet.dl", "DenseNet121", densenet121_twin, (IMAGE,), published=7_978_856,
         names=("features.conv0.weight", "features.norm0.running_mean",
                "features.denseblock1.denselayer6.conv2.weight", "features.transition3.conv.weight",
                "features.denseblock4.denselayer16.norm1.weight", "features.norm5.weight", "classifier.weight"),
         small={"growth": 8, "blocks": [2, 2, 2, 2]}, rename=lambda key: key),
    Case("densenet.dl", "DenseNetBC100", densenet_bc100_twin, (CIFAR,),
         names=("features.conv0.weight", "features.denseblock3.denselayer16.conv2.weight",
                "features.norm5.running_var"), small={}, rename=lambda key: key),
    Case("efficientnet.dl", "EfficientNetB0", EfficientNetB0Twin, (IMAGE,), published=5_288_548,
         names=("features.0.0.weight", "features.1.0.block.1.fc1.bias", "features.2.0.block.0.1.weight",
                "features.7.0.block.1.0.weight", "features.7.0.block.3.0.weight", "features.8.1.running_var",
                "classifier.1.weight"), small={"classes": 10}, rename=lambda key: key),
    Case("unet.dl", "UNetBilinear", UNetBilinearTwin, (("B", 3, 256, 256),),
         names=("inc.0.weight", "down4.1.4.running_mean", "up1.double_conv.0.weight",
                "outc.weight"), small={"base": 8}),
    Case("style_transfer.dl", "TransformerNet", TransformerNetTwin, (("B", 3, "H", "W"),), published=1_679_235,
         names=("conv1.conv2d.weight", "in1.weight", "res1.conv1.conv2d.weight",
                "res5.in2.bias", "deconv1.conv2d.weight", "deconv3.conv2d.bias"), small={}),
]


# ====================================================================== render and summary


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_render_svg_and_summary_json(case, tmp_path):
    svg, summary = render_and_summary(case.file, case.model, tmp_path)
    assert case.model in svg
    assert summary["model"] == case.model
    # MACs are a number, or a formula over the run-time sizes (an image of any size: `H`, `W`)
    assert summary["layers"] and (summary["macs"] > 0 if isinstance(summary["macs"], int) else "H" in summary["macs"])
    assert summary["total_params"] == summary["trainable_params"] > 0
    if case.published is not None:
        assert summary["total_params"] == case.published


def test_style_transfer_state_dicts_load_both_ways_and_forward_is_bit_equal():
    """The example's trained weights load into dslc's TransformerNet by key, and back; on the same
    weights both compute the same image (bit for bit: the same torch calls in the same order)."""
    import os

    from zoo_case import SPECS

    import dslc
    torch.manual_seed(0)
    twin = TransformerNetTwin().eval()
    mine = dslc.load(os.path.join(SPECS, "style_transfer.dl")).build("TransformerNet", seed=3).eval()
    mine.load_state_dict(twin.state_dict(), strict=True)
    x = torch.rand(2, 3, 20, 28)
    with torch.no_grad():
        assert torch.equal(mine(x), twin(x))
    back = TransformerNetTwin()
    back.load_state_dict(mine.state_dict(), strict=True)
    assert all(torch.equal(a, b) for a, b in zip(back.state_dict().values(), twin.state_dict().values()))
