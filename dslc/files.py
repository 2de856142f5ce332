"""Files written whole or not at all, for every writer that must not leave half a file behind
(checkpoints, metrics, the data caches, a run's figures). A user's `-o` output has its own
rules (devices, links, kept permissions): backends/output.py."""
from __future__ import annotations

import contextlib
import os
from typing import IO, Callable


def temporary_name(path: str) -> str:
    """Where `atomic_write` writes first: `NAME.tmp-PID`, beside the file (one writer per process)."""
    return f"{path}.tmp-{os.getpid()}"


def atomic_write(path: str, data: bytes | Callable[[IO[bytes]], None]) -> None:
    """`data` (bytes, or a function that writes to the open file) in `path`: a temporary file,
    flushed to the disk, then renamed over `path`. A failed write (a full disk, a read-only
    folder, an exception in `data`) removes the temporary file and raises."""
    tmp = temporary_name(path)
    try:
        with open(tmp, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
