"""Classifier metrics that know what the model outputs, train-split metrics, and evaluation plans.

- The issue's bug: a `Sigmoid()` + `bce` classifier's accuracy read probabilities as logits (> 0 is
  class 1), so it stayed at the class-1 fraction of the split (0.5789 val / 0.6667 test on
  breast_cancer). The metrics now read the graph (a final sigmoid or softmax: probabilities) and a
  `threshold=`; every figure is recomputed here from the weights with torch's own modules.
- `train_metrics = true` logs `train_<metric>`, and a run interrupted mid-epoch resumes them exactly.
- A plan whose steps have no optimizer evaluates (an ensemble of two trained models), checked
  against the ensemble written in plain torch.
"""
import json
import os

import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import f1_score
from support import train_until_interrupted

import dslc
from dslc.api import train
from dslc.diagnostics import DslcError
from dslc.frontend.fmt import statements
from dslc.runtime import data as data_mod
from dslc.runtime.metrics import MetricSet
from dslc.runtime.trainer import Options

DIAGNOSIS = """
model Diagnosis {
    input x: [B, 30]
    BatchNorm1d() as scale      # raw features from 0.001 to 4,000: standardized, as StandardScaler would
    Linear(16) as hidden
    ReLU()
    Linear(1) as head
    Sigmoid()
}

train diagnosis {
    model      = Diagnosis()
    data       = breast_cancer(val=0.2, test=0.2)
    loss       = bce(flatten(out), float(batch.y))
    optimizer  = Adam(lr=1e-2)
    epochs     = 20
    batch_size = 32
    metrics    = [accuracy, f1(threshold=0.7)]
    train_metrics = true
}
"""


def write(tmp_path, text: str, name: str = "plan.dl") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def lines(path) -> list:
    with open(path) as f:
        return [json.loads(line) for line in f]


def last_weights(run_dir) -> dict:
    from dslc.runtime import checkpoint
    return checkpoint.load(checkpoint.checkpoints(os.path.join(run_dir, "checkpoints"))[-1][2])[0]


def torch_diagnosis(state: dict) -> torch.nn.Module:
    net = torch.nn.Sequential()
    net.add_module("scale", torch.nn.BatchNorm1d(30))
    net.add_module("hidden", torch.nn.Linear(30, 16))
    net.add_module("relu", torch.nn.ReLU())
    net.add_module("head", torch.nn.Linear(16, 1))
    net.add_module("sigmoid", torch.nn.Sigmoid())
    net.load_state_dict(state)
    return net.eval()


def test_a_sigmoid_and_bce_classifier_is_scored_on_its_probabilities(tmp_path):
    result = train(write(tmp_path, DIAGNOSIS), "diagnosis", Options(out=str(tmp_path / "run"), progress=False),
                   out=lambda line: None)
    splits = data_mod.load("breast_cancer", {"val": 0.2, "test": 0.2})
    x, y = splits.test["x"], splits.test["y"]
    with torch.no_grad():
        p = torch_diagnosis(last_weights(tmp_path / "run"))(x)[:, 0]
    accuracy = int(((p > 0.5).long() == y).sum()) / len(y)
    # the old rule read p as a logit: every probability is > 0, so "accuracy" was the class-1 fraction
    assert int(((p > 0).long() == y).sum()) / len(y) == pytest.approx(0.6667, abs=1e-4)
    assert result["test"]["accuracy"] == pytest.approx(accuracy, abs=1e-9)
    assert result["test"]["accuracy"] >= 0.9        # 0.9474 here; the net on logits: 0.912
    f1 = f1_score(y.numpy(), (p > 0.7).long().numpy(), average="macro")
    assert result["test"]["f1"] == pytest.approx(f1, abs=1e-9)
    records = lines(tmp_path / "run" / "metrics.jsonl")
    assert all({"train_accuracy", "train_f1", "val_accuracy", "val_f1"} <= set(r) for r in records)
    assert records[0]["train_accuracy"] < records[-1]["train_accuracy"]
    assert records[-1]["train_accuracy"] >= 0.9 and records[-1]["val_accuracy"] >= 0.9
    assert "    metrics = [accuracy, f1(threshold=0.7)]" in statements((tmp_path / "run" / "plan.dl").read_text())


def test_train_metrics_resume_exactly_after_an_interruption_mid_epoch(tmp_path, monkeypatch):
    plan = DIAGNOSIS.replace("epochs     = 20", "epochs     = 2")
    path = write(tmp_path, plan)
    train(path, "diagnosis", Options(out=str(tmp_path / "whole"), progress=False), out=lambda line: None)
    train_until_interrupted(monkeypatch, path, "diagnosis", str(tmp_path / "cut"), batch=15)   # epoch 2's 4th (11 each)
    train(path, "diagnosis", Options(out=str(tmp_path / "cut"), resume=True, progress=False), out=lambda line: None)

    def without_time(records):
        return [{k: v for k, v in r.items() if k != "seconds"} for r in records]
    assert without_time(lines(tmp_path / "cut" / "metrics.jsonl")) == \
        without_time(lines(tmp_path / "whole" / "metrics.jsonl"))


def test_monitors_and_checks_of_train_metrics(tmp_path):
    plan = DIAGNOSIS.replace("    train_metrics = true", "    train_metrics = true\n"
                             "    early_stopping(monitor=train_accuracy, patience=2)")
    dslc.load(write(tmp_path, plan))   # a monitor the plan measures
    for bad, words in ((plan.replace("    train_metrics = true\n", ""), "cannot monitor `train_accuracy`"),
                       (DIAGNOSIS.replace("    metrics    = [accuracy, f1(threshold=0.7)]\n", ""),
                        "`train_metrics` measures the plan's `metrics`"),
                       (DIAGNOSIS.replace("f1(threshold=0.7)", "f1(threshold=1.5)"), "threshold"),
                       (DIAGNOSIS.replace("f1(threshold=0.7)", "accuracy"), "listed twice"),
                       (DIAGNOSIS.replace("f1(threshold=0.7)", "top5(threshold=0.5)"), "threshold")):
        with pytest.raises(DslcError) as e:
            dslc.load(write(tmp_path, bad, "bad.dl"))
        assert words in str(e.value)


# ------------------------------------------------------------------ MetricSet on each kind of score

def test_probabilities_logits_and_log_probabilities_score_alike():
    g = torch.Generator().manual_seed(0)
    logits, y = torch.randn(200, 5, generator=g), torch.randint(0, 5, (200,), generator=g)
    results = []
    for scores, values in (("logits", logits), ("probabilities", F.softmax(logits, 1)),
                           ("log_probabilities", F.log_softmax(logits, 1))):
        m = MetricSet(["accuracy", "top5", "f1", "perplexity"], "classification", scores)
        m.update(values[:120], y[:120])
        m.update(values[120:], y[120:])
        results.append(m.compute())
    for r in results:
        assert r["accuracy"] == pytest.approx(float((logits.argmax(1) == y).float().mean()))
        assert r["perplexity"] == pytest.approx(float(torch.exp(F.cross_entropy(logits.double(), y))), rel=1e-6)
        assert r["f1"] == pytest.approx(f1_score(y, logits.argmax(1), average="macro"))


def test_a_binary_output_is_class_1_above_the_threshold():
    x = torch.tensor([-3.0, -0.5, 0.0, 0.2, 0.9, 2.0, 4.0, -1.0])
    y = torch.tensor([0, 1, 0, 0, 1, 1, 1, 0])
    p = torch.sigmoid(x)
    for threshold in (0.5, 0.3, 0.8):
        want = float(((p > threshold).long() == y).float().mean())
        for scores, values in (("logits", x), ("probabilities", p)):
            m = MetricSet(["accuracy", "f1"], "classification", scores, {"accuracy": threshold, "f1": threshold})
            m.update(values, y)
            got = m.compute()
            assert got["accuracy"] == pytest.approx(want)
            assert got["f1"] == pytest.approx(f1_score(y, (p > threshold).long(), average="macro"))
    # a probability of 0.5 is not above 0.5 (nor a logit of 0): class 0, as Keras's BinaryAccuracy says
    m = MetricSet(["accuracy"], "classification", "probabilities")
    m.update(torch.tensor([0.5]), torch.tensor([0]))
    assert m.compute()["accuracy"] == 1.0


def test_each_threshold_keeps_its_own_confusion_matrix():
    p, y = torch.tensor([0.2, 0.4, 0.6, 0.8]), torch.tensor([0, 1, 1, 1])
    m = MetricSet(["accuracy", "f1"], "classification", "probabilities", {"accuracy": 0.3, "f1": 0.7})
    m.update(p, y)
    assert m.compute()["accuracy"] == 1.0
    assert m.compute()["f1"] == pytest.approx(f1_score(y, [0, 0, 0, 1], average="macro"))
    assert m.confusion().tolist() == [[1, 0], [0, 3]]   # accuracy's


@pytest.mark.parametrize("tail,scores", [
    ("Linear(1)\n    Sigmoid()", "probabilities"),
    ("Linear(1) as head\n    sigmoid()\n    Dropout(0.1)", "probabilities"),
    ("Linear(2)\n    Softmax(dim=1)", "probabilities"),
    ("Linear(2)\n    Head()", "probabilities"),
    ("Linear(2)\n    LogSoftmax(dim=1)", "log_probabilities"),
    ("Linear(2)", "logits"),
    ("Sigmoid()\n    Linear(1)", "logits"),
])
def test_the_plan_reads_what_the_model_outputs_from_its_graph(tmp_path, tail, scores):
    spec = f"""
block Head {{
    Linear(2)
    Softmax(dim=1)
}}

model M {{
    input x: [B, 30]
    {tail}
}}

train p {{
    model = M()
    data = breast_cancer()
    loss = mse(flatten(out, start_dim=1), zeros)
    optimizer = Adam()
    epochs = 1
}}
"""
    assert dslc.load(write(tmp_path, spec)).plan("p").steps[0].scores == scores


# ------------------------------------------------------------------ evaluation plans

ENSEMBLE = """
import "SPECS/mlp.dl"

train small {
    model      = MLP(hidden=32, classes=10)
    data       = digits(val=0.2, test=0.2)
    loss       = cross_entropy(out, batch.y)
    optimizer  = Adam(lr=3e-3)
    epochs     = 3
    batch_size = 64
}

train wide {
    model      = MLP(hidden=64, classes=10)
    data       = digits(val=0.2, test=0.2)
    loss       = cross_entropy(out, batch.y)
    optimizer  = Adam(lr=3e-3)
    epochs     = 3
    batch_size = 64
    seed       = 1
}

train ensemble {
    models     = { a: MLP(hidden=32, classes=10), b: MLP(hidden=64, classes=10) }
    init       = { a: "small/checkpoints/best.safetensors", b: "wide/checkpoints/best.safetensors" }
    data       = digits(val=0.2, test=0.2)
    batch_size = 64
    metrics    = [accuracy]
    step average {
        out  = (softmax(a(batch.x), dim=1) + softmax(b(batch.x), dim=1)) / 2
        loss = nll(log(out), batch.y)
    }
}
"""


def torch_mlp(state: dict, hidden: int) -> torch.nn.Module:
    """specs/mlp.dl's MLP in torch.nn: fc1, fc2, fc3 are the Sequential's 1, 3 and 5."""
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, hidden), torch.nn.ReLU(),
                              torch.nn.Linear(hidden, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 10))
    net.load_state_dict({k.replace("fc1", "1").replace("fc2", "3").replace("fc3", "5"): v for k, v in state.items()})
    return net.eval()


def test_a_plan_without_optimizers_evaluates_an_ensemble(tmp_path, monkeypatch):
    from safetensors.torch import load_file
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = write(tmp_path, ENSEMBLE.replace("SPECS", os.path.join(root, "specs")))
    monkeypatch.chdir(tmp_path)
    for plan in ("small", "wide"):
        train(path, plan, Options(out=plan, progress=False), out=lambda line: None)
    said = []
    result = train(path, "ensemble", Options(out="ens", progress=False), out=said.append)
    assert sorted(os.listdir("ens")) == [".lock", "confusion.png", "plan.dl", "plan.py", "result.json",
                                         "weights_report.json"]   # no checkpoints/, metrics.jsonl or curves.png
    assert result["evaluation"] is True and set(result) == {"plan", "evaluation", "train", "val", "test"}
    assert json.loads((tmp_path / "ens" / "result.json").read_text()) == result
    a = torch_mlp(load_file("small/checkpoints/best.safetensors"), 32)
    b = torch_mlp(load_file("wide/checkpoints/best.safetensors"), 64)
    test = data_mod.load("digits", {"val": 0.2, "test": 0.2}).test
    with torch.no_grad():
        p = (F.softmax(a(test["x"]), 1) + F.softmax(b(test["x"]), 1)) / 2
    assert result["test"]["accuracy"] == pytest.approx(int((p.argmax(1) == test["y"]).sum()) / len(p), abs=1e-9)
    assert result["test"]["loss"] == pytest.approx(float(F.nll_loss(torch.log(p), test["y"])), rel=1e-5)
    assert result["test"]["accuracy"] >= 0.85       # 0.875 here (the two models alone: 0.777 and 0.889)
    assert any(line.startswith("test: loss ") for line in said)
    with pytest.raises(DslcError) as e:
        train(path, "ensemble", Options(out="ens", resume=True), out=lambda line: None)
    assert e.value.codes == ["E0606"]


def test_an_evaluation_plan_refuses_epochs(tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    plan = ENSEMBLE.replace("SPECS", os.path.join(root, "specs")).replace(
        "    metrics    = [accuracy]\n    step average", "    metrics    = [accuracy]\n    epochs = 3\n    step average")
    with pytest.raises(DslcError) as e:
        dslc.load(write(tmp_path, plan))
    assert e.value.codes == ["E0502"] and "no step of the plan `ensemble` has an `optimizer`" in str(e.value)


def test_an_evaluation_step_beside_a_trained_one_measures_and_changes_nothing(tmp_path):
    plan = """
model Net(hidden: int = 16) {
    input x: [B, 1, 8, 8]
    Flatten()
    Linear(hidden)
    ReLU()
    Linear(10)
}

train both {
    models     = { student: Net(), reference: Net(hidden=32) }
    data       = digits(val=0.2)
    epochs     = 2
    batch_size = 64
    freeze reference
    step fit {
        loss = cross_entropy(student(batch.x), batch.y)
        optimizer = Adam(student, lr=3e-3)
    }
    step measure {
        loss = cross_entropy(reference(batch.x), batch.y)
    }
}
"""
    path = write(tmp_path, plan)
    train(path, "both", Options(out=str(tmp_path / "run"), progress=False), out=lambda line: None)
    records = lines(tmp_path / "run" / "metrics.jsonl")
    assert records[0]["fit_loss"] > records[1]["fit_loss"]
    assert records[0]["measure_loss"] == pytest.approx(records[1]["measure_loss"], rel=1e-6)   # never trained
    from dslc.runtime import checkpoint
    (_, _, one), (_, _, two) = checkpoint.checkpoints(str(tmp_path / "run" / "checkpoints"))[-2:]
    one, two = checkpoint.load(one)[0], checkpoint.load(two)[0]
    assert all(torch.equal(one[k], two[k]) for k in one if k.startswith("reference."))
    assert not all(torch.equal(one[k], two[k]) for k in one if k.startswith("student."))
