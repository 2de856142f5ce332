"""Name templates (frontend/templates.py): `as "encoder_layer_{i}"` names the layer or block each pass of
a loop makes. In a loop kept as a list the names are its keys, and the generated class builds the list
with `add_module` in a loop over the index, as torchvision builds its OrderedDicts; in a loop that
unrolls they are attributes. Checked against hand-written twins and onnxruntime."""
from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest
import torch
from test_containers import BlockTwin as EncTwin  # pre-norm block: x + gelu(fc(ln(x)))
from test_dense_list import UnitTwin  # the dense layer: norm, relu, 3×3 conv
from torch import nn

import dslc
from dslc.api import exec_source
from dslc.diagnostics import DslcError

SPEC = """
block Enc(dim: int) {
    input x
    output x + (x -> LayerNorm() as ln -> Linear(dim) as fc -> GELU())
}

block Stack(dim: int, depth: int) {
    input x
    h = x
    for i in range(depth) as layers {
        h = h -> Enc(dim) as "encoder_layer_{i}"
    }
    output h
}

model Net(dim: int = 8, depth: int = 3) {
    input x: [B, dim]
    h = x -> Stack(dim, depth) as encoder
    for i in range(2) {
        h = h -> Linear(dim) as "fc{i + 1}"
    }
    output h
}
"""


class NetTwin(nn.Module):
    """torchvision's way: an nn.Sequential of an OrderedDict built in a loop, keyed by name."""

    def __init__(self, dim: int = 8, depth: int = 3):
        super().__init__()
        self.encoder = nn.Module()
        self.encoder.layers = nn.Sequential(OrderedDict((f"encoder_layer_{i}", EncTwin(dim)) for i in range(depth)))
        self.fc1 = nn.Linear(dim, dim)
        self.fc2 = nn.Linear(dim, dim)

    def forward(self, x):
        return self.fc2(self.fc1(self.encoder.layers(x)))


def _load(tmp_path, text: str = SPEC):
    path = tmp_path / "templates.dl"
    path.write_text(text, encoding="utf-8")
    return dslc.load(str(path))


def _error(tmp_path, text: str) -> str:
    with pytest.raises(DslcError) as e:
        _load(tmp_path, text)
    return str(e.value)


def _shapes(module: nn.Module) -> list:
    return [(k, tuple(v.shape)) for k, v in module.state_dict().items()]


def test_a_templated_list_is_keyed_by_its_names_and_built_in_a_loop(tmp_path):
    src = _load(tmp_path).source()
    assert "h = self.layers(x)" in src   # an nn.Sequential of its own, called as one
    assert "self.layers = nn.Sequential()\n        for i in range(depth):\n" \
           '            self.layers.add_module(f"encoder_layer_{i}", Enc(dim))' in src
    assert "self.fc1 = nn.Linear(dim, dim)" in src and "self.fc2 = nn.Linear(dim, dim)" in src
    assert "compiled for" not in src   # the count stays an argument


def test_the_class_builds_other_counts_with_the_twins_keys_and_outputs(tmp_path):
    prog = _load(tmp_path)
    module = exec_source(prog.source(), "<templates>")   # compiled at depth=3
    for depth in (3, 1, 5):
        torch.manual_seed(0)
        mine = module.Net(depth=depth).eval()
        twin = NetTwin(depth=depth).eval()
        assert _shapes(mine) == _shapes(twin)
        assert f"encoder.layers.encoder_layer_{depth - 1}.fc.weight" in mine.state_dict()
        twin.load_state_dict(mine.state_dict(), strict=True)
        x = torch.rand(2, 8)
        torch.testing.assert_close(mine(x), twin(x))
        assert _shapes(prog.build("Net", depth=depth)) == _shapes(mine)   # dslc's own build agrees


def test_onnx_names_the_weights_by_the_keys_and_matches_torch(tmp_path):
    import onnx
    import onnxruntime as ort
    prog = _load(tmp_path)
    model = prog.onnx("Net", seed=0)
    onnx.checker.check_model(model, full_check=True)
    names = {i.name for i in model.graph.initializer}
    assert "encoder.layers.encoder_layer_2.fc.weight" in names and "fc2.bias" in names
    mine = prog.build("Net", seed=0).eval()
    x = np.random.default_rng(0).random((2, 8), dtype=np.float32)
    got = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, mine(torch.from_numpy(x)).detach().numpy(), rtol=1e-5, atol=1e-5)


def test_summary_and_diagram_show_the_keys(tmp_path):
    prog = _load(tmp_path)
    summary = str(prog.summary("Net"))
    assert "encoder_layer_0" in summary and "fc2" in summary
    assert "layers.encoder_layer_0 … layers.encoder_layer_2" in prog.diagram("Net", depth=2)


def test_a_sequential_block_of_templated_elements(tmp_path):
    """A block whose whole body is the loop is an nn.Sequential keyed by the names (torchvision's
    `layers = OrderedDict(); ...; nn.Sequential(layers)`)."""
    spec = SPEC.replace("""    input x
    h = x
    for i in range(depth) as layers {
        h = h -> Enc(dim) as "encoder_layer_{i}"
    }
    output h""", """    for i in range(depth) {
        Enc(dim) as "encoder_layer_{i}"
    }""")
    prog = _load(tmp_path, spec)
    src = prog.source()
    assert "class Stack(nn.Sequential):" in src
    assert 'for i in range(depth):\n            self.add_module(f"encoder_layer_{i}", Enc(dim))' in src
    module = exec_source(src, "<templates>")
    for depth in (3, 4):
        mine = module.Net(depth=depth)
        twin = NetTwin(depth=depth)
        assert [k.replace("encoder.", "encoder.layers.", 1) for k, _ in _shapes(mine)] == \
            [k for k, _ in _shapes(twin)]


def test_names_that_follow_no_template_of_the_index_are_listed(tmp_path):
    """`fc{2 * i}` keys 0, 2, 4: the list is written out with its keys, and its count is fixed."""
    spec = """
model M(n: int = 3) {
    input x: [B, 4]
    for i in range(n) as layers { x = x -> Linear(4) as "fc{2 * i}" }
    output x
}
"""
    prog = _load(tmp_path, spec)
    src = prog.source()
    for k in (0, 2, 4):
        assert f'self.layers.add_module("fc{k}", nn.Linear(4, 4))' in src
    assert "compiled for n == 3" in src
    assert [k for k in prog.build("M").state_dict()] == [f"layers.fc{k}.{w}" for k in (0, 2, 4)
                                                          for w in ("weight", "bias")]


def test_a_first_element_that_differs_keeps_the_count(tmp_path):
    """torchvision's `_make_layer`: the first element maps 4 features to 8, the rest 8 to 8."""
    spec = """
model M(n: int = 3) {
    input x: [B, 4]
    for i in range(n) as layers { x = x -> Linear(8) as "block{i + 1}" }
    output x
}
"""
    src = _load(tmp_path, spec).source()
    assert 'self.layers.add_module("block1", nn.Linear(4, 8))' in src
    assert 'for i in range(1, n):\n            self.layers.add_module(f"block{i + 1}", nn.Linear(8, 8))' in src
    module = exec_source(src, "<templates>")
    assert list(module.M(n=4).state_dict())[-2:] == ["layers.block4.weight", "layers.block4.bias"]


@pytest.mark.parametrize("template,code,words,caret", [
    ('"layer{"', "E0101", "opens a brace it does not close", '{'),
    ('"layer{i}}"', "E0101", "closes a brace it did not open", '}'),
    ('"layer{}"', "E0101", "has an empty `{}`", '{'),
    ('"layer"', "E0101", "has no `{expression}`", 'l'),
    ('"{i}"', "E0211", "the template makes `0`, which cannot name a layer", '"'),
    ('"fc{1.5}"', "E0301", "takes ints and strings", '1'),
    ('"fc{i +}"', "E0101", "this name template's `{i +}` is not a whole expression", '+'),
    ('"fc{n}"', "E0210", "would name a new layer on every pass", '"'),
])
def test_bad_templates_are_clean_diagnostics(tmp_path, template, code, words, caret):
    spec = f"""
model M(n: int = 3) {{
    input x: [B, 4]
    for i in range(3) {{ x = x -> Linear(4) as {template} }}
    output x
}}
"""
    msg = _error(tmp_path, spec)
    assert code in msg and words in msg, msg
    assert "templates.dl:4:" in msg and "Traceback" not in msg
    line = next(s for s in msg.splitlines() if "for i in range(3)" in s)
    mark = msg.splitlines()[msg.splitlines().index(line) + 1]
    source = spec.splitlines()[3]
    assert source[mark.index("^") - line.index("for i") + source.index("for i")] == caret, msg


def test_two_templates_that_make_one_name_are_refused(tmp_path):
    msg = _error(tmp_path, """
model M {
    input x: [B, 4]
    for i in range(2) { x = x -> Linear(4) as "fc{i}" }
    for i in range(2) { x = x -> Linear(4) as "fc{i}" }
    output x
}
""")
    assert "E0210" in msg and "a layer named `fc0` already exists" in msg


DENSE = """
block Unit(growth: int) {
    BatchNorm2d() as norm
    ReLU()
    Conv2d(growth, 3, padding=1, bias=false) as conv
}

block Dense(layers: int, growth: int) {
    input x
    for i in range(layers) {
        x = concat([x, x -> Unit(growth) as "denselayer{i + 1}"], dim=1)
    }
    output x
}

model Net(layers: int = 3, growth: int = 4) {
    input image: [B, 3, 8, 8]
    h = image -> Conv2d(6, 3, padding=1) as stem -> Dense(layers, growth) as dense
    output h -> Conv2d(2, 1) as head
}
"""


class DenseTwin(nn.ModuleDict):
    """torchvision's _DenseBlock: a ModuleDict of `denselayer{i + 1}`."""

    def __init__(self, cin: int, layers: int, growth: int):
        super().__init__()
        for i in range(layers):
            self.add_module(f"denselayer{i + 1}", UnitTwin(cin + i * growth, growth))

    def forward(self, x):
        for layer in self.values():
            x = torch.cat([x, layer(x)], dim=1)
        return x


class DenseNetTwin(nn.Module):
    def __init__(self, layers: int, growth: int):
        super().__init__()
        self.stem = nn.Conv2d(3, 6, 3, padding=1)
        self.dense = DenseTwin(6, layers, growth)
        self.head = nn.Conv2d(6 + layers * growth, 2, 1)

    def forward(self, x):
        return self.head(self.dense(self.stem(x)))


def test_a_templated_dense_loop_is_its_block_a_module_dict(tmp_path):
    prog = _load(tmp_path, DENSE)
    src = prog.source()
    assert "class Dense(nn.ModuleDict):" in src
    assert 'self.add_module(f"denselayer{i + 1}", Unit(num_features + i * growth, growth))' in src
    assert "for layer in self.values():" in src and "compiled for" not in src
    module = exec_source(src, "<dense>")   # compiled at layers=3
    for layers, growth in ((3, 4), (1, 2), (5, 3)):
        torch.manual_seed(0)
        mine, twin = module.Net(layers=layers, growth=growth).eval(), DenseNetTwin(layers, growth).eval()
        assert _shapes(mine) == _shapes(twin)
        twin.load_state_dict(mine.state_dict(), strict=True)
        x = torch.rand(2, 3, 8, 8)
        torch.testing.assert_close(mine(x), twin(x))
        torch.testing.assert_close(torch.jit.script(mine)(x), twin(x))


def test_a_template_does_not_name_a_loop(tmp_path):
    msg = _error(tmp_path, """
model M {
    input x: [B, 4]
    for i in range(2) as "layers{i}" { x = x -> Linear(4) }
    output x
}
""")
    assert "E0211" in msg and "a list has one name" in msg and "^^^^^^^^^^^" in msg
