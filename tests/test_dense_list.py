"""A loop that concatenates to the running value what a block makes of it (DenseNet's dense block)
is a module list built in a loop over the index, its count a constructor argument, and a forward
loop that concatenates (torchvision's `_DenseBlock`); checked against a hand-written twin."""
from __future__ import annotations

import ast as pyast

import torch
from torch import nn

import dslc
from dslc.api import exec_source

SPEC = """
block Unit(growth: int) {
    BatchNorm2d() as norm
    ReLU()
    Conv2d(growth, 3, padding=1, bias=false) as conv
}

block Dense(layers: int, growth: int) {
    input x
    for i in range(layers) {
        x = concat([x, x -> Unit(growth)], dim=1)
    }
    output x
}

model Net(layers: int = 3, growth: int = 4) {
    input image: [B, 3, 8, 8]
    h = image -> Conv2d(6, 3, padding=1) as stem -> Dense(layers, growth) as dense
    output h -> Conv2d(2, 1) as head
}
"""


class UnitTwin(nn.Module):
    def __init__(self, cin: int, growth: int):
        super().__init__()
        self.norm = nn.BatchNorm2d(cin)
        self.conv = nn.Conv2d(cin, growth, 3, padding=1, bias=False)

    def forward(self, x):
        return self.conv(torch.relu(self.norm(x)))


class NetTwin(nn.Module):
    def __init__(self, layers: int, growth: int):
        super().__init__()
        self.stem = nn.Conv2d(3, 6, 3, padding=1)
        self.dense = nn.Module()
        self.dense.units = nn.ModuleList([UnitTwin(6 + i * growth, growth) for i in range(layers)])
        self.head = nn.Conv2d(6 + layers * growth, 2, 1)

    def forward(self, x):
        x = self.stem(x)
        for unit in self.dense.units:
            x = torch.cat([x, unit(x)], dim=1)
        return self.head(x)


def _program(tmp_path, text: str = SPEC):
    path = tmp_path / "dense.dl"
    path.write_text(text, encoding="utf-8")
    return dslc.load(str(path))


def _class(source: str, name: str) -> pyast.ClassDef:
    return next(n for n in pyast.parse(source).body if isinstance(n, pyast.ClassDef) and n.name == name)


def test_a_dense_loop_is_a_module_list_made_in_a_loop(tmp_path):
    source = _program(tmp_path).source()
    dense = pyast.unparse(_class(source, "Dense"))
    assert "self.units = nn.ModuleList([Unit(num_features + i * growth, growth) for i in range(layers)])" in dense
    assert "for layer in self.units:\n            x = torch.cat([x, layer(x)], dim=1)" in dense
    assert "compiled for" not in source     # the count stays an argument: nothing fixed


def test_the_class_builds_other_counts_and_matches_a_twin(tmp_path):
    module = exec_source(_program(tmp_path).source(), "<dense>")   # compiled at layers=3
    for layers, growth in ((3, 4), (1, 2), (5, 3)):
        torch.manual_seed(0)
        mine = module.Net(layers=layers, growth=growth).eval()
        twin = NetTwin(layers, growth).eval()
        keys = list(mine.state_dict())
        assert f"dense.units.{layers - 1}.conv.weight" in keys
        twin.load_state_dict(mine.state_dict(), strict=True)   # the same keys: dense.units.0.norm.weight, ...
        x = torch.rand(2, 3, 8, 8)
        torch.testing.assert_close(mine(x), twin(x))
        # the API builds the same keys (dslc's own build at these parameters)
        assert list(_program(tmp_path).build("Net", layers=layers, growth=growth).state_dict()) == keys


def test_other_loops_unroll_with_their_count_fixed(tmp_path):
    """Not a dense list: the block's result first in the concat, or the loop variable in its arguments."""
    loop = "        x = concat([x, x -> Unit(growth)], dim=1)"
    for body in ("        x = concat([x -> Unit(growth), x], dim=1)", "        x = concat([x, x -> Unit(growth + i)], dim=1)"):
        source = _program(tmp_path, SPEC.replace(loop, body)).source()
        assert "self.unit1 = " in source and "self.units" not in source
        assert "compiled for layers == 3" in source
