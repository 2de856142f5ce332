"""`text("file.txt", level=char|word|bpe, vocab=N)`: a user's text file as token ids."""
from __future__ import annotations

import re
from collections import Counter

import pytest
import torch
from click.testing import CliRunner

import dslc
from dslc.api import train
from dslc.catalog.text import Codec, train_codec
from dslc.cli import main
from dslc.diagnostics import DslcError
from dslc.runtime import data as data_mod
from dslc.runtime.trainer import Options

TEXT = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
        "First Citizen:\nYou are all resolved rather to die than to famish?\n\nAll:\nResolved. resolved.\n"
        "Café — naïve «quotes» 🙂 and tabs\there.\n") * 20


def words(text: str) -> list[str]:
    """The word level's tokens, by an independent rule: maximal runs of letters, digits and `_`, and
    every other character that is not white space on its own."""
    out, run = [], ""
    for ch in text:
        if ch.isalnum() or ch == "_":
            run += ch
            continue
        if run:
            out.append(run)
            run = ""
        if not ch.isspace():
            out.append(ch)
    return out + ([run] if run else [])


# ------------------------------------------------------------------ the tokenizers

def test_char_level_round_trips_and_numbers_the_sorted_characters():
    codec = train_codec(TEXT, "char", None)
    assert codec.tokens == ["<unk>"] + sorted(set(TEXT))
    ids = codec.encode(TEXT)
    assert len(ids) == len(TEXT) and codec.decode(ids) == TEXT
    assert codec.encode("Cé") == [codec.tokens.index("C"), codec.tokens.index("é")]
    assert codec.decode(codec.encode("Z")) == "\ufffd"        # not in the file: <unk>


def test_char_level_vocab_keeps_the_most_frequent():
    codec = train_codec(TEXT, "char", 10)
    assert codec.size == 10
    counts = Counter(TEXT)
    top = sorted(counts, key=lambda c: (-counts[c], c))[:9]
    assert codec.tokens == ["<unk>"] + sorted(top)
    rare = min(counts, key=lambda c: (counts[c], c))
    assert codec.encode(rare) == [0]


def test_word_level_splits_on_whitespace_and_punctuation_and_round_trips():
    codec = train_codec(TEXT, "word", None)
    tokens = words(TEXT)
    assert codec.tokens == ["<unk>"] + sorted(set(tokens))
    ids = codec.encode(TEXT)
    assert [codec.tokens[i] for i in ids] == tokens
    assert codec.decode(ids) == " ".join(tokens)
    assert codec.encode(codec.decode(ids)) == ids                 # the text as decoded encodes back exactly
    assert codec.encode("Speak, Caesar.") == [codec.tokens.index("Speak"), codec.tokens.index(","), 0,
                                              codec.tokens.index(".")]


def test_word_level_vocab_is_the_n_minus_one_most_frequent_and_unk():
    codec = train_codec(TEXT, "word", 6)
    counts = Counter(words(TEXT))
    top = sorted(counts, key=lambda w: (-counts[w], w))[:5]
    assert codec.size == 6 and codec.tokens == ["<unk>"] + sorted(top)
    ids = codec.encode(TEXT)
    assert sum(i == 0 for i in ids) == sum(n for w, n in counts.items() if w not in top)


def test_bpe_round_trips_exactly_and_learns_vocab_ids():
    from tokenizers import Tokenizer
    codec = train_codec(TEXT, "bpe", 300)
    assert 256 < codec.size <= 300
    ids = codec.encode(TEXT)
    assert len(ids) < 0.6 * len(TEXT.encode("utf-8"))      # merges: far fewer ids than bytes
    assert codec.decode(ids) == TEXT                        # spaces, newlines, tabs and accents kept
    unseen = "Zebra ǂ ∮ unseen\n"
    assert codec.decode(codec.encode(unseen)) == unseen     # bytes: nothing is unknown
    again = Tokenizer.from_str(codec.to_json())            # what the run keeps loads in tokenizers itself
    assert again.encode(TEXT).ids == ids and again.decode(ids) == TEXT
    assert train_codec(TEXT, "bpe", 300).to_json() == codec.to_json()   # trained the same way each time


@pytest.mark.parametrize("level, vocab", [("char", None), ("word", 20), ("bpe", 280)])
def test_the_kept_json_gives_the_same_codec(level, vocab):
    codec = train_codec(TEXT, level, vocab)
    again = Codec.from_json(codec.to_json())
    assert again.level == level and again.size == codec.size
    assert again.encode(TEXT) == codec.encode(TEXT) and again.decode(codec.encode(TEXT)) == codec.decode(
        codec.encode(TEXT))


# ------------------------------------------------------------------ the data set

def load(tmp_path, **args):
    (tmp_path / "t.txt").write_text(TEXT, encoding="utf-8")
    return data_mod.load("text", {"path": "t.txt", **args}, base_dir=str(tmp_path))


def test_splits_are_contiguous_stretches_cut_into_windows(tmp_path):
    d = load(tmp_path, context=8, val=0.1, test=0.2)
    ids = torch.tensor(train_codec(TEXT, "char", None).encode(TEXT))
    n = len(ids)
    n_val, n_test = round(n * 0.1), round(n * 0.2)
    stretches = {"train": ids[:n - n_val - n_test], "val": ids[n - n_val - n_test:n - n_test], "test": ids[n - n_test:]}
    for name, split in (("train", d.train), ("val", d.val), ("test", d.test)):
        part = stretches[name]
        w = len(part) // 9
        assert split["x"].shape == (w, 8) and split["x"].dtype == torch.int64
        assert torch.equal(split["x"], part[:w * 9].view(w, 9)[:, :8])
        assert torch.equal(split["y"], part[:w * 9].view(w, 9)[:, 1:])
    assert d.meta["vocab"] == len(set(TEXT)) + 1 and d.meta["sizes"]["val"] == len(stretches["val"]) // 9
    assert d.meta["tokens"] == {"train": len(stretches["train"]), "val": n_val, "test": n_test}


def test_a_stream_and_a_limit(tmp_path):
    d = load(tmp_path, level="word", context=5, val=0.1, stream=True, limit=300)
    ids = train_codec(TEXT, "word", None).encode(TEXT)[:300]
    assert isinstance(d.train, data_mod.Stream) and d.train.context == 5
    assert d.train.tokens.tolist() == ids[:270] and d.val.tokens.tolist() == ids[270:]


# ------------------------------------------------------------------ plans: check, train, sample

MODEL = """
model LM(vocab: int = %(vocab)d, embed: int = 16, hidden: int = 32) {
    input x: [B, T] of int64
    h, (h_n, c_n) = x -> Embedding(vocab, embed) -> LSTM(hidden)
    output h -> Linear(vocab)
}

train lm {
    model      = LM()
    data       = %(data)s
    loss       = cross_entropy(transpose(out, 1, 2), batch.y)
    optimizer  = Adam(lr=1e-2)
    epochs     = 1
    batch_size = 16
}
"""


def plan_file(tmp_path, data: str, vocab: int = 300, text: str | None = TEXT) -> str:
    if text is not None:
        (tmp_path / "corpus.txt").write_text(text, encoding="utf-8")
    path = tmp_path / "lm.dl"
    path.write_text(MODEL % {"vocab": vocab, "data": data})
    return str(path)


@pytest.mark.parametrize("level, vocab, prompt", [("char", 64, "Speak"), ("word", 64, "All : Speak"),
                                                   ("bpe", 300, "First Citizen:\n")])
def test_sample_encodes_the_prompt_and_decodes_with_the_runs_tokenizer(tmp_path, level, vocab, prompt):
    path = plan_file(tmp_path, f'text("corpus.txt", level={level}, vocab={vocab}, context=16, val=0.1)', vocab)
    train(path, "lm", Options(out=str(tmp_path / "run"), progress=False, watch=False), out=lambda s: None)
    kept = (tmp_path / "run" / "tokenizer.json").read_text(encoding="utf-8")
    codec = Codec.from_json(kept)
    assert kept == train_codec(TEXT, level, vocab).to_json()
    r = CliRunner().invoke(main, ["sample", path, "--plan", "lm", "--run", str(tmp_path / "run"), "--prompt", prompt,
                                  "--length", "12"])
    assert r.exit_code == 0, r.output
    text = (tmp_path / "run" / "samples.txt").read_text(encoding="utf-8")
    start = codec.encode(prompt)
    assert codec.encode(text)[:len(start)] == start
    if level == "char":
        assert text.startswith(prompt) and len(text) == len(prompt) + 12
    elif level == "word":   # one space between tokens (a drawn <unk> included): the prompt's 3, then 12
        assert text.startswith("All : Speak ") and len(text.split(" ")) == 3 + 12
    else:   # BPE decodes to the bytes drawn, which may merge otherwise when encoded again
        assert text.startswith(prompt) and codec.decode(codec.encode(text)) == text


def test_an_empty_word_prompt_is_a_diagnostic(tmp_path):
    path = plan_file(tmp_path, 'text("corpus.txt", level=word, context=8)', 64)
    train(path, "lm", Options(out=str(tmp_path / "run"), progress=False, watch=False), out=lambda s: None)
    r = CliRunner().invoke(main, ["sample", path, "--plan", "lm", "--run", str(tmp_path / "run"), "--prompt", "  "])
    assert r.exit_code == 1 and "error[E0302]" in r.output and "Traceback" not in r.output


def _error(tmp_path, data: str, text: str | None = TEXT) -> str:
    path = plan_file(tmp_path, data, text=text)
    with pytest.raises(DslcError) as info:
        dslc.load(path).plan("lm")
    return str(info.value)


@pytest.mark.parametrize("data, code, words", [
    ('text("missing.txt")', "E0508", "missing.txt"),
    ('text("corpus.txt", level=bpe)', "E0303", "needs `vocab`"),
    ('text("corpus.txt", level=bpe, vocab=100)', "E0302", "must exceed its 256 bytes"),
    ('text("corpus.txt", level=word, vocab=1)', "E0302", "at least 2"),
    ('text("corpus.txt", level="syllable")', "E0302", "syllable"),
    ('text("corpus.txt", context=0)', "E0302", "context"),
])
def test_bad_text_arguments_are_diagnostics_at_the_data_line(tmp_path, data, code, words):
    text = _error(tmp_path, data)
    assert f"error[{code}]" in text and words in text, text
    line = next(i for i, s in enumerate(MODEL.splitlines(), 1) if "%(data)s" in s)
    assert f"lm.dl:{line}:" in text and data in text and "^" in text and "Traceback" not in text


def test_a_file_that_is_not_utf8_is_a_diagnostic_when_the_run_reads_it(tmp_path):
    path = plan_file(tmp_path, 'text("corpus.txt")', text=None)
    (tmp_path / "corpus.txt").write_bytes(b"fine\nthen \xff\xfe bad\n")
    r = CliRunner().invoke(main, ["train", path, "--plan", "lm", "--out", str(tmp_path / "run")])
    assert r.exit_code == 1 and "error[E0508]" in r.output and "line 2" in r.output and "Traceback" not in r.output
    assert re.search(r"lm\.dl:\d+:\d+", r.output)


def test_check_knows_the_fields(tmp_path):
    """`x` and `y` are [B, context] of int64: a model over another length fails at `dslc check`."""
    path = plan_file(tmp_path, 'text("corpus.txt", context=12)')
    assert dslc.load(path).plan("lm").data.fields["x"].shape_str() == "[B, 12]"
    fixed = tmp_path / "fixed.dl"
    fixed.write_text(open(path).read().replace("input x: [B, T] of int64", "input x: [B, 8] of int64"))
    with pytest.raises(DslcError) as info:
        dslc.load(str(fixed)).plan("lm")
    assert info.value.codes == ["E0504"]
