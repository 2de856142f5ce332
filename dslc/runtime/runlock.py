"""One process at a time in a run folder: an OS file lock on `RUN/.lock`.

The lock is `filelock`'s (flock on POSIX, LockFileEx on Windows), so the operating
system releases it when its process ends, however it ends (kill -9 included): a
stale lock never blocks a later `--resume`. The holder writes its pid into the lock
file so that a second process can say who holds the folder. The pid is read before
trying the lock and again after failing, because older filelock versions truncate
the file when they open it; either read names the holder but for a brief moment
after a new holder took the lock and before it wrote its pid.
"""
from __future__ import annotations

import os

from ..diagnostics import Diagnostic, DslcError

LOCK_NAME = ".lock"


class RunLock:
    def __init__(self, folder: str):
        self.folder = folder
        self.path = os.path.join(folder, LOCK_NAME)
        self._lock = None

    def acquire(self) -> "RunLock":
        """Hold the folder, or raise E0605 naming the holder's pid (E0603 when no lock file can be made)."""
        import filelock
        before = _holder(self.path)
        lock = filelock.FileLock(self.path, timeout=0)
        try:
            lock.acquire()
        except filelock.Timeout:
            raise _in_use(self.folder, _holder(self.path) or before) from None
        except OSError as e:
            raise unusable(self.folder, e) from None
        self._lock = lock
        self._write_pid()
        return self

    def _write_pid(self) -> None:
        # a second open file: closing it leaves the lock (flock holds per open file) in place
        try:
            with open(self.path, "w", encoding="ascii") as f:
                f.write(f"{os.getpid()}\n")
        except OSError:
            pass   # the lock holds without it; a second process just cannot name the holder

    def release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None


def _holder(path: str) -> int | None:
    try:
        with open(path, encoding="ascii") as f:
            text = f.read(32).strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None


def _in_use(folder: str, pid: int | None) -> DslcError:
    if pid is None:
        who = "another process"
    else:
        who = "this process" if pid == os.getpid() else f"process {pid}"
    return DslcError(Diagnostic(
        "E0605", f"the run folder {folder} is in use by {who} (another `dslc train` is running in it)",
        file_name=folder,
        help="wait for that run to end (or stop it: Ctrl-C or SIGTERM checkpoint first), then resume it; "
             "or start a new run without --resume"))


def unusable(folder: str, e: OSError) -> DslcError:
    """E0603: the folder cannot be written (read-only, not a folder, a full disk)."""
    where = f"{e.filename}: " if isinstance(e.filename, str) else ""
    return DslcError(Diagnostic(
        "E0603", f"cannot write in the run folder {folder}: {where}{e.strerror or e}", file_name=folder,
        help="make the folder writable, or copy the run to a folder you can write to and give that with --out"))
