"""Limits of compile-time evaluation.

A `.dl` file is a small program that runs at compile time: integer arithmetic,
lists, loops, `repeat` and blocks that unroll. Without bounds a mistaken or
hostile spec could ask for unbounded time or memory (`9 ** 9 ** 9`,
`range(10**9)`, blocks that double at every level). Each limit here is a
comparison or a counter, cheap enough to sit on the hot path, with its own
error code (E07xx) and a message that names it. They are far above what real
models need (the zoo's largest, DenseNet-121, unrolls to 558 operations; checking
the 10,000-line zoo spec of bench/frontend.py takes about 25,000 steps), and low
enough that a check that reaches one ends within seconds.
"""
from __future__ import annotations

MAX_INT = 2 ** 63 - 1        # E0701: int64, what PyTorch and ONNX count sizes in
MAX_ITEMS = 1_000_000        # E0702: a list, a `range`, a `repeat` count, a built string
MAX_STRING = 1 << 20         # E0704: characters in one string literal
MAX_SOURCE_BYTES = 2 << 20   # E0704: one source file (the 10,000-line benchmark spec is 0.46 MB and
MAX_UNIT_CHARS = 2 << 20     #        checks in 2 s; a check reads about 0.3 MB a second): and with its imports
MAX_OPERATIONS = 20_000      # E0703: layers and operations one model unrolls to
MAX_STEPS = 1_000_000        # E0703: statements and loop iterations one check may run
MAX_NESTING = 100            # E0705: blocks applied inside blocks (and brackets, see the parser)
MAX_EXPR_DEPTH = 200         # E0705: operators nested in one expression (`-(-(-x))`, `a + a + ...`)
MAX_STACKED = 10_000         # layers stacked inside one layer (`LSTM(num_layers=...)`): each has its own weights


def int_too_large(v) -> bool:
    """Whether an int is outside int64 (a `Size` by its plain value, recording no guard)."""
    return isinstance(v, int) and not -MAX_INT - 1 <= int.__int__(v) <= MAX_INT


def magnitude(v: int) -> str:
    """`about 10**N`: a huge int described without printing its digits."""
    return f"about 10**{int((abs(int.__int__(v)).bit_length() - 1) * 0.30103)}"


def power_too_large(base: int, exponent: int) -> bool:
    """Whether `base ** exponent` (ints, exponent >= 0) is certainly outside int64, decided without
    computing it; a power this lets through has at most about 126 bits and is computed, then checked."""
    b = abs(int.__int__(base))
    if b <= 1 or exponent <= 1:
        return False
    return (b.bit_length() - 1) * exponent > 63  # at least 2**64; below that it is computed and checked


def elements_too_many(dims) -> bool:
    """Whether static dims multiply to 2**63 or more (run-time sizes count as 1, as MACs do at batch 1)."""
    total = 1
    for d in dims:
        if isinstance(d, int):
            total *= max(int.__int__(d), 1)
            if total > MAX_INT:
                return True
    return False


MAX_POLY = 200               # size expressions: terms, powers and floor divisions in one (see ir/dims.py)
MAX_POLY_PRODUCT = 40_000    # E0705: term pairs one polynomial product may form


class LimitError(Exception):
    """A limit reached where no source position is known (deep in the size arithmetic);
    evaluation reports it at the statement that was running."""

    def __init__(self, code: str, message: str, help: str | None = None):
        super().__init__(message)
        self.code, self.message, self.help = code, message, help
