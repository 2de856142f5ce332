"""Did-you-mean: a case-insensitive match first, then edit distance <= 2."""
from __future__ import annotations

from collections.abc import Iterable


def edit_distance(a: str, b: str, limit: int = 3) -> int:
    """Edit distance where swapping two neighbours counts as one edit (`rleu` -> `relu`),
    giving up (returning `limit`) once it reaches limit."""
    if abs(len(a) - len(b)) >= limit:
        return limit
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            d = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb))
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                d = min(d, prev2[j - 2] + 1)
            cur.append(d)
        if min(cur) >= limit:
            return limit
        prev2, prev = prev, cur
    return min(prev[-1], limit)


def did_you_mean(name: str, candidates: Iterable[str]) -> str | None:
    """The candidate the user most likely meant, or None."""
    # Short names are close to everything: allow one edit up to 4 letters, two beyond.
    limit = 1 if len(name) <= 4 else 2
    # Only names within `limit` of its length can be that close: filtered before anything is
    # sorted, so a file with thousands of declarations costs a pass over them, not a sort.
    n = len(name)
    pool = sorted({c for c in candidates if abs(len(c) - n) <= limit and c != name})
    lowered = name.lower()
    for cand in pool:
        if cand.lower() == lowered:
            return cand
    best, best_d = None, limit + 1
    for cand in pool:
        d = edit_distance(lowered, cand.lower(), limit + 1)
        if d < best_d:
            best, best_d = cand, d
    return best
