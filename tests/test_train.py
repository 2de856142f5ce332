"""`dslc train`: the run directory, exact resumption (also after kill -9), faults, multi-step
plans, phases, and agreement with a hand-written PyTorch training loop."""
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

import dslc
from dslc.api import train
from dslc.cli import main
from dslc.diagnostics import DslcError
from dslc.frontend.fmt import format_source, statements
from dslc.runtime.trainer import Options

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DSLC = os.path.join(os.path.dirname(sys.executable), "dslc")

MODELS = """
model Small(hidden: int = 32) {
    input x: [B, 1, 8, 8]
    Flatten()
    Linear(hidden) as fc1
    ReLU()
    Dropout(0.1)
    Linear(10) as head
}

block Features {
    Conv2d(8, 3, padding=1) as conv
    ReLU()
    Flatten()
}

model Net(classes: int = 10) {
    input x: [B, 1, 8, 8]
    Features() as backbone
    Linear(classes) as head
}
"""

PLAN = MODELS + """
train p {
    model      = Small()
    data       = digits(val=0.2, test=0.2)
    loss       = cross_entropy(out, batch.y)
    optimizer  = Adam(lr=3e-3)
    epochs     = 3
    batch_size = 64
    metrics    = [accuracy]
    seed       = 0
}
"""

# Runs without curves.png and confusion.png, which take most of a small run's time: for tests that
# are not about them (test_run_directory_holds_what_interfaces_says checks them)
NO_FIGURES = pytest.mark.usefixtures("no_figures")


def write(tmp_path, text: str, name: str = "plan.dl") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def run(tmp_path, text: str, plan=None, sets=(), out="run", **opts) -> dict:
    path = write(tmp_path, text)
    lines = []
    options = Options(out=str(tmp_path / out), sets=tuple(sets), **{"progress": False, **opts})
    result = train(path, plan, options, out=lines.append)
    result["_lines"] = lines
    return result


def weights(run_dir) -> dict:
    from dslc.runtime import checkpoint
    last = checkpoint.checkpoints(os.path.join(run_dir, "checkpoints"))[-1][2]
    return checkpoint.load(last)[0]


def metrics(run_dir) -> list:
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------ the run directory

def test_run_directory_holds_what_interfaces_says(tmp_path):
    result = run(tmp_path, PLAN)
    d = tmp_path / "run"
    records = metrics(d)
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert {"epoch", "train_loss", "val_loss", "val_accuracy", "lr", "seconds"} <= set(records[0])
    assert records[-1]["val_accuracy"] > 0.8
    saved = json.loads((d / "result.json").read_text())
    assert saved["epochs_run"] == 3 and saved["stopped_early"] is False
    assert set(saved["test"]) == {"loss", "accuracy"} and saved["test"]["accuracy"] > 0.8
    assert result["test"] == saved["test"]
    assert (d / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert (d / "confusion.png").read_bytes()[:4] == b"\x89PNG"
    names = sorted(os.listdir(d / "checkpoints"))
    assert "best.safetensors" in names and "epoch-0003.json" in names
    # the best weights load straight into the model built from the spec
    net = dslc.load(str(tmp_path / "plan.dl")).build("Small")
    net.load_state_dict(load_file(str(d / "checkpoints" / "best.safetensors")))


def test_plan_dl_records_every_default_and_setting(tmp_path):
    run(tmp_path, PLAN, sets=["epochs=1", "optimizer.lr=0.01", "data.val=0.25"])
    text = (tmp_path / "run" / "plan.dl").read_text()
    assert format_source(text) == text                     # laid out as `dslc fmt` writes it
    assert "    epochs     = 1\n" in text and "    batch_size = 64\n" in text
    said = statements(text)
    assert "    optimizer = Adam(lr=0.01, betas=[0.9, 0.999], eps=1e-08, weight_decay=0.0, amsgrad=false, " \
           "lr_mult=none)" in said
    assert any(s.startswith("    data = digits(val=0.25, test=0.2, seed=0") for s in said)
    assert "    loss = cross_entropy(out, batch.y)" in said
    # it is a plan the language accepts: with the models it names, it checks
    (tmp_path / "again.dl").write_text(MODELS + text)
    dslc.load(str(tmp_path / "again.dl")).plan("p")


def test_plan_dl_keeps_a_statement_that_ends_in_parentheses(tmp_path):
    """A loss written in parentheses over two lines (as `dslc fmt` breaks a long sum) is written
    whole: its span ends before the `)`, and plan.dl once lost it and did not parse."""
    from dslc.runtime.rundir import render_plan
    loss = "    loss       = (cross_entropy(out, batch.y) +\n                  0.5 * mean(out * out))\n"
    path = write(tmp_path, PLAN.replace("    loss       = cross_entropy(out, batch.y)\n", loss))
    text = render_plan(dslc.load(path).plan("p"), path, str(tmp_path / "run"))
    assert format_source(text) == text
    assert "    loss = (cross_entropy(out, batch.y) + 0.5 * mean(out * out))" in statements(text)
    (tmp_path / "again.dl").write_text(MODELS + text)
    dslc.load(str(tmp_path / "again.dl")).plan("p")


@NO_FIGURES
def test_plan_dl_is_written_even_when_the_formatter_fails(tmp_path, monkeypatch):
    """A bug in the formatter costs plan.dl its layout, never the run: the renderer's own text is written."""
    from dslc.frontend import fmt
    from dslc.runtime.rundir import plan_text

    def broken(text, name="<text>"):
        raise RuntimeError("a bug in the formatter")
    monkeypatch.setattr(fmt, "format_source", broken)
    run(tmp_path, PLAN, sets=["epochs=1"])
    text = (tmp_path / "run" / "plan.dl").read_text()
    path = str(tmp_path / "plan.dl")
    assert text == plan_text(dslc.load(path).plan("p", sets=("epochs=1",)), path, str(tmp_path / "run"))
    assert "    epochs = 1\n" in text


@NO_FIGURES
def test_a_new_run_never_reuses_a_folder(tmp_path, monkeypatch):
    path = write(tmp_path, PLAN)
    monkeypatch.chdir(tmp_path)
    for _ in range(2):
        train(path, None, Options(sets=("epochs=1",), progress=False), out=lambda s: None)
    assert sorted(os.listdir(tmp_path / "runs")) == ["p", "p-2"]
    assert len(metrics(tmp_path / "runs" / "p")) == 1


def test_initial_weights_are_those_of_compile_seed(tmp_path):
    from dslc.runtime.trainer import Trainer
    path = write(tmp_path, PLAN.replace("seed       = 0", "seed       = 7"))
    prog = dslc.load(path)
    trainer = Trainer(prog.plan("p"), path, Options(out=str(tmp_path / "r")), print)
    from dslc.runtime.rundir import RunDir
    trainer.rundir = RunDir.open("p", str(tmp_path / "r"), False)
    trainer.precision = "fp32"
    trainer.plan.fields.setdefault("metrics", [])
    trainer._build()
    want = prog.build("Small", seed=7).state_dict()
    assert same(trainer.models["model"].state_dict(), want)


# ------------------------------------------------------------------ against a hand-written loop

@NO_FIGURES
def test_training_equals_a_hand_written_pytorch_loop(tmp_path):
    """The same model, data order and optimizer in plain PyTorch give the same weights."""
    plan = PLAN.replace("Dropout(0.1)", "Dropout(0.0)").replace("epochs     = 3", "epochs     = 2")
    run(tmp_path, plan)
    got = weights(tmp_path / "run")

    from sklearn.datasets import load_digits
    digits = load_digits()
    x = torch.tensor(digits.images / 16.0, dtype=torch.float32).reshape(-1, 1, 8, 8)
    y = torch.tensor(digits.target, dtype=torch.int64)
    from dslc.runtime import data as data_mod
    splits = data_mod.load("digits", {"val": 0.2, "test": 0.2, "seed": 0, "scale": (0.0, 1.0)})
    # the split is a subset of the real data set
    assert splits.train["x"].shape[1:] == (1, 8, 8)
    real = {(img.numpy().tobytes(), int(label)) for img, label in zip(x, y)}
    assert all((img.numpy().tobytes(), int(label)) in real for img, label in zip(splits.train["x"], splits.train["y"]))

    class Twin(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = torch.nn.Linear(64, 32)
            self.head = torch.nn.Linear(32, 10)

        def forward(self, x):
            return self.head(torch.relu(self.fc1(x.flatten(1))))

    torch.manual_seed(0)
    twin = Twin()
    opt = torch.optim.Adam(twin.parameters(), lr=3e-3)
    for epoch in (1, 2):
        for batch in data_mod.batches(splits.train, 64, shuffle=True, seed=0, epoch=epoch):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(twin(batch["x"]), batch["y"]).backward()
            opt.step()
    want = twin.state_dict()
    assert set(got) == set(want)
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------ resumption

@NO_FIGURES
def test_same_seed_gives_bit_identical_runs(tmp_path):
    run(tmp_path, PLAN, out="a", sets=["epochs=2"])
    run(tmp_path, PLAN, out="b", sets=["epochs=2"])
    assert same(weights(tmp_path / "a"), weights(tmp_path / "b"))


def _records_so_far(run_dir) -> list:
    """metrics.jsonl's complete lines while the run still writes it."""
    try:
        with open(os.path.join(run_dir, "metrics.jsonl")) as f:
            lines = f.read().split("\n")[:-1]   # the last piece may be a line half written
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in lines]


def _without_time(records):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records]


@NO_FIGURES
def test_pausing_and_resuming_equals_an_uninterrupted_run(tmp_path):
    text = PLAN.replace("seed       = 0", "seed       = 0\n    log_every  = 5")   # step lines survive resumes too
    run(tmp_path, text, out="whole")
    paused = run(tmp_path, text, out="parts", max_epochs=1)
    assert paused == {"paused_after": 1, "_lines": paused["_lines"]}
    run(tmp_path, text, out="parts", resume=True, max_epochs=1)
    run(tmp_path, text, out="parts", resume=True)
    assert same(weights(tmp_path / "whole"), weights(tmp_path / "parts"))
    whole = _without_time(metrics(tmp_path / "whole"))
    assert [(r["epoch"], r.get("step")) for r in whole] == [
        (1, 5), (1, 10), (1, 15), (1, None), (2, 20), (2, 25), (2, 30), (2, None), (3, 35), (3, 40), (3, 45), (3, 50),
        (3, None)]
    assert whole == _without_time(metrics(tmp_path / "parts"))


SLOW_PLAN = MODELS + """
train p {
    model      = Small(hidden=512)
    data       = digits(val=0.1)
    loss       = cross_entropy(out, batch.y)
    optimizer  = SGD(lr=0.05, momentum=0.9)
    schedule   = cosine()
    epochs     = 5
    batch_size = 2
    seed       = 3
}
"""


def _cli(args, **kw):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen([DSLC, "train", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, **kw)


@pytest.mark.slow
@NO_FIGURES
def test_kill_9_at_any_moment_then_resume_logs_each_epoch_once_with_the_same_weights(tmp_path):
    path = write(tmp_path, SLOW_PLAN)
    run(tmp_path, SLOW_PLAN, out="whole")   # the uninterrupted run, in this process (one start less)
    rng = random.Random(1)
    out = str(tmp_path / "killed")
    proc = _cli([path, "--out", out])
    kills = 0
    while kills < 4:
        while not os.path.exists(os.path.join(out, "plan.py")) and proc.poll() is None:
            time.sleep(0.02)   # the model is built: training starts now
        time.sleep(rng.uniform(0.0, 2.0))
        if proc.poll() is not None:
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        folder = os.path.join(out, "checkpoints")
        if os.path.isdir(folder) and any(n.endswith(".json") for n in os.listdir(folder)):
            os.remove(os.path.join(out, "plan.py"))
            proc = _cli([path, "--out", out, "--resume"])
        else:   # killed before the first checkpoint: there is nothing to resume
            shutil.rmtree(out, ignore_errors=True)
            proc = _cli([path, "--out", out])
    proc.wait(timeout=300)
    assert proc.returncode == 0, proc.stderr.read().decode()
    assert kills >= 2
    assert [r["epoch"] for r in metrics(out)] == list(range(1, 6))
    assert _without_time(metrics(out)) == _without_time(metrics(tmp_path / "whole"))
    assert same(weights(out), weights(tmp_path / "whole"))


@NO_FIGURES
def test_ctrl_c_checkpoints_mid_epoch_and_resume_is_exact(tmp_path):
    # log_every: a line every 100 batches tells the test where the run is; an epoch is ~800 batches
    # but only half a second, so a fixed sleep could land at the epoch's end on a loaded machine
    text = SLOW_PLAN.replace("epochs     = 5", "epochs     = 2").replace("seed       = 3", "seed       = 3\n    log_every  = 100")
    path = write(tmp_path, text)
    run(tmp_path, text, out="whole")
    out = str(tmp_path / "stopped")
    proc = _cli([path, "--out", out])
    while not any(r.get("epoch") == 2 and "step" in r for r in _records_so_far(out)):
        time.sleep(0.01)
        assert proc.poll() is None
    proc.send_signal(signal.SIGINT)   # 100 batches into the second epoch, ~700 before its end
    assert proc.wait(timeout=60) == 130
    err = proc.stderr.read().decode()
    assert "interrupted: checkpoint written to" in err and "Traceback" not in err
    assert any("-batch-" in n for n in os.listdir(os.path.join(out, "checkpoints")))
    again = _cli([path, "--out", out, "--resume"])
    assert again.wait(timeout=300) == 0, again.stderr.read().decode()
    assert same(weights(out), weights(tmp_path / "whole"))
    assert _without_time(metrics(out)) == _without_time(metrics(tmp_path / "whole"))


# ------------------------------------------------------------------ faults

def test_nan_loss_stops_with_the_plan_line_and_keeps_the_last_checkpoint(tmp_path):
    plan = PLAN.replace("optimizer  = Adam(lr=3e-3)", "optimizer  = SGD(lr=1e-3)\n    schedule   = exponential(gamma=1e30)")
    path = write(tmp_path, plan)
    res = CliRunner().invoke(main, ["train", path, "--out", str(tmp_path / "run")])
    assert res.exit_code == 1
    err = res.output
    assert "error[E0601]: the loss became" in err and "in epoch 2" in err
    assert f"{path}:" in err and "loss       = cross_entropy(out, batch.y)" in err and "^" in err
    assert "Traceback" not in err
    assert "the last good checkpoint is" in err
    assert os.path.exists(tmp_path / "run" / "checkpoints" / "epoch-0001.json")
    assert [r["epoch"] for r in metrics(tmp_path / "run")] == [1]


@pytest.mark.parametrize("damage", ["json", "weights", "state"])
def test_a_corrupt_checkpoint_is_named(tmp_path, damage):
    run(tmp_path, PLAN, max_epochs=1)
    folder = tmp_path / "run" / "checkpoints"
    target = {"json": "epoch-0001.json", "weights": "epoch-0001.safetensors",
              "state": "epoch-0001.state.safetensors"}[damage]
    data = (folder / target).read_bytes()
    (folder / target).write_bytes(data[: len(data) // 2])
    res = CliRunner().invoke(main, ["train", str(tmp_path / "plan.dl"), "--out", str(tmp_path / "run"), "--resume"])
    assert res.exit_code == 1
    assert "error[E0602]" in res.output and target in res.output and "Traceback" not in res.output


def test_a_checkpoint_of_another_model_is_refused(tmp_path):
    run(tmp_path, PLAN, max_epochs=1)
    changed = PLAN.replace("model      = Small()", "model      = Small(hidden=16)")
    with pytest.raises(DslcError) as e:   # the plan changed: refused before the checkpoint is read
        run(tmp_path, changed, resume=True)
    assert e.value.codes == ["E0606"] and "now:     model = Small(hidden=16)" in str(e.value)
    os.remove(tmp_path / "run" / "plan.py")   # without the run's code to compare with, the weights tell
    with pytest.raises(DslcError) as e:
        run(tmp_path, PLAN.replace("hidden: int = 32", "hidden: int = 16"), resume=True)
    assert "does not fit the model" in str(e.value)


def test_resume_without_a_run_is_an_error(tmp_path):
    with pytest.raises(DslcError) as e:
        run(tmp_path, PLAN, out="nothing", resume=True)
    assert e.value.codes == ["E0603"]


def test_unknown_setting_has_a_suggestion(tmp_path):
    path = write(tmp_path, PLAN)
    res = CliRunner().invoke(main, ["train", path, "--set", "epoch=2"])
    assert res.exit_code == 1
    assert "no field `epoch`" in res.output and "did you mean `epochs`?" in res.output


def test_fp16_on_the_cpu_is_refused(tmp_path):
    with pytest.raises(DslcError) as e:
        run(tmp_path, PLAN, sets=["precision=fp16"], device="cpu")
    assert "fp16 training needs a CUDA device" in str(e.value)


# ------------------------------------------------------------------ plans with several models, phases

GAN = """
model G(latent: int = 16) {
    input z: [B, latent]
    Linear(64)
    Tanh()
}

model D {
    input x: [B, 64]
    Linear(32)
    LeakyReLU(0.2)
    Linear(1)
    Sigmoid()
}

train gan {
    models     = { G: G(), D: D() }
    data       = digits(scale=[-1, 1])
    batch_size = 128
    epochs     = 1
    step discriminator {
        real = flatten(batch.x, start_dim=1)
        fake = G(noise([batch_size, 16]))
        loss = bce(D(real), ones) + bce(D(detach(fake)), zeros)
        optimizer = Adam(D, lr=2e-4, betas=[0.5, 0.999])
    }
    step generator {
        loss = bce(D(G(noise([batch_size, 16]))), ones)
        optimizer = Adam(G, lr=2e-4, betas=[0.5, 0.999])
    }
}
"""


def test_gan_steps_update_their_own_model(tmp_path):
    torch.manual_seed(0)
    before = {k: v.clone() for k, v in dslc.load(write(tmp_path, GAN, "g.dl")).build("G", seed=0).state_dict().items()}
    run(tmp_path, GAN)
    record = metrics(tmp_path / "run")[0]
    assert {"discriminator_loss", "generator_loss", "train_loss"} <= set(record)
    after = weights(tmp_path / "run")
    # chains of unnamed layers are nn.Sequential models: keys by place, as PyTorch's (Linear first, then Tanh)
    assert set(after) == {"G.0.weight", "G.0.bias", "D.0.weight", "D.0.bias", "D.2.weight", "D.2.bias"}
    assert not torch.equal(after["G.0.weight"], before["0.weight"])


def test_a_steps_backward_leaves_the_other_models_gradients_alone(tmp_path):
    """The generator step backpropagates through D; D's update must not see those gradients."""
    path = write(tmp_path, GAN)
    from dslc.runtime.rundir import RunDir
    from dslc.runtime.trainer import Trainer
    prog = dslc.load(path)
    t = Trainer(prog.plan("gan"), path, Options(out=str(tmp_path / "r")), print)
    t.rundir = RunDir.open("gan", str(tmp_path / "r"), False)
    t.precision = "fp32"
    from dslc.runtime import data as data_mod
    t.data = data_mod.load("digits", dict(t.plan.data.args))
    t._build()
    t.phases = t._phases()
    t.scaler = None
    t._start_phase(0)
    gen = next(s for s in t.steps if s.name == "generator")
    x = next(iter(data_mod.batches(t.data.train, 128, shuffle=False, seed=0, epoch=1)))["x"]
    loss = t._forward(gen, [x, torch.zeros(len(x), dtype=torch.int64)])[0]
    loss.backward(inputs=gen.params)
    assert all(p.grad is None for p in t.models["D"].parameters())
    assert all(p.grad is not None for p in t.models["G"].parameters())


FINETUNE = MODELS + """
train pretrain {
    model      = Net()
    data       = digits(val=0.2)
    loss       = cross_entropy(out, batch.y)
    optimizer  = Adam(lr=1e-2)
    epochs     = 1
    seed       = 0
}

train tune {
    model      = Net()
    init       = "RUN/checkpoints/best.safetensors"
    data       = digits(val=0.2)
    loss       = cross_entropy(out, batch.y)
    phase head {
        freeze model.backbone
        epochs    = 1
        optimizer = Adam(lr=1e-2)
    }
    phase full {
        unfreeze model.backbone.conv
        epochs    = 1
        optimizer = SGD(lr=1e-2)
    }
}
"""


def test_phases_freeze_unfreeze_and_init_by_name(tmp_path):
    text = FINETUNE.replace("RUN", str(tmp_path / "pre"))
    run(tmp_path, text, plan="pretrain", out="pre")
    start = load_file(str(tmp_path / "pre" / "checkpoints" / "best.safetensors"))
    first = run(tmp_path, text, plan="tune", out="tune", max_epochs=1)
    assert any("loaded 4 of the model's 4 tensors" in line for line in first["_lines"])
    mid = weights(tmp_path / "tune")
    assert torch.equal(mid["backbone.conv.weight"], start["backbone.conv.weight"])   # frozen in `head`
    assert not torch.equal(mid["head.weight"], start["head.weight"])
    run(tmp_path, text, plan="tune", out="tune", resume=True)
    end = weights(tmp_path / "tune")
    assert not torch.equal(end["backbone.conv.weight"], start["backbone.conv.weight"])
    assert [r.get("phase") for r in metrics(tmp_path / "tune")] == ["head", "full"]


NUMBERED = """
model Chain {
    input x: [B, 1, 8, 8]
    Flatten()
    Linear(16)
    ReLU()
    Linear(10)
}

train numbered {
    model      = Chain()
    data       = digits(val=0.2, limit=200)
    loss       = cross_entropy(out, batch.y)
    optimizer  = Adam(lr=1e-2, lr_mult={"3": 0.5})
    seed       = 0
    phase head {
        freeze model.1
        epochs = 1
    }
}
"""


def test_a_numbered_layer_of_a_sequential_is_frozen_by_its_index(tmp_path):
    # an unnamed chain is an nn.Sequential keyed 0, 1, 2, ... as torch keys it: `model.1` names its
    # first Linear (the lexer read `.1` as the float 0.1, and the path lost it: the whole model froze)
    from dslc.api import load
    first = load(write(tmp_path, NUMBERED)).build("Chain", seed=0).state_dict()
    run(tmp_path, NUMBERED, plan="numbered")
    end = weights(tmp_path / "run")
    assert torch.equal(end["1.weight"], first["1.weight"]) and torch.equal(end["1.bias"], first["1.bias"])
    assert not torch.equal(end["3.weight"], first["3.weight"])
    bad = write(tmp_path, NUMBERED.replace("freeze model.1", "freeze model.4"), "bad.dl")
    res = CliRunner().invoke(main, ["check", bad])
    assert res.exit_code == 1 and "error[E0506]: `model` has no layer `4`" in res.output, res.output
    assert "its layers: 0, 1, 2, 3" in res.output and "freeze model.4" in res.output


def test_init_reports_what_did_not_match(tmp_path):
    from safetensors.torch import save_file
    (tmp_path / "pre" / "checkpoints").mkdir(parents=True)
    save_file({"backbone.conv.weight": torch.ones(8, 1, 3, 3), "backbone.conv.bias": torch.ones(8),
               "head.weight": torch.ones(5, 512), "extra": torch.ones(1)},
              str(tmp_path / "pre" / "checkpoints" / "best.safetensors"))
    text = FINETUNE.replace("RUN", str(tmp_path / "pre"))
    with pytest.raises(DslcError, match=r"head.weight: \(5, 512\) in the file, \(10, 512\) in the model"):
        run(tmp_path, text, plan="tune", out="tune", sets=["head.epochs=1", "full.epochs=1"])
    assert not (tmp_path / "tune").exists()
    result = run(tmp_path, text, plan="tune", out="tune", sets=["head.epochs=1", "full.epochs=1",
                                                                "skip_mismatched=true"])
    line = next(s for s in result["_lines"] if s.startswith("weights from"))
    assert "loaded 2 of the model's 4 tensors" in line
    assert "skipped, shapes differ             1  head.weight: (5, 512) in the file, (10, 512) in the model" in line
    assert "left at their initial values       1  head.bias\n" in line
    assert "in the file, not in the model      1  extra" in line


def test_missing_init_file_points_at_the_plan(tmp_path):
    path = write(tmp_path, FINETUNE.replace("RUN", str(tmp_path / "nowhere")))
    res = CliRunner().invoke(main, ["train", path, "--plan", "tune", "--out", str(tmp_path / "r")])
    assert res.exit_code == 1
    assert "error[E0901]: `init`: no such file" in res.output and "init       =" in res.output


DISTILL = MODELS + """
train teacher {
    model      = Small(hidden=64)
    data       = digits()
    loss       = cross_entropy(out, batch.y)
    optimizer  = Adam(lr=1e-2)
    epochs     = 1
}

train distill {
    models     = { teacher: Small(hidden=64), student: Small(hidden=8) }
    init       = { teacher: "RUN/checkpoints/epoch-0001.safetensors" }
    data       = digits(val=0.2)
    freeze teacher
    epochs     = 1
    step learn {
        loss = distillation(student(batch.x), teacher(batch.x), batch.y, temperature=2.0, alpha=0.5)
        optimizer = Adam(student, lr=1e-2)
    }
}
"""


def test_distillation_keeps_the_teacher_frozen(tmp_path):
    text = DISTILL.replace("RUN", str(tmp_path / "t"))
    run(tmp_path, text, plan="teacher", out="t")
    teacher = weights(tmp_path / "t")
    run(tmp_path, text, plan="distill", out="d")
    after = weights(tmp_path / "d")
    for k, v in teacher.items():
        assert torch.equal(after[f"teacher.{k}"], v)


def test_data_that_does_not_fit_the_loss_is_a_diagnostic(tmp_path):
    path = write(tmp_path, PLAN.replace("Linear(10) as head", "Linear(5) as head"))
    res = CliRunner().invoke(main, ["train", path, "--out", str(tmp_path / "r")])
    assert res.exit_code == 1, res.output
    assert "error[E0604]: the step failed on a batch: IndexError: Target" in res.output
    assert "loss       = cross_entropy(out, batch.y)" in res.output and "Traceback" not in res.output
    assert "batch.x [64, 1, 8, 8] float32, batch.y [64] int64" in res.output


# ------------------------------------------------------------------ options

def test_accumulation_steps_the_optimizer_every_n_batches(tmp_path):
    run(tmp_path, PLAN, sets=["epochs=1", "accumulate=3", "data.val=0.0", "data.test=0.0", "batch_size=100"])
    from dslc.runtime import checkpoint
    _, tensors, _ = checkpoint.load(checkpoint.checkpoints(str(tmp_path / "run" / "checkpoints"))[-1][2])
    batches = -(-1797 // 100)   # 18
    assert float(tensors["optim.train.0.step"]) == -(-batches // 3)


def test_bf16_ema_and_progress_bar_run(tmp_path):
    result = run(tmp_path, PLAN, sets=["epochs=2", "precision=bf16", "ema=0.9"], progress=True)
    assert result["test"]["accuracy"] > 0.5
    from dslc.runtime import checkpoint
    w, tensors, _ = checkpoint.load(checkpoint.checkpoints(str(tmp_path / "run" / "checkpoints"))[-1][2])
    assert "ema.model.head.weight" in tensors
    assert not torch.equal(tensors["ema.model.head.weight"], w["head.weight"])


def test_tensorboard_scalars_when_installed(tmp_path, monkeypatch):
    import types
    written = []

    class Writer:
        def __init__(self, folder):
            written.append(("dir", folder))

        def add_scalar(self, key, value, step):
            written.append((key, step))

        def flush(self):
            pass

        def close(self):
            written.append(("closed",))
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=Writer))
    run(tmp_path, PLAN, sets=["epochs=2"])
    assert written[0] == ("dir", str(tmp_path / "run" / "tensorboard"))
    assert ("val_accuracy", 2) in written and ("train_loss", 1) in written
    assert ("grad_norm", 2) in written and written[-1] == ("closed",)   # the health checks too


def test_callbacks_are_called_in_order_and_at_the_end_of_a_failed_run(tmp_path):
    """The loop's hooks: fit start, each epoch's start, batches and end, and fit end, also when
    the run stops on an error (the progress display closes its bar there)."""
    from dslc.runtime.callbacks import Callback
    from dslc.runtime.trainer import Diverged, Trainer
    calls = []

    class Recorder(Callback):
        def on_fit_start(self, trainer):
            calls.append("fit_start")

        def on_epoch_start(self, trainer, epoch, total, batches):
            calls.append(("epoch_start", epoch, total, batches))

        def on_train_batch_end(self, trainer, done, sums, count):
            calls.append(("batch", done))

        def on_epoch_end(self, trainer, record, total):
            calls.append(("epoch_end", record["epoch"], "train_loss" in record))

        def on_fit_end(self, trainer):
            calls.append("fit_end")

    path = write(tmp_path, PLAN.replace("epochs     = 3", "epochs     = 2"))
    trainer = Trainer(dslc.load(path).plan("p"), path, Options(out=str(tmp_path / "r"), progress=False), print)
    trainer.callbacks.items.append(Recorder())
    trainer.run()
    batches = calls[1][3]
    assert calls[0] == "fit_start" and calls[-1] == "fit_end"
    assert calls[1:batches + 3] == [("epoch_start", 1, 2, batches)] + [("batch", i) for i in range(1, batches + 1)] \
        + [("epoch_end", 1, True)]
    assert calls.count("fit_end") == 1 and [c for c in calls if c[0] == "epoch_end"] == [("epoch_end", 1, True),
                                                                                       ("epoch_end", 2, True)]
    calls.clear()
    failing = Trainer(dslc.load(path).plan("p"), path, Options(out=str(tmp_path / "r2"), progress=False), print)
    failing.callbacks.items.append(Recorder())

    def diverge(*args):
        raise Diverged()
    failing._epoch = diverge
    with pytest.raises(Diverged):
        failing.run()
    assert calls == ["fit_start", "fit_end"]


def test_the_hooks_of_every_batch_reach_only_the_callbacks_that_define_them():
    """A batch of a small model takes about a millisecond, so the hooks of every batch skip the callbacks
    that do nothing there; which ones do is looked up as each epoch starts: a callback added
    mid-epoch hears the batches from the next epoch on, in its place in the order."""
    from dslc.runtime.callbacks import BATCH_HOOKS, Callback, Callbacks
    heard = []

    class Batches(Callback):
        def __init__(self, name):
            self.name = name

        def on_train_batch_end(self, trainer, done, sums, count):
            heard.append((self.name, done))

    quiet, first = Callback(), Batches("first")
    own = Callback()   # a hook set on the object itself counts too
    own.on_train_step_end = lambda trainer, step, batch, loss: heard.append(("own", batch))
    callbacks = Callbacks([quiet, first, own])
    assert callbacks.batch_hooks["on_train_batch_end"] == [first.on_train_batch_end]
    assert callbacks.batch_hooks["on_train_step_end"] == [own.on_train_step_end]
    assert not any(callbacks.batch_hooks[h] for h in BATCH_HOOKS if h not in ("on_train_batch_end", "on_train_step_end"))
    callbacks.on_epoch_start(None, 1, 2, 2)
    callbacks.on_train_step_end(None, None, 1, 0.5)
    callbacks.on_train_batch_end(None, 1, {}, 4)
    callbacks.items.insert(0, Batches("late"))
    callbacks.on_train_batch_end(None, 2, {}, 8)
    callbacks.on_epoch_start(None, 2, 2, 2)
    callbacks.on_train_batch_end(None, 1, {}, 4)
    assert heard == [("own", 1), ("first", 1), ("first", 2), ("late", 1), ("first", 1)]


def test_a_batch_hook_is_one_call_at_most():
    """A batch hook that one callback listens to is that callback's own method (not a loop around it),
    one that none listens to is a no-op; a progress display that is off (a pipe, `--no-progress`) listens
    to no batch. Each epoch's start binds them again."""
    from dslc.runtime.callbacks import Callback, Callbacks, ProgressDisplay
    heard = []

    class Losses(Callback):
        def on_train_step_end(self, trainer, step, batch, loss):
            heard.append((self, loss))

    one, two = Losses(), Losses()
    callbacks = Callbacks([ProgressDisplay(False, print), one])
    assert callbacks.batch_hooks["on_train_batch_end"] == []
    assert not ProgressDisplay(False, print).listens("on_train_batch_end")
    assert ProgressDisplay(True, print).listens("on_train_batch_end")
    assert callbacks.on_train_step_end == one.on_train_step_end
    callbacks.on_train_batch_end(None, 1, {}, 4)   # no listener: nothing happens
    callbacks.items.append(two)
    callbacks.on_epoch_start(None, 1, 2, 1)
    callbacks.on_train_step_end(None, None, 1, 0.5)
    assert heard == [(one, 0.5), (two, 0.5)]
    callbacks.items.remove(one)
    callbacks.on_epoch_start(None, 2, 2, 1)
    assert callbacks.on_train_step_end == two.on_train_step_end


def _trainer(tmp_path, text: str, out: str, resume: bool = False, **opts):
    from dslc.runtime.trainer import Trainer
    path = write(tmp_path, text)
    return Trainer(dslc.load(path).plan("p"), path, Options(out=str(tmp_path / out), resume=resume,
                                                            progress=False, **opts), lambda s: None)


def test_a_callback_keeps_state_across_a_resume_and_can_stop_the_run(tmp_path):
    """A feature lands as a callback: it sees each step's loss and optimizer step, writes its state into
    the checkpoint and gets it back on resume, and stops the run as early stopping does."""
    from dslc.runtime.callbacks import Callback

    class StepCounter(Callback):
        def __init__(self, stop_after: int | None = None):
            self.losses, self.updates, self.stop_after = 0, 0, stop_after

        def on_train_step_end(self, trainer, step, batch, loss):
            self.losses += 1

        def on_optimizer_step(self, trainer, step):
            self.updates += 1

        def on_epoch_end(self, trainer, record, total):
            if self.stop_after is not None and record["epoch"] >= self.stop_after:
                trainer.stopped_early = True

        def on_save_checkpoint(self, trainer, state, tensors):
            state["counter"] = self.updates

        def on_load_checkpoint(self, trainer, state, tensors):
            self.updates = state["counter"]

    first = _trainer(tmp_path, PLAN, "r", max_epochs=1)
    counter = StepCounter()
    first.callbacks.items.append(counter)
    assert first.run() == {"paused_after": 1}
    per_epoch = first.epoch_batches
    assert counter.losses == counter.updates == per_epoch

    second = _trainer(tmp_path, PLAN, "r", resume=True)
    resumed = StepCounter(stop_after=2)
    second.callbacks.items.append(resumed)
    result = second.run()
    assert resumed.updates == 2 * per_epoch and resumed.losses == per_epoch
    assert result["stopped_early"] and result["epochs_run"] == 2
    assert [r["epoch"] for r in metrics(tmp_path / "r")] == [1, 2]


def test_the_run_state_lives_in_callbacks_in_the_order_that_keeps_resume_exact(tmp_path):
    """The health checks add to the epoch's record first; the best weights are chosen before early
    stopping decides, which is before the checkpoint that records both; metrics.jsonl next; the
    watchers; a signal stops the run last."""
    text = PLAN.replace("    seed       = 0", "    seed       = 0\n    ema = 0.9\n    early_stopping(patience=2)")
    trainer = _trainer(tmp_path, text, "r")
    trainer.run()
    assert [type(c).__name__ for c in trainer.callbacks.items] == [
        "HealthWatch", "BestWeights", "EarlyStop", "PeriodicCheckpoints", "MetricsLog", "DivergenceCheck", "AveragedWeights",
        "TensorBoardLogger", "ProgressDisplay", "SignalStop"]
    assert trainer.callbacks.items[1].monitor == "val_loss"


@pytest.mark.slow
def test_torch_compile_trains_the_same(tmp_path):
    plain = run(tmp_path, PLAN, out="plain", sets=["epochs=1", "model=Small(hidden=16)"])
    compiled = run(tmp_path, PLAN, out="compiled", sets=["epochs=1", "model=Small(hidden=16)", "compile=true"])
    a, b = metrics(tmp_path / "plain")[0], metrics(tmp_path / "compiled")[0]
    # inductor fuses kernels, so the sums round differently: equal to about 1e-4 relative
    assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-3)
    assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-3)
    assert plain["test"]["loss"] == pytest.approx(compiled["test"]["loss"], rel=1e-3)


def test_per_position_classes_and_regression_metrics(tmp_path):
    text = """
model CharLM(vocab: int = 76, dim: int = 16) {
    input tokens: [B, T] of int64
    out, (h, c) = tokens -> Embedding(vocab, dim) -> LSTM(dim)
    output out -> Linear(vocab)
}

model Reg {
    input x: [B, 10]
    Linear(1)
    Flatten(start_dim=0)
}

train lm {
    model      = CharLM()
    data       = shakespeare(context=16, chars=3000, val=0.2)
    loss       = cross_entropy(transpose(out, 1, 2), batch.y)
    optimizer  = Adam(lr=1e-2)
    epochs     = 1
    metrics    = [accuracy, top5]
}

train reg {
    model      = Reg()
    data       = diabetes(val=0.2)
    loss       = mse(out, batch.y)
    optimizer  = Adam(lr=1e-1)
    epochs     = 1
    metrics    = [mse, mae]
}
"""
    run(tmp_path, text, plan="lm", out="lm")
    record = metrics(tmp_path / "lm")[0]
    assert 0 <= record["val_accuracy"] <= record["val_top5"] <= 1
    run(tmp_path, text, plan="reg", out="reg")
    record = metrics(tmp_path / "reg")[0]
    assert record["val_mse"] == pytest.approx(record["val_loss"], rel=1e-4)
    assert record["val_mae"] > 0


def test_a_multi_step_plan_without_validation_keeps_the_latest_as_best(tmp_path):
    run(tmp_path, GAN, sets=["epochs=3"])
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["best_epoch"] == 3


# ------------------------------------------------------------------ the models' -O level

ATTENTION_PLAN = """
block Attend(dim: int, heads: int) {
    input x
    q, k, v = x -> Linear(3 * dim) -> chunk(3, dim=-1)
    output attention(q, k, v, heads=heads, causal=true) -> Linear(dim)
}
model TinyLM(vocab: int = 76, dim: int = 16) {
    input tokens: [B, T] of int64
    h = tokens -> Embedding(vocab, dim)
    h = h + (h -> LayerNorm() -> Attend(dim, 2))
    output h -> Dropout(0.0) -> Linear(vocab)
}
train lm {
    model      = TinyLM()
    data       = shakespeare(context=16, chars=6000, val=0.1)
    loss       = cross_entropy(transpose(out, 1, 2), batch.y)
    optimizer  = SGD(lr=0.5, momentum=0.9)    # not Adam: it would magnify the rounding noise in the key
    epochs     = 1                             # bias's gradient, which is 0 (softmax ignores a shift)
    batch_size = 32
}
"""


def test_plans_train_the_O1_code_and_optimize_0_the_declared_code(tmp_path):
    """By default the run's plan.py has the -O1 passes (attention through scaled_dot_product_attention,
    the dropout of p = 0 gone); `optimize = 0` trains the code as declared. Both are the same function, so one
    epoch from the same seed ends at the same weights (within float rounding)."""
    run(tmp_path, ATTENTION_PLAN, out="fast")
    run(tmp_path, ATTENTION_PLAN, sets=("optimize=0",), out="plain")
    fast_code = (tmp_path / "fast" / "plan.py").read_text()
    plain_code = (tmp_path / "plain" / "plan.py").read_text()
    assert "F.scaled_dot_product_attention(" in fast_code and "Dropout" not in fast_code
    assert "F.scaled_dot_product_attention(" not in plain_code and "nn.Dropout(0.0)" in plain_code
    a, b = weights(tmp_path / "fast"), weights(tmp_path / "plain")
    assert sorted(a) == sorted(b)
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5), k
    assert metrics(tmp_path / "fast")[0]["val_loss"] == pytest.approx(metrics(tmp_path / "plain")[0]["val_loss"],
                                                                      rel=1e-4)
    with pytest.raises(DslcError, match="`optimize` is 0 or 1"):
        run(tmp_path, ATTENTION_PLAN, sets=("optimize=2",), out="bad")


@pytest.mark.parametrize("classes, fewest, most", [(10, 100, 1000), (76, 0, 1000)])
def test_a_confusion_matrix_of_many_classes_is_a_picture_of_bounded_size(tmp_path, classes, fewest, most):
    """Ten classes get each count written in its cell; a character model's 76 get a colour bar
    instead (5,776 numbers cannot be read, and drawing them took 19 s of a short run)."""
    import matplotlib.text
    import numpy as np
    from PIL import Image

    from dslc.runtime.rundir import RunDir
    drawn = []
    real = matplotlib.text.Text.draw
    matrix = np.arange(classes * classes).reshape(classes, classes)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(matplotlib.text.Text, "draw", lambda self, r: (drawn.append(self.get_text()), real(self, r))[1])
        RunDir(str(tmp_path)).confusion(matrix)
    numbers = sum(t.isdigit() for t in drawn)   # counts, tick labels, colour bar; each drawn twice (layout, save)
    assert fewest <= numbers <= most, numbers
    width, height = Image.open(tmp_path / "confusion.png").size
    assert width < 2000 and height < 2000
