"""Quantization-aware training (issue #16 item 1): `quantize(model)` in a plan's last phase.

The reference is independent of dslc's trainer: a hand-written PyTorch twin of the model, given the
float phase's weights from its checkpoint, prepared by torch.ao's own `prepare_qat_fx`, trained by
a plain loop (the same batches, AdamW, cross entropy) and converted by `convert_fx`. Single-threaded
CPU float arithmetic in the same order gives the same bits, so the run's fake-quantized weights and
the int8 model's outputs must equal the reference's exactly."""
import json
import os
import warnings

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from test_compress import TINY  # the same small CNN: conv-bn-relu to fuse, linear-relu
from torch import nn

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
              pytest.mark.filterwarnings("ignore:Please use quant_min and quant_max:UserWarning"),
              pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")]

PLAN = TINY + """
train qat {
    model      = Tiny()
    data       = digits(val=0.15, test=0.15)
    loss       = cross_entropy(out, batch.y)
    optimizer  = AdamW(lr=3e-3)
    batch_size = 64
    metrics    = [accuracy]
    checkpoint(every=1, keep=10)
    seed       = 0
    phase float { epochs = 3 }
    phase qat {
        QUANTIZE
        epochs    = 2
        optimizer = AdamW(lr=1e-3, weight_decay=0.01)
    }
}
"""
FLOAT_EPOCHS, QAT_EPOCHS = 3, 2
SPLITS = {"val": 0.15, "test": 0.15}


class Twin(nn.Module):
    """Tiny, written by hand."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.fc1 = nn.Linear(256, 64)
        self.head = nn.Linear(64, 10)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.head(F.relu(self.fc1(x.flatten(1))))


def _run(folder, name: str = "run", statement: str = "quantize(model)", **opts):
    path = folder / "q.dl"
    path.write_text(PLAN.replace("QUANTIZE", statement))
    lines = []
    result = train(str(path), "qat", Options(out=str(folder / name), progress=False, watch=False, **opts),
                   out=lines.append)
    return result, lines


def _checkpoint(run, epoch: int) -> dict:
    found = {e: p for e, b, p in checkpoint.checkpoints(os.path.join(run, "checkpoints")) if b == 0}
    return checkpoint.load(found[epoch])[0]


@pytest.fixture(scope="module")
def qat_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("qat")
    result, lines = _run(folder)
    return folder, result, lines


def _reference(float_state: dict):
    """torch.ao QAT by hand from the float phase's weights: (the trained prepared state dict, int8)."""
    from torch.ao.quantization import get_default_qat_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_qat_fx
    torch.backends.quantized.engine = "x86"
    twin = Twin()
    twin.load_state_dict(float_state)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = prepare_qat_fx(twin.train(), get_default_qat_qconfig_mapping("x86"), (torch.rand(2, 1, 8, 8),))
    opt = torch.optim.AdamW(prepared.parameters(), lr=1e-3, weight_decay=0.01)
    train_split = data_mod.load("digits", SPLITS).train
    for epoch in range(FLOAT_EPOCHS + 1, FLOAT_EPOCHS + QAT_EPOCHS + 1):
        prepared.train()
        for batch in data_mod.batches(train_split, 64, shuffle=True, seed=0, epoch=epoch):
            loss = F.cross_entropy(prepared(batch["x"]), batch["y"])
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    trained = {k: v.clone() for k, v in prepared.state_dict().items()}   # convert_fx changes `prepared`
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        int8 = convert_fx(prepared.eval())
    return trained, int8


def _accuracy(fn, split) -> float:
    with torch.no_grad():
        return float((fn(split["x"]).argmax(1) == split["y"]).float().mean())


def test_qat_phase_equals_a_hand_written_torch_ao_qat_loop(qat_run):
    folder, result, lines = qat_run
    run = folder / "run"
    float_state = _checkpoint(run, FLOAT_EPOCHS)
    assert not any("fake_quant" in k for k in float_state)   # the float phase trains the plain model
    want, int8 = _reference(float_state)
    final = _checkpoint(run, FLOAT_EPOCHS + QAT_EPOCHS)
    # the phase's checkpoints hold the fused, fake-quantized model: Conv-BN folded into conv1, observers
    assert {"conv1.bn.running_mean", "conv1.weight_fake_quant.scale", "activation_post_process_0.scale"} <= set(final)
    assert final.keys() == want.keys()
    assert all(torch.equal(final[k], want[k]) for k in want), [k for k in want if not torch.equal(final[k], want[k])]
    test = data_mod.load("digits", SPLITS).test
    saved = torch.jit.load(str(run / "model.int8.pt"))
    with torch.no_grad():
        assert torch.equal(saved(test["x"]), int8(test["x"]))    # the written TorchScript is the int8 model
    kinds = {type(m).__name__ for m in int8.modules()}
    assert {"ConvReLU2d", "LinearReLU", "Linear"} <= kinds and "BatchNorm2d" not in kinds, kinds
    assert int8.conv1.weight().qscheme() == torch.per_channel_affine   # x86's default: per-channel weights
    acc = _accuracy(saved, test)
    assert result["int8"]["file"] == "model.int8.pt" and result["int8"]["backend"] == "x86"
    assert result["int8"]["bytes"] == os.path.getsize(run / "model.int8.pt")
    assert result["int8"]["test"]["accuracy"] == pytest.approx(acc, abs=1e-6)
    # the int8 model is about as accurate as the float model of the first phase and the fake-quantized one
    twin = Twin()
    twin.load_state_dict(float_state)
    float_acc = _accuracy(twin.eval(), test)
    assert acc >= float_acc - 0.02 and acc >= result["test"]["accuracy"] - 0.01, (acc, float_acc, result["test"])
    assert acc > 0.9
    assert any(line.startswith("int8 (x86): ") for line in lines), lines
    with open(run / "result.json") as f:
        assert json.load(f)["int8"] == result["int8"]
    with open(run / "plan.dl") as f:
        assert "quantize(model, backend=x86)" in f.read()


def test_dslc_eval_measures_the_fake_quantized_model(qat_run):
    folder, result, _ = qat_run
    r = CliRunner().invoke(main, ["eval", str(folder / "q.dl"), "--run", str(folder / "run"), "--weights", "last",
                                  "--format", "json"])
    assert r.exit_code == 0, r.output
    metrics = json.loads(r.output[r.output.index("{"):])["metrics"]
    assert metrics["accuracy"] == pytest.approx(result["test"]["accuracy"], abs=1e-9)


def test_compress_report_puts_the_runs_int8_model_beside_float_and_post_training_int8(qat_run):
    folder, result, _ = qat_run
    run = folder / "run"
    r = CliRunner().invoke(main, ["compress-report", str(folder / "q.dl"), "--run", str(run), "--repeats", "3",
                                  "--no-onnx", "--json"])
    assert r.exit_code == 0 and "Traceback" not in r.output, r.output
    report = json.loads(r.output[r.output.index("{"):])
    rows = {row["variant"]: row for row in report["variants"]}
    assert list(rows) == ["float", "int8 dynamic", "int8 static", "int8 qat"], rows
    # the float rows start from the weights the quantizing phase started from: the float phase's last epoch
    assert report["weights"].endswith(f"epoch-{FLOAT_EPOCHS:04d}.safetensors")
    test = data_mod.load("digits", SPLITS).test
    twin = Twin()
    twin.load_state_dict(_checkpoint(run, FLOAT_EPOCHS))
    assert rows["float"]["metrics"]["accuracy"] == pytest.approx(_accuracy(twin.eval(), test), abs=1e-6)
    # the QAT row: model.int8.pt, loaded and scored here on the test split
    qat = rows["int8 qat"]
    saved = torch.jit.load(str(run / "model.int8.pt"))
    with torch.no_grad():
        logits = saved(test["x"])
    assert qat["metrics"]["accuracy"] == pytest.approx(int((logits.argmax(1) == test["y"]).sum()) / len(test["y"]),
                                                       abs=1e-9)
    assert qat["metrics"]["loss"] == pytest.approx(float(F.cross_entropy(logits, test["y"])), rel=1e-5)
    assert qat["metrics"] == pytest.approx(result["int8"]["test"])    # what the run measured at its end
    assert qat["bytes"] == os.path.getsize(run / "model.int8.pt") < rows["float"]["bytes"]
    assert qat["parameters"] == rows["float"]["parameters"] == sum(p.numel() for p in Twin().parameters())
    assert qat["latency_ms"] > 0 and qat["backend"] == "x86"
    assert qat["metrics"]["accuracy"] >= rows["int8 static"]["metrics"]["accuracy"] - 0.02
    table = CliRunner().invoke(main, ["compress-report", str(folder / "q.dl"), "--run", str(run), "--repeats", "2",
                                      "--no-onnx"])
    assert table.exit_code == 0 and any(line.startswith("int8 qat") for line in table.output.splitlines())


def test_compress_report_of_a_run_that_only_quantizes_starts_from_its_init(qat_run, tmp_path):
    folder, _, _ = qat_run
    init = folder / "run" / "checkpoints" / f"epoch-{FLOAT_EPOCHS:04d}.safetensors"
    text = PLAN.replace("QUANTIZE", "quantize(model)").replace("    phase float { epochs = 3 }\n", "") \
        .replace("epochs    = 2", "epochs    = 1").replace("    seed       = 0", f'    seed       = 0\n    init = "{init}"')
    path = tmp_path / "q.dl"
    path.write_text(text)
    train(str(path), "qat", Options(out=str(tmp_path / "run"), progress=False, watch=False), out=lambda s: None)
    r = CliRunner().invoke(main, ["compress-report", str(path), "--run", str(tmp_path / "run"), "--repeats", "2",
                                  "--no-onnx", "--json"])
    assert r.exit_code == 0 and "Traceback" not in r.output, r.output
    report = json.loads(r.output[r.output.index("{"):])
    assert report["weights_label"] == "the plan's `init`"
    rows = {row["variant"]: row for row in report["variants"]}
    twin = Twin()
    twin.load_state_dict(_checkpoint(folder / "run", FLOAT_EPOCHS))
    test = data_mod.load("digits", SPLITS).test
    assert rows["float"]["metrics"]["accuracy"] == pytest.approx(_accuracy(twin.eval(), test), abs=1e-6)
    assert rows["int8 qat"]["bytes"] == os.path.getsize(tmp_path / "run" / "model.int8.pt")


def test_compress_report_of_a_quantizing_run_needs_float_weights(qat_run, tmp_path):
    folder, _, _ = qat_run
    r = CliRunner().invoke(main, ["compress-report", str(folder / "q.dl"), "--run", str(folder / "run"),
                                  "--weights", "last", "--no-onnx"])
    assert r.exit_code == 1 and "Traceback" not in r.output, r.output
    assert "holds fake-quantized weights of the phase `qat`" in r.output and "quantize(model)" in r.output
    import shutil
    kept = tmp_path / "kept"
    shutil.copytree(folder / "run", kept, ignore=shutil.ignore_patterns("compress-report.json"))
    for name in os.listdir(kept / "checkpoints"):
        if name.startswith(tuple(f"epoch-{e:04d}" for e in range(1, FLOAT_EPOCHS + 1))):
            os.remove(kept / "checkpoints" / name)
    r = CliRunner().invoke(main, ["compress-report", str(folder / "q.dl"), "--run", str(kept), "--no-onnx"])
    assert r.exit_code == 1 and "error[E0502]" in r.output and "keeps no checkpoint of float weights" in r.output
    assert not (kept / "compress-report.json").exists()


def test_resuming_inside_the_quantizing_phase_is_exact(qat_run, tmp_path):
    folder, _, _ = qat_run
    paused, _ = _run(tmp_path, "parts", max_epochs=FLOAT_EPOCHS + 1)
    assert paused["paused_after"] == FLOAT_EPOCHS + 1
    assert "conv1.weight_fake_quant.scale" in _checkpoint(tmp_path / "parts", FLOAT_EPOCHS + 1)
    _run(tmp_path, "parts", resume=True)
    end = FLOAT_EPOCHS + QAT_EPOCHS
    a, b = _checkpoint(folder / "run", end), _checkpoint(tmp_path / "parts", end)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with open(folder / "run" / "result.json") as f, open(tmp_path / "parts" / "result.json") as g:
        whole, parts = json.load(f)["int8"], json.load(g)["int8"]
        assert whole["test"] == parts["test"]   # (the archives' sizes differ with the runs' paths)
    test = data_mod.load("digits", SPLITS).test
    one, two = (torch.jit.load(str(r / "model.int8.pt")) for r in (folder / "run", tmp_path / "parts"))
    with torch.no_grad():
        assert torch.equal(one(test["x"]), two(test["x"]))


def _load_error(tmp_path, text: str):
    path = tmp_path / "q.dl"
    path.write_text(text)
    with pytest.raises(DslcError) as e:
        dslc.load(str(path))
    return e.value


@pytest.mark.parametrize("statement,code,message", [
    ("quantize(model.conv1)", "E0302", "applies to a whole model"),
    ("quantize(model, backend=x68)", "E0302", "did you mean `x86`"),
    ("quantize(\"model\")", "E0301", "names a model of the plan"),
    ("quantize(teacher)", "E0506", "not a model of this plan"),
    ("quantize(model, bits=4)", "E0305", "no parameter `bits`"),
    ("quantize()", "E0303", "missing"),
    ("quantize(model)\n        quantize(model)", "E0302", "a phase quantizes once"),
    ("quantize(model)\n        prune(model, amount=0.5)", "E0302", "does not both prune and quantize"),
])
def test_bad_quantize_statements_are_clean_diagnostics(tmp_path, statement, code, message):
    text = PLAN.replace("QUANTIZE", statement)
    error = _load_error(tmp_path, text)
    assert error.codes == [code]
    rendered = error.render()
    first = statement.splitlines()[0]
    line = text.splitlines().index("        " + first) + 1 + (1 if code == "E0302" and "\n" in statement and
                                                                 "prune" not in statement else 0)
    assert f"q.dl:{line}:" in rendered and message in rendered and "^" in rendered, rendered


def test_quantize_outside_the_last_phase_or_with_ema_is_refused(tmp_path):
    error = _load_error(tmp_path, PLAN.replace("QUANTIZE", "").replace(
        "phase float { epochs = 3 }", "phase float {\n        quantize(model)\n        epochs = 3\n    }"))
    assert error.codes == ["E0302"] and "must be the plan's last" in error.render()
    error = _load_error(tmp_path, PLAN.replace("QUANTIZE", "quantize(model)").replace("seed       = 0",
                                                                                     "seed = 0\n    ema = 0.99"))
    assert error.codes == ["E0302"] and "`ema`" in error.render()
    error = _load_error(tmp_path, PLAN.replace("QUANTIZE", "").replace("    seed       = 0",
                                                                       "    seed       = 0\n    quantize(model)"))
    assert error.codes == ["E0107"] and "`quantize` goes in a phase" in error.render()

