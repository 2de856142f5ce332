"""Models and blocks that are a chain of unnamed layers compile to nn.Sequential subclasses, keyed
as PyTorch keys them (`1.weight` for `nn.Sequential(nn.Flatten(), nn.Linear(...))`), checked against
nn.Sequential twins written with torch's own modules: the twin loads dslc's state dict strictly, by
name, and computes the same outputs."""
from __future__ import annotations

import ast as pyast

import pytest
import torch
from torch import nn

import dslc
from dslc.api import exec_source

MLP = """
model Mlp(hidden: int = 16, classes: int = 3) {
    input image: [B, 1, 4, 4]
    Flatten()
    Linear(hidden)
    ReLU()
    Dropout(0.1)
    Linear(classes)
}
"""


def _program(tmp_path, text: str):
    path = tmp_path / "chain.dl"
    path.write_text(text, encoding="utf-8")
    return dslc.load(str(path))


def _module(prog, opt: int = 0):
    return exec_source(prog.source(opt=opt), f"<chain -O{opt}>")


def _class(source: str, name: str) -> pyast.ClassDef:
    return next(n for n in pyast.parse(source).body if isinstance(n, pyast.ClassDef) and n.name == name)


def test_a_model_that_is_a_chain_is_an_nn_sequential_with_torchs_keys(tmp_path):
    prog = _program(tmp_path, MLP)
    source = prog.source()
    cls = _class(source, "Mlp")
    assert [pyast.unparse(b) for b in cls.bases] == ["nn.Sequential"]
    assert not any(isinstance(n, pyast.FunctionDef) and n.name == "forward" for n in cls.body)
    torch.manual_seed(0)
    mine = _module(prog).Mlp(hidden=8, classes=5).eval()
    twin = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Dropout(0.1), nn.Linear(8, 5)).eval()
    assert list(mine.state_dict()) == ["1.weight", "1.bias", "4.weight", "4.bias"]
    twin.load_state_dict(mine.state_dict(), strict=True)
    x = torch.rand(3, 1, 4, 4)
    torch.testing.assert_close(mine(x), twin(x))
    # the API's module is the generated class
    assert list(prog.build("Mlp").state_dict()) == list(mine.state_dict())


def test_long_chains_wrap_under_the_line_limit(tmp_path):
    # 120 columns, torchvision's black line-length: this chain needs two lines
    prog = _program(tmp_path, MLP.replace("Dropout(0.1)", "Dropout(0.1)\n    Linear(hidden)\n    ReLU()"))
    source = prog.source()
    init = next(n for n in _class(source, "Mlp").body if isinstance(n, pyast.FunctionDef))
    lines = source.splitlines()[init.body[0].lineno - 1:init.body[0].end_lineno]
    assert len(lines) == 2 and all(len(line) <= 120 for line in lines)
    assert len(lines[0]) > 100                          # the first line is filled before wrapping
    assert lines[1].lstrip().startswith("nn.")          # aligned under the first element
    assert lines[1].index("nn.") == lines[0].index("nn.")


def test_minus_o2_keeps_the_places_of_the_layers_it_drops(tmp_path):
    """-O2 drops the Dropout: the linear layers keep their keys, so the -O0 weights load."""
    prog = _program(tmp_path, MLP)
    torch.manual_seed(0)
    plain = _module(prog).Mlp().eval()
    optimized = _module(prog, opt=2).Mlp()
    assert list(optimized.state_dict()) == list(plain.state_dict())
    optimized.load_state_dict(plain.state_dict())
    x = torch.rand(2, 1, 4, 4)
    torch.testing.assert_close(optimized(x), plain(x))


def test_a_named_layer_keeps_the_class_form(tmp_path):
    prog = _program(tmp_path, MLP.replace("Linear(classes)", "Linear(classes) as head"))
    cls = _class(prog.source(), "Mlp")
    assert [pyast.unparse(b) for b in cls.bases] == ["nn.Module"]
    assert "head.weight" in _module(prog).Mlp().state_dict()


def test_a_chain_without_weights_stays_functions(tmp_path):
    prog = _program(tmp_path, "model Act {\n    input x: [B, 4]\n    ReLU()\n    Tanh()\n}\n")
    assert [pyast.unparse(b) for b in _class(prog.source(), "Act").bases] == ["nn.Module"]


def test_a_block_that_is_a_chain_is_an_nn_sequential_member(tmp_path):
    prog = _program(tmp_path, """
block Encoder(hidden: int, latent: int) {
    Linear(hidden)
    ReLU()
    Linear(latent)
}

model Coder {
    input x: [B, 10]
    code = x -> Encoder(8, 2) as encoder
    output code -> Linear(10) as decoder, code
}
""")
    source = prog.source()
    assert [pyast.unparse(b) for b in _class(source, "Encoder").bases] == ["nn.Sequential"]
    torch.manual_seed(0)
    mine = _module(prog).Coder().eval()

    class Twin(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = nn.Sequential(nn.Linear(10, 8), nn.ReLU(), nn.Linear(8, 2))
            self.decoder = nn.Linear(2, 10)

        def forward(self, x):
            code = self.encoder(x)
            return self.decoder(code), code

    twin = Twin()
    twin.load_state_dict(mine.state_dict(), strict=True)
    x = torch.rand(3, 10)
    for got, want in zip(mine(x), twin(x)):
        torch.testing.assert_close(got, want)


CHECKED = """
model Convs(width: int = 4) {
    input x: [B, 3, H, W]
    Conv2d(width, 3)
    ReLU()
    Conv2d(width, 3)
}
"""


@pytest.mark.parametrize("channels_last", [False, True])
def test_a_sequential_model_checks_its_run_time_sizes_first(tmp_path, channels_last):
    """A requirement on a run-time size (H >= 5 for two 3×3 convolutions) is checked before the layers
    run, in a forward of the model's own that torch.jit.script compiles."""
    prog = _program(tmp_path, CHECKED)
    mod = exec_source(prog.source(channels_last=channels_last), f"<convs {channels_last}>")
    torch.manual_seed(0)
    mine = mod.Convs().eval()
    twin = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3)).eval()
    twin.load_state_dict(mine.state_dict(), strict=True)
    x = torch.rand(2, 3, 7, 6)
    torch.testing.assert_close(mine(x), twin(x))
    with pytest.raises(ValueError, match=r"Convs needs H >= 5 \(chain.dl:6\), got H = 4"):
        mine(torch.rand(2, 3, 4, 6))
    scripted = torch.jit.script(mine)
    torch.testing.assert_close(scripted(x), twin(x))


def test_a_chain_of_blocks_and_layers_is_an_nn_sequential_of_them(tmp_path):
    """UNet's `Down`: a max pool, then a block that is itself a chain; the model a chain of both."""
    prog = _program(tmp_path, """
block Double(out: int) {
    Conv2d(out, 3, padding=1, bias=false)
    BatchNorm2d()
    ReLU()
}

block Down(out: int) {
    MaxPool2d(2)
    Double(out)
}

model Net(width: int = 4) {
    input x: [B, 3, 8, 8]
    Double(width)
    Down(2 * width)
    Flatten()
    Linear(3)
}
""")
    source = prog.source()
    for name in ("Double", "Down", "Net"):
        assert [pyast.unparse(b) for b in _class(source, name).bases] == ["nn.Sequential"], name
    torch.manual_seed(0)
    mine = _module(prog).Net(width=2).eval()

    def double(i, o):
        return nn.Sequential(nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU())
    twin = nn.Sequential(double(3, 2), nn.Sequential(nn.MaxPool2d(2), double(2, 4)), nn.Flatten(),
                         nn.Linear(4 * 4 * 4, 3)).eval()
    assert "1.1.0.weight" in mine.state_dict()
    twin.load_state_dict(mine.state_dict(), strict=True)
    x = torch.rand(2, 3, 8, 8)
    torch.testing.assert_close(mine(x), twin(x))


STAGES = """
block Features(config: list, bn: bool = false) {
    for width, convs in config {
        repeat convs {
            Conv2d(width, 3, padding=1)
            if bn {
                BatchNorm2d()
            }
            ReLU()
        }
        MaxPool2d(2)
    }
}

model Net {
    input x: [B, 3, 8, 8]
    Features([[4, 1], [6, 2]], bn=true) as features
    Flatten()
    Linear(5) as fc
}
"""


def test_loops_that_make_several_layers_a_pass_join_the_chain(tmp_path):
    """torchvision's VGG `make_layers`: a loop that unrolls into the chain adds its layers to the one flat
    nn.Sequential, numbered on across passes (`features.4` is the second stage's first convolution)."""
    prog = _program(tmp_path, STAGES)
    source = prog.source()
    assert [pyast.unparse(b) for b in _class(source, "Features").bases] == ["nn.Sequential"]
    torch.manual_seed(0)
    mine = _module(prog).Net().eval()
    twin = nn.Module()
    twin.features = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
        nn.Conv2d(6, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2))
    twin.fc = nn.Linear(6 * 2 * 2, 5)
    assert [k for k in mine.state_dict() if k.endswith("weight")] == \
        ["features.0.weight", "features.1.weight", "features.4.weight", "features.5.weight", "features.7.weight",
         "features.8.weight", "fc.weight"]
    twin.load_state_dict(mine.state_dict(), strict=True)
    for m in twin.features:   # batch norm statistics that are not the identity
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    mine.load_state_dict(twin.state_dict(), strict=True)
    twin.eval()
    x = torch.rand(2, 3, 8, 8)
    torch.testing.assert_close(mine(x), twin.fc(twin.features(x).flatten(1)))
