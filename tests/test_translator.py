"""The translator (issue #13): the `copy` and `reverse` data sets, specs/translator.dl against the
PyTorch tutorial's Seq2SeqTransformer (tests/zoo_translator.py) on real padded batches, in
onnxruntime, and trained by a plan."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from support import ROOT, ort_run, relative_error
from zoo_translator import SMALL, TranslatorTwin

import dslc
from dslc.api import train
from dslc.catalog import DATASETS, sources
from dslc.cli import main
from dslc.runtime import data as data_mod
from dslc.runtime.trainer import Options

SPEC = os.path.join(ROOT, "specs", "translator.dl")
ARGS = {"n": 300, "length": 7, "min_length": 1, "vocab": 9, "seed": 0}


def arrays(name: str = "reverse", **args) -> dict:
    return sources.sequence_arrays(name, {**ARGS, **args})[0]


def batch(n: int = 16, seed: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """Real padded source and target-input ids of `reverse`: every row has a symbol and starts with BOS."""
    a = arrays(n=n, length=9, vocab=16, seed=seed)
    return torch.from_numpy(a["src"]), torch.from_numpy(a["tgt"])


# ---------------------------------------------------------------- the data sets

def _expected_row(name: str, src_row: np.ndarray) -> tuple[list, list, list]:
    """(src, tgt, y) of one example, written out from its sequence."""
    width = len(src_row)
    seq = [int(v) for v in src_row[:list(src_row).index(sources.EOS)]]
    answer = seq[::-1] if name == "reverse" else seq
    pad = width - len(seq) - 1
    return (seq + [2] + [0] * pad, [1] + answer + [0] * pad, answer + [2] + [-100] * pad)


@pytest.mark.parametrize("name", ["copy", "reverse"])
def test_each_example_is_its_sequence_then_eos_with_the_target_shifted_right(name):
    a = arrays(name)
    assert {k: (v.dtype, v.shape) for k, v in a.items()} == {k: (np.int64, (300, 8)) for k in ("src", "tgt", "y")}
    for src, tgt, y in zip(a["src"], a["tgt"], a["y"]):
        want = _expected_row(name, src)
        assert (src.tolist(), tgt.tolist(), y.tolist()) == want
    symbols = a["src"][a["src"] > 2]
    assert symbols.min() == 3 and symbols.max() == 8      # vocab 9: ids 3 .. 8
    # teacher forcing: the target input is the answer moved one step right, BOS first
    assert (a["tgt"][:, 0] == sources.BOS).all()
    answer = np.where(a["y"] == -100, 0, a["y"])
    assert np.array_equal(np.where(answer[:, :-1] == 2, 0, answer[:, :-1]), a["tgt"][:, 1:])


def test_lengths_vary_so_padding_matters_and_sequences_are_distinct():
    a = arrays("reverse", n=2000, length=6, min_length=2)
    lengths = (a["src"] > 2).sum(1)
    assert set(lengths.tolist()) == {2, 3, 4, 5, 6}                 # every length from min_length to length
    assert (a["src"] == 0).any() and (a["y"] == -100).any()
    assert len({tuple(r) for r in a["src"].tolist()}) == 2000        # no sequence twice


def test_generation_is_deterministic_by_seed():
    first, again, other = arrays(seed=5), arrays(seed=5), arrays(seed=6)
    assert all(np.array_equal(first[k], again[k]) for k in first)
    assert not np.array_equal(first["src"], other["src"])
    assert not np.array_equal(arrays("copy")["y"], arrays("reverse")["y"])


def test_splits_hold_distinct_sequences_and_fit_the_checked_fields():
    splits = data_mod.load("reverse", {**ARGS, "n": 1000, "val": 0.1, "test": 0.2})
    assert splits.meta["sizes"] == {"train": 700, "val": 100, "test": 200}
    seen = [{tuple(r) for r in s["src"].tolist()} for s in (splits.train, splits.val, splits.test)]
    assert [len(s) for s in seen] == [700, 100, 200]
    assert not (seen[0] & seen[1] or seen[0] & seen[2] or seen[1] & seen[2])
    types = DATASETS["reverse"].field_types({**ARGS, "n": 1000})
    assert {k: str(t) for k, t in types.items()} == {k: "[B, 8] of int64" for k in ("src", "tgt", "y")}


PLAN = """import "{spec}"

train t {{
    model = Translator(emb_size=16, nhead=2, num_encoder_layers=1, num_decoder_layers=1, dim_feedforward=32,
                       dropout=0.0, maxlen=32)
    data = {data}
    loss = cross_entropy(transpose(out, 1, 2), batch.y)
    optimizer = Adam(lr=3e-3)
    epochs = 3
    batch_size = 32
    metrics = [accuracy]
}}
"""


def write_plan(tmp_path, data: str) -> str:
    path = tmp_path / "plan.dl"
    path.write_text(PLAN.format(spec=SPEC.replace("\\", "/"), data=data))
    return str(path)


@pytest.mark.parametrize("data,message", [
    ("reverse(length=3, min_length=4)", "`min_length` (4) must not exceed `length` (3)"),
    ("copy(n=100, length=2, vocab=6)", "there are only 12 distinct sequences of 1 to 2 of 3 symbols, fewer than n = 100"),
    ("reverse(vocab=3)", "must be at least 4"),
    ("reverse(n=2000000, length=10)", "at most 10,000,000"),
])
def test_arguments_that_cannot_make_the_set_are_clean_diagnostics(tmp_path, data, message):
    path = write_plan(tmp_path, data)
    result = CliRunner().invoke(main, ["check", path])
    assert result.exit_code == 1 and "error[E0302]" in result.stderr and message in result.stderr, result.stderr
    assert f"{path}:6:" in result.stderr and "^" in result.stderr and "Traceback" not in result.stderr


def test_the_model_must_fit_the_fields(tmp_path):
    path = tmp_path / "plan.dl"
    path.write_text("model M {\n    input src: [B, 5] of int64\n    output Embedding(16, 4)(src)\n}\n\n"
                    "train t {\n    model = M()\n    data = reverse(length=6)\n    loss = mse(out, out)\n"
                    "    optimizer = Adam()\n    epochs = 1\n}\n")
    result = CliRunner().invoke(main, ["check", str(path)])
    assert result.exit_code == 1
    assert "error[E0504]: `M`'s input `src` is [B, 5] of int64, but the data's `src` is [B, 7] of int64" in \
        result.stderr, result.stderr


# ---------------------------------------------------------------- the model against the tutorial's

@pytest.fixture(scope="module")
def prog():
    return dslc.load(SPEC)


def _pair(prog):
    net, twin = prog.build("Translator", seed=0, **SMALL), TranslatorTwin(**SMALL)
    # the tutorial's positional table, computed its own way, is the spec's buffer
    assert torch.equal(twin.positional_encoding.pos_embedding, net.positional_encoding.pos_embedding)
    assert set(net.state_dict()) == set(twin.state_dict())
    return net, twin


def test_state_dicts_load_both_ways(prog):
    net, twin = _pair(prog)
    twin.load_state_dict(net.state_dict())                 # dslc's weights into the tutorial's model
    assert all(torch.equal(v, twin.state_dict()[k]) for k, v in net.state_dict().items())
    other = TranslatorTwin(**SMALL)
    assert not torch.equal(other.generator.weight, net.generator.weight)
    net.load_state_dict(other.state_dict())                # and the tutorial's into dslc's
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in other.state_dict().items())


def test_inference_is_the_tutorials_bit_for_bit(prog):
    """Eval mode without gradients, on padded batches: nn.Transformer's encoder runs nested tensors
    and torch's fast paths, in dslc's module as in the tutorial's."""
    net, twin = _pair(prog)
    twin.load_state_dict(net.state_dict())
    net.eval(), twin.eval()
    src, tgt = batch()
    assert (src == 0).any() and (tgt == 0).any()
    with torch.no_grad():
        out, want = net(src, tgt), twin(src, tgt)
    assert out.shape == (16, 10, 16) and not out.isnan().any()
    assert torch.equal(out, want)


def test_training_steps_are_the_tutorials_bit_for_bit(prog):
    """Training mode: dropout draws the same masks from the same seed, and the gradients agree."""
    net, twin = _pair(prog)
    twin.load_state_dict(net.state_dict())
    net.train(), twin.train()
    src, tgt = batch()
    torch.manual_seed(7)
    out = net(src, tgt)
    torch.manual_seed(7)
    want = twin(src, tgt)
    assert torch.equal(out, want)
    out.square().mean().backward()
    want.square().mean().backward()
    grads = dict(twin.named_parameters())
    assert all(torch.equal(p.grad, grads[k].grad) for k, p in net.named_parameters())


def test_padding_changes_nothing_at_the_real_tokens(prog):
    """More padding columns on both sides leave the logits at the real target positions as they were:
    the masks hide padded keys from every attention."""
    net = prog.build("Translator", seed=0, **SMALL).eval()
    src, tgt = batch()
    more = torch.zeros(16, 3, dtype=torch.long)
    with torch.no_grad():
        out = net(src, tgt)
        longer = net(torch.cat([src, more], 1), torch.cat([tgt, more], 1))
    real = tgt != 0
    torch.testing.assert_close(longer[:, :10][real], out[real], rtol=1e-5, atol=1e-5)


def test_onnx_matches_pytorch_on_padded_batches(prog):
    """The masks are computed inside the graph from the ids; onnxruntime follows torch."""
    model = prog.onnx("Translator", seed=0, **SMALL)   # the full checker runs inside
    assert [i.name for i in model.graph.input] == ["src", "tgt"]
    net = prog.build("Translator", seed=0, **SMALL).eval()
    for n, seed in ((16, 3), (5, 4)):
        src, tgt = batch(n, seed)
        with torch.no_grad():
            want = net(src, tgt).numpy()
        got = ort_run(model, {"src": src.numpy(), "tgt": tgt.numpy()})[0]
        assert relative_error(got, want) < 1e-4


# ---------------------------------------------------------------- training

def test_a_plan_learns_to_reverse(tmp_path):
    """A tiny translator on short sequences: the loss falls and token accuracy rises (padding left out)."""
    path = write_plan(tmp_path, "reverse(n=640, length=4, vocab=8, val=0.1, test=0.1)")
    result = train(path, "t", Options(out=str(tmp_path / "run"), progress=False), out=lambda line: None)
    with open(tmp_path / "run" / "metrics.jsonl") as f:
        records = [json.loads(line) for line in f]
    assert len(records) == 3
    assert records[-1]["train_loss"] < records[0]["train_loss"] * 0.8
    assert records[-1]["val_loss"] < records[0]["val_loss"]
    assert 0.0 < result["test"]["accuracy"] <= 1.0
