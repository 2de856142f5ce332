"""Training health (runtime/health.py): per-layer gradient and weight norms, update ratios and
activations in metrics.jsonl, TensorBoard and health.png, and the warnings W0701-W0705 at the
spec's lines. Figures are checked against torch recomputing them on the same batch."""
import json
import math

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from dslc.api import train
from dslc.cli import main
from dslc.runtime import data as data_mod
from dslc.runtime.trainer import Options

# curves.png and confusion.png are left out of these runs (tests/conftest.py: no_figures)
pytestmark = pytest.mark.usefixtures("no_figures")

NETS = """
model Small(bias: float = 0.0) {
    input x: [B, 1, 8, 8]
    Flatten()
    Linear(32, init={bias: constant(bias)})
    ReLU()
    Linear(10)
}

model Flat {
    input x: [B, 1, 8, 8]
    Flatten()
    Linear(10, init={weight: zeros, bias: zeros})
}

model DeepSigmoid {
    input x: [B, 1, 8, 8]
    Flatten()
    repeat 30 {
        Linear(32)
        Sigmoid()
    }
    Linear(10) as head      # named: the model keeps named layers (fc1...), not an nn.Sequential's places
}

model DeepReLU {
    input x: [B, 1, 8, 8]
    Flatten()
    repeat 30 {
        Linear(32)
        BatchNorm1d()
        ReLU()
    }
    Linear(10) as head
}

model Huge {
    input x: [B, 1, 8, 8]
    Flatten()
    Linear(32, init={weight: constant(1000.0)})
    ReLU()
    Linear(10, init={weight: uniform(-10.0, 10.0)})
}

train small {
    model      = Small()
    data       = digits(val=0.2, limit=400)
    loss       = cross_entropy(out, batch.y)
    optimizer  = SGD(lr=0.1)
    epochs     = 2
    batch_size = 32
}

train deep {
    model      = DeepSigmoid()
    data       = digits(val=0.2, limit=200)
    loss       = cross_entropy(out, batch.y)
    optimizer  = SGD(lr=0.1)
    epochs     = 3
    batch_size = 50
}

model TwoHeads {
    input x: [B, 1, 8, 8]
    h = x -> Flatten() -> Linear(32) as fc1 -> ReLU()
    a = h -> Linear(10) as fc2
    b = h -> Linear(10) as spare
    output a, b
}

train unused {
    model      = TwoHeads()
    data       = digits(val=0.2, limit=400)
    loss       = cross_entropy(out.a, batch.y)
    optimizer  = SGD(lr=0.1)
    epochs     = 3
    batch_size = 32
}

train frozen {
    model      = TwoHeads()
    data       = digits(val=0.2, limit=400)
    loss       = cross_entropy(out.a, batch.y)
    optimizer  = SGD(lr=0.1)
    epochs     = 3
    batch_size = 32
    freeze model.fc1, model.spare
}
"""
LAYER_KEYS = ("grad_norm", "weight_norm", "update_ratio", "act_mean", "act_std", "act_zero")


def write(tmp_path, text: str = NETS) -> str:
    path = tmp_path / "nets.dl"
    path.write_text(text)
    return str(path)


def lines(path) -> list:
    with open(path) as f:
        return [json.loads(line) for line in f]


def run(tmp_path, plan: str, sets=(), out="run", watch=True):
    said, warned = [], []
    result = train(write(tmp_path), plan, Options(out=str(tmp_path / out), sets=tuple(sets), progress=False,
                                                  watch=watch), out=said.append, warn=warned.append)
    return result, lines(tmp_path / out / "metrics.jsonl"), warned


def codes(warned: list, code: str) -> list:
    return [w for w in warned if f"warning[{code}]" in w]


# ---------------------------------------------------------------------------- the numbers

def twin(state: dict) -> torch.nn.Module:
    """`Small` written by hand in torch, with the run's weights."""
    net = torch.nn.Sequential(torch.nn.Flatten())
    net.add_module("fc1", torch.nn.Linear(64, 32))
    net.add_module("relu", torch.nn.ReLU())
    net.add_module("fc2", torch.nn.Linear(32, 10))
    net.load_state_dict(state)
    return net


def first_batch(n: int = 32):
    train_split = data_mod.load("digits", {"val": 0.2, "limit": 400}).train
    return train_split["x"][:n], train_split["y"][:n]


def norm(*tensors) -> float:
    return float(torch.sqrt(sum((t.detach().double() ** 2).sum() for t in tensors)))


def test_gradient_norms_equal_torch_on_the_same_batch(tmp_path):
    # one batch, learning rate 0: the weights the gradients were taken at are the run's final ones
    sets = ("overfit_batches=1", "epochs=1", "optimizer.lr=0")
    _, records, warned = run(tmp_path, "small", sets)
    record = records[0]
    for name in ("fc1", "fc2"):
        for key in LAYER_KEYS:
            assert f"{key}/{name}" in record
    from safetensors.torch import load_file
    net = twin(load_file(str(tmp_path / "run" / "checkpoints" / "best.safetensors")))
    x, y = first_batch()
    F.cross_entropy(net(x), y).backward()
    g1 = norm(net.fc1.weight.grad, net.fc1.bias.grad)
    g2 = norm(net.fc2.weight.grad, net.fc2.bias.grad)
    assert record["grad_norm/fc1"] == pytest.approx(g1, rel=1e-5)
    assert record["grad_norm/fc2"] == pytest.approx(g2, rel=1e-5)
    assert record["grad_norm"] == pytest.approx(math.hypot(g1, g2), rel=1e-5)
    assert record["weight_norm/fc1"] == pytest.approx(norm(net.fc1.weight, net.fc1.bias), rel=1e-5)
    assert record["update_ratio/fc1"] == 0.0 and record["update_ratio/fc2"] == 0.0   # lr 0: nothing moved
    with torch.no_grad():
        h = net.fc1(net[0](x))
        out = net(x)
    # fc1 feeds the ReLU: its zeros are the values <= 0; fc2's are exact zeros (none)
    assert record["act_zero/fc1"] == pytest.approx(float((h <= 0).float().mean()), abs=1e-6)
    assert 0.2 < record["act_zero/fc1"] < 0.8
    assert record["act_mean/fc2"] == pytest.approx(float(out.mean()), abs=1e-5)
    assert record["act_std/fc2"] == pytest.approx(float(out.std()), rel=1e-4)
    assert record["act_zero/fc2"] == 0.0
    assert not codes(warned, "W0703") and not codes(warned, "W0701")

    # the same batch with lr 0.1 (plain SGD): the step is 0.1 x the gradient, from the same initial weights
    _, moved, _ = run(tmp_path, "small", ("overfit_batches=1", "epochs=1", "optimizer.lr=0.1"), out="moved")
    w0 = norm(net.fc1.weight, net.fc1.bias)
    assert moved[0]["grad_norm/fc1"] == pytest.approx(g1, rel=1e-5)
    assert moved[0]["update_ratio/fc1"] == pytest.approx(0.1 * g1 / w0, rel=1e-4)
    after = norm(net.fc1.weight - 0.1 * net.fc1.weight.grad, net.fc1.bias - 0.1 * net.fc1.bias.grad)
    assert moved[0]["weight_norm/fc1"] == pytest.approx(after, rel=1e-5)


def test_log_every_adds_lines_between_epochs(tmp_path):
    # 320 training examples in batches of 32: 10 batches an epoch, checked at 3, 6, 9, 12, 15, 18 and at 10, 20
    _, records, _ = run(tmp_path, "small", ("log_every=3",))
    steps = [r for r in records if "step" in r]
    epochs = [r for r in records if "step" not in r]
    assert [r["step"] for r in steps] == [3, 6, 9, 12, 15, 18]
    assert [r["epoch"] for r in steps] == [1, 1, 1, 2, 2, 2]
    assert all("train_loss" not in r and r["grad_norm/fc1"] > 0 for r in steps)
    assert [r["epoch"] for r in epochs] == [1, 2] and all("grad_norm/fc2" in r for r in epochs)


# ---------------------------------------------------------------------------- warnings

def test_vanishing_gradients_in_a_30_layer_sigmoid_mlp(tmp_path):
    _, records, warned = run(tmp_path, "deep")
    found = codes(warned, "W0701")
    assert len(found) == 1
    # the deepest layer whose gradients vanished, at its line in the spec (the repeat's Linear)
    assert "nets.dl:20:9: warning[W0701]: gradients of `fc" in found[0] and "for 3 epochs" in found[0]
    assert "20 |         Linear(32)" in found[0] and "^^^^^^^^^^" in found[0]
    last = records[-1]
    assert last["grad_norm/fc1"] < 1e-12              # 0.25^30 of the output's: nothing reaches the input
    assert last["grad_norm/head"] > 1e-3              # the head still learns
    assert (tmp_path / "run" / "health.png").stat().st_size > 10_000


def test_no_vanishing_with_relu_and_batchnorm(tmp_path):
    _, records, warned = run(tmp_path, "deep", ("model=DeepReLU()",))
    assert not codes(warned, "W0701")
    last = records[-1]
    assert last["grad_norm/fc1"] > 1e-3               # the first layer gets gradients of the head's order
    assert min(v for k, v in last.items() if k.startswith("grad_norm/")) > 1e-4


def test_a_huge_negative_bias_kills_the_relu(tmp_path):
    _, records, warned = run(tmp_path, "small", ("model=Small(bias=-50.0)", "epochs=1"))
    found = codes(warned, "W0703")
    assert len(found) == 1
    assert "nets.dl:5:5: warning[W0703]: the ReLU after `fc1` is dead for 100% of its outputs" in found[0]
    assert records[0]["act_zero/fc1"] == 1.0 and records[0]["grad_norm/fc1"] == 0.0
    _, healthy, warned = run(tmp_path, "small", ("epochs=1",), out="healthy")
    assert not codes(warned, "W0703") and healthy[0]["act_zero/fc1"] < 0.9


def test_a_loss_that_does_not_decrease_over_the_first_epoch(tmp_path):
    # zero weights and lr 0: every batch's loss is ln(10); a trained net's falls
    _, records, warned = run(tmp_path, "small", ("model=Flat()", "optimizer.lr=0", "epochs=1"))
    found = codes(warned, "W0704")
    assert len(found) == 1 and "nets.dl:" in found[0] and "loss       = cross_entropy(out, batch.y)" in found[0]
    assert "mean 2.303 over its first 2 batches, 2.303 over its last 2" in found[0]
    _, _, warned = run(tmp_path, "small", ("epochs=1",), out="learns")
    assert not codes(warned, "W0704")


def test_exploding_gradients(tmp_path):
    _, records, warned = run(tmp_path, "small", ("model=Huge()", "epochs=1", "optimizer.lr=0"))
    found = codes(warned, "W0702")
    assert len(found) == 1, records[0]["grad_norm"]
    assert "warning[W0702]: gradients of `fc" in found[0] and "exploded (norm" in found[0]
    assert records[0]["grad_norm"] > 1e4
    assert not codes(run(tmp_path, "small", ("epochs=1",), out="calm")[2], "W0702")


def test_a_head_the_loss_leaves_out_gets_no_gradient_not_a_vanishing_one(tmp_path):
    # torch itself: the loss of `a` leaves `spare`'s .grad None (no gradient, not a small one)
    fc1, fc2, spare = torch.nn.Linear(64, 32), torch.nn.Linear(32, 10), torch.nn.Linear(32, 10)
    x, y = first_batch()
    h = torch.relu(fc1(x.flatten(1)))
    _ = spare(h)
    F.cross_entropy(fc2(h), y).backward()
    assert spare.weight.grad is None and fc2.weight.grad is not None

    _, records, warned = run(tmp_path, "unused", ("log_every=4",))
    found = codes(warned, "W0705")
    assert len(found) == 1, warned          # once, over 3 epochs and 9 checks
    assert "nets.dl:67:14: warning[W0705]: `spare` gets no gradient: the loss does not use it" in found[0]
    assert "b = h -> Linear(10) as spare" in found[0]
    assert not codes(warned, "W0701")
    assert len(records) == 9 and all("grad_norm/spare" not in r and r["grad_norm/fc2"] > 0 for r in records)
    # its weights stay as initialized (plain SGD skips a parameter with no gradient)
    assert all(r["update_ratio/spare"] == 0.0 for r in records) and records[0]["update_ratio/fc2"] > 0
    assert len({r["weight_norm/spare"] for r in records}) == 1


def test_frozen_layers_warn_nothing(tmp_path):
    _, records, warned = run(tmp_path, "frozen")
    assert not [w for w in warned if "warning[W07" in w], warned
    # frozen: no optimizer holds them, so they are not measured at all
    assert all("grad_norm/spare" not in r and "grad_norm/fc1" not in r for r in records)
    assert all(r["grad_norm/fc2"] > 0 for r in records)


# ---------------------------------------------------------------------------- off, TensorBoard

def test_watch_off_registers_no_hooks(tmp_path, monkeypatch):
    made = []
    original = torch.nn.Module.register_forward_hook

    def counting(self, *args, **kwargs):
        made.append(type(self).__name__)
        return original(self, *args, **kwargs)
    monkeypatch.setattr(torch.nn.Module, "register_forward_hook", counting)
    path = write(tmp_path)
    result = CliRunner().invoke(main, ["train", path, "--plan", "small", "--out", str(tmp_path / "off"),
                                       "--watch", "off", "--no-progress", "--set", "epochs=1"])
    assert result.exit_code == 0, result.output
    assert made == []
    records = lines(tmp_path / "off" / "metrics.jsonl")
    assert not any(k.startswith(("grad_norm", "act_")) for k in records[0])
    assert not (tmp_path / "off" / "health.png").exists()
    # on (the default): the two layers are hooked for the epoch's last batch
    result = CliRunner().invoke(main, ["train", path, "--plan", "small", "--out", str(tmp_path / "on"),
                                       "--no-progress", "--set", "epochs=1"])
    assert result.exit_code == 0, result.output
    assert made == ["Linear", "Linear"]


def test_tensorboard_event_file_is_readable(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    _, records, _ = run(tmp_path, "small")
    board = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    board.Reload()
    tags = board.Tags()["scalars"]
    for tag in ("train_loss", "val_loss", "grad_norm", "grad_norm/fc1", "update_ratio/fc2", "act_zero/fc1"):
        assert tag in tags
    events = board.Scalars("grad_norm/fc1")
    assert [e.step for e in events] == [1, 2]
    assert [e.value for e in events] == pytest.approx([r["grad_norm/fc1"] for r in records], rel=1e-6)
