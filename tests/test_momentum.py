"""Momentum targets in plan steps: `ema(model.encoder, decay=0.99)` (BYOL's target network)."""
from __future__ import annotations

import os

import pytest
import torch

import dslc
from dslc.api import train
from dslc.diagnostics import DslcError
from dslc.runtime import checkpoint
from dslc.runtime.trainer import Options, Trainer, plan_source

# curves.png and confusion.png are left out of these runs (tests/conftest.py: no_figures)
pytestmark = pytest.mark.usefixtures("no_figures")

MODELS = """
model Encoder {
    input x: [B, 1, 8, 8]
    Conv2d(4, 3, padding=1) as conv
    BatchNorm2d() as bn
    ReLU()
    AdaptiveAvgPool2d(1)
    Flatten()                        # [B, 4]
}

block Head(out: int) {
    Linear(8) as fc1
    ReLU()
    Linear(out) as fc2
}

model Net {
    input x: [B, 1, 8, 8]
    Encoder() as encoder
    Head(6) as projector
    Head(6) as predictor
}
"""

PLAN = MODELS + """
train p {
    model      = Net()
    data       = digits(limit=%(limit)d, val=%(val)s)
    epochs     = %(epochs)d
    batch_size = 32
    seed       = 0
    step byol {
        target = ema(model.encoder, decay=%(decay)s)
        projector = ema(model.projector, decay=%(decay)s)
        v1 = batch.x + noise(batch.x.shape) * 0.1
        v2 = batch.x + noise(batch.x.shape) * 0.1
        loss = %(loss)s
        optimizer = Adam(lr=1e-2)
    }
}
"""

BYOL_LOSS = ("mean(mse(normalize(model(v1), dim=1), normalize(detach(projector(target(v2))), dim=1))) + "
             "mean(mse(normalize(model(v2), dim=1), normalize(detach(projector(target(v1))), dim=1)))")
# no detach: were the target trainable, its weights would get gradients from this loss
UNDETACHED_LOSS = "mean(mse(model(v1), projector(target(v2))))"


def plan_text(limit=32, val="0.0", epochs=1, decay="0.9", loss=BYOL_LOSS) -> str:
    return PLAN % {"limit": limit, "val": val, "epochs": epochs, "decay": decay, "loss": loss}


def trainer(tmp_path, text: str, out: str = "run", **opts) -> Trainer:
    path = tmp_path / "plan.dl"
    path.write_text(text)
    return Trainer(dslc.load(str(path)).plan("p"), str(path),
                   Options(out=str(tmp_path / out), progress=False, watch=False, **opts), lambda s: None)


def initial_weights(tmp_path, text: str) -> dict:
    t = trainer(tmp_path, text, out="unused")
    t.setup()
    return {k: v.detach().clone() for k, v in t.models["model"].state_dict().items()}


def test_the_plan_names_each_target_once_and_the_code_lists_them(tmp_path):
    path = tmp_path / "plan.dl"
    path.write_text(plan_text())
    plan = dslc.load(str(path)).plan("p")
    assert {k: (t.model, t.path, t.decay) for k, t in plan.targets.items()} == {
        "ema_model_encoder": ("model", ("encoder",), 0.9), "ema_model_projector": ("model", ("projector",), 0.9)}
    source = plan_source(plan, str(path))
    assert 'TARGETS = {"ema_model_encoder": ("model", "encoder", 0.9), ' \
        '"ema_model_projector": ("model", "projector", 0.9)}' in source
    assert 'STEP_MODELS = {"byol": ["model", "ema_model_encoder", "ema_model_projector"]}' in source
    assert "self.ema_model_projector(self.ema_model_encoder(v2))" in source


def test_after_one_step_the_target_is_the_decayed_average(tmp_path):
    """One batch, one optimizer step: θ_t = d·θ_0 + (1 − d)·θ_1 for every parameter, by hand; the
    batch-norm buffers are the online block's."""
    text = plan_text(decay="0.75")
    before = initial_weights(tmp_path, text)
    t = trainer(tmp_path, text)
    t.run()
    after = t.models["model"].state_dict()
    for key, block in (("ema_model_encoder", "encoder"), ("ema_model_projector", "projector")):
        target = t.targets[key].module.state_dict()
        assert target.keys() == t.models["model"].get_submodule(block).state_dict().keys()
        for name, got in target.items():
            full = f"{block}.{name}"
            if name.endswith(("running_mean", "running_var", "num_batches_tracked")):
                assert torch.equal(got, after[full]), full
            else:
                assert not torch.equal(before[full], after[full]), full   # the step moved it
                torch.testing.assert_close(got, 0.75 * before[full] + 0.25 * after[full], rtol=0, atol=1e-7)


def test_gradients_never_reach_the_target(tmp_path):
    t = trainer(tmp_path, plan_text(loss=UNDETACHED_LOSS))
    t.run()
    for target in t.targets.values():
        params = list(target.module.parameters())
        assert params and all(not p.requires_grad and p.grad is None for p in params)
    assert t.targets["ema_model_encoder"].module is not t.models["model"].encoder


def test_the_targets_are_in_the_checkpoint_and_a_resumed_run_is_bit_equal(tmp_path):
    text = plan_text(limit=96, val="0.3", epochs=2, decay="0.9")
    path = tmp_path / "plan.dl"
    path.write_text(text)

    def run(out, **opts):
        return train(str(path), "p", Options(out=str(tmp_path / out), progress=False, **opts), out=lambda s: None)

    run("whole")
    run("parts", max_epochs=1)
    run("parts", resume=True)

    def last(folder):
        found = checkpoint.checkpoints(os.path.join(tmp_path, folder, "checkpoints"))
        weights, tensors, _ = checkpoint.load(found[-1][2])
        return weights, {k: v for k, v in tensors.items() if k.startswith("target.")}

    (w1, t1), (w2, t2) = last("whole"), last("parts")
    assert "target.ema_model_encoder.conv.weight" in t1 and "target.ema_model_projector.fc2.bias" in t1
    assert w1.keys() == w2.keys() and all(torch.equal(w1[k], w2[k]) for k in w1)
    assert t1.keys() == t2.keys() and all(torch.equal(t1[k], t2[k]) for k in t1)
    assert not torch.equal(t1["target.ema_model_encoder.conv.weight"], w1["encoder.conv.weight"])

    # `dslc eval` and `predict` restore the targets of the weights' epoch with the weights
    from dslc.runtime.restore import restore
    trainer = restore(dslc.load(str(path)).plan("p"), str(path), str(tmp_path / "whole"), "last", None,
                      lambda s: None).trainer
    for key, t in trainer.targets.items():
        got = t.module.state_dict()
        assert got and all(torch.equal(v, t1[f"target.{key}.{n}"]) for n, v in got.items())


def test_a_whole_model_as_target_moco_style(tmp_path):
    """`ema(model)`: a key encoder that is the whole model (MoCo v3 with in-batch negatives)."""
    text = plan_text(decay="0.5", loss="nt_xent(model(v1), detach(key(v2)), temperature=0.5)").replace(
        "target = ema(model.encoder, decay=0.5)\n        projector = ema(model.projector, decay=0.5)",
        "key = ema(model, decay=0.5)")
    before = initial_weights(tmp_path, text)
    t = trainer(tmp_path, text)
    t.run()
    assert list(t.plan.targets) == ["ema_model"] and 'TARGETS = {"ema_model": ("model", "", 0.5)}' in t.source
    after, target = t.models["model"].state_dict(), t.targets["ema_model"].module.state_dict()
    assert target.keys() == after.keys()
    torch.testing.assert_close(target["predictor.fc2.weight"], after["predictor.fc2.weight"] * 0.5 +
                               before["predictor.fc2.weight"] * 0.5, rtol=0, atol=1e-7)


def _errors(tmp_path, step_lines: str) -> tuple[list, str]:
    text = MODELS + """
train p {
    model      = Net()
    data       = digits(limit=32)
    epochs     = 1
    step s {
""" + step_lines + """
        loss = mean(model(batch.x)) + mean(t(batch.x))
        optimizer = Adam(lr=1e-2)
    }
}
"""
    path = tmp_path / "bad.dl"
    path.write_text(text)
    with pytest.raises(DslcError) as info:
        dslc.load(str(path)).plan("p")
    return info.value.codes, str(info.value)


@pytest.mark.parametrize("lines, code, words", [
    ("t = ema(modle.encoder, decay=0.9)", "E0506", "did you mean `model`?"),
    ("t = ema(model.encodr, decay=0.9)", "E0506", "did you mean `encoder`?"),
    ("t = ema(model.encoder.conv, decay=0.9)", "E0506", "is a single layer"),
    ("t = ema(model.encoder)", "E0303", "needs `decay`"),
    ("t = ema(model.encoder, decay=1.5)", "E0302", "in [0, 1)"),
    ("t = ema(model.encoder, decay=0.9, rate=2)", "E0305", "no parameter `rate`"),
    ("t = ema(batch.x + 1, decay=0.9)", "E0301", "named by its path"),
    ("t = ema(model.encoder, decay=0.9)\n        u = ema(model.encoder, decay=0.8)", "E0302", "one decay"),
])
def test_a_bad_target_is_a_diagnostic_at_its_line(tmp_path, lines, code, words):
    codes, text = _errors(tmp_path, lines)
    assert codes == [code]
    assert words in text and "bad.dl:" in text and "Traceback" not in text


def test_a_target_applies_to_what_its_block_was_made_for(tmp_path):
    """The projector was made for the encoder's [B, 4] (the plans above apply it there); over
    [B, 1, 8, 8] its first Linear would have in_features 8: another block than the one copied."""
    codes, text = _errors(tmp_path, "t = ema(model.projector, decay=0.9)")
    assert codes == ["E0408"] and "copy of `model.projector`" in text and "in_features" in text


EXAMPLE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples", "contrastive",
                       "contrastive.dl")


@pytest.mark.slow
def test_the_byol_example_beats_a_random_encoder_in_the_linear_probe(tmp_path):
    """examples/contrastive's BYOL, shortened: one epoch of pretraining, ten of each probe. The probe on
    BYOL's encoder is more accurate on the test split than the same probe on the encoder as initialized."""
    def run(name, *sets):
        return train(EXAMPLE, name, Options(out=str(tmp_path / name), sets=sets, progress=False, watch=False),
                     out=lambda s: None)

    run("byol", "epochs=1")
    init = str(tmp_path / "byol" / "checkpoints" / "best.safetensors").replace("\\", "/")
    byol = run("probe_byol", "epochs=10", f'init="{init}"')["test"]["accuracy"]
    random = run("probe_random", "epochs=10")["test"]["accuracy"]
    assert byol > random + 0.05, (byol, random)
