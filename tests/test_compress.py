"""Compression (issue #16 item 1): `dslc compile --quantize dynamic|static` (TorchScript and ONNX),
`prune(...)` in a plan's phase, and `dslc compress-report`.

References are independent of dslc: torch.ao's own quantize_dynamic / prepare_fx / convert_fx on a
float model loaded by hand, onnxruntime running the float and int8 ONNX files, masks computed here
from the weights before pruning (the k smallest |w|, the rows of smallest L2 norm, the global
threshold), and accuracies computed here on the digits test split."""
import json
import os

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file
from support import ort_run

import dslc
from dslc.api import train
from dslc.cli import main
from dslc.diagnostics import DslcError
from dslc.runtime import checkpoint
from dslc.runtime import data as data_mod
from dslc.runtime.trainer import Options

# curves.png and confusion.png are left out of these runs (tests/conftest.py: no_figures)
pytestmark = [pytest.mark.usefixtures("data_cache", "no_figures"),
              pytest.mark.filterwarnings("ignore:torch.ao.quantization is deprecated:DeprecationWarning"),
              pytest.mark.filterwarnings("ignore:Please use quant_min and quant_max:UserWarning")]

TINY = """
model Tiny {
    input x: [B, 1, 8, 8]
    Conv2d(8, 3, padding=1) as conv1
    BatchNorm2d() as bn1
    ReLU()
    Conv2d(16, 3, padding=1) as conv2
    ReLU()
    MaxPool2d(2)
    Flatten()
    Linear(64) as fc1
    ReLU()
    Linear(10) as head
}
"""

MODELS = TINY + """
model Wide {
    input x: [B, 1, 8, 8]
    Flatten()
    Linear(256) as fc1
    ReLU()
    Linear(256) as fc2
    ReLU()
    Linear(10) as head
}
"""

TRAINED = MODELS + """
train cnn {
    model      = Tiny()
    data       = digits(val=0.15, test=0.15)
    loss       = cross_entropy(out, batch.y)
    optimizer  = AdamW(lr=3e-3)
    epochs     = 6
    batch_size = 64
    metrics    = [accuracy]
    seed       = 0
}

train mlp {
    model      = Wide()
    data       = digits(val=0.15, test=0.15)
    loss       = cross_entropy(out, batch.y)
    optimizer  = AdamW(lr=1e-3)
    epochs     = 6
    batch_size = 64
    metrics    = [accuracy]
    seed       = 0
}
"""

CALIBRATE = "digits(val=0.15, test=0.15)"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The two plans trained once: {plan: (spec path, run folder, best weights)}."""
    d = tmp_path_factory.mktemp("compress")
    path = d / "c.dl"
    path.write_text(TRAINED)
    out = {}
    for plan in ("cnn", "mlp"):
        run = d / "runs" / plan
        train(str(path), plan, Options(out=str(run), progress=False, watch=False), out=lambda _line: None)
        out[plan] = (str(path), str(run), str(run / "checkpoints" / "best.safetensors"))
    return out


def _test_split():
    return data_mod.load("digits", {"val": 0.15, "test": 0.15}).test


def _float_model(path: str, model: str, weights: str) -> torch.nn.Module:
    """The model from its generated PyTorch, its weights loaded by hand from the safetensors file."""
    net = dslc.load(path).build(model, seed=0)
    net.load_state_dict(load_file(weights))
    return net.eval()


def _accuracy(fn, split) -> float:
    with torch.no_grad():
        return float((fn(split["x"]).argmax(1) == split["y"]).float().mean())


def _compile(path, *args) -> None:
    r = CliRunner().invoke(main, ["compile", path, *args])
    assert r.exit_code == 0, r.output


# ---------------------------------------------------------------------------- PyTorch int8

def test_dynamic_int8_is_smaller_and_as_accurate_as_float(trained, tmp_path):
    path, _, best = trained["mlp"]
    _compile(path, "--model", "Wide", "--target", "torchscript", "--weights", best, "-o", str(tmp_path / "f.pt"))
    run = os.path.dirname(os.path.dirname(best))   # a run folder stands for its best weights
    _compile(path, "--model", "Wide", "--quantize", "dynamic", "--weights", run, "-o", str(tmp_path / "q.pt"))
    ratio = os.path.getsize(tmp_path / "f.pt") / os.path.getsize(tmp_path / "q.pt")
    assert ratio > 3.0, ratio   # int8 weights: a quarter of float32's, plus the archive's code
    int8 = torch.jit.load(str(tmp_path / "q.pt"))
    assert "quantized::linear_dynamic" in str(int8.fc1.graph)
    net = _float_model(path, "Wide", best)
    reference = torch.ao.quantization.quantize_dynamic(net, {torch.nn.Linear}, dtype=torch.qint8)
    test = _test_split()
    with torch.no_grad():
        torch.testing.assert_close(int8(test["x"]), reference(test["x"]), rtol=0, atol=1e-6)
    float_acc, int8_acc = _accuracy(net, test), _accuracy(int8, test)
    assert float_acc > 0.9 and float_acc - int8_acc <= 0.01 + 1e-9, (float_acc, int8_acc)


def test_static_int8_fuses_conv_bn_relu_with_per_channel_weights(trained, tmp_path):
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx
    path, _, best = trained["cnn"]
    _compile(path, "--model", "Tiny", "--quantize", "static", "--calibrate", CALIBRATE, "--weights", best,
             "-o", str(tmp_path / "q.pt"))
    int8 = torch.jit.load(str(tmp_path / "q.pt"))
    assert "ConvReLU2d" in int8.conv1.original_name                 # conv1 + bn1 + relu fused
    assert not hasattr(int8, "bn1")
    # torch's own FX quantization of the float model, calibrated on the same examples
    net = _float_model(path, "Tiny", best)
    val = data_mod.load("digits", {"val": 0.15, "test": 0.15}).val["x"]
    torch.backends.quantized.engine = "x86"
    prepared = prepare_fx(net, get_default_qconfig_mapping("x86"), (val[:64],))
    with torch.no_grad():
        for i in range(0, min(512, len(val)), 64):
            prepared(val[i:i + 64])
    reference = convert_fx(prepared)
    assert reference.conv1.weight().qscheme() == torch.per_channel_affine   # the x86 default: per channel
    test = _test_split()
    with torch.no_grad():
        torch.testing.assert_close(int8(test["x"]), reference(test["x"]), rtol=0, atol=1e-5)
    float_acc, int8_acc = _accuracy(net, test), _accuracy(int8, test)
    assert float_acc > 0.9 and float_acc - int8_acc <= 0.02, (float_acc, int8_acc)


def test_quantize_options_are_checked(trained, tmp_path):
    path, _, best = trained["cnn"]
    runner = CliRunner()
    r = runner.invoke(main, ["compile", path, "--model", "Tiny", "--quantize", "static", "-o", str(tmp_path / "a")])
    assert r.exit_code == 2 and "--calibrate" in r.output
    r = runner.invoke(main, ["compile", path, "--model", "Tiny", "--quantize", "static", "--calibrate",
                             "digitz(val=0.1)", "-o", str(tmp_path / "a")])
    assert r.exit_code == 1 and "error[E0503]" in r.output and "--calibrate:1:1" in r.output
    r = runner.invoke(main, ["compile", path, "--model", "Tiny", "--quantize", "static", "--calibrate",
                             "digits(vak=0.1)", "-o", str(tmp_path / "a")])
    assert r.exit_code == 1 and "error[E0305]" in r.output and "did you mean `val`" in r.output
    r = runner.invoke(main, ["compile", path, "--model", "Tiny", "--quantize", "dynamic", "--target", "exported"])
    assert r.exit_code == 2
    r = runner.invoke(main, ["compile", path, "--model", "Tiny", "--calibrate", CALIBRATE])
    assert r.exit_code == 2 and "--calibrate applies to --quantize static" in r.output
    r = runner.invoke(main, ["compile", path, "--model", "Tiny", "--quantize", "dynamic", "--weights", str(tmp_path)])
    assert r.exit_code == 2 and "without checkpoints/best.safetensors" in r.output
    assert not os.path.exists(tmp_path / "a")


# ---------------------------------------------------------------------------- ONNX int8

@pytest.mark.parametrize("how", ["dynamic", "static"])
def test_onnx_int8_passes_the_checker_and_agrees_with_float(trained, tmp_path, how):
    path, _, best = trained["mlp"]
    args = ["--model", "Wide", "--target", "onnx", "--weights", best]
    _compile(path, *args, "-o", str(tmp_path / "f.onnx"))
    _compile(path, *args, "--quantize", how, *(["--calibrate", CALIBRATE] if how == "static" else []),
             "-o", str(tmp_path / "q.onnx"))
    q = onnx.load(str(tmp_path / "q.onnx"))
    onnx.checker.check_model(q, full_check=True)
    ops = {n.op_type for n in q.graph.node}
    assert ({"QuantizeLinear", "DequantizeLinear"} <= ops) if how == "static" else ("MatMulInteger" in ops), ops
    ratio = os.path.getsize(tmp_path / "f.onnx") / os.path.getsize(tmp_path / "q.onnx")
    # static QDQ also keeps per-channel scales, zero points and int32 biases beside the int8 weights
    assert ratio >= (3.5 if how == "dynamic" else 3.3), ratio
    test = _test_split()
    feed = {q.graph.input[0].name: test["x"].numpy()}
    want = ort_run(onnx.load(str(tmp_path / "f.onnx")), feed)[0]
    got = ort_run(q, feed)[0]
    # measured: mean |error| 1.0% (dynamic) and 2.0% (static: the activations too) of the largest logit,
    # at most 7% and 13%; 99.3% and 98.9% of the predictions agree
    scale = np.abs(want).max()
    assert np.abs(got - want).mean() <= 0.03 * scale and np.abs(got - want).max() <= 0.2 * scale
    assert (got.argmax(1) == want.argmax(1)).mean() >= 0.97
    y = test["y"].numpy()
    assert (want.argmax(1) == y).mean() - (got.argmax(1) == y).mean() <= 0.01 + 1e-9   # at most 1 point lost


# ---------------------------------------------------------------------------- pruning

PRUNE_PLAN = MODELS + """
train p {
    model      = Tiny()
    data       = digits(val=0.15, test=0.15, limit=600)
    loss       = cross_entropy(out, batch.y)
    optimizer  = Adam(lr=3e-3)
    batch_size = 64
    metrics    = [accuracy]
    checkpoint(every=1, keep=10)
    seed       = 0
    phase base { epochs = 1 }
    phase cut {
        PRUNES
        epochs    = EPOCHS
        optimizer = OPTIMIZER
    }
}
"""


def _prune_run(tmp_path, prunes: str, epochs: int = 1, optimizer: str = "SGD(lr=0.0)", out: str = "run", **opts):
    """Train a base epoch, then a pruning phase (with SGD(lr=0), the weights it keeps do not move)."""
    text = PRUNE_PLAN.replace("PRUNES", prunes).replace("EPOCHS", str(epochs)).replace("OPTIMIZER", optimizer)
    path = tmp_path / "p.dl"
    path.write_text(text)
    lines = []
    options = Options(out=str(tmp_path / out), progress=False, watch=False, **opts)
    result = train(str(path), "p", options, out=lines.append)
    return result, lines


def _checkpoint(run, epoch: int) -> dict:
    found = {e: p for e, b, p in checkpoint.checkpoints(os.path.join(run, "checkpoints")) if b == 0}
    return checkpoint.load(found[epoch])[0]


def test_l1_and_ln_structured_zero_exactly_the_hand_computed_weights(tmp_path):
    result, lines = _prune_run(tmp_path, "prune(model.conv2, amount=0.5, method=l1_unstructured)\n"
                                         "        prune(model.fc1, amount=0.25, method=ln_structured, n=2, dim=0)")
    before, after = _checkpoint(tmp_path / "run", 1), _checkpoint(tmp_path / "run", 2)
    w = before["conv2.weight"]
    k = round(0.5 * w.numel())
    mask = torch.ones(w.numel())
    mask[w.abs().flatten().argsort()[:k]] = 0      # the k smallest |w|
    assert torch.equal(after["conv2.weight"], w * mask.view_as(w))
    f = before["fc1.weight"]
    rows = f.norm(p=2, dim=1).argsort()[:round(0.25 * f.shape[0])]   # the output rows of smallest L2 norm
    expected = f.clone()
    expected[rows] = 0
    assert torch.equal(after["fc1.weight"], expected)
    assert torch.equal(after["head.weight"], before["head.weight"])   # not pruned, and lr 0
    assert result["sparsity"] == {"conv2.weight": 0.5, "fc1.weight": 0.25, "total": pytest.approx(
        (k + 16 * f.shape[1]) / (w.numel() + f.numel()), abs=1e-6)}
    assert any(line.startswith("sparsity: conv2.weight 50.0%, fc1.weight 25.0%") for line in lines), lines


def test_pruning_is_permanent_at_the_end_of_the_phase(tmp_path):
    _prune_run(tmp_path, "prune(model, amount=0.5)", epochs=2, optimizer="Adam(lr=1e-3)")
    run = tmp_path / "run"
    plain = set(_checkpoint(run, 1))
    assert set(_checkpoint(run, 3)) == plain                  # `weight` again: no weight_orig, no mask
    assert set(load_file(run / "checkpoints" / "best.safetensors")) == plain
    mid = _checkpoint(run, 2)    # inside the phase: torch's re-parametrization, weight_orig and weight_mask
    assert {"conv2.weight_orig", "conv2.weight_mask"} <= set(mid) and "conv2.weight" not in mid
    final = _checkpoint(run, 3)
    for name in ("conv1.weight", "conv2.weight", "fc1.weight", "head.weight"):
        assert float((final[name] == 0).float().mean()) == pytest.approx(0.5, abs=0.5 / final[name].numel())
        # the fine-tuning kept the mask: the zeros are the mask's, the rest weight_orig as trained
        assert torch.equal(final[name] == 0, mid[name + "_mask"] == 0)
    with open(run / "plan.dl") as f:
        assert "prune(model, amount=0.5, method=l1_unstructured, n=2, dim=0, global=false)" in f.read()


def test_global_pruning_removes_the_smallest_weights_of_the_whole_model(tmp_path):
    result, _ = _prune_run(tmp_path, "prune(model, amount=0.8, global=true)")
    before, after = _checkpoint(tmp_path / "run", 1), _checkpoint(tmp_path / "run", 2)
    names = ["conv1.weight", "conv2.weight", "fc1.weight", "head.weight"]
    values = torch.cat([before[n].abs().flatten() for n in names])
    k = round(0.8 * values.numel())
    threshold = values.sort().values[k - 1]
    for n in names:
        assert torch.equal(after[n], torch.where(before[n].abs() <= threshold, 0.0, before[n]))
    assert result["sparsity"]["total"] == pytest.approx(k / values.numel(), abs=1e-6)
    per_layer = [result["sparsity"][n] for n in names]
    assert len(set(per_layer)) > 1    # global: the layers lose different shares


def test_resuming_inside_a_pruning_phase_is_exact(tmp_path):
    prunes = "prune(model.conv2, amount=0.5)\n        prune(model.fc1, amount=0.3, method=ln_structured, n=1, dim=0)"
    _prune_run(tmp_path, prunes, epochs=3, optimizer="Adam(lr=1e-3)", out="whole")
    paused, _ = _prune_run(tmp_path, prunes, epochs=3, optimizer="Adam(lr=1e-3)", out="parts", max_epochs=2)
    assert paused["paused_after"] == 2
    mid = _checkpoint(tmp_path / "parts", 2)
    assert {"conv2.weight_orig", "conv2.weight_mask", "fc1.weight_mask"} <= set(mid)   # the masks are kept
    # `dslc eval` of the paused run reads those weights in their plain form, weight_orig * weight_mask
    r = CliRunner().invoke(main, ["eval", str(tmp_path / "p.dl"), "--run", str(tmp_path / "parts"), "--weights",
                                  "last", "--format", "json"])
    assert r.exit_code == 0, r.output
    net = dslc.load(str(tmp_path / "p.dl")).build("Tiny", seed=0)
    net.load_state_dict({k: v for k, v in mid.items() if not k.endswith(("_orig", "_mask"))} |
                        {k[:-5]: mid[k] * mid[k[:-5] + "_mask"] for k in mid if k.endswith("_orig")})
    split = data_mod.load("digits", {"val": 0.15, "test": 0.15, "limit": 600}).test
    acc = _accuracy(net.eval(), split)
    assert json.loads(r.output[r.output.index("{"):])["metrics"]["accuracy"] == pytest.approx(acc, abs=1e-6)
    _prune_run(tmp_path, prunes, epochs=3, optimizer="Adam(lr=1e-3)", out="parts", resume=True)
    a, b = _checkpoint(tmp_path / "whole", 4), _checkpoint(tmp_path / "parts", 4)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with open(tmp_path / "whole" / "result.json") as f, open(tmp_path / "parts" / "result.json") as g:
        assert json.load(f)["sparsity"] == json.load(g)["sparsity"]


@pytest.mark.parametrize("statement,code,message", [
    ("prune(model.conv9, amount=0.5)", "E0506", "has no layer `conv9`"),
    ("prune(model.bn1, amount=0.5)", "E0506", "no convolution or linear layer"),
    ("prune(model.conv2, amount=1.5)", "E0302", "must be in [0, 1]"),
    ("prune(model.conv2, amount=-0.1)", "E0302", "must be in [0, 1]"),
    ("prune(model.conv2, amount=0.5, method=l2_unstructured)", "E0302", "did you mean `l1_unstructured`"),
    ("prune(model, amount=0.5, method=ln_structured, global=true)", "E0302", "global pruning"),
    ("prune(model.fc1, amount=0.5, method=ln_structured, dim=2)", "E0302", "`dim` 2 is out of range"),
    ("prune(model.conv2)", "E0303", "missing"),
    ("prune(model.conv2, amount=0.5, ratio=2)", "E0305", "no parameter `ratio`"),
    ("prune(\"conv2\", amount=0.5)", "E0301", "names layers"),
    ("prune(teacher.conv2, amount=0.5)", "E0506", "not a model of this plan"),
])
def test_bad_prune_statements_are_clean_diagnostics(tmp_path, statement, code, message):
    path = tmp_path / "p.dl"
    path.write_text(PRUNE_PLAN.replace("PRUNES", statement).replace("EPOCHS", "1").replace("OPTIMIZER", "SGD(lr=0.1)"))
    with pytest.raises(DslcError) as e:
        dslc.load(str(path))
    assert e.value.codes == [code]
    text = e.value.render()
    line = PRUNE_PLAN.replace("PRUNES", statement).splitlines().index("        " + statement) + 1
    assert f"p.dl:{line}:" in text and message in text and "^" in text, text


def test_prune_outside_a_phase_and_with_ema_are_refused(tmp_path):
    path = tmp_path / "p.dl"
    path.write_text(TRAINED.replace("    seed       = 0\n}\n\ntrain mlp", "    prune(model, amount=0.5)\n}\n\ntrain mlp"))
    with pytest.raises(DslcError) as e:
        dslc.load(str(path))
    assert e.value.codes == ["E0107"] and "`prune` goes in a phase" in e.value.render()
    path.write_text(PRUNE_PLAN.replace("PRUNES", "prune(model, amount=0.5)").replace("EPOCHS", "1")
                    .replace("OPTIMIZER", "SGD(lr=0.1)").replace("seed       = 0", "seed = 0\n    ema = 0.99"))
    with pytest.raises(DslcError) as e:
        dslc.load(str(path))
    assert e.value.codes == ["E0302"] and "`ema`" in e.value.render()


# ---------------------------------------------------------------------------- compress-report

def test_compress_report_measures_float_and_int8(trained):
    path, run, _ = trained["mlp"]
    r = CliRunner().invoke(main, ["compress-report", path, "--plan", "mlp", "--run", run, "--repeats", "5", "--json"])
    assert r.exit_code == 0, r.output
    report = json.loads(r.output[r.output.index("{"):])
    rows = {(v["variant"], v["format"]): v for v in report["variants"]}
    assert set(rows) == {(v, f) for v in ("float", "int8 dynamic", "int8 static") for f in ("pytorch", "onnx")}
    e = CliRunner().invoke(main, ["eval", path, "--plan", "mlp", "--run", run, "--format", "json"])
    assert e.exit_code == 0, e.output
    assert rows["float", "pytorch"]["metrics"] == json.loads(e.output[e.output.index("{"):])["metrics"]
    net = _float_model(path, "Wide", os.path.join(run, "checkpoints", "best.safetensors"))
    float_acc = _accuracy(net, _test_split())
    assert rows["float", "pytorch"]["metrics"]["accuracy"] == pytest.approx(float_acc, abs=1e-6)
    assert rows["float", "pytorch"]["parameters"] == sum(p.numel() for p in net.parameters())
    for (variant, fmt), row in rows.items():
        assert row["latency_ms"] > 0 and float_acc - row["metrics"]["accuracy"] <= 0.01 + 1e-6, (variant, fmt, row)
        if variant != "float":
            assert rows["float", fmt]["bytes"] / row["bytes"] > 3.0, (variant, fmt)
    assert os.path.isfile(os.path.join(run, "compress-report.json"))
    table = CliRunner().invoke(main, ["compress-report", path, "--plan", "mlp", "--run", run, "--repeats", "3",
                                      "--no-onnx"])
    assert table.exit_code == 0 and "int8 static" in table.output and "onnx" not in table.output.split("\n", 2)[2]
