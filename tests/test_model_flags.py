"""A model's bool parameters are live constructor arguments (issue #14 item 3): the model is
compiled with each combination of its flags and written as one class that branches on them
(`if bidirectional:`), as a block's specializations are (backends/variants.py).

The class compiled at the spec's defaults, built with the other value, is checked against dslc's
own build at that value (compiled for it), and against a hand-written PyTorch twin."""
from __future__ import annotations

import os

import pytest
import torch
from torch import nn

import dslc
from dslc.backends.pymodule import exec_source

torch.set_num_threads(1)

SPECS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "specs")
SMALL_RNN = {"vocab": 50, "embed": 8, "hidden": 16}
SMALL_BERT = {"vocab": 100, "context": 16, "dim": 32, "depth": 2, "heads": 4}
CASES = [("rnn.dl", "StackedLSTMClassifier", SMALL_RNN, "bidirectional"),
         ("rnn.dl", "StackedGRUClassifier", SMALL_RNN, "bidirectional"),
         ("bert.dl", "BertClassifier", SMALL_BERT, "pre_norm")]


def _generated(file: str, model: str, small: dict):
    """The generated file for the model at the spec's flag values (only its sizes made small)."""
    prog = dslc.load(os.path.join(SPECS, file))
    return prog.source([model], params=small), exec_source(prog.source([model], params=small), f"<{model}>")


def _inputs(small: dict, bert: bool) -> list:
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, small["vocab"], (2, 7), generator=g)
    return [tokens, torch.randint(0, 2, (2, 7), generator=g)] if bert else [tokens]


@pytest.mark.parametrize("value", [True, False])
@pytest.mark.parametrize("file, model, small, flag", CASES, ids=[c[1] for c in CASES])
def test_the_class_builds_each_flag_value_as_dslc_builds_it(file, model, small, flag, value):
    source, generated = _generated(file, model, small)
    assert f"compiled for {flag}" not in source    # no guard left for the flag
    mine = generated.build(model, seed=0, **small, **{flag: value}).eval()
    theirs = dslc.load(os.path.join(SPECS, file)).build(model, seed=0, **{**small, flag: value}).eval()
    got, want = mine.state_dict(), theirs.state_dict()
    assert [(k, v.shape) for k, v in got.items()] == [(k, v.shape) for k, v in want.items()]
    assert all(torch.equal(got[k], want[k]) for k in got)     # the same seed: the same weights
    inputs = _inputs(small, file == "bert.dl")
    with torch.no_grad():
        assert torch.equal(mine(*inputs), theirs(*inputs))


class LSTMClassifierTwin(nn.Module):
    """StackedLSTMClassifier with bidirectional=false, by hand: the top layer's last hidden state."""

    def __init__(self, vocab, embed, hidden, layers=2, dropout=0.5, classes=2):
        super().__init__()
        self.embedding = nn.Embedding(vocab, embed)
        self.lstm = nn.LSTM(embed, hidden, num_layers=layers, dropout=dropout, batch_first=True)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(hidden, classes)

    def forward(self, tokens):
        _, (h, _) = self.lstm(self.embedding(tokens))
        return self.fc(self.dropout(h[-1]))


def test_the_lstm_classifier_built_one_directional_is_its_twin():
    source, generated = _generated("rnn.dl", "StackedLSTMClassifier", SMALL_RNN)
    assert "bidirectional: bool = True" in source and "if self.bidirectional:" in source
    mine = generated.build("StackedLSTMClassifier", **SMALL_RNN, bidirectional=False).eval()
    twin = LSTMClassifierTwin(**SMALL_RNN).eval()
    assert [(k, v.shape) for k, v in mine.state_dict().items()] == \
        [(k, v.shape) for k, v in twin.state_dict().items()]
    twin.load_state_dict(mine.state_dict())
    tokens = _inputs(SMALL_RNN, bert=False)[0]
    with torch.no_grad():
        torch.testing.assert_close(mine(tokens), twin(tokens), rtol=0, atol=0)


def test_bert_takes_pre_norm_in_one_encoder_layer_class():
    source, generated = _generated("bert.dl", "BertClassifier", SMALL_BERT)
    assert source.count("class EncoderLayer") == 1 and "EncoderLayer(dim, heads, ff, dropout, pre_norm=pre_norm)" in source
    assert "final_norm.weight" in generated.build("BertClassifier", **SMALL_BERT, pre_norm=True).state_dict()
    assert "final_norm.weight" not in generated.build("BertClassifier", **SMALL_BERT).state_dict()
    # its norms, built before the attention in one variant and after it in the other, draw no random
    # numbers: each is built once, where the post-norm layer builds it (the order whichever value
    # was compiled), as Hugging Face's BertLayer builds them
    layer = source.split("class EncoderLayer(")[1].split("def forward")[0]
    assert layer.count("self.norm1 = nn.LayerNorm(dim, eps=1e-12)\n") == 1 and "if " not in layer
    assert layer.index("self.attn =") < layer.index("self.norm1 =") < layer.index("self.fc1 =")


REFUSED = """\
model Bad(flag: bool = false, other: bool = false) {
    input x: [B, 8]
    h = x -> Linear(8) as fc
    y = h[:, 8] if flag else h[:, 0:4]
    output (y -> Linear(4) as head) if other else y
}

model Two(a: bool = false, b: bool = false) {
    input x: [B, 8]
    h = x -> Linear(8) as fc
    h = h[:, 8] if a and b else h
    h = (h -> Linear(6) as proj) if a else h
    output (h -> LayerNorm() as norm) if b else h
}
"""


def test_a_flag_value_the_spec_refuses_stays_refused(tmp_path):
    path = tmp_path / "bad.dl"
    path.write_text(REFUSED)
    prog = dslc.load(str(path))
    source = prog.source()
    # `flag=true` indexes past the end: the class keeps its guard and says why; `other` is live
    module = exec_source(source, "<bad>")
    with pytest.raises(ValueError, match=r"compiled for flag=False; flag=true does not check: E0406 at bad.dl:4: "
                                         r"index 8 is out of range"):
        module.build("Bad", flag=True)
    assert "head.weight" in module.build("Bad", other=True).state_dict()
    # a and b each check, both together do not: that combination alone is refused
    assert "# a=true, b=true does not check: E0406 at bad.dl:11" in source
    with pytest.raises(ValueError, match=r"Two \(bad.dl:8\) does not take a and b"):
        module.build("Two", a=True, b=True)
    x = torch.randn(3, 8)
    for a, b in ((True, False), (False, True), (False, False)):
        mine = module.build("Two", a=a, b=b)
        theirs = prog.build("Two", seed=0, a=a, b=b)
        assert torch.equal(mine(x), theirs(x))


def test_more_flags_than_are_compiled_every_way_keep_their_guards(tmp_path):
    path = tmp_path / "many.dl"
    path.write_text("model Many(a: bool = false, b: bool = false, c: bool = false, d: bool = false) {\n"
                    "    input x: [B, 8]\n"
                    "    output x -> Linear(4 if a or b or c or d else 2) as fc\n"
                    "}\n")
    source = dslc.load(str(path)).source()
    assert all(f"compiled for {p}=False" in source for p in "abcd")


def test_the_file_is_the_same_run_to_run():
    assert dslc.load(os.path.join(SPECS, "bert.dl")).source() == dslc.load(os.path.join(SPECS, "bert.dl")).source()


def test_an_inference_build_takes_the_flag_too():
    """-O2 writes a `train` refusal after forward: it stays one method, after the merged forward."""
    prog = dslc.load(os.path.join(SPECS, "rnn.dl"))
    source = prog.source(["StackedLSTMClassifier"], opt=2, params=SMALL_RNN)
    generated = exec_source(source, "<O2>")
    assert source.count("    def train(self, mode: bool = True):") == 1
    mine = generated.build("StackedLSTMClassifier", **SMALL_RNN, bidirectional=False)
    theirs = prog.build("StackedLSTMClassifier", seed=0, opt=2, params={**SMALL_RNN, "bidirectional": False})
    tokens = _inputs(SMALL_RNN, bert=False)[0]
    with torch.no_grad():
        assert torch.equal(mine(tokens), theirs(tokens))


EXTRA = """\
block Extra(dim: int) {
    input x
    output x + (x -> Linear(dim) -> ReLU())
}

model M(extra: bool = false, dim: int = 8) {
    input x: [B, 8]
    h = x -> Linear(dim) as fc
    h = (h -> Extra(dim) as more) if extra else h
    output h -> Linear(2) as head
}
"""


def test_a_block_only_the_other_value_uses_is_written_too(tmp_path):
    path = tmp_path / "extra.dl"
    path.write_text(EXTRA)
    source = dslc.load(str(path)).source()
    assert "class Extra(nn.Module):" in source and "self.more = Extra(dim) if extra else None" in source
    module = exec_source(source, "<extra>")
    x = torch.randn(2, 8)
    for extra in (True, False):
        mine, theirs = module.build("M", extra=extra), dslc.load(str(path)).build("M", seed=0, extra=extra)
        assert list(mine.state_dict()) == list(theirs.state_dict())
        assert torch.equal(mine(x), theirs(x))
