"""The PyTorch backend's promises: readable, deterministic, injection-proof, dslc-free,
and the same weights through the API and the compiled file for the same seed."""
from __future__ import annotations

import ast as pyast
import os
import subprocess
import sys

import pytest
from support import ROOT, run_without_dslc

import dslc
from dslc.api import exec_source

HOSTILE = 'x"); import os; os.system("echo pwned"); print("\\\n\'\'\'"""'


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_hostile_strings_stay_strings(tmp_path):
    payload = HOSTILE.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    src = f'''model Evil(tag: str = "{payload}", width: int = 4) {{
    input x: [B, 3]
    h = x -> Linear(width)
    if tag == "never" {{
        h = h -> ReLU()
    }}
    output h
}}
'''
    path = _write(tmp_path, 'we"ird\\name""".dl', src)
    prog = dslc.load(path)
    code = prog.source()
    tree = pyast.parse(code)  # still valid Python
    strings = [n.value for n in pyast.walk(tree) if isinstance(n, pyast.Constant) and isinstance(n.value, str)]
    assert HOSTILE in strings, "the string reaches the code only as a literal"
    # every occurrence of the payload's code-looking part is inside a string literal
    for node in pyast.walk(tree):
        if isinstance(node, pyast.Call) and isinstance(node.func, pyast.Attribute):
            assert node.func.attr != "system"
    mod = exec_source(code, "<evil>")
    assert mod.Evil(tag=HOSTILE)  # the guard compares with the exact string
    with pytest.raises(ValueError):
        mod.Evil(tag="other")


def test_output_is_byte_identical_across_processes(tmp_path):
    script = ("import dslc, sys\n"
              f"sys.stdout.write(dslc.load({os.path.join(ROOT, 'examples', 'language.dl')!r}).source())\n")
    outs = set()
    for seed in ("1", "2", "3"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=ROOT)
        assert r.returncode == 0, r.stderr
        outs.add(r.stdout)
    assert len(outs) == 1


def test_generated_code_runs_without_dslc(tmp_path):
    src = dslc.load(os.path.join(ROOT, "examples", "language.dl")).source(["ResNet18", "VAE"])
    path = _write(tmp_path, "generated.py", src)
    code = (f"import importlib.util, torch\n"
            f"spec = importlib.util.spec_from_file_location('generated', {path!r})\n"
            "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
            "net = m.build('ResNet18').eval()\n"
            "print(tuple(net(torch.randn(2, 3, 32, 32)).shape))\n"
            "recon, mu, log_var = m.build('VAE').eval()(torch.rand(2, 784))\n"
            "print(tuple(recon.shape), tuple(mu.shape))\n")
    r = run_without_dslc(code)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[:2] == ["(2, 10)", "(2, 784) (2, 20)"]
    blocked = run_without_dslc("import dslc")
    assert blocked.returncode != 0 and "blocked" in blocked.stderr


def test_build_and_compile_give_the_same_weights():
    import torch
    prog = dslc.load(os.path.join(ROOT, "examples", "language.dl"))
    a = prog.build("ResNet18", seed=7)
    mod = exec_source(prog.source(["ResNet18"], seed=7), "<compiled>")
    b = mod.build()
    c = prog.build("ResNet18", seed=8)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert list(sa) == list(sb)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa if sa[k].is_floating_point())


# Each generated class takes its model's parameters. Built with other values, it must equal
# what dslc compiles for those values (a wrong size expression would give other shapes).
OTHER_VALUES = {
    "MnistMLP": {"hidden": 48, "classes": 7},
    "ResNet18": {"classes": 3},
    "LSTMClassifier": {"vocab": 50, "embed": 12, "hidden": 20, "classes": 5},
    "VAE": {"input_dim": 100, "latent": 6},
    "Generator": {"latent": 16, "out": 64},
    "Discriminator": {"inp": 64},
    "Classifier": {"classes": 4},
    "ViT": {"image": 64, "patch": 8, "dim": 96, "heads": 6, "classes": 5},
    "GPT": {"vocab": 300, "context": 64, "dim": 96, "heads": 4},
}


@pytest.mark.parametrize("name", sorted(OTHER_VALUES))
def test_constructor_arguments_mean_what_dslc_compiles(name):
    import torch
    prog = dslc.load(os.path.join(ROOT, "examples", "language.dl"))
    values = OTHER_VALUES[name]
    mod = exec_source(prog.source([name]), f"<ctor {name}>")
    with torch.device("meta"):
        from_class = getattr(mod, name)(**values)
        recompiled = prog.build(name, **values)
    a = {k: tuple(v.shape) for k, v in from_class.state_dict().items()}
    b = {k: tuple(v.shape) for k, v in recompiled.state_dict().items()}
    assert a == b


def test_structural_parameters_are_checked(tmp_path):
    """A repeat of one block keeps its count live (a module list), and so does a chain of layers
    looping over a list (`x = x -> Linear(w)`: torchvision's make_layers); a structure unrolled from a
    list parameter (a residual sum is no chain) is fixed in length, and the constructor says so for
    other values."""
    import torch
    prog = dslc.load(os.path.join(ROOT, "examples", "language.dl"))
    mod = exec_source(prog.source(["ViT"]), "<vit>")
    count = sum(p.numel() for p in mod.ViT(depth=6).parameters())
    assert count == sum(p.numel() for p in prog.build("ViT", depth=6).parameters())
    path = tmp_path / "w.dl"
    path.write_text("model M(widths: list = [8, 4]) {\n    input x: [B, 2]\n    for w in widths { x = x -> Linear(w) }\n"
                    "    output x\n}\n", encoding="utf-8")
    mod = exec_source(dslc.load(str(path)).source(), "<w>")
    shapes = [tuple(p.shape) for p in mod.M(widths=[3, 5, 7]).parameters()]
    assert shapes == [(3, 2), (3,), (5, 3), (5,), (7, 5), (7,)]   # nn.Linear(2, 3), (3, 5), (5, 7)
    assert mod.M(widths=[])(torch.ones(1, 2)).tolist() == [[1.0, 1.0]]
    path.write_text("model M(widths: list = [8, 8]) {\n    input x: [B, 8]\n    for w in widths { x = x + Linear(w)(x) }\n"
                    "    output x\n}\n", encoding="utf-8")
    mod = exec_source(dslc.load(str(path)).source(), "<w>")
    with pytest.raises(ValueError, match=r"compiled for len\(widths\) == 2"):
        mod.M(widths=[8])
    # its items are sizes, each of which the residual sums need to be 8 (the input's width)
    with pytest.raises(ValueError, match=r"M needs widths\[-1\] == 8 \(w\.dl:3\)"):
        mod.M(widths=[8, 6])
    assert sum(p.numel() for p in mod.M(widths=[8, 8]).parameters()) == 2 * (8 * 8 + 8)


def test_block_arguments_from_input_sizes_are_not_resubstituted(tmp_path):
    """Caller and callee both name their input `x`: an argument computed from the caller's
    `x.shape[1]` must keep meaning the caller's size (it was once substituted twice)."""
    import torch
    src = tmp_path / "nested.dl"
    src.write_text('''block Inner(out: int) {
    Conv2d(out, 3, padding=1)
}
block Outer(t: int) {
    input x
    output x -> Conv2d(x.shape[1] * t, 1) -> Inner(x.shape[1] * t)
}
model M {
    input x: [B, 16, 8, 8]
    Outer(6)
}
''', encoding="utf-8")
    prog = dslc.load(str(src))
    want = prog.graph("M").output_types()["out"].concrete(B=2)
    assert want == (2, 96, 8, 8)
    out = prog.build("M", seed=0).eval()(torch.randn(2, 16, 8, 8))
    assert tuple(out.shape) == want


def test_constant_initializer_and_zero_d_params(tmp_path):
    """`param t: [] = constant(2.5)`: a learnable scalar (CLIP's temperature, say)."""
    import torch
    from support import ort_run, relative_error

    import dslc
    path = tmp_path / "p.dl"
    path.write_text("model Scale {\n    input x: [B, 4]\n    param t: [] = constant(2.5)\n"
                    "    param v: [4] = constant(-1.0)\n    param w: [] = zeros\n    output x * t + v + w\n}\n")
    prog = dslc.load(str(path))
    net = prog.build("Scale")
    assert net.t.shape == () and float(net.t) == 2.5 and torch.equal(net.v.data, torch.full((4,), -1.0))
    x = torch.rand(3, 4)
    assert torch.equal(net(x), x * 2.5 - 1.0)
    got = ort_run(prog.onnx("Scale"), {"x": x.numpy()})[0]
    assert relative_error(got, (x * 2.5 - 1.0).numpy()) < 1e-6


def test_scalar_operands_keep_their_meaning(tmp_path):
    """`x / (n - 1)` is not `x / n - 1`; a float made from a size holds only for that size."""
    import torch

    import dslc
    path = tmp_path / "p.dl"
    path.write_text("model P(n: int = 8) {\n    input x: [B, 4]\n    output x / (n - 1) + (-2.0) ** (x * 0.0) "
                    "+ x * (1.0 / n)\n}\n")
    prog = dslc.load(str(path))
    x = torch.rand(2, 4)
    want = x / 7 + (-2.0) ** (x * 0.0) + x * 0.125
    torch.testing.assert_close(prog.build("P")(x), want)
    src = prog.source()
    assert "x / (self.n - 1)" in src or "/ (n - 1)" in src
    assert "x * (1.0 / self.n)" in src   # kept as an expression, not the 0.125 of n = 8
    module = prog.module()
    torch.testing.assert_close(module.P(n=4)(x), x / 3 + (-2.0) ** (x * 0.0) + x * 0.25, rtol=0, atol=0)


def test_torch_compile_traces_a_wrapper_around_a_built_model():
    """dynamo imports the module of every class it traces: a built model's module has an importable
    name (it was `<dslc ...>`, and compiling a user's wrapper failed with ModuleNotFoundError)."""
    import torch
    prog = dslc.load(os.path.join(ROOT, "specs", "mnist_mlp.dl"))
    net = prog.build("MnistMLP", seed=0)

    class Loss(torch.nn.Module):   # a user's wrapper: the model is inlined into its graph
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x, y):
            return torch.nn.functional.cross_entropy(self.net(x), y)

    x, y = torch.randn(4, 1, 28, 28), torch.tensor([0, 1, 2, 3])
    want = Loss(net)(x, y)
    got = torch.compile(Loss(net), backend="eager", fullgraph=True)(x, y)
    assert torch.allclose(got, want)
    module = sys.modules[type(net).__module__]
    assert module.__file__.startswith("<dslc mnist_mlp.dl")   # tracebacks still name the .dl file
    assert prog.build("MnistMLP", seed=0).__class__ is type(net)   # the same source is executed once


SQUEEZE = '''block Squeeze {
    input x
    output x -> Conv2d(max(1, x.shape[1] // 4), 1)
}
model Big(c: int = 16) {
    input x: [B, c, 4, 4]
    Squeeze()
}
model Flat(c: int = 16) {
    input x: [B, T, c]
    h = x -> Linear(max(1, c // 4))
    output h.reshape(B, T * max(1, c // 4))
}
'''


def test_max_of_sizes_stays_an_expression_in_the_class(tmp_path):
    """`max(1, x.shape[1] // 4)` is `max(1, in_channels // 4)` in the generated block: no guard, so
    the class compiled at c=16 builds every c as dslc does, and as the torch twin does."""
    import torch
    from torch import nn
    prog = dslc.load(_write(tmp_path, "squeeze.dl", SQUEEZE))
    source = prog.source(["Big", "Flat"])
    assert "nn.Conv2d(in_channels, max(1, in_channels // 4), 1)" in source
    assert "built for" not in source and "raise ValueError" not in source
    mod = exec_source(source, "<squeeze>")
    assert mod.Squeeze(3).conv.out_channels == 1   # the block used alone: max(1, 0)
    for c in (1, 2, 3, 4, 7, 16):
        torch.manual_seed(0)
        mine = mod.Big(c=c)
        theirs = prog.build("Big", seed=0, c=c)
        twin = nn.Conv2d(c, max(1, c // 4), 1)
        twin.load_state_dict({k.removeprefix("squeeze.conv."): v for k, v in theirs.state_dict().items()})
        assert prog.summary("Big", c=c).total_params == sum(p.numel() for p in twin.parameters())
        for key, value in theirs.state_dict().items():
            assert torch.equal(mine.state_dict()[key], value), (c, key)
        x = torch.rand(2, c, 4, 4)
        with torch.no_grad():
            assert torch.equal(mine(x), twin(x)) and torch.equal(theirs(x), twin(x))


@pytest.mark.parametrize("c", [2, 8])
def test_a_run_time_size_with_a_max_exports_to_onnx(tmp_path, c):
    """`T * max(1, c // 4)`: the generated class computes it from its own `c`, and ONNX gets the
    number (c is known in a built model) times T read off the input."""
    import numpy as np
    import torch
    from support import ort_run
    prog = dslc.load(_write(tmp_path, "squeeze.dl", SQUEEZE))
    net = prog.build("Flat", seed=0, c=c).eval()
    torch.manual_seed(0)
    mine = exec_source(prog.source(["Flat"]), "<flat>").Flat(c=c).eval()
    model = prog.onnx("Flat", seed=0, c=c)   # the full checker runs inside
    for t in (3, 5):
        x = np.random.default_rng(t).random((2, t, c)).astype(np.float32)
        with torch.no_grad():
            want = net(torch.from_numpy(x))
            assert torch.equal(mine(torch.from_numpy(x)), want)
        assert want.shape == (2, t * max(1, c // 4))
        got, = ort_run(model, {"x": x})
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-5, atol=1e-6)


# The CIFAR-10 classifier of PyTorch's "Training a classifier" tutorial.
TUTORIAL_NET = """model Net(classes: int = 10) {
    input x: [B, 3, 32, 32]
    h = x -> Conv2d(6, 5) as conv1 -> relu() -> MaxPool2d(2, 2) as pool
    h = h -> Conv2d(16, 5) as conv2 -> relu() -> pool
    h = flatten(h, start_dim=1) -> Linear(120) as fc1 -> relu() -> Linear(84) as fc2 -> relu()
    output h -> Linear(classes) as fc3
}
"""


def test_a_split_chain_reuses_its_variable(tmp_path):
    """A chain of calls too deep for one statement is split into statements that rebind the name the
    chain ends in (`h = F.relu(self.fc1(h))`, `h = F.relu(self.fc2(h))`), as the tutorial writes it,
    not into a fresh `y` that `h` replaces at once; the module computes the tutorial's Net."""
    import torch
    import torch.nn.functional as F
    from torch import nn
    prog = dslc.load(_write(tmp_path, "net.dl", TUTORIAL_NET))
    source = prog.source()
    forward = source[source.index("    def forward"):source.index("\n\n\n", source.index("    def forward"))]
    assert [line.strip() for line in forward.splitlines()[1:]] == [
        "h = self.pool(F.relu(self.conv1(x)))",
        "h = self.pool(F.relu(self.conv2(h)))",
        "h = F.relu(self.fc1(h.flatten(1)))",
        "h = F.relu(self.fc2(h))",
        "return self.fc3(h)"]

    class Twin(nn.Module):   # the tutorial's, by hand
        def __init__(self):
            super().__init__()
            self.conv1, self.pool, self.conv2 = nn.Conv2d(3, 6, 5), nn.MaxPool2d(2, 2), nn.Conv2d(6, 16, 5)
            self.fc1, self.fc2, self.fc3 = nn.Linear(16 * 5 * 5, 120), nn.Linear(120, 84), nn.Linear(84, 10)

        def forward(self, x):
            x = self.pool(F.relu(self.conv1(x)))
            x = self.pool(F.relu(self.conv2(x)))
            x = torch.flatten(x, 1)
            return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))

    mine = exec_source(source, "<net>").Net()
    twin = Twin()
    twin.load_state_dict(mine.state_dict(), strict=True)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(mine(x), twin(x))


def test_a_value_read_beside_the_running_value_keeps_a_name_of_its_own(tmp_path):
    """Only the running value (a call's first input) takes the name the chain ends in: a gate that
    multiplies `h` is another thing than the product `h`, so it keeps a name of its own."""
    path = _write(tmp_path, "gate.dl", """model M(dim: int = 8) {
    input x: [B, T, dim]
    h = x -> Linear(dim) -> relu()
    h = h * (h -> Linear(dim) -> relu() -> Linear(dim) -> relu())
    output h -> Linear(dim)
}
""")
    source = dslc.load(path).source()
    assert "y = self.fc3(F.relu(self.fc2(h)))" in source and "h = h * F.relu(y)" in source


def test_parameters_the_spec_never_reads_are_not_refused(tmp_path):
    """A parameter no statement (nor another's default) reads changes nothing the class builds: any
    value of it is taken; one that decides the structure is still refused."""
    path = tmp_path / "p.dl"
    path.write_text('model M(note: str = "x", flag: bool = true, act: str = "relu") {\n    input x: [B, 4]\n'
                    '    h = x -> Linear(4)\n    if act == "relu" {\n        h = h -> ReLU()\n    }\n    output h\n}\n',
                    encoding="utf-8")
    src = dslc.load(str(path)).source()
    mod = exec_source(src, "<p>")
    assert "note" not in src.split("def __init__")[1].split("super()")[0].replace("note: str", "")
    mod.M(note="y", flag=False)
    with pytest.raises(ValueError, match='compiled for act="relu"'):
        mod.M(act="gelu")
