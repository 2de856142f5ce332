"""Shared by the generators in tools/: write a file, or check that it is current."""
from __future__ import annotations

import sys


def write_or_check(path: str, text: str) -> int:
    """With --check, 0 when `path` already holds `text` (1 otherwise); else write it."""
    if "--check" in sys.argv:
        with open(path, encoding="utf-8") as f:
            return 0 if f.read() == text else 1
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return 0
