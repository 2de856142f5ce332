"""Attribute names for a graph's instances: the names in generated code,
state-dict keys, ONNX initializers, summaries and diagrams all come from here.

A user's `as name` or `param name` wins. Other instances are named after
their op's stem (`conv`, `bn`, `fc`) or their block (`conv_bn_relu`): the
bare stem when it occurs once in the graph, numbered from 1 otherwise
(`conv1`, `conv2`), skipping names the user took.
"""
from __future__ import annotations

import keyword
import re

from .graph import Graph, Instance


# Acronyms that would split badly (`ConvBnReLU6` -> `conv_bn_re_lu6`), spelled as words first.
_WORDS = {"ReLU": "Relu", "GELU": "Gelu", "SiLU": "Silu", "PReLU": "Prelu", "LSTM": "Lstm", "GRU": "Gru",
          "RNN": "Rnn", "MLP": "Mlp", "ViT": "Vit", "VAE": "Vae", "GAN": "Gan", "CNN": "Cnn", "GPT": "Gpt",
          "ResNet": "Resnet", "MobileNet": "Mobilenet", "DenseNet": "Densenet", "UNet": "Unet",
          "EfficientNet": "Efficientnet", "AlexNet": "Alexnet"}


def snake(name: str) -> str:
    for acronym, word in _WORDS.items():
        name = name.replace(acronym, word)
    s = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name)
    return s.lower()


def stem_of(inst: Instance) -> str:
    if inst.kind == "block":
        return snake(inst.graph.name)
    if inst.kind == "param":
        return "param"
    return inst.op.stem


def name_instances(graph: Graph) -> None:
    taken = {i.user_name for i in graph.instances.values() if i.user_name}
    stems: dict[str, list[Instance]] = {}
    for inst in graph.instances.values():
        if inst.user_name:
            inst.name = inst.user_name
        else:
            stems.setdefault(stem_of(inst), []).append(inst)
    for stem, insts in stems.items():
        if len(insts) == 1 and stem not in taken and not keyword.iskeyword(stem):
            insts[0].name = stem
            taken.add(stem)
            continue
        n = 0
        for inst in insts:
            n += 1
            while f"{stem}{n}" in taken:
                n += 1
            inst.name = f"{stem}{n}"
            taken.add(inst.name)
