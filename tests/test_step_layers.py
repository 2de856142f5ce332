"""What a plan's step may apply besides its models: functions and layers that plan.py writes as
functions (`ReLU()`, `Flatten()`), in loops too, train as the same loop written in PyTorch by hand;
a layer, block or model the step would hold as a module of its own is refused at `check` (E0513;
the diagnostics are tests/ui/step_*.stderr, every layer of the registry is tests/test_soundness.py's)."""
from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

import dslc
from dslc.api import train
from dslc.cli import main
from dslc.diagnostics import DslcError
from dslc.runtime import checkpoint
from dslc.runtime import data as data_mod
from dslc.runtime.trainer import Options, Trainer

torch.set_num_threads(1)

PLAN = """model M {
    input x: [B, 4]
    Linear(6) as fc
}

train p {
    model      = M()
    data       = iris(val=%(val)s)
    epochs     = 2
    batch_size = 32
    seed       = 0
    step s {
%(body)s
        optimizer = SGD(lr=0.1)
    }
}
"""
WEIGHTLESS = """        z = Flatten()(ReLU()(model(batch.x)))
        repeat 2 {
            z = z -> Tanh()
        }
        for k in [1, 2] {
            z = z * k
        }
        loss = cross_entropy(z[:, :3], batch.y)"""


def write(tmp_path, body: str, val: str = "0.0") -> str:
    path = tmp_path / "plan.dl"
    path.write_text(PLAN % {"body": body, "val": val})
    return str(path)


def options(out) -> Options:
    return Options(out=str(out), progress=False, watch=False)


def by_hand(start: dict, epochs: int = 2) -> torch.nn.Linear:
    """The step written in PyTorch: relu, flatten, tanh twice, times 1 then 2, over the run's batches."""
    fc = torch.nn.Linear(4, 6)
    fc.load_state_dict({"weight": start["fc.weight"], "bias": start["fc.bias"]})
    sgd = torch.optim.SGD(fc.parameters(), lr=0.1)
    split = data_mod.load("iris", {"val": 0.0}).train
    for epoch in range(1, epochs + 1):
        for batch in data_mod.batches(split, 32, shuffle=True, seed=0, epoch=epoch):
            z = torch.tanh(torch.tanh(torch.flatten(F.relu(fc(batch["x"])), 1))) * 1 * 2
            loss = F.cross_entropy(z[:, :3], batch["y"])
            sgd.zero_grad()
            loss.backward()
            sgd.step()
    return fc


def test_weightless_layers_and_loops_in_a_step_train_as_pytorch_by_hand(tmp_path):
    path = write(tmp_path, WEIGHTLESS)
    t = Trainer(dslc.load(path).plan("p"), path, options(tmp_path / "unused"), lambda *_: None)
    t.setup()
    start = {k: v.detach().clone() for k, v in t.models["model"].state_dict().items()}
    train(path, "p", options(tmp_path / "run"), out=lambda *_: None)
    found = checkpoint.checkpoints(os.path.join(tmp_path / "run", "checkpoints"))
    weights, _tensors, _ = checkpoint.load(found[-1][2])
    fc = by_hand(start)
    torch.testing.assert_close(weights["fc.weight"], fc.weight.detach(), rtol=0, atol=1e-6)
    torch.testing.assert_close(weights["fc.bias"], fc.bias.detach(), rtol=0, atol=1e-6)
    assert not torch.equal(weights["fc.weight"], start["fc.weight"])
    source = open(tmp_path / "run" / "plan.py").read()
    step = source[source.index("class SStep"):source.index("MODELS = ")]
    assert "z = F.relu(self.model(batch_x)).flatten(1)" in step and step.count("torch.tanh(z)") == 2
    assert "self." not in step.replace("self.model", "")   # the step holds the model and nothing else


def test_dropout_in_a_step_is_the_function_and_evaluation_leaves_it_out(tmp_path):
    """`dropout(...)` follows the step's mode: validation sees the model's output as it is."""
    path = write(tmp_path, "        loss = cross_entropy(dropout(model(batch.x), p=0.9)[:, :3], batch.y)", val="0.2")
    t = Trainer(dslc.load(path).plan("p"), path, options(tmp_path / "unused"), lambda *_: None)
    t.setup()
    fc = torch.nn.Linear(4, 6)
    fc.load_state_dict(t.models["model"].fc.state_dict())
    split = t.data.val
    got = t.evaluate(split, 32)["loss"]
    x, y = split["x"], split["y"]
    with torch.no_grad():
        want = F.cross_entropy(fc(x)[:, :3], y).item()
    assert got == pytest.approx(want, rel=1e-5)


def test_the_reported_case_fails_check_instead_of_writing_broken_code(tmp_path):
    """`z = Linear(3)(model(batch.x))` in a step checked, then plan.py had `self. = nn.Linear(6, 3)`."""
    path = write(tmp_path, "        z = Linear(3)(model(batch.x))\n        loss = cross_entropy(z, batch.y)")
    r = CliRunner().invoke(main, ["check", path])
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert "plan.dl:13:13: error[E0513]" in r.output and "^^^^^^^^^ a layer with weights in a step" in r.output
    r = CliRunner().invoke(main, ["train", path, "--out", str(tmp_path / "run")])
    assert r.exit_code == 1 and "E0513" in r.output and "internal error" not in r.output
    assert not (tmp_path / "run").exists()
    assert "E0513" in CliRunner().invoke(main, ["explain", "E0513"]).output


def test_a_step_may_apply_each_of_the_plans_models_by_its_name(tmp_path):
    """The help's way out: the layer in a model of its own, listed in `models`, named by the optimizer."""
    path = tmp_path / "two.dl"
    path.write_text("model M {\n    input x: [B, 4]\n    Linear(6)\n}\n\nmodel Head {\n    input x: [B, 6]\n"
                    "    Linear(3)\n}\n\ntrain p {\n    models = {model: M(), head: Head()}\n    data   = iris()\n"
                    "    epochs = 1\n    step s {\n        loss = cross_entropy(%s(model(batch.x)), batch.y)\n"
                    "        optimizer = Adam([model, head], lr=1e-3)\n    }\n}\n" % "head")
    plan = dslc.load(str(path)).plan("p")
    assert sorted(plan.steps[0].models.values()) == ["head", "model"]
    text = path.read_text()
    path.write_text(text.replace("(head(model", "(Head()(model"))
    with pytest.raises(DslcError, match=r"two.dl:16:30: error\[E0513\]: `Head` is not one of the plan's models"):
        dslc.load(str(path))
    # it checked, then `dslc train` stopped with KeyError: 'Head' looking for the optimizer's model
    path.write_text(text.replace("Adam([model, head]", "Adam([model, head, Head()]"))
    with pytest.raises(DslcError, match=r"two.dl:17:40: error\[E0513\]: `Head` is not one of the plan's models"):
        dslc.load(str(path))


@pytest.mark.parametrize("made, applied, says", [
    ("Linear(3) as head", "head(z)", "`Linear` has weights, but a layer made in a step belongs to no model"),
    ("BatchNorm1d(affine=false) as bn", "bn(z)", "`BatchNorm1d` has running statistics, but a layer made"),
    ("ReLU() as act", "z -> act", "a layer in a step is not named: `ReLU() as act` would be a module"),
])
def test_a_layer_named_in_a_step_is_e0513_where_its_name_is_applied(tmp_path, made, applied, says):
    """`x = Linear(3) as head`, then `head(z)`: the name was no name to apply (unknown function E0203,
    which sent the user looking for a typo). The layer is E0513 at it, as `x(z)` is, with the name's use
    pointed out; the name of a layer a step may not make is refused the same way in a pipe."""
    body = f"        z = model(batch.x)\n        x = {made}\n        loss = cross_entropy(({applied})[:, :3], batch.y)"
    path = write(tmp_path, body)
    r = CliRunner().invoke(main, ["check", path])
    assert r.exit_code == 1 and "Traceback" not in r.output and "E0203" not in r.output, r.output
    name = made.split(" as ")[1]
    assert f"plan.dl:14:13: error[E0513]: {says}" in r.output
    assert f"14 |         x = {made}\n   |             {'^' * len(made.split(' as ')[0])} " in r.output
    assert f"- `{name}` is that layer's name, which a step cannot give" in r.output
    # the same layer applied by the variable it is bound to: the same error, at the same place
    applied_by_x = body.replace(f"({applied})", "x(z)")
    r = CliRunner().invoke(main, ["check", write(tmp_path, applied_by_x)])
    assert f"plan.dl:14:13: error[E0513]: {says}" in r.output
    # a name no layer of the step has is still an unknown function
    r = CliRunner().invoke(main, ["check", write(tmp_path, body.replace(f"({applied})", "heads(z)"))])
    assert "error[E0203]: unknown function `heads`" in r.output and "E0513" not in r.output
