"""Deployment: every zoo model (its `small` parameters) as TorchScript and as a torch.export program.

The references are the eager modules themselves, run on the same inputs: the scripted or
traced module must compute what the eager one does, and the exported program too at batch
sizes (and other run-time sizes) other than the example's. Whether a model is scripted or
only traced, and which sizes stay dynamic, is pinned in the tables below so that a change
shows.
"""
from __future__ import annotations

import os

import pytest
import torch
from click.testing import CliRunner
from test_specs import CASES, SMALL, SPECS, liven, program

from dslc.cli import main
from dslc.runtime.deploy import example_inputs, example_sizes

# Models torch.jit.script cannot compile, traced instead (the rest are scripted):
TRACED = {
    # the forecast loop `for _ in range(future): y, ... = self.step(y, ...)` reads the `y` the scan loop
    # before it bound last; TorchScript wants every variable bound before a loop reads it
    "sine_forecaster-SineForecaster": "undefined value y",
}
# Run-time sizes torch.export keeps dynamic, where not every one (B and the others)
EXPORT_FIXED = {
    "sine_forecaster-SineForecaster": ["B"],   # `x.split(1, dim=1)` makes one step per element of T
    # torch.export runs nn.LSTM / nn.GRU / nn.RNN one step per element of T: T stays as in the example
    "lstm-LSTMClassifier": ["B"],
    "rnn-RNNClassifier": ["B"],
    "rnn-StackedLSTMClassifier": ["B"],
    "rnn-StackedGRUClassifier": ["B"],
    "rnn-SequenceTagger": ["B"],
}
# Zoo models without `small` parameters, and why they are left out here
UNCHECKED = {
    "resnet-ResNet34": "ResNet18 and ResNet50 cover the same blocks",
    "finetune-ResNet18": "cifar_resnet-ResNet18, imported",
    "simclr-ResNet18": "cifar_resnet-ResNet18, imported",
    "vgg-VGG11": "VGG16 covers the same layers (132M weights each)",
    "vgg-VGG11BN": "VGG16 covers the same layers (132M weights each)",
    "vgg-VGG16BN": "VGG16 covers the same layers (132M weights each)",
}
# The slowest (over 10 s each on one core, 224×224 images through big convolutions)
SLOW = {"vgg-VGG16", "resnet-ResNet50"}


def params(case):
    return [pytest.param(case, marks=pytest.mark.slow) if case.id in SLOW else case]


CHECKED = [p for c in SMALL for p in params(c)]


def test_every_zoo_model_is_checked_or_says_why():
    assert {c.id for c in CASES if c.small is None} == set(UNCHECKED)
    assert set(TRACED) | set(EXPORT_FIXED) | SLOW <= {c.id for c in SMALL}


def setup(case):
    prog = program(case.file)
    net = prog.build(case.model, seed=0, **case.small).eval()
    liven(net)   # signals that survive depth, so that a difference shows
    graph = prog.graph(case.model, **case.small)
    return prog, net, graph


def outputs(out) -> list:
    if isinstance(out, torch.Tensor):
        return [out]
    return [t for o in out for t in outputs(o)]


def assert_same(got, want, tolerance: float = 1e-6) -> None:
    got, want = outputs(got), outputs(want)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("case", CHECKED, ids=lambda c: c.id)
def test_torchscript_computes_what_eager_does(case):
    prog, net, graph = setup(case)
    sizes = example_sizes(graph)
    from dslc.runtime.deploy import torchscript
    result = torchscript(net, graph, sizes)
    assert result.how == ("traced" if case.id in TRACED else "scripted"), result.note
    if case.id in TRACED:
        assert TRACED[case.id] in result.note
    inputs = example_inputs(graph, sizes)
    with torch.no_grad():
        assert_same(result.module(*inputs), net(*inputs))


@pytest.mark.parametrize("case", CHECKED, ids=lambda c: c.id)
def test_exported_program_runs_at_other_sizes(case):
    prog, net, graph = setup(case)
    sizes = example_sizes(graph)
    from dslc.runtime.deploy import exported
    result = exported(net, graph, sizes)
    assert result.dynamic == EXPORT_FIXED.get(case.id, list(sizes)), result.note
    module = result.module.module()   # unlifting the program costs a second or so: once for both sizes
    for scale in (1, 2):   # batch 1, then batch 3 with the other dynamic sizes doubled
        other = {k: 2 * scale - 1 if k == "B" else v * scale if k in result.dynamic else v for k, v in sizes.items()}
        inputs = example_inputs(graph, other)
        with torch.no_grad():   # torch.export's decompositions round differently in the last bits
            assert_same(module(*inputs), net(*inputs), tolerance=1e-5)


def compile_to(tmp_path, file, model, target, *args):
    out = tmp_path / f"{model}.{target}"
    result = CliRunner().invoke(main, ["compile", os.path.join(SPECS, file), "--model", model, "--target", target,
                                       "-o", str(out), *args])
    assert result.exit_code == 0, result.output
    return out, result.stderr


@pytest.mark.parametrize("file, model, how", [("gpt.dl", "GPT", "scripted"),
                                              ("sine_forecaster.dl", "SineForecaster", "traced")])
def test_cli_writes_loadable_files(tmp_path, file, model, how):
    case = next(c for c in CASES if c.model == model)
    sets = [f"--set={k}={v}" for k, v in case.small.items()]
    prog = program(file)
    graph = prog.graph(model, **case.small)
    net = prog.build(model, seed=3, **case.small).eval()
    inputs = example_inputs(graph, {**example_sizes(graph), "B": 3})
    with torch.no_grad():
        want = net(*inputs)
    out, err = compile_to(tmp_path, file, model, "torchscript", "--seed", "3", *sets)
    assert f"({how})" in err
    with torch.no_grad():
        assert_same(torch.jit.load(str(out))(*inputs), want)
    out, err = compile_to(tmp_path, file, model, "exported", "--seed", "3", *sets)
    assert "dynamic sizes: B" in err
    with torch.no_grad():
        assert_same(torch.export.load(str(out)).module()(*inputs), want)
    compile_to(tmp_path, file, model, "exported", "--seed", "3", *sets)   # dslc's own file is replaced


def test_cli_takes_weights_and_sizes(tmp_path):
    """--weights as the onnx target takes them; --size sets the example (and the traced) sizes."""
    from safetensors.torch import save_file
    prog = program("sine_forecaster.dl")
    net = prog.build("SineForecaster", seed=7).eval()
    save_file(net.state_dict(), str(tmp_path / "w.safetensors"))
    out, err = compile_to(tmp_path, "sine_forecaster.dl", "SineForecaster", "torchscript",
                          "--weights", str(tmp_path / "w.safetensors"), "--size", "T=6")
    assert "T=6" in err
    x = torch.rand(4, 6)
    with torch.no_grad():
        assert_same(torch.jit.load(str(out))(x), net(x))


def test_cli_usage_errors(tmp_path):
    path = os.path.join(SPECS, "gpt.dl")
    for args, words in ((["--target", "torchscript", "-o", "-"], "binary"),
                        (["--target", "pytorch", "--size", "T=4"], "--size applies"),
                        (["--target", "exported", "--size", "T"], "NAME=N")):
        result = CliRunner().invoke(main, ["compile", path, *args])
        assert result.exit_code == 2 and words in result.output, result.output


def test_a_model_torch_cannot_convert_gets_a_diagnostic(tmp_path, monkeypatch):
    """torch's failure, one line, in a diagnostic (no traceback): here torch.export refusing a call."""
    def refuse(*args, **kwargs):
        raise RuntimeError("call_function: data-dependent branch")
    monkeypatch.setattr(torch.export, "export", refuse)
    result = CliRunner().invoke(main, ["compile", os.path.join(SPECS, "perceptron.dl"), "--model", "Perceptron",
                                       "--target", "exported", "-o", str(tmp_path / "p.pt2")])
    assert result.exit_code == 1, result.output
    assert "E0902" in result.stderr and "torch.export cannot export it" in result.stderr
    assert "data-dependent branch" in result.stderr and "Traceback" not in result.output
    assert not (tmp_path / "p.pt2").exists()
