"""Shrinking a failing case while it keeps its failure signature: delta debugging (Zeller's ddmin)
over lines, then over tokens, then shortening long tokens; bounded in time.

Candidates are tried in batches, one per worker, and the first that still fails (in order) wins,
so the result is the same as trying them one by one.
"""
from __future__ import annotations

import itertools
import math
import re
import time
from dataclasses import replace
from typing import Callable, Optional

from .cases import Case, Outcome, signature, with_text
from .mutate import from_bytes, to_bytes, tokens

FirstFailing = Callable[[list], Optional[int]]


def ddmin(items: list, first_failing: FirstFailing, deadline: float) -> list:
    """A smaller list that still fails: first_failing(candidates) is the index of the first
    candidate (a list of items; they come from an iterator, made as needed) that fails, or None."""
    n = 2
    while len(items) >= 2 and time.monotonic() < deadline:
        size = math.ceil(len(items) / n)
        chunks = [items[i:i + size] for i in range(0, len(items), size)]
        subsets = chunks if len(chunks) > 2 else []   # with two chunks the complements are the subsets
        k = first_failing(itertools.chain(subsets, (_without(chunks, i) for i in range(len(chunks)))))
        if k is None:
            if size == 1:
                break
            n = min(2 * n, len(items))
        elif k < len(subsets):
            items, n = subsets[k], 2
        else:
            items, n = _without(chunks, k - len(subsets)), max(n - 1, 2)
    return items


def _without(chunks: list, i: int) -> list:
    return list(itertools.chain.from_iterable(chunks[:i] + chunks[i + 1:]))


def shorten_long_tokens(text: str, first_failing: FirstFailing, deadline: float, longer_than: int = 64) -> str:
    """Halve each long token (a long string literal, a long name) while the failure stays."""
    pieces = tokens(text)
    for i in range(len(pieces)):
        while len(pieces[i]) > longer_than and time.monotonic() < deadline:
            shorter = _halved(pieces[i])
            candidate = "".join(pieces[:i] + [shorter] + pieces[i + 1:])
            if first_failing([candidate]) is None:
                break
            pieces[i] = shorter
    return "".join(pieces)


def _halved(piece: str) -> str:
    quote = piece[0] if piece[0] in "\"'" and len(piece) > 1 and piece[-1] == piece[0] else ""
    body = piece[len(quote):len(piece) - len(quote)]
    return quote + body[:len(body) // 2] + quote


class Minimizer:
    """Tries candidate texts of one failing case on a pool."""

    def __init__(self, pool, case: Case, outcome: Outcome, seconds: float):
        self.pool, self.case, self.outcome = pool, case, outcome
        self.deadline = time.monotonic() + seconds
        self.seen: dict[str, bool] = {}
        self.tries = 0

    def keeps(self, outcome: Outcome) -> bool:
        """A hang or memory failure may stop at another frame when the input changes: the class
        is what matters there. An internal error must keep its exception type and frame."""
        if self.outcome.cls in ("hang", "memory"):
            return outcome.cls == self.outcome.cls
        return signature(self.case, outcome) == signature(self.case, self.outcome)

    def first_failing(self, candidates) -> Optional[int]:
        """Index of the first candidate (a text or a list of pieces) that keeps the failure."""
        width = len(self.pool.workers)
        candidates = iter(candidates)
        start = 0
        while time.monotonic() < self.deadline:
            batch = ["".join(t) if isinstance(t, list) else t for t in itertools.islice(candidates, width)]
            if not batch:
                return None
            for j, kept in enumerate(self._try(batch)):
                if kept:
                    return start + j
            start += len(batch)
        return None

    def _try(self, texts: list[str]) -> list[bool]:
        todo = [t for t in dict.fromkeys(texts) if t not in self.seen]
        cases = [replace(with_text(self.case, to_bytes(t)), index=-1 - k) for k, t in enumerate(todo)]
        for text, outcome in zip(todo, self.pool.run_ordered(cases) if cases else []):
            self.seen[text] = self.keeps(outcome)
        self.tries += len(todo)
        return [self.seen[t] for t in texts]

    def run(self) -> bytes:
        text = from_bytes(self.case.files[self.case.main])
        for split in (lambda t: t.splitlines(keepends=True), tokens):
            text = "".join(ddmin(split(text), self.first_failing, self.deadline))
        text = shorten_long_tokens(text, self.first_failing, self.deadline)
        return to_bytes(text)


def minimize(pool, case: Case, outcome: Outcome, seconds: float) -> bytes:
    return Minimizer(pool, case, outcome, seconds).run()


REPEAT = re.compile(r"(.{1,24}?)\1{19,}", re.S)


def abbreviate(text, limit: int = 600) -> str:
    """A reproducer for reading: runs of 20 or more copies of a short piece written as «piece»{N},
    invalid bytes and control characters as \\xNN, and at most `limit` characters. Only the start
    of a long text is looked at (the regex costs some 50 steps a character)."""
    data = to_bytes(text) if isinstance(text, str) else text
    text = data[:limit * 64].decode("utf-8", "backslashreplace")
    text = re.sub(r"[\x00-\x08\x0b-\x1f\x7f]", lambda m: f"\\x{ord(m.group()):02x}", text)
    text = REPEAT.sub(lambda m: f"«{m.group(1)}»{{{len(m.group(0)) // len(m.group(1))}}}", text)
    if len(text) <= limit and len(data) <= limit * 64:
        return text
    return text[:limit] + f"... ({len(data)} bytes)"
