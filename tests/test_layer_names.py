"""Names and layers as a PyTorch user expects them: a layer or block bound to a name is one
module, shared wherever it is applied (`lin = Linear(8)` then `lin(lin(x))` is `self.lin`
called twice), in the generated PyTorch, in ONNX, in summaries and in diagrams; a layer can
be named before it is applied, named once inside a loop, and named after a library function.
"""
from __future__ import annotations

import numpy as np
import pytest
from support import ort_run

import dslc
from dslc.diagnostics import DslcError

SHARED = """\
model Twice {
    input x: [B, 8]
    lin = Linear(8)
    y = lin(lin(x))
    output y
}
model Cell {
    input x: [B, 8]
    cell = Linear(8)
    h = x
    repeat 3 {
        h = cell(h) -> tanh
    }
    output h
}
block Res(n: int) {
    input x
    output x + (x -> Linear(n) -> ReLU())
}
model Blocks {
    input x: [B, 8]
    r = Res(8)
    output x -> r -> r
}
model Tied {
    input tokens: [B, T] of int64
    emb = Embedding(50, 16)
    head = transpose(emb.weight, 0, 1)
    output (tokens -> emb -> LayerNorm()) @ head
}
model Once {
    input x: [B, 8]
    h = x
    for i in range(3) {
        if i == 0 {
            h = h -> Linear(8) as proj
        } else {
            h = proj(h)
        }
    }
    output h
}
model Siamese {
    input a: [B, 1, 8, 8]
    input b: [B, 1, 8, 8]
    enc = Encoder(4)
    output (a -> enc) - (b -> enc)
}
block Encoder(c: int) {
    Conv2d(c, 3, padding=1)
    ReLU()
    Flatten()
}
"""


@pytest.fixture(scope="module")
def prog(tmp_path_factory):
    path = tmp_path_factory.mktemp("shared") / "shared.dl"
    path.write_text(SHARED)
    return dslc.load(str(path))


def _load(tmp_path, text: str):
    path = tmp_path / "m.dl"
    path.write_text(text)
    return dslc.load(str(path))


def _errors(tmp_path, text: str) -> str:
    with pytest.raises(DslcError) as e:
        _load(tmp_path, text)
    return e.value.render()


def test_a_layer_bound_to_a_name_is_one_module_as_in_pytorch(prog):
    """`lin = Linear(8)`, `lin(lin(x))` is a hand-written module with one nn.Linear called twice: the
    same parameters (72, not 144), the same state-dict keys, and the same outputs with its weights."""
    import torch
    from torch import nn

    class Twin(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(8, 8)

        def forward(self, x):
            return self.lin(self.lin(x))

    net, twin = prog.build("Twice", seed=0), Twin()
    assert sum(p.numel() for p in net.parameters()) == sum(p.numel() for p in twin.parameters()) == 72
    assert list(net.state_dict()) == list(twin.state_dict()) == ["lin.weight", "lin.bias"]
    twin.load_state_dict(net.state_dict())
    x = torch.randn(5, 8)
    torch.testing.assert_close(net(x), twin(x), rtol=0, atol=0)
    src = prog.source(["Twice"])
    assert src.count("nn.Linear(") == 1 and src.count("self.lin(") == 2
    assert prog.summary("Twice").total_params == 72


def test_a_cell_applied_in_a_loop_is_one_layer(prog):
    import torch
    net = prog.build("Cell", seed=0)
    assert list(net.state_dict()) == ["cell.weight", "cell.bias"]
    x = torch.randn(2, 8)
    h = x
    for _ in range(3):
        h = torch.tanh(net.cell(h))
    torch.testing.assert_close(net(x), h, rtol=0, atol=0)


def test_a_block_bound_to_a_name_is_one_module(prog):
    import torch
    net = prog.build("Blocks", seed=0)
    assert list(net.state_dict()) == ["r.fc.weight", "r.fc.bias"]
    x = torch.randn(3, 8)
    once = lambda v: v + torch.relu(net.r.fc(v))  # noqa: E731
    torch.testing.assert_close(net(x), once(once(x)), rtol=0, atol=0)
    siamese = prog.build("Siamese", seed=0)
    assert sum(p.numel() for p in siamese.parameters()) == 4 * 9 + 4
    assert list(siamese.state_dict()) == ["enc.0.weight", "enc.0.bias"]   # Conv is an nn.Sequential


def test_a_layer_named_before_it_is_applied_can_be_read_first(prog):
    """`emb.weight` before `tokens -> emb`: an Embedding's sizes are all given, so it is made where
    its weight is read; the output head is tied to the embedding."""
    import torch
    net = prog.build("Tied", seed=0)
    assert sorted(net.state_dict()) == ["emb.weight", "norm.bias", "norm.weight"]
    tokens = torch.randint(0, 50, (2, 5))
    torch.testing.assert_close(net(tokens), net.norm(net.emb(tokens)) @ net.emb.weight.T)


def test_as_names_once_inside_a_loop(prog):
    net = prog.build("Once", seed=0)
    assert list(net.state_dict()) == ["proj.weight", "proj.bias"]
    assert prog.source(["Once"]).count("self.proj(") == 3


@pytest.mark.parametrize("name", ["Twice", "Cell", "Blocks", "Tied", "Once", "Siamese"])
def test_onnx_reuses_the_shared_initializers(prog, name):
    """ONNX holds each shared weight once, under its state-dict name, and onnxruntime gives PyTorch's
    outputs."""
    import torch
    model = prog.onnx(name, seed=0)
    net = prog.build(name, seed=0).eval()
    names = [i.name for i in model.graph.initializer]
    assert sorted(names) == sorted(net.state_dict())
    graph = prog.graph(name)
    rng = np.random.default_rng(0)
    feeds = {}
    for input_name, ref in graph.inputs:
        t = graph.type_of(ref)
        shape = t.concrete(B=3, T=5)
        feeds[input_name] = rng.integers(0, 50, shape).astype(np.int64) if t.dtype == "int64" else \
            rng.standard_normal(shape).astype(np.float32)
    with torch.no_grad():
        want = net(*[torch.from_numpy(v) for v in feeds.values()]).numpy()
    np.testing.assert_allclose(ort_run(model, feeds)[0], want, rtol=1e-5, atol=1e-5)


def test_summary_and_diagram_count_a_shared_layer_once(prog):
    rows = prog.summary("Twice").layers
    assert [(r.name, r.params, r.shared) for r in rows] == [("lin", 72, False), ("lin", 0, True)]
    dot = prog.diagram("Twice")
    assert "lin\\nLinear 8→8\\n72 params" in dot and "lin (shared)\\nLinear 8→8\"" in dot
    assert 'label="Twice  (72 params)"' in dot
    collapsed = prog.diagram("Blocks")
    assert "r (shared)\\nRes ×2\\n72 params" in collapsed
    expanded = prog.diagram("Blocks", collapse=False)
    assert expanded.count("subgraph cluster_r") == 2 and 'label="r (shared): Res"' in expanded


def test_a_shared_layer_that_does_not_fit_is_e0408_at_the_second_application(tmp_path):
    text = _errors(tmp_path, "model M {\n    input x: [B, 8]\n    lin = Linear(8)\n    y = x -> lin\n"
                             "    output concat([y, y], dim=1) -> lin\n}\n")
    assert "m.dl:5:37: error[E0408]: the shared layer `lin` does not fit these inputs: its `in_features` is 8, " \
           "these inputs need 16" in text
    assert "made for [B, 8] here" in text


def test_a_shared_block_whose_code_would_differ_is_e0408(tmp_path):
    """A shared block is one module: a second application may differ in run-time sizes (and in sizes
    its code does not use), but not in what its class was made with."""
    blocks = ("block Head(n: int) {\n    Flatten()\n    Linear(n)\n}\n"
              "block Conv(n: int) {\n    Conv2d(n, 3, padding=1)\n    ReLU()\n}\n"
              "block Seq {\n    input x: [B, T, D]\n    output x -> Linear(4) -> LayerNorm()\n}\n")
    text = _errors(tmp_path, blocks + "model M {\n    input a: [B, 3, 8, 8]\n    input b: [B, 3, 4, 4]\n"
                                      "    r = Head(4)\n    output (a -> r) + (b -> r)\n}\n")
    # Head is an nn.Sequential (Flatten, Linear): its linear layer is `1`, named with its kind and line
    assert "the shared block `r` does not fit these inputs: the `in_features` of its `Linear` (`1`, line 3) " \
           "is 192, these inputs need 48" in text
    ok = _load(tmp_path, blocks + "model M {\n    input a: [B, 3, 8, 8]\n    input b: [B, 3, 4, 4]\n"
                                  "    input s: [B, S, 6]\n    input t: [B, T, 6]\n    c = Conv(4)\n    q = Seq()\n"
                                  "    output (a -> c), (b -> c), (s -> q), (t -> q)\n}\n")
    import torch
    net = ok.build("M", seed=0)
    # Conv and Seq are chains of layers: nn.Sequentials, keyed by place
    assert sorted(net.state_dict()) == ["c.0.bias", "c.0.weight", "q.0.bias", "q.0.weight",
                                        "q.1.bias", "q.1.weight"]
    outs = net(torch.randn(2, 3, 8, 8), torch.randn(2, 3, 4, 4), torch.randn(2, 3, 6), torch.randn(2, 5, 6))
    assert [tuple(o.shape) for o in outs] == [(2, 4, 8, 8), (2, 4, 4, 4), (2, 3, 4), (2, 5, 4)]


def test_naming_in_a_loop_says_how_to_share_or_separate(tmp_path):
    for stmt in ("h = h -> Linear(8) as proj", "proj = Linear(8)\n        h = proj(h)"):
        text = _errors(tmp_path, f"model M {{\n    input x: [B, 8]\n    h = x\n    repeat 2 {{\n        {stmt}\n"
                                 "    }\n    output h\n}\n")
        assert "error[E0210]: `proj` would name a new layer on every pass of this loop" in text
        assert "make it once before the loop (`proj = Linear(8)`) and apply it inside" in text


def test_a_name_is_one_layer_in_a_model(tmp_path):
    text = _errors(tmp_path, "model M {\n    input x: [B, 8]\n    lin = Linear(8)\n    y = x -> lin\n"
                             "    lin = Linear(8)\n    output y -> lin\n}\n")
    assert "m.dl:5:5: error[E0210]: a layer named `lin` already exists" in text and "first named here" in text


def test_weights_of_a_layer_not_yet_applied_are_unknown_when_it_infers_its_sizes(tmp_path):
    text = _errors(tmp_path, "model M {\n    input x: [B, 8]\n    lin = Linear(8)\n    output lin.weight\n}\n")
    assert "error[E0208]: `lin` has no weights yet: they are made where it is first applied" in text


def test_a_block_cannot_apply_its_callers_layer(tmp_path):
    text = _errors(tmp_path, "block Apply(layer) {\n    input x\n    output x -> layer\n}\n"
                             "model M {\n    input x: [B, 8]\n    lin = Linear(8)\n    output x -> Apply(lin)\n}\n")
    assert "`lin` is a layer of `M`: a block applies only its own layers" in text


@pytest.mark.parametrize("opt", [0, 1, 2])
def test_layers_named_after_library_functions_keep_their_state_dict_names(tmp_path, opt):
    """`as attention`, `dropout = Dropout(...)`, `as gelu`: the original state-dict names
    (`attention.in_proj_weight`) while the generated code still calls F and torch."""
    import torch
    prog = _load(tmp_path, "model M {\n    input x: [B, T, 8]\n"
                           "    attention = MultiheadAttention(8, 2)\n    dropout = Dropout(0.1)\n"
                           "    h = attention(x, x, x) -> dropout\n"
                           "    h = h -> LayerNorm() as layer_norm -> GELU() as gelu\n"
                           "    h = h -> Linear(8) as softmax -> Linear(8) as F -> Linear(8) as torch\n"
                           "    q, k, v = chunk(h -> Linear(24) as linear, 3, dim=-1)\n"
                           "    a = sigmoid(softmax(q)) + relu(v) + layer_norm(gelu(k))\n"
                           "    output a -> dropout\n}\n")
    assert sorted(prog.build("M", seed=0).state_dict()) == sorted(
        ["attention.in_proj_weight", "attention.in_proj_bias", "attention.out_proj.weight",
         "attention.out_proj.bias", "layer_norm.weight", "layer_norm.bias", "softmax.weight", "softmax.bias",
         "F.weight", "F.bias", "torch.weight", "torch.bias", "linear.weight", "linear.bias"])
    net = prog.build("M", seed=0, opt=opt).eval()
    x = torch.randn(2, 5, 8)
    h = net.attention(x, x, x, need_weights=False)[0]
    h = net.gelu(net.layer_norm(h))
    h = net.torch(net.F(net.softmax(h)))
    q, k, v = net.linear(h).chunk(3, dim=-1)
    want = torch.sigmoid(net.softmax(q)) + torch.relu(v) + net.layer_norm(net.gelu(k))
    with torch.no_grad():
        torch.testing.assert_close(net(x), want, rtol=1e-5, atol=1e-5)
    model = prog.onnx("M", seed=0, opt=opt)
    assert "attention.in_proj_weight" in {i.name for i in model.graph.initializer}
    np.testing.assert_allclose(ort_run(model, {"x": x.numpy()})[0], want.detach().numpy(), rtol=1e-5, atol=1e-5)


def test_a_declaration_named_like_the_library_hides_it_with_a_warning(tmp_path):
    """nanoGPT's own `LayerNorm` (with an optional bias): the block is what `LayerNorm(...)` means in
    the file, the generated class is the block's (nn.LayerNorm stays reachable as nn.LayerNorm), and the
    load says so with W0201 at the declaration."""
    import torch
    prog = _load(tmp_path, "block LayerNorm(dim: int) {\n    input x\n    param weight: [dim] = ones\n"
                           "    output x * weight\n}\nmodel M {\n    input x: [B, 4]\n"
                           "    output x -> Linear(4) -> LayerNorm(4) -> tanh\n}\n")
    assert [(w.code, w.severity, w.span.line) for w in prog.warnings] == [("W0201", "warning", 1)]
    assert "the block `LayerNorm` hides the library layer `LayerNorm`" in prog.warnings[0].render()
    net = prog.build("M", seed=0)
    assert sorted(net.state_dict()) == ["fc.bias", "fc.weight", "layer_norm.weight"]
    x = torch.randn(2, 4)
    torch.testing.assert_close(net(x), torch.tanh(net.fc(x) * net.layer_norm.weight))


def test_torch_only_lists_exactly_the_torch_layers_dslc_lacks():
    """TORCH_ONLY is written out (the checker does not import torch): with the registry's layers it is
    exactly the installed torch.nn's module classes, and each suggestion is one of ours."""
    import inspect

    import torch

    from dslc.frontend.torch_names import TORCH_ONLY
    from dslc.ops import REGISTRY
    modules = {n for n in dir(torch.nn) if not n.startswith("_") and inspect.isclass(getattr(torch.nn, n))
               and issubclass(getattr(torch.nn, n), torch.nn.Module)}
    ours = {n for n, op in REGISTRY.items() if op.kind == "layer" and not op.internal}
    assert set(TORCH_ONLY) == modules - ours
    assert not set(TORCH_ONLY) & set(REGISTRY)
    for name, (closest, _) in TORCH_ONLY.items():
        assert closest is None or (closest in REGISTRY and not REGISTRY[closest].internal), name


def test_names_bound_together_and_a_second_name(tmp_path):
    """`a, b = (Linear(8), Linear(4))` names two layers; `x -> a as c` would give one layer two names."""
    prog = _load(tmp_path, "model M {\n    input x: [B, 8]\n    a, b = (Linear(8), Linear(4))\n"
                           "    output x -> a -> a -> b\n}\n")
    assert list(prog.build("M", seed=0).state_dict()) == ["a.weight", "a.bias", "b.weight", "b.bias"]
    text = _errors(tmp_path, "model M {\n    input x: [B, 8]\n    a = Linear(8)\n    output x -> a as c\n}\n")
    assert "error[E0210]: `a` is already a layer's name: `as` cannot give it another" in text
