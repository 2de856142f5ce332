"""Smoke modes (runtime/smoke.py): `overfit_batches = N`, `limit = N` on a data set, and
`dslc train --fast-dev-run`, on shipped data, with the figures they give."""
import json
import math
import os
import tempfile

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

import dslc
from dslc.api import train
from dslc.cli import main
from dslc.diagnostics import DslcError
from dslc.runtime import data as data_mod
from dslc.runtime.trainer import Options, Trainer

OVERFIT = """
model Net {
    input x: [B, 1, 8, 8]
    Flatten()
    Linear(64) as fc1
    ReLU()
    Linear(10) as fc2
}

train smoke {
    model      = Net()
    data       = digits(val=0.2, test=0.2)
    augment    = [rotation(degrees=10), gaussian_noise(std=0.1)]
    loss       = cross_entropy(out, batch.y)
    optimizer  = Adam(lr=1e-2)
    epochs     = 60
    batch_size = 32
    overfit_batches = 2
    metrics    = [accuracy]
}
"""


def write(tmp_path, text: str) -> str:
    path = tmp_path / "plan.dl"
    path.write_text(text)
    return str(path)


def lines(path) -> list:
    with open(path) as f:
        return [json.loads(line) for line in f]


def torch_net(state: dict) -> torch.nn.Module:
    net = torch.nn.Sequential(torch.nn.Flatten())
    net.add_module("fc1", torch.nn.Linear(64, 64))
    net.add_module("relu", torch.nn.ReLU())
    net.add_module("fc2", torch.nn.Linear(64, 10))
    net.load_state_dict(state)
    return net


def overfit(tmp_path, sets=(), out="run"):
    said, warned = [], []
    result = train(write(tmp_path, OVERFIT), "smoke", Options(out=str(tmp_path / out), sets=tuple(sets),
                                                              progress=False), out=said.append, warn=warned.append)
    return result, said, warned


def test_a_healthy_mlp_overfits_two_batches(tmp_path):
    result, said, warned = overfit(tmp_path)
    report = result["overfit"]
    assert report["batches"] == 2 and report["examples"] == 64 and report["near_zero"] is True
    assert report["first_loss"] == pytest.approx(math.log(10), abs=0.05)    # 2.284: chance over 10 digits
    assert report["last_loss"] < 0.01 * report["first_loss"]                # 0.0037 here, 0.2% of the start
    assert "test" not in result and not any("W0602" in w for w in warned)
    assert any(line.startswith("overfit_batches: the loss on 64 examples went from 2.284 to 0.003") for line in said)
    # validated on the very batches it trained on: the first 64 training examples, not augmented
    from safetensors.torch import load_file
    first = data_mod.load("digits", {"val": 0.2, "test": 0.2}).train
    net = torch_net(load_file(str(tmp_path / "run" / "checkpoints" / "best.safetensors"))).eval()
    with torch.no_grad():
        loss = float(F.cross_entropy(net(first["x"][:64]), first["y"][:64]))
    records = lines(tmp_path / "run" / "metrics.jsonl")
    best = min(r["val_loss"] for r in records)
    assert loss == pytest.approx(best, rel=1e-4)
    assert records[-1]["val_accuracy"] == 1.0


def test_a_learning_rate_of_0_is_reported_as_not_fitting(tmp_path):
    result, said, warned = overfit(tmp_path, sets=["optimizer.lr=0"])
    report = result["overfit"]
    assert report["near_zero"] is False
    assert report["last_loss"] == pytest.approx(report["first_loss"], rel=1e-6)
    assert report["first_loss"] == pytest.approx(2.3092, abs=1e-4)
    (warning,) = [w for w in warned if "W0602" in w]
    assert warning.startswith(f"{tmp_path / 'plan.dl'}:18:5: warning[W0602]: overfitting 2 batches (64 examples), "
                              "the loss went from 2.309 to 2.309 in 60 epochs (100.0% of its start)")
    # the same batches each epoch, in order and not augmented: with nothing learned, the training loss of
    # every epoch is the validation loss of those batches
    records = lines(tmp_path / "run" / "metrics.jsonl")
    assert all(r["train_loss"] == pytest.approx(records[0]["val_loss"], rel=1e-6) for r in records)


def test_limit_draws_a_sample_of_any_data_set_before_the_split(tmp_path):
    small = data_mod.load("digits", {"limit": 64, "val": 0.25})
    assert small.meta["sizes"] == {"train": 48, "val": 16, "test": 0}
    assert len(set(small.train["y"].tolist())) == 10          # a sample of every digit, not the first rows
    again = data_mod.load("digits", {"limit": 64, "val": 0.25})
    assert torch.equal(small.train["x"], again.train["x"])    # drawn by `seed`
    other = data_mod.load("digits", {"limit": 64, "val": 0.25, "seed": 1})
    assert not torch.equal(small.train["x"], other.train["x"])
    assert data_mod.load("iris", {"limit": 1000}).meta["sizes"]["train"] == 150     # fewer: all of them
    text = data_mod.load("shakespeare", {"limit": 5000, "stream": True, "val": 0.1})
    assert text.meta["sizes"] == {"train": 4500, "val": 500, "test": 0}            # a stream: its first characters
    plan = OVERFIT.replace("digits(val=0.2, test=0.2)", "digits(val=0.2, test=0.2, limit=0)")
    with pytest.raises(DslcError) as e:
        dslc.load(write(tmp_path, plan))
    assert e.value.codes == ["E0302"] and "limit" in str(e.value)


def test_a_fast_dev_run_runs_one_batch_of_each_split_and_leaves_nothing(tmp_path, monkeypatch):
    plan = OVERFIT.replace("    overfit_batches = 2\n", "    train_metrics = true\n")
    path = write(tmp_path, plan)
    work, temp = tmp_path / "work", tmp_path / "temp"
    work.mkdir()
    temp.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    forward, batches = Trainer._forward, []

    def count(self, s, inputs):
        batches.append((torch.is_grad_enabled(), inputs[0].shape[0]))
        return forward(self, s, inputs)
    monkeypatch.setattr(Trainer, "_forward", count)
    said = []
    result = train(path, "smoke", Options(fast_dev_run=True, progress=False), out=said.append)
    assert batches == [(True, 32), (False, 32), (False, 32)]   # train, val, test: one batch of 32 each
    assert result["fast_dev_run"] is True and result["epochs_run"] == 1 and set(result["test"]) == {"loss", "accuracy"}
    assert list(work.iterdir()) == [] and list(temp.iterdir()) == []
    assert said[-1].startswith("fast dev run of `smoke`: ok (one batch of each split: test, loss ")
    assert not any("run directory" in line for line in said)


def test_fast_dev_run_on_the_command_line(tmp_path, monkeypatch):
    path = write(tmp_path, OVERFIT)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["train", path, "--fast-dev-run"])
    assert result.exit_code == 0, result.output
    assert "nothing was written" in result.stdout and sorted(os.listdir(tmp_path)) == ["plan.dl"]
    for flags in (["--out", "somewhere"], ["--resume"]):
        refused = CliRunner().invoke(main, ["train", path, "--fast-dev-run", *flags])
        assert refused.exit_code == 2 and "--fast-dev-run writes nothing" in refused.stderr
    assert "--fast-dev-run" in CliRunner().invoke(main, ["train", "--help"]).stdout
