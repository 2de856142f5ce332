"""Truncated BPTT: `shakespeare(stream=true)` batches the text in order (word_language_model's
batchify), a plan's `state = hidden` carries the model's state from batch to batch (detached),
and `perplexity`. Checked against a hand-written PyTorch loop over the same stream."""
import math
import os

import pytest
import torch
import torch.nn.functional as F

import dslc
from dslc.catalog.sources import shakespeare_arrays
from dslc.diagnostics import DslcError
from dslc.runtime import data as data_mod
from dslc.runtime.callbacks import Callback
from dslc.runtime.safety import Interrupted, SignalStop
from dslc.runtime.trainer import Options, Trainer

# curves.png and confusion.png are left out of these runs (tests/conftest.py: no_figures)
pytestmark = pytest.mark.usefixtures("no_figures")

CHARS, CONTEXT, BATCH, VAL = 1200, 8, 4, 0.1

MODEL = """
model LM(vocab: int = 76, width: int = 16, layers: int = 2) {
    input x: [B, T] of int64
    input hidden: ([layers, B, width], [layers, B, width])
    emb = x -> Embedding(vocab, 8) as encoder
    rnn = LSTM(width, num_layers=layers)
    out, hidden = rnn(emb, hidden)
    output out -> Linear(vocab) as decoder, hidden
}
"""

PLAN = MODEL + f"""
train p {{
    model      = LM()
    data       = shakespeare(context={CONTEXT}, chars={CHARS}, val={VAL}, stream=true)
    state      = hidden
    loss       = cross_entropy(transpose(out, 1, 2), batch.y)
    optimizer  = Adam(lr=1e-2)
    clip_grad_norm = 0.25
    epochs     = 2
    batch_size = {BATCH}
    metrics    = [perplexity]
    seed       = 0
}}
"""


# ------------------------------------------------------------------ word_language_model, by hand

def batchify(data: torch.Tensor, bsz: int) -> torch.Tensor:
    """word_language_model's: the stream as [N // bsz, bsz] columns."""
    nbatch = data.size(0) // bsz
    return data.narrow(0, 0, nbatch * bsz).view(bsz, -1).t().contiguous()


def get_batches(source: torch.Tensor, bptt: int):
    """word_language_model's get_batch over the whole source, its last, short window left out."""
    for i in range(0, source.size(0) - 1, bptt):
        seq_len = min(bptt, len(source) - 1 - i)
        if seq_len < bptt:
            break
        yield source[i:i + seq_len].t(), source[i + 1:i + 1 + seq_len].t()   # batch first


def streams():
    codes = torch.from_numpy(shakespeare_arrays()["codes"][:CHARS].astype("int64"))
    n_val = round(CHARS * VAL)
    return codes[:CHARS - n_val], codes[CHARS - n_val:]


class Twin(torch.nn.Module):
    """word_language_model's RNNModel (LSTM, no dropout, untied)."""

    def __init__(self):
        super().__init__()
        self.encoder = torch.nn.Embedding(76, 8)
        self.rnn = torch.nn.LSTM(8, 16, num_layers=2, batch_first=True)
        self.decoder = torch.nn.Linear(16, 76)

    def forward(self, x, hidden):
        out, hidden = self.rnn(self.encoder(x), hidden)
        return self.decoder(out), hidden


def init_hidden(bsz: int):
    return torch.zeros(2, bsz, 16), torch.zeros(2, bsz, 16)


def repackage_hidden(h):
    return tuple(v.detach() for v in h)


def hand_training(carry: bool = True):
    """Losses of each batch of two epochs, and the final weights, as word_language_model trains
    (with Adam, the plan's optimizer); `carry=False` starts every batch from zeros instead."""
    twin = Twin()
    twin.load_state_dict(dslc.load(_write(PLAN)).build("LM", seed=0).state_dict())
    opt = torch.optim.Adam(twin.parameters(), lr=1e-2)
    train, _ = streams()
    losses = []
    for _epoch in (1, 2):
        hidden = init_hidden(BATCH)
        for x, y in get_batches(batchify(train, BATCH), CONTEXT):
            hidden = repackage_hidden(hidden) if carry else init_hidden(BATCH)
            opt.zero_grad()
            out, hidden = twin(x, hidden)
            loss = F.cross_entropy(out.transpose(1, 2), y)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(twin.parameters(), 0.25)
            opt.step()
            losses.append(loss.item())
    return losses, twin


def hand_evaluation(twin: Twin, source: torch.Tensor):
    """Mean loss and perplexity of a split, the state carried from zeros (word_language_model's evaluate)."""
    twin.eval()
    hidden, total, tokens, losses = init_hidden(BATCH), 0.0, 0, []
    with torch.no_grad():
        for x, y in get_batches(batchify(source, BATCH), CONTEXT):
            out, hidden = twin(x, hidden)
            losses.append(F.cross_entropy(out.transpose(1, 2), y).item())
            total += F.cross_entropy(out.transpose(1, 2).double(), y, reduction="sum").item()
            tokens += y.numel()
    return sum(losses) / len(losses), math.exp(total / tokens)


# ------------------------------------------------------------------ helpers

_DIR = {}


def _write(text: str) -> str:
    folder = _DIR.setdefault("dir", __import__("tempfile").mkdtemp(prefix="dslc-bptt-"))
    path = os.path.join(folder, f"plan{abs(hash(text))}.dl")
    with open(path, "w") as f:
        f.write(text)
    return path


class Recorder(Callback):
    """Each batch's loss, and whether the state carried out of each batch is detached."""

    def __init__(self):
        self.losses, self.detached = [], []

    def on_train_step_end(self, trainer, step, batch, loss):
        self.losses.append(loss)
        self.detached.append(all(t.grad_fn is None and not t.requires_grad for t in trainer.carried))


def trainer(tmp_path, out: str, text: str = PLAN, resume: bool = False, **opts) -> Trainer:
    path = _write(text)
    return Trainer(dslc.load(path).plan("p"), path, Options(out=str(tmp_path / out), resume=resume, progress=False,
                                                            **opts), lambda s: None)


def weights(run_dir) -> dict:
    from dslc.runtime import checkpoint
    return checkpoint.load(checkpoint.checkpoints(os.path.join(run_dir, "checkpoints"))[-1][2])[0]


def metrics(run_dir) -> list:
    import json
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in f]


# ------------------------------------------------------------------ the stream

def test_stream_batches_are_word_language_models_batchify_in_order():
    splits = data_mod.load("shakespeare", {"context": CONTEXT, "chars": CHARS, "val": VAL, "stream": True})
    train, val = streams()
    assert splits.test is None and torch.equal(splits.train.tokens, train) and torch.equal(splits.val.tokens, val)
    got = list(data_mod.batches(splits.train, BATCH, shuffle=True, seed=0, epoch=1))
    want = list(get_batches(batchify(train, BATCH), CONTEXT))
    assert len(got) == len(want) == data_mod.steps_per_epoch(splits.train, BATCH) > 25
    for g, (x, y) in zip(got, want):
        assert torch.equal(g["x"], x) and torch.equal(g["y"], y)
    for a, b in zip(got, got[1:]):   # each row continues the row of the batch before
        assert torch.equal(b["x"][:, 0], a["y"][:, -1])


def test_a_split_too_short_for_one_batch_is_a_diagnostic(tmp_path):
    text = PLAN.replace(f"val={VAL}", "val=0.02")   # 24 characters of validation text: no 4 rows of 9
    with pytest.raises(DslcError) as e:
        trainer(tmp_path, "r", text).run()
    assert "E0504" in str(e.value) and "validation split (24 tokens) makes no batch of 4 columns" in str(e.value)


# ------------------------------------------------------------------ training with the state carried

def test_training_carries_the_detached_state_as_a_hand_written_loop_does(tmp_path):
    t = trainer(tmp_path, "run")
    rec = Recorder()
    t.callbacks.items.append(rec)
    t.run()
    want, twin = hand_training()
    assert len(rec.losses) == len(want)
    torch.testing.assert_close(torch.tensor(rec.losses), torch.tensor(want), rtol=0, atol=1e-6)
    reset, _ = hand_training(carry=False)   # the comparison tells a carried state from zeros
    assert max(abs(a - b) for a, b in zip(rec.losses, reset)) > 1e-2
    assert all(rec.detached)
    got = weights(tmp_path / "run")
    for k, v in twin.state_dict().items():
        torch.testing.assert_close(got[k], v, rtol=1e-5, atol=1e-6)
    # the loss falls, and validation reads the held-out stream with its own state from zeros
    epochs = metrics(tmp_path / "run")
    per_epoch = len(want) // 2
    assert sum(want[-per_epoch // 4:]) < sum(want[:per_epoch // 4])
    val_loss, perplexity = hand_evaluation(twin, streams()[1])
    assert epochs[-1]["val_loss"] == pytest.approx(val_loss, rel=1e-5)
    assert epochs[-1]["val_perplexity"] == pytest.approx(perplexity, rel=1e-5)


def test_resume_mid_epoch_continues_the_carried_state_exactly(tmp_path, monkeypatch):
    trainer(tmp_path, "whole").run()
    original = SignalStop.on_train_batch_end

    def stop_once(self, t, done, sums, count):
        if t.epoch == 2 and done == 5 and not getattr(SignalStop, "_stopped", False):
            SignalStop._stopped = self.requested = True
        return original(self, t, done, sums, count)
    monkeypatch.setattr(SignalStop, "on_train_batch_end", stop_once)
    with pytest.raises(Interrupted):
        trainer(tmp_path, "parts").run()
    assert any("-batch-" in n for n in os.listdir(tmp_path / "parts" / "checkpoints"))
    trainer(tmp_path, "parts", resume=True).run()
    a, b = weights(tmp_path / "whole"), weights(tmp_path / "parts")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert metrics(tmp_path / "whole") == metrics(tmp_path / "parts")


# ------------------------------------------------------------------ perplexity

def test_perplexity_is_exp_of_the_mean_cross_entropy():
    from dslc.runtime.metrics import MetricSet
    g = torch.Generator().manual_seed(0)
    m = MetricSet(["perplexity", "accuracy"], "classification")
    logits, targets = [], []
    for n in (3, 5):
        x, y = torch.randn(n, 7, 11, generator=g), torch.randint(0, 11, (n, 7), generator=g)
        m.update(x.reshape(-1, 11), y.reshape(-1))
        logits.append(x.reshape(-1, 11))
        targets.append(y.reshape(-1))
    want = math.exp(F.cross_entropy(torch.cat(logits).double(), torch.cat(targets)).item())
    assert m.compute()["perplexity"] == pytest.approx(want, rel=1e-12)


# ------------------------------------------------------------------ what `dslc check` refuses

def _error(text: str) -> str:
    with pytest.raises(DslcError) as e:
        dslc.load(_write(text))
    return str(e.value)


@pytest.mark.parametrize("change, code, message", [
    (("state      = hidden", "state      = hiden"), "E0504", "`LM` has no input `hiden` to carry"),
    (("state      = hidden", "state      = hidden[0]"), "E0301", "`state` names the model input"),
    (("stream=true", "stream=false"), "E0504", "is read in shuffled examples"),
    ((", hidden\n}", "\n}"), "E0504", "`LM` has no output `hidden` to feed its input `hidden` with"),
    (("    output out", "    hidden = (hidden[0][:1], hidden[1])\n    output out"),
     "E0504", "the state it returns cannot be fed back"),
    (("input hidden: ([layers, B, width], [layers, B, width])", "input hidden: ([layers, B, width], [layers, B, width])\n"
      "    input extra: [B, T]"), "E0504", "no field for the model's input `extra`"),
])
def test_a_bad_state_declaration_is_a_diagnostic_with_a_caret(change, code, message):
    text = _error(PLAN.replace(*change))
    assert f"error[{code}]" in text and message in text and "^" in text


def test_state_needs_sizes_it_can_fill_with_zeros():
    model = """
model LM {
    input x: [B, T] of int64
    input memory: [B, T]
    logits = x -> Embedding(76, 76)
    memory = memory * 0.5
    output logits, memory
}
"""
    text = _error(model + PLAN[PLAN.index("train p"):].replace("state      = hidden", "state      = memory"))
    assert "E0504" in text and "`memory` is [B, T]" in text and "the batch's size B" in text and "^" in text


# ------------------------------------------------------------------ the example: word_language_model's RNNModel

class RNNModel(torch.nn.Module):
    """word_language_model's RNNModel (LSTM), as its model.py writes it, batch first."""

    def __init__(self, ntoken=76, ninp=128, nhid=128, nlayers=2, dropout=0.2):
        super().__init__()
        self.drop = torch.nn.Dropout(dropout)
        self.encoder = torch.nn.Embedding(ntoken, ninp)
        self.rnn = torch.nn.LSTM(ninp, nhid, nlayers, dropout=dropout, batch_first=True)
        self.decoder = torch.nn.Linear(nhid, ntoken)

    def forward(self, x, hidden):
        output, hidden = self.rnn(self.drop(self.encoder(x)), hidden)
        return self.decoder(self.drop(output)), hidden


def test_the_example_is_word_language_models_model_with_its_state_in_and_out():
    prog = dslc.load(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples", "bptt",
                                  "bptt.dl"))
    ours = prog.build("RNNModel", seed=0).eval()
    twin = RNNModel().eval()
    twin_state = {k.replace("rnn.", "lstm."): v for k, v in twin.state_dict().items()}
    ours.load_state_dict(twin_state)                       # the twin's weights load into ours ...
    back = RNNModel().eval()
    back.load_state_dict({k.replace("lstm.", "rnn."): v for k, v in ours.state_dict().items()})   # ... and back
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 76, (3, 35), generator=g)
    hidden = (torch.randn(2, 3, 128, generator=g), torch.randn(2, 3, 128, generator=g))
    with torch.no_grad():
        got, (h, c) = ours(x, hidden)
        want, (h2, c2) = back(x, hidden)
    assert torch.equal(got, want) and torch.equal(h, h2) and torch.equal(c, c2)
    # init_weights: encoder and decoder uniform in [-0.1, 0.1], the decoder's bias zero
    fresh = prog.build("RNNModel", seed=0)
    with torch.no_grad():
        assert float(fresh.encoder.weight.abs().max()) <= 0.1 and float(fresh.decoder.weight.abs().max()) <= 0.1
    assert not fresh.decoder.bias.any()
