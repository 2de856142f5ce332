"""`dslc predict` and `dslc eval` on runs trained here on shipped data (digits, iris, diabetes,
breast_cancer). Every figure is checked against an independent reference: the split rebuilt from
scikit-learn with numpy's permutation (the documented rule), the network written in plain torch
functional with the run's weights, or the run's own result.json and metrics.jsonl."""
import csv
import json
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from PIL import Image
from safetensors.torch import load_file
from sklearn import datasets

from dslc.api import evaluate, predict, train
from dslc.cli import main
from dslc.diagnostics import DslcError
from dslc.runtime.evaluate import EvalOptions
from dslc.runtime.predict import PredictOptions
from dslc.runtime.trainer import Options

PLANS = """
block Enc(width: int) {
    Flatten()
    Linear(width) as fc
    ReLU()
}

model Net {
    input x: [B, 1, 8, 8]
    h = x -> Enc(32) as encoder
    emb = h -> Linear(16) as proj
    output emb -> ReLU() -> Linear(10) as head
}

model Table(features: int, classes: int) {
    input x: [B, features]
    Linear(16) as hidden
    ReLU()
    Linear(classes) as head
}

model Tumour {
    input x: [B, 30]
    BatchNorm1d() as scale
    Linear(8) as hidden
    ReLU()
    Linear(1) as head
}

model Sure {
    input x: [B, 30]
    BatchNorm1d() as scale
    Linear(8) as hidden
    ReLU()
    Linear(1) as head
    Sigmoid()
}

train sure {
    model      = Sure()
    data       = breast_cancer(val=0.2, test=0.2)
    loss       = bce(flatten(out), float(batch.y))
    optimizer  = Adam(lr=1e-2)
    epochs     = 6
    batch_size = 32
    metrics    = [accuracy(threshold=0.7)]
}

model Proj {
    input x: [B, 1, 8, 8]
    Flatten()
    Linear(16) as proj
}

train project {
    model      = Proj()
    data       = digits(val=0.15, test=0.15)
    epochs     = 1
    batch_size = 64
    step shrink {
        loss = mse(model(batch.x), zeros)
        optimizer = Adam(lr=1e-3)
    }
}

train stepped {
    model      = Net()
    data       = digits(val=0.15, test=0.15)
    epochs     = 1
    batch_size = 64
    step fit {
        loss = cross_entropy(model(batch.x), batch.y)
        optimizer = Adam(lr=3e-3)
    }
}

train digits {
    model      = Net()
    data       = digits(val=0.15, test=0.15)
    loss       = cross_entropy(out, batch.y)
    optimizer  = Adam(lr=3e-3)
    epochs     = 4
    batch_size = 64
    metrics    = [accuracy, f1]
    early_stopping(monitor=val_loss, patience=2)
}

train wobbly {
    model      = Net()
    data       = digits(val=0.15, test=0.15)
    loss       = cross_entropy(out, batch.y)
    optimizer  = SGD(lr=0.5, momentum=0.9)
    epochs     = 6
    batch_size = 64
    ema        = 0.5
    metrics    = [accuracy]
}

train restored {
    model      = Net()
    data       = digits(val=0.15, test=0.15)
    loss       = cross_entropy(out, batch.y)
    optimizer  = SGD(lr=0.5, momentum=0.9)
    epochs     = 8
    batch_size = 64
    ema        = 0.5
    metrics    = [accuracy]
    early_stopping(monitor=val_loss, patience=1)
}

train pair {
    models     = { a: Net(), b: Net() }
    init       = { a: "runs/digits/checkpoints/best.safetensors", b: "runs/wobbly/checkpoints/best.safetensors" }
    data       = digits(val=0.15, test=0.15)
    batch_size = 64
    metrics    = [accuracy]
    step average {
        out  = (softmax(a(batch.x), dim=1) + softmax(b(batch.x), dim=1)) / 2
        loss = nll(log(out), batch.y)
    }
}

train iris {
    model      = Table(features=4, classes=3)
    data       = iris(test=0.2)
    loss       = cross_entropy(out, batch.y)
    optimizer  = Adam(lr=1e-2)
    epochs     = 20
    batch_size = 16
    metrics    = [accuracy]
}

train diabetes {
    model      = Table(features=10, classes=1)
    data       = diabetes(test=0.2)
    loss       = mse(flatten(out), batch.y / 100.0)
    optimizer  = Adam(lr=1e-2)
    epochs     = 5
    batch_size = 32
}

train cancer {
    model      = Tumour()
    data       = breast_cancer(val=0.2, test=0.2)
    loss       = bce_with_logits(flatten(out), batch.y * 1.0)
    optimizer  = Adam(lr=1e-2)
    epochs     = 6
    batch_size = 32
    metrics    = [accuracy]
}
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("predict")
    path = folder / "plans.dl"
    path.write_text(PLANS)
    results = {}
    for plan in ("digits", "wobbly", "restored", "pair", "iris", "diabetes", "cancer", "sure", "project",
                 "stepped"):
        out = str(folder / "runs" / plan)
        results[plan] = train(str(path), plan, Options(out=out, progress=False), out=[].append)
    return folder, str(path), results


def cli(*args, cwd=None):
    old = os.getcwd()
    os.chdir(cwd or old)
    try:
        return CliRunner().invoke(main, [str(a) for a in args])
    finally:
        os.chdir(old)


def run_dir(runs, plan: str) -> str:
    return str(runs[0] / "runs" / plan)


def rows(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# ---------------------------------------------------------------------- independent references

def split(name: str, val: float, test: float, seed: int = 0) -> dict:
    """A scikit-learn data set split as docs/language.md says: numpy's default_rng(seed)
    permutation, the test split its first round(n · test) examples, validation the next."""
    d = getattr(datasets, f"load_{name}")()
    x = (d.images.reshape(-1, 1, 8, 8) / 16.0) if name == "digits" else d.data
    n = len(x)
    perm = np.random.default_rng(seed).permutation(n)
    n_test, n_val = round(n * test), round(n * val)
    parts = {"test": perm[:n_test], "val": perm[n_test:n_test + n_val], "train": perm[n_test + n_val:]}
    return {k: (torch.tensor(x[i], dtype=torch.float32), torch.tensor(d.target[i])) for k, i in parts.items()}


def weights(runs, plan: str, name: str = "best.safetensors") -> dict:
    return load_file(os.path.join(run_dir(runs, plan), "checkpoints", name))


def net(w: dict, x: torch.Tensor) -> dict:
    """Net in torch functional: every tensor a --output can name."""
    fc = F.linear(x.flatten(1), w["encoder.fc.weight"], w["encoder.fc.bias"])
    h = F.relu(fc)
    emb = F.linear(h, w["proj.weight"], w["proj.bias"])
    logits = F.linear(F.relu(emb), w["head.weight"], w["head.bias"])
    return {"encoder.fc": fc, "encoder": h, "h": h, "emb": emb, "proj": emb, "head": logits}


def table(w: dict, x: torch.Tensor) -> torch.Tensor:
    return F.linear(F.relu(F.linear(x, w["hidden.weight"], w["hidden.bias"])), w["head.weight"], w["head.bias"])


def column(found: list[dict], prefix: str) -> np.ndarray:
    keys = [k for k in found[0] if k.startswith(prefix)]
    return np.array([[float(r[k]) for k in keys] for r in found])


# ---------------------------------------------------------------------- predict

def test_predictions_are_the_twins_and_their_accuracy_is_result_json(runs, tmp_path):
    out = tmp_path / "p.csv"
    r = cli("predict", runs[1], "--plan", "digits", "--run", run_dir(runs, "digits"), "-o", out)
    assert r.exit_code == 0, r.output
    found = rows(out)
    x, y = split("digits", 0.15, 0.15)["test"]
    with torch.no_grad():
        probs = torch.softmax(net(weights(runs, "digits"), x)["head"], 1).numpy()
    assert len(found) == 270 == len(y)
    assert [int(r["index"]) for r in found] == list(range(270))
    assert [int(r["target"]) for r in found] == y.tolist()
    np.testing.assert_allclose(column(found, "p_"), probs, atol=1e-6)
    predicted = np.array([int(r["prediction"]) for r in found])
    assert (predicted == probs.argmax(1)).all()
    correct = int((predicted == y.numpy()).sum())
    assert runs[2]["digits"]["best_epoch"] == runs[2]["digits"]["epochs_run"]   # best is what result.json measured
    assert correct / 270 == runs[2]["digits"]["test"]["accuracy"]
    assert f"accuracy {correct / 270:.4f} ({correct} / 270)" in r.output
    assert r.output.splitlines()[0].split() == ["index", "target", "prediction", "probability"]


def test_the_formats_hold_the_same_rows(runs, tmp_path):
    base = PredictOptions(run=run_dir(runs, "digits"), split="val")
    written = {}
    for suffix in (".csv", ".jsonl", ".npz"):
        base.file = str(tmp_path / f"p{suffix}")
        predict(runs[1], "digits", base, warn=[].append)
        written[suffix] = base.file
    found = rows(written[".csv"])
    with open(written[".jsonl"]) as f:
        lines = [json.loads(line) for line in f]
    arrays = np.load(written[".npz"])
    assert len(found) == len(lines) == len(arrays["index"]) == 270
    assert [line["prediction"] for line in lines] == [int(r["prediction"]) for r in found] == \
        arrays["prediction"].tolist()
    np.testing.assert_array_equal(np.array([line["probabilities"] for line in lines]), column(found, "p_"))
    np.testing.assert_allclose(arrays["probabilities"], column(found, "p_"), rtol=1e-7)
    assert arrays["class_names"].tolist() == [str(i) for i in range(10)]


@pytest.mark.parametrize("name", ["emb", "h", "encoder", "encoder.fc", "proj", "head"])
def test_output_names_a_tensor_a_layer_or_a_block(runs, tmp_path, name):
    out = tmp_path / "o.npz"
    r = cli("predict", runs[1], "--plan", "digits", "--run", run_dir(runs, "digits"), "--output", name, "-o", out)
    assert r.exit_code == 0, r.output
    x, y = split("digits", 0.15, 0.15)["test"]
    with torch.no_grad():
        want = net(weights(runs, "digits"), x)[name].numpy()
    got = np.load(out)
    np.testing.assert_allclose(got[name], want, atol=1e-5)
    assert got["target"].tolist() == y.tolist()
    assert "probabilities" not in got


def test_image_npz_and_npy_inputs_are_examples_of_the_data(runs, tmp_path):
    d = datasets.load_digits()
    pixels = (d.images[:3] / 16 * 255).round().astype(np.uint8)
    for i, p in enumerate(pixels):
        Image.fromarray(p).save(tmp_path / f"d{i}.png")
    x = torch.tensor(d.images[3:8] / 16.0, dtype=torch.float32).reshape(5, 1, 8, 8)
    np.savez(tmp_path / "five.npz", x=x.numpy(), y=d.target[3:8])
    np.save(tmp_path / "one.npy", x[0, 0].numpy()[None])   # one example, without the batch
    out = tmp_path / "in.csv"
    r = cli("predict", runs[1], "--plan", "digits", "--run", run_dir(runs, "digits"), "--input", tmp_path / "d0.png",
            "--input", tmp_path / "d1.png", "--input", tmp_path / "d2.png", "-o", out)
    assert r.exit_code == 0, r.output
    images = torch.tensor(pixels / 255.0, dtype=torch.float32).reshape(3, 1, 8, 8)
    with torch.no_grad():
        want = torch.softmax(net(weights(runs, "digits"), images)["head"], 1).numpy()
    found = rows(out)
    assert [(r["file"], r["row"]) for r in found] == [(str(tmp_path / f"d{i}.png"), "0") for i in range(3)]
    assert "target" not in found[0]
    np.testing.assert_allclose(column(found, "p_"), want, atol=1e-6)
    r = cli("predict", runs[1], "--plan", "digits", "--run", run_dir(runs, "digits"), "--input", tmp_path / "five.npz",
            "-o", out)
    assert r.exit_code == 0, r.output
    found = rows(out)
    assert [int(r["target"]) for r in found] == d.target[3:8].tolist()
    with torch.no_grad():
        want = torch.softmax(net(weights(runs, "digits"), x)["head"], 1).numpy()
    np.testing.assert_allclose(column(found, "p_"), want, atol=1e-6)
    correct = sum(int(r["prediction"]) == int(r["target"]) for r in found)
    assert f"5 examples of 1 input file: accuracy {correct / 5:.4f} ({correct} / 5)" in r.output
    r = cli("predict", runs[1], "--plan", "digits", "--run", run_dir(runs, "digits"), "--input", tmp_path / "one.npy",
            "-o", out)
    assert r.exit_code == 0, r.output
    np.testing.assert_allclose(column(rows(out), "p_"), want[:1], atol=1e-6)


def test_a_folder_of_inputs_is_its_files(runs, tmp_path):
    d = datasets.load_digits()
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(4):
        Image.fromarray((d.images[i] / 16 * 255).round().astype(np.uint8)).save(folder / f"{i}.png")
    (folder / "notes.txt").write_text("not an example")   # left out: predict does not read it
    out = tmp_path / "in.jsonl"
    r = cli("predict", runs[1], "--plan", "digits", "--run", run_dir(runs, "digits"), "--input", folder, "-o", out)
    assert r.exit_code == 0, r.output
    with open(out) as f:
        assert [os.path.basename(json.loads(line)["file"]) for line in f] == ["0.png", "1.png", "2.png", "3.png"]
    empty = tmp_path / "empty"
    empty.mkdir()
    r = cli("predict", runs[1], "--plan", "digits", "--run", run_dir(runs, "digits"), "--input", empty)
    assert r.exit_code == 2 and "no image, .csv, .npz or .npy file in" in r.output


def test_csv_rows_are_read_by_feature_name(runs, tmp_path):
    iris = datasets.load_iris()
    order = [2, 0, 3, 1]   # the columns shuffled: they are found by name
    path = tmp_path / "rows.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["target"] + [iris.feature_names[i] for i in order])
        for k in (0, 60, 120, 149):
            w.writerow([iris.target_names[iris.target[k]]] + [iris.data[k, i] for i in order])
    out = tmp_path / "p.csv"
    r = cli("predict", runs[1], "--plan", "iris", "--run", run_dir(runs, "iris"), "--input", path, "-o", out)
    assert r.exit_code == 0, r.output
    found = rows(out)
    x = torch.tensor(iris.data[[0, 60, 120, 149]], dtype=torch.float32)
    with torch.no_grad():
        want = torch.softmax(table(weights(runs, "iris"), x), 1).numpy()
    np.testing.assert_allclose(column(found, "p_"), want, atol=1e-6)
    assert [k for k in found[0] if k.startswith("p_")] == [f"p_{n}" for n in iris.target_names]
    assert [int(r["target"]) for r in found] == [0, 1, 2, 2]
    assert " setosa " in r.output.splitlines()[1] + " "   # classes print by name


def test_regression_predictions_are_values(runs, tmp_path):
    out = tmp_path / "p.csv"
    r = cli("predict", runs[1], "--plan", "diabetes", "--run", run_dir(runs, "diabetes"), "-o", out)
    assert r.exit_code == 0, r.output
    x, y = split("diabetes", 0.0, 0.2)["test"]
    with torch.no_grad():
        want = table(weights(runs, "diabetes"), x)[:, 0].numpy()
    found = rows(out)
    assert list(found[0]) == ["index", "target", "prediction"]
    got = np.array([float(r["prediction"]) for r in found])
    np.testing.assert_allclose(got, want, atol=1e-5)
    mae = np.abs(want.astype(np.float64) - y.numpy()).mean()
    assert f"mean absolute error {mae:.6g}" in r.output


def test_one_binary_logit_is_the_probability_of_class_1(runs, tmp_path):
    out = tmp_path / "p.csv"
    result = runs[2]["cancer"]
    r = cli("predict", runs[1], "--plan", "cancer", "--run", run_dir(runs, "cancer"), "--weights", "last", "-o", out)
    assert r.exit_code == 0, r.output
    x, y = split("breast_cancer", 0.2, 0.2)["test"]
    w = weights(runs, "cancer", f"epoch-{result['epochs_run']:04d}.safetensors")   # what result.json measured
    with torch.no_grad():
        z = F.batch_norm(x, w["scale.running_mean"], w["scale.running_var"], w["scale.weight"], w["scale.bias"])
        logit = table(w, z)[:, 0]
    found = rows(out)
    np.testing.assert_allclose(column(found, "p_"), torch.stack([1 - logit.sigmoid(), logit.sigmoid()], 1), atol=1e-6)
    predicted = np.array([int(r["prediction"]) for r in found])
    assert (predicted == (logit > 0).numpy()).all()
    assert [k for k in found[0] if k.startswith("p_")] == ["p_malignant", "p_benign"]
    assert int((predicted == y.numpy()).sum()) / len(y) == result["test"]["accuracy"]


def test_an_output_that_does_not_score_the_classes_is_a_tensor(runs, tmp_path):
    """Both plans read `model(batch.x)` in a step, so neither has an `out` to score: Net's ten
    outputs are the digits' ten classes, Proj's sixteen are not."""
    for plan, columns in (("stepped", ["prediction"] + [f"p_{i}" for i in range(10)]),
                          ("project", [f"out_{i}" for i in range(16)])):
        out = tmp_path / f"{plan}.csv"
        r = cli("predict", runs[1], "--plan", plan, "--run", run_dir(runs, plan), "-o", out)
        assert r.exit_code == 0, r.output
        assert list(rows(out)[0]) == ["index", "target"] + columns
    x, _ = split("digits", 0.15, 0.15)["test"]
    w = weights(runs, "project")
    with torch.no_grad():
        want = F.linear(x.flatten(1), w["proj.weight"], w["proj.bias"]).numpy()
    np.testing.assert_allclose(column(rows(out), "out_"), want, atol=1e-6)


def test_a_sigmoid_output_is_the_probability_and_the_threshold_is_accuracys(runs, tmp_path):
    """`Sure` ends with Sigmoid(): its output is already the probability of class 1 (not a logit to
    squash again), and the plan's accuracy(threshold=0.7) decides class 1 above 0.7."""
    out = tmp_path / "p.csv"
    result = runs[2]["sure"]
    r = cli("predict", runs[1], "--plan", "sure", "--run", run_dir(runs, "sure"), "--weights", "last", "-o", out)
    assert r.exit_code == 0, r.output
    x, y = split("breast_cancer", 0.2, 0.2)["test"]
    w = weights(runs, "sure", f"epoch-{result['epochs_run']:04d}.safetensors")
    with torch.no_grad():
        z = F.batch_norm(x, w["scale.running_mean"], w["scale.running_var"], w["scale.weight"], w["scale.bias"])
        p = table(w, z)[:, 0].sigmoid()
    found = rows(out)
    np.testing.assert_allclose(column(found, "p_benign"), p[:, None], atol=1e-6)
    predicted = np.array([int(r["prediction"]) for r in found])
    assert (predicted == (p > 0.7).numpy()).all() and (predicted != (p > 0.5).numpy()).any()
    assert int((predicted == y.numpy()).sum()) / len(y) == result["test"]["accuracy"]


# ---------------------------------------------------------------------- eval

def test_eval_of_the_test_split_is_result_json(runs):
    r = cli("eval", runs[1], "--plan", "digits", "--run", run_dir(runs, "digits"), "--format", "json")
    assert r.exit_code == 0, r.output
    got = json.loads(r.output)
    assert got["metrics"] == runs[2]["digits"]["test"]   # every digit: the same code measured the same weights
    matrix = np.array(got["confusion"])
    assert matrix.sum() == got["examples"] == 270
    assert np.trace(matrix) / 270 == got["metrics"]["accuracy"]
    with open(os.path.join(run_dir(runs, "digits"), "eval-test.json")) as f:
        assert json.load(f)["metrics"] == got["metrics"]
    with open(os.path.join(run_dir(runs, "digits"), "confusion-test.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_eval_of_the_validation_split_is_the_best_epochs_record(runs):
    result = evaluate(runs[1], "digits", EvalOptions(run=run_dir(runs, "digits"), split="val"), warn=[].append)
    with open(os.path.join(run_dir(runs, "digits"), "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    best = next(r for r in records if r["epoch"] == runs[2]["digits"]["best_epoch"])
    assert result["metrics"] == {"loss": best["val_loss"], "accuracy": best["val_accuracy"], "f1": best["val_f1"]}


def test_eval_of_the_training_split_is_the_twins_loss(runs):
    result = evaluate(runs[1], "digits", EvalOptions(run=run_dir(runs, "digits"), split="train"), warn=[].append)
    x, y = split("digits", 0.15, 0.15)["train"]
    with torch.no_grad():
        logits = net(weights(runs, "digits"), x)["head"]
    assert result["examples"] == 1257
    # the trainer averages batch means weighted by their sizes; float32 sums in another order
    assert result["metrics"]["loss"] == pytest.approx(float(F.cross_entropy(logits, y)), rel=1e-5)
    assert result["metrics"]["accuracy"] == int((logits.argmax(1) == y).sum()) / 1257


def test_eval_with_the_last_weights_is_result_json_when_the_best_epoch_was_earlier(runs):
    result = runs[2]["wobbly"]
    assert result["best_epoch"] < result["epochs_run"]   # SGD at 0.5 makes the validation loss wobble
    r = cli("eval", runs[1], "--plan", "wobbly", "--run", run_dir(runs, "wobbly"), "--format", "json")
    assert r.exit_code == 0, r.output
    best = json.loads(r.output[r.output.index("{"):])
    assert best["metrics"] != result["test"]
    assert "note: result.json's test was measured with the last epoch's (epoch 6) weights" in r.output
    r = cli("eval", runs[1], "--plan", "wobbly", "--run", run_dir(runs, "wobbly"), "--weights", "last",
            "--format", "json")
    last = json.loads(r.output)   # no note
    assert last["metrics"] == result["test"]
    assert last["weights_label"] == "last (epoch 6, averaged)"   # the EMA the run evaluated with


def test_eval_is_result_json_when_early_stopping_restored_the_best_averaged_weights(runs):
    result = runs[2]["restored"]
    assert result["stopped_early"] and result["best_epoch"] < result["epochs_run"]
    r = cli("eval", runs[1], "--plan", "restored", "--run", run_dir(runs, "restored"), "--format", "json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["metrics"] == result["test"]
    x, y = split("digits", 0.15, 0.15)["test"]
    with torch.no_grad():   # best.safetensors holds the average of the best epoch, as evaluation used it
        logits = net(weights(runs, "restored"), x)["head"]
    assert result["test"]["accuracy"] == int((logits.argmax(1) == y).sum()) / 270


def test_a_plan_that_trains_nothing_is_measured_with_its_init(runs):
    """`pair` averages two trained Nets (no step has an optimizer): its run is result.json only."""
    result = runs[2]["pair"]
    r = cli("eval", runs[1], "--plan", "pair", "--run", run_dir(runs, "pair"), "--format", "json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output[r.output.index("{\n"):])["metrics"] == result["test"]
    x, y = split("digits", 0.15, 0.15)["test"]
    with torch.no_grad():
        probs = sum(torch.softmax(net(weights(runs, plan), x)["head"], 1) for plan in ("digits", "wobbly")) / 2
    assert result["test"]["accuracy"] == int((probs.argmax(1) == y).sum()) / 270
    r = cli("predict", runs[1], "--plan", "pair", "--run", run_dir(runs, "pair"))
    assert r.exit_code == 1 and "has 2 models: choose one with --model" in r.output
    r = cli("predict", runs[1], "--plan", "pair", "--run", run_dir(runs, "pair"), "--weights", "last")
    assert r.exit_code == 1 and "its weights are its `init`, and --weights does not apply" in r.output


def test_data_gives_another_split_and_says_the_plan_changed(runs):
    r = cli("eval", runs[1], "--plan", "digits", "--run", run_dir(runs, "digits"), "--data", "digits(test=0.3)")
    assert r.exit_code == 0, r.output
    assert "539 examples" in r.output   # round(1797 · 0.3)
    assert "note: the plan differs from the one that trained" in r.output
    assert "now:     data = digits(val=0.0, test=0.3" in r.output


# ---------------------------------------------------------------------- diagnostics

def _clean(r, code: str, exit_code: int = 1) -> None:
    assert r.exit_code == exit_code, r.output
    assert f"error[{code}]" in r.output
    assert "Traceback" not in r.output and "internal error" not in r.output


def test_a_missing_run_is_e0603(runs, tmp_path):
    for command in ("predict", "eval"):
        r = cli(command, runs[1], "--plan", "digits", cwd=tmp_path)
        _clean(r, "E0603")
        assert "there is no run of the plan `digits` at runs/digits" in r.output
    assert os.listdir(tmp_path) == []
    r = cli("eval", runs[1], "--plan", "iris", "--run", run_dir(runs, "digits"))
    _clean(r, "E0603")
    assert "is a run of the plan `digits`, not `iris`" in r.output


def test_a_corrupt_or_misfit_checkpoint_is_e0602(runs, tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00not json")
    for command in ("predict", "eval"):
        r = cli(command, runs[1], "--plan", "digits", "--run", run_dir(runs, "digits"), "--weights", bad)
        _clean(r, "E0602")
    other = os.path.join(run_dir(runs, "iris"), "checkpoints", "best.safetensors")
    r = cli("eval", runs[1], "--plan", "digits", "--run", run_dir(runs, "digits"), "--weights", other)
    _clean(r, "E0602")
    assert "do not fit the model `model` of the plan `digits`" in r.output


def test_a_file_of_the_wrong_shape_is_e0504(runs, tmp_path):
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(tmp_path / "big.png")
    np.save(tmp_path / "flat.npy", np.zeros((3, 64), np.float32))
    with open(tmp_path / "few.csv", "w") as f:
        f.write("a,b\n1,2\n")
    for file, plan, says in (("big.png", "digits", "the image is 28×28 pixels, but the model's `x` takes "
                                                   "examples of [1, 8, 8] of float32"),
                             ("flat.npy", "digits", "the array is [3, 64]"),
                             ("few.csv", "iris", "it has 2 feature columns, but the model's `x` takes examples of [4]")):
        r = cli("predict", runs[1], "--plan", plan, "--run", run_dir(runs, plan), "--input", tmp_path / file)
        _clean(r, "E0504")
        assert says in r.output
    r = cli("predict", runs[1], "--plan", "digits", "--run", run_dir(runs, "digits"), "--input", tmp_path / "no.png")
    _clean(r, "E0901")


def test_an_unknown_output_name_lists_the_names(runs):
    r = cli("predict", runs[1], "--plan", "digits", "--run", run_dir(runs, "digits"), "--output", "embb")
    _clean(r, "E0209")
    assert "`Net` has no output, layer or named tensor `embb`" in r.output
    assert "did you mean `emb`?" in r.output
    assert "layers: encoder, proj, head" in r.output


def test_a_missing_split_points_at_the_data(runs):
    r = cli("eval", runs[1], "--plan", "iris", "--run", run_dir(runs, "iris"), "--split", "val")
    _clean(r, "E0504")
    assert "the data of the plan `iris` has no val split" in r.output
    assert "--data 'iris(val=0.2)'" in r.output


def test_usage_errors(runs, tmp_path):
    assert cli("predict", runs[1], "--plan", "digits", "-o", tmp_path / "p.txt").exit_code == 2
    assert cli("predict", runs[1], "--plan", "digits", "--input", "a.png", "--split", "val").exit_code == 2
    with pytest.raises(DslcError):
        predict(runs[1], "digits", PredictOptions(run=run_dir(runs, "digits"), model="Nope"), warn=[].append)
