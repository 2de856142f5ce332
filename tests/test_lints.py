"""The lints of classic training mistakes (frontend/lints.py): when each fires and when it stays quiet.

tests/ui/warnings/ holds their exact text; here, the cases around them: what a loss's input is
seen through (blocks, reshapes, models applied in steps), what makes no warning, and W0504 at
`dslc train`, where the training split's size is known, followed by the failure it predicts.
"""
import pytest
import torch

import dslc
from dslc.api import train
from dslc.diagnostics import DslcError
from dslc.runtime.trainer import Options

NETS = """
model Probs {
    input x: [B, 30]
    Linear(2)
    Softmax(dim=1)
}

model LogProbs {
    input x: [B, 30]
    Linear(2)
    LogSoftmax(dim=1)
}

model Logits {
    input x: [B, 30]
    Linear(2)
}

model Binary {
    input x: [B, 30]
    Linear(1)
    Sigmoid()
}
"""


def warnings_of(tmp_path, plan: str) -> list:
    path = tmp_path / "p.dl"
    path.write_text(NETS + plan)
    return [(w.code, w.span.line) for w in dslc.load(str(path)).warnings]


def plan(model: str, loss: str, batch_size: int = 32) -> str:
    return f"""
train p {{
    model = {model}()
    data = breast_cancer(val=0.2)
    loss = {loss}
    optimizer = Adam()
    epochs = 1
    batch_size = {batch_size}
}}
"""


@pytest.mark.parametrize("model,loss,codes", [
    ("Probs", "cross_entropy(out, batch.y)", ["W0501"]),
    ("Probs", "cross_entropy(out * 1.0, batch.y, weight=[1.0, 2.0])", []),   # the walk stops at arithmetic
    ("Probs", "nll(out, batch.y)", ["W0502"]),
    ("Probs", "nll(log(out), batch.y)", []),
    ("LogProbs", "nll(out, batch.y)", []),
    ("LogProbs", "cross_entropy(out, batch.y)", []),    # log_softmax is its own log_softmax: no harm
    ("Logits", "cross_entropy(out, batch.y)", []),
    ("Logits", "bce(flatten(out[:, 1]), float(batch.y))", ["W0503"]),   # a column of logits is logits
    ("Logits", "bce(sigmoid(out[:, 1]), float(batch.y))", []),
    ("Binary", "bce(flatten(out), float(batch.y))", []),
    ("Binary", "bce_with_logits(flatten(out), float(batch.y))", ["W0501"]),
    ("Binary", "bce_with_logits(flatten(out), float(batch.y)) + mse(flatten(out), float(batch.y))", ["W0501"]),
])
def test_a_loss_is_checked_against_what_made_its_input(tmp_path, model, loss, codes):
    assert [c for c, _ in warnings_of(tmp_path, plan(model, loss))] == codes


def test_a_model_applied_in_a_step_is_seen_through(tmp_path):
    steps = """
train p {
    models = { a: Probs(), b: Logits() }
    data = breast_cancer(val=0.2)
    epochs = 1
    step one {
        loss = cross_entropy(a(batch.x), batch.y)
        optimizer = Adam(a)
    }
    step two {
        loss = cross_entropy(b(batch.x), batch.y)
        optimizer = Adam(b)
    }
}
"""
    line = (NETS + steps).splitlines().index("        loss = cross_entropy(a(batch.x), batch.y)") + 1
    assert warnings_of(tmp_path, steps) == [("W0501", line)]


def test_a_lint_stops_nothing(tmp_path):
    path = tmp_path / "p.dl"
    path.write_text(NETS + plan("Probs", "cross_entropy(out, batch.y)"))
    result = train(str(path), "p", Options(out=str(tmp_path / "run"), progress=False), out=lambda line: None,
                   warn=lambda text: None)
    assert result["epochs_run"] == 1


def test_a_last_training_batch_of_one_is_warned_at_train_then_fails_as_it_said(tmp_path):
    """breast_cancer(val=0.2) trains on 455 of its 569 examples; a batch size that leaves one over makes a
    last batch of one example, which no `dslc check` can know (the size is the data's)."""
    spec = """
model Normed {
    input x: [B, 30]
    Linear(16)
    BatchNorm1d()
    ReLU()
    Linear(2)
}
"""
    train_examples = 455
    size = next(bs for bs in range(2, 100) if train_examples % bs == 1)     # 2: 455 = 227·2 + 1
    path = tmp_path / "p.dl"
    path.write_text(spec + plan("Normed", "cross_entropy(out, batch.y)", batch_size=size))
    assert dslc.load(str(path)).warnings == []       # the split's size is known when the run starts
    said = []
    with pytest.raises(DslcError) as e:
        train(str(path), "p", Options(out=str(tmp_path / "run"), progress=False), out=lambda line: None,
              warn=said.append)
    assert any("warning[W0504]" in w and f"({train_examples} examples, batch_size {size}) holds one" in w
               for w in said)
    assert e.value.codes == ["E0604"] and "Expected more than 1 value per channel" in str(e.value)
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):   # torch's own refusal
        torch.nn.BatchNorm1d(16).train()(torch.randn(1, 16))
