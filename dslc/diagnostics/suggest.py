"""Did-you-mean: a case-insensitive match first, then edit distance <= 2."""
from __future__ import annotations

from collections.abc import Iterable


def edit_distance(a: str, b: str, limit: int = 3) -> int:
    """Levenshtein distance, giving up (returning `limit`) once it exceeds limit - 1."""
    if abs(len(a) - len(b)) >= limit:
        return limit
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        if min(cur) >= limit:
            return limit
        prev = cur
    return min(prev[-1], limit)


def did_you_mean(name: str, candidates: Iterable[str]) -> str | None:
    """The candidate the user most likely meant, or None."""
    pool = sorted(set(candidates))
    lowered = name.lower()
    for cand in pool:
        if cand.lower() == lowered and cand != name:
            return cand
    best, best_d = None, 3
    for cand in pool:
        d = edit_distance(lowered, cand.lower())
        if d < best_d and cand != name:
            best, best_d = cand, d
    if best is not None and best_d >= min(3, max(1, len(name) - 1)) and len(name) <= 2:
        return None  # a one-letter name is "close" to everything
    return best
