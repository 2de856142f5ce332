"""`inplace=`: accepted wherever torch takes it, kept in the generated code only where overwriting the
input is safe, and the same function as torch's modules (forward, backward) either way."""
from __future__ import annotations

import inspect

import pytest
import torch
import torch.nn.functional as F
from support import ort_run

import dslc
from dslc.ops import REGISTRY


def _torch_counterpart(op):
    """The torch module or function an entry emits: its TorchLayer's class, or F's function of its name."""
    if op.kind == "layer":
        cls = op.torch.cls
        return getattr(torch.nn, cls[3:], None) if cls.startswith("nn.") else None
    return getattr(F, op.name, None) if op.kind == "function" else None


def _takes_inplace(fn) -> bool | None:
    try:
        return "inplace" in inspect.signature(fn).parameters
    except (TypeError, ValueError):   # a builtin without a signature (F.gelu): it takes no `inplace`
        return False


def test_every_entry_whose_torch_counterpart_takes_inplace_accepts_it_and_no_other():
    checked = set()
    for op in REGISTRY.values():
        target = _torch_counterpart(op)
        if target is None:
            assert op.param("inplace") is None, f"{op.name}: torch has no counterpart of it that takes inplace"
            continue
        takes = _takes_inplace(target)
        assert (op.param("inplace") is not None) == takes, f"{op.name} vs {target}"
        if takes:
            checked.add(op.name)
            assert op.param("inplace").default is False
    assert {"ReLU", "relu", "LeakyReLU", "leaky_relu", "ELU", "SiLU", "Mish", "Hardswish", "Hardsigmoid", "SELU",
            "ReLU6", "Dropout", "Dropout1d", "Dropout2d", "AlphaDropout", "dropout"} <= checked


def _load(tmp_path, text: str):
    path = tmp_path / "m.dl"
    path.write_text(text)
    return dslc.load(str(path))


# A layer and its torch twin after a Linear (a safe place): the generated module overwrites in place.
LAYERS = [("ReLU(inplace=true)", torch.nn.ReLU()), ("ReLU6(inplace=true)", torch.nn.ReLU6()),
          ("LeakyReLU(0.2, inplace=true)", torch.nn.LeakyReLU(0.2)), ("ELU(0.5, inplace=true)", torch.nn.ELU(0.5)),
          ("SELU(inplace=true)", torch.nn.SELU()), ("SiLU(inplace=true)", torch.nn.SiLU()),
          ("Mish(inplace=true)", torch.nn.Mish()), ("Hardswish(inplace=true)", torch.nn.Hardswish()),
          ("Hardsigmoid(inplace=true)", torch.nn.Hardsigmoid()), ("Dropout(0.3, inplace=true)", torch.nn.Dropout(0.3)),
          ("AlphaDropout(0.3, inplace=true)", torch.nn.AlphaDropout(0.3)),
          ("relu(inplace=true)", torch.nn.ReLU()), ("leaky_relu(0.1, inplace=true)", torch.nn.LeakyReLU(0.1)),
          ("elu(inplace=true)", torch.nn.ELU()), ("silu(inplace=true)", torch.nn.SiLU()),
          ("hardswish(inplace=true)", torch.nn.Hardswish()), ("dropout(0.3, inplace=true)", torch.nn.Dropout(0.3))]


def _twin(layer, second):
    return torch.nn.Sequential(torch.nn.Linear(5, 6), layer, torch.nn.Linear(6, second))


def _same_training_step(net, twin, x):
    """Training mode (dropout draws the same masks at the same seed): outputs and gradients equal."""
    twin.load_state_dict({k.replace("fc1.", "0.").replace("fc2.", "2."): v for k, v in net.state_dict().items()})
    net.train(), twin.train()
    torch.manual_seed(5)
    out = net(x)
    torch.manual_seed(5)
    want = twin(x)
    assert torch.equal(out, want)
    (out * torch.arange(out.numel()).reshape(out.shape)).sum().backward()
    (want * torch.arange(want.numel()).reshape(want.shape)).sum().backward()
    for (name, p), q in zip(net.named_parameters(), twin.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-6), name


@pytest.mark.parametrize("stage,layer", LAYERS, ids=[s for s, _ in LAYERS])
def test_inplace_after_a_linear_layer_is_emitted_and_trains_as_torch(tmp_path, stage, layer):
    prog = _load(tmp_path, f"model M {{\n input x: [B, 5]\n output x -> Linear(6) -> {stage} -> Linear(3)\n}}\n")
    src = prog.source(["M"])
    assert "inplace=True" in src, src
    _same_training_step(prog.build("M", seed=0), _twin(layer, 3), torch.randn(4, 5))


@pytest.mark.parametrize("body,kept,why", [
    ("h = x -> Linear(6)\n a = relu(h, inplace=true)\n output a + h", 0, "its input has another reader"),
    ("h = x -> Linear(6)\n output (h, relu(h, inplace=true))", 0, "its input is an output"),
    ("output x -> ReLU(inplace=true) -> Linear(6)", 0, "its input is the model's input"),
    ("output x -> Linear(6) -> sigmoid -> ReLU(inplace=true)", 0, "sigmoid's backward reads its output"),
    ("output x -> Linear(6) -> ReLU(inplace=true) -> Dropout(0.5, inplace=true)", 1,
     "the ReLU's is kept; the dropout's is not: relu's backward reads its output"),
    ("output x -> Linear(6) -> LeakyReLU(-0.1, inplace=true)", 0, "torch's leaky_relu_ has no backward there"),
    ("output x -> Linear(6) -> elu(alpha=-0.5, inplace=true)", 0, "torch's elu_ has no backward there"),
    ("r = ReLU(inplace=true)\n a = x -> Linear(6) -> r\n output r(x) + sum(a)", 0, "one application is unsafe"),
])
def test_inplace_where_it_is_not_safe_is_dropped_and_backward_works(tmp_path, body, kept, why):
    prog = _load(tmp_path, f"model M {{\n input x: [B, 6]\n {body}\n}}\n")
    src = prog.source(["M"])
    assert src.count("inplace=True") == kept, (why, src)
    net = prog.build("M", seed=0).train()
    x = torch.randn(3, 6, requires_grad=True)
    out = net(x)
    out = out[0] + out[1] if isinstance(out, tuple) else out
    out.sum().backward()   # torch raises here if a tensor autograd needs was overwritten
    assert x.grad is not None


def test_a_chain_keeps_inplace_only_where_safe(tmp_path):
    prog = _load(tmp_path, "model M {\n input x: [B, 3, 8, 8]\n"
                 " h = x -> Conv2d(4, 3, padding=1) -> BatchNorm2d() -> ReLU(inplace=true)\n"
                 " output h -> Conv2d(4, 3) -> relu(inplace=true) -> Dropout2d(0.5, inplace=true)\n}\n")
    src = prog.source(["M"])
    assert "F.relu(self.bn(self.conv1(x)), inplace=True)" in src and "F.relu(self.conv2(h), inplace=True)" in src
    assert src.count("inplace=True") == 2 and "nn.Dropout2d(0.5)" in src, src
    net = prog.build("M", seed=0)
    twin = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                               torch.nn.Conv2d(4, 4, 3), torch.nn.ReLU(), torch.nn.Dropout2d(0.5))
    twin.load_state_dict(dict(zip(twin.state_dict(), net.state_dict().values())))
    x = torch.randn(2, 3, 8, 8)
    for mode in (True, False):
        net.train(mode), twin.train(mode)
        torch.manual_seed(6)
        out = net(x)
        torch.manual_seed(6)
        want = twin(x)
        assert torch.equal(out, want)
        if mode:
            out.sum().backward(), want.sum().backward()
            for p, q in zip(net.parameters(), twin.parameters()):
                assert torch.allclose(p.grad, q.grad, atol=1e-5)
    with torch.no_grad():   # ONNX (the seed's weights: training moved the running statistics)
        want = prog.build("M", seed=0).eval()(x)
    assert torch.allclose(torch.as_tensor(ort_run(prog.onnx("M", seed=0), {"x": x.numpy()})[0]), want, atol=1e-5)


def test_inplace_takes_a_bool(tmp_path):
    with pytest.raises(dslc.DslcError) as err:
        _load(tmp_path, "model M {\n input x: [B, 6]\n output x -> ReLU(inplace=1)\n}\n").graph("M")
    assert "error[E0301]" in str(err.value) and "m.dl:3:" in str(err.value)
