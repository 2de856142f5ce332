"""Range checks for parameters: each returns an error message or None."""
from __future__ import annotations

from ..ir.dims import plain, plain_float
from ..ir.limits import MAX_STACKED


def _vals(v):
    return v if isinstance(v, (list, tuple)) else (v,)


def positive(v) -> str | None:
    if any(plain(x) <= 0 for x in _vals(v)):
        return "must be positive"
    return None


def layer_count(v) -> str | None:
    """A count of stacked layers: each gets weights of its own, so it is bounded like a loop."""
    if plain(v) <= 0:
        return "must be positive"
    if plain(v) > MAX_STACKED:
        return f"must be at most {MAX_STACKED:,} (a limit of dslc)"
    return None


def non_negative(v) -> str | None:
    if any(plain(x) < 0 for x in _vals(v)):
        return "must not be negative"
    return None


def probability(v) -> str | None:
    p = plain_float(v)
    if not 0.0 <= p <= 1.0:
        return "must be a probability between 0 and 1"
    return None


def open_probability(v) -> str | None:
    p = plain_float(v)
    if not 0.0 <= p < 1.0:
        return "must be at least 0 and below 1"
    return None


def positive_number(v) -> str | None:
    if plain_float(v) <= 0:
        return "must be positive"
    return None


def non_negative_number(v) -> str | None:
    if plain_float(v) < 0:
        return "must not be negative"
    return None
