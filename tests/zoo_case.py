"""A zoo model and its independent twin: what tests/test_specs.py checks for every spec model; the
checks and the twin that several zoo modules share."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from click.testing import CliRunner
from torch import nn

import dslc
from dslc.cli import main

IMAGE = ("B", 3, 224, 224)
SPECS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "specs")


@dataclass(frozen=True)
class Case:
    file: str
    model: str
    twin: Callable[..., nn.Module]
    inputs: tuple                           # shapes (with "B", "T") or (shape, dtype) pairs
    params: dict = field(default_factory=dict)  # parameters for the default build (models that need them)
    published: int | None = None            # the published parameter count
    names: tuple = ()                       # state-dict keys that `as` names must produce
    small: dict | None = None               # parameters for a real CPU forward (None: meta only)
    rename: Callable | None = None          # dslc key -> twin key, where registration orders differ
    twin_small: dict = field(default_factory=dict)  # extra twin arguments for the CPU run

    @property
    def id(self) -> str:
        return f"{self.file[:-3]}-{self.model}"


# ---------------------------------------------------------------- checks every zoo module runs

def render_and_summary(file: str, model: str, tmp_path) -> tuple[str, dict]:
    """`dslc render` to SVG and `dslc summary --format json` of a zoo model both work: the SVG text and
    the summary, for the caller's own checks."""
    path = os.path.join(SPECS, file)
    out = tmp_path / f"{model}.svg"
    result = CliRunner().invoke(main, ["render", path, "--model", model, "-o", str(out)])
    assert result.exit_code == 0, result.output
    svg = out.read_text(encoding="utf-8")
    assert svg.startswith("<?xml") and "<svg" in svg
    result = CliRunner().invoke(main, ["summary", path, "--model", model, "--format", "json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["total_params"] > 0 and summary["layers"], summary
    return svg, summary


def check_header_counts(file: str) -> None:
    """The spec's opening comment states every model's count (models it imports are described elsewhere)."""
    prog = dslc.load(os.path.join(SPECS, file))
    with open(os.path.join(SPECS, file), encoding="utf-8") as f:
        header = f.read().split("\n\n")[0]
    for name in prog.models:
        if prog.unit.decls[name].span.file.name == prog.unit.root.name:
            assert f"{prog.summary(name).total_params:,}" in header, name


# ---------------------------------------------------------------- the CIFAR ResNet-18 (specs/cifar_resnet.dl)
# The common CIFAR layout (3×3 stem, no max pool, 32×32 inputs): kuangliu/pytorch-cifar's, with
# nn.Conv2d's default bias everywhere, as the language contract keeps it. Used by the contract's
# model, fine-tuning and SimCLR.


class CifarBasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride), nn.BatchNorm2d(planes))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet18Twin(nn.Module):
    """With classes=None, the encoder alone (the features before the classifier)."""

    def __init__(self, classes: int | None = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(64)
        blocks, in_planes = [], 64
        for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            blocks += [CifarBasicBlock(in_planes, planes, stride), CifarBasicBlock(planes, planes)]
            in_planes = planes
        self.layers = nn.Sequential(*blocks)
        self.linear = nn.Linear(512, classes) if classes else None

    def forward(self, x):
        out = torch.flatten(F.adaptive_avg_pool2d(self.layers(F.relu(self.bn1(self.conv1(x)))), 1), 1)
        return self.linear(out) if self.linear is not None else out
