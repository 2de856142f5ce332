"""A user's text file as token ids: `text("file.txt", level=char|word|bpe, vocab=N)`.

- `char`: each character is a token. `word`: words and punctuation marks are tokens
  (`\\w+` runs and single other non-space characters; whitespace only separates them).
  Ids: 0 is `<unk>`, then the tokens in sorted order: every token of the file, or, with
  `vocab = N`, the N - 1 most frequent (ties: the smaller first), so a model has N ids.
  Decoding joins characters as they are (`<unk>` is U+FFFD) and words with one space.
- `bpe`: byte-level BPE (GPT-2's scheme) trained on the file with the `tokenizers` package,
  `vocab` ids in all (at least the 256 bytes). Byte-level rather than BPE over
  whitespace-split words: every text encodes (no `<unk>`: unseen characters are bytes), and
  decoding gives back the very text, spaces and newlines included, so samples keep the
  file's layout. The trained tokenizer is the `tokenizers` JSON (`Tokenizer.from_file`).

`Codec.to_json()` is what a run keeps as `tokenizer.json`; `Codec.from_json` reads it back
for `dslc sample`. Nothing here needs torch.
"""
from __future__ import annotations

import json
import os
import re
from collections import Counter
from dataclasses import dataclass, field

from .sources import DataError, regular_file, resolve, shown

LEVELS = ("char", "word", "bpe")
UNK = "<unk>"
BYTES = 256                      # a byte-level BPE's smallest vocabulary: one id per byte
MAX_TEXT_BYTES = 256 << 20       # a bigger file is refused: it would take minutes to tokenize
_WORD = re.compile(r"\w+|[^\w\s]")


@dataclass
class Codec:
    """Text <-> ids at one level: `tokens` (id -> token) for char and word, `bpe` (a
    tokenizers.Tokenizer) for bpe."""
    level: str
    tokens: list = field(default_factory=list)
    bpe: object = None

    def __post_init__(self) -> None:
        self.ids = {t: i for i, t in enumerate(self.tokens)}

    @property
    def size(self) -> int:
        return self.bpe.get_vocab_size() if self.bpe is not None else len(self.tokens)

    def split(self, text: str) -> list[str]:
        return list(text) if self.level == "char" else _WORD.findall(text)

    def encode(self, text: str) -> list[int]:
        if self.bpe is not None:
            return list(self.bpe.encode(text).ids)
        return [self.ids.get(t, 0) for t in self.split(text)]

    def decode(self, ids) -> str:
        if self.bpe is not None:
            return self.bpe.decode(list(ids))
        if self.level == "char":
            return "".join("\ufffd" if i == 0 else self.tokens[i] for i in ids)
        return " ".join(self.tokens[i] for i in ids)

    def to_json(self) -> str:
        if self.bpe is not None:
            return self.bpe.to_str()
        return json.dumps({"level": self.level, "tokens": self.tokens}, ensure_ascii=False)

    @staticmethod
    def from_json(text: str) -> "Codec":
        data = json.loads(text)
        if isinstance(data, dict) and data.get("level") in ("char", "word"):
            return Codec(data["level"], list(data["tokens"]))
        from tokenizers import Tokenizer
        return Codec("bpe", bpe=Tokenizer.from_str(text))


def check_args(path: str, level: str, vocab) -> None:
    """What `dslc check` can tell without reading the file through: it is there, a regular
    file, not too big, and `vocab` fits the level."""
    regular_file(path, "text file")
    size = os.path.getsize(path)
    if size > MAX_TEXT_BYTES:
        raise DataError(f"{shown(path)} is {size:,} bytes; a text file may have at most {MAX_TEXT_BYTES:,}")
    if level == "bpe" and vocab is None:
        raise DataError("`level=\"bpe\"` needs `vocab`, the number of ids the tokenizer learns (256 bytes and "
                        "the merges), such as `vocab=1000`", "E0303")
    if level == "bpe" and vocab < BYTES + 1:
        raise DataError(f"a byte-level BPE's `vocab` must exceed its {BYTES} bytes, got {vocab}", "E0302")
    if level != "bpe" and vocab is not None and vocab < 2:
        raise DataError(f"`vocab` must be at least 2 (`<unk>` and one {level}), got {vocab}", "E0302")


def read_text(path: str) -> str:
    regular_file(path, "text file")
    with open(path, "rb") as f:
        raw = f.read(MAX_TEXT_BYTES + 1)
    if len(raw) > MAX_TEXT_BYTES:
        raise DataError(f"{shown(path)} is over {MAX_TEXT_BYTES:,} bytes; a text file may have at most that")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise DataError(f"{shown(path)} is not UTF-8 text: line {line} has the byte 0x{raw[e.start]:02x}") from None
    if not text:
        raise DataError(f"{shown(path)} is empty")
    return text


def train_codec(text: str, level: str, vocab: int | None) -> Codec:
    """The level's tokenizer, made from `text`."""
    if level == "bpe":
        return Codec("bpe", bpe=_train_bpe(text, int(vocab)))
    counts = Counter(list(text) if level == "char" else _WORD.findall(text))
    kept = sorted(counts, key=lambda t: (-counts[t], t))
    if vocab is not None:
        kept = kept[:int(vocab) - 1]
    return Codec(level, [UNK] + sorted(kept))


def _train_bpe(text: str, vocab: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(text.splitlines(keepends=True), trainer)
    return tok


def text_arrays(path: str, level: str, vocab: int | None) -> tuple[dict, dict]:
    """({"tokens": int64 [N]}, meta): the file's ids in order, with its tokenizer in meta."""
    import numpy as np
    text = read_text(path)
    codec = train_codec(text, level, vocab)
    ids = np.asarray(codec.encode(text), dtype=np.int64)
    meta = {"vocab": codec.size, "level": level, "tokenizer": codec.to_json(), "characters": len(text)}
    if codec.bpe is None:
        meta["itos"] = list(codec.tokens)
    return {"tokens": ids}, meta


def text_set(args: dict, base_dir: str) -> tuple[dict, dict]:
    """`text(...)` with its bound arguments: the file's ids in order; the runtime splits them into
    contiguous stretches, read as windows (`meta["windows"]`) or as a stream (`meta["stream"]`)."""
    vocab = int(args["vocab"]) if args.get("vocab") is not None else None
    arrays, meta = text_arrays(resolve(args["path"], base_dir), str(args["level"]), vocab)
    meta["stream" if args.get("stream") else "windows"] = int(args["context"])
    return arrays, meta


__all__ = ["LEVELS", "UNK", "Codec", "check_args", "read_text", "text_arrays", "text_set", "train_codec"]
