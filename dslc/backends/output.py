"""Writing an output the user named (`compile -o`, `render -o`, `sample -o`).

A regular file is replaced atomically: the bytes go to a new temporary file in the
same folder (created with O_EXCL under a random name, so it never clobbers a file)
and are renamed over the target only once complete, so a reader or a crash sees
the old content or the new, never half. What is not a regular file is not
replaced: a character device (`-o /dev/null`, `/dev/stdout`) or a FIFO is written
in place, as `>` in a shell would; a symlink stays a link and its target gets the
content. A directory, a block device or a socket is refused with E0902.
"""
from __future__ import annotations

import os
import secrets
import stat

from ..diagnostics import Diagnostic, DslcError


def write_output(path: str, data: bytes) -> None:
    """Write `data` to the user's `path` (see the module docstring); E0902 when that cannot be done."""
    try:
        st = os.stat(path)  # through links: what the content would land on
    except FileNotFoundError:
        st = None  # nothing there yet (or a dangling link, whose target is created)
    except OSError as e:
        raise _cannot(path, e) from None
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise DslcError(Diagnostic("E0902", f"cannot write {path}: it is a directory", file_name=path,
                                   help="name a file inside it with -o"))
    if st is not None and (stat.S_ISCHR(st.st_mode) or stat.S_ISFIFO(st.st_mode)):
        _write_in_place(path, data)
    elif st is None or stat.S_ISREG(st.st_mode):
        _replace(path, data, st)
    else:
        kind = "a block device" if stat.S_ISBLK(st.st_mode) else "not a file"
        raise DslcError(Diagnostic("E0902", f"cannot write {path}: it is {kind}", file_name=path,
                                   help="dslc writes to files, character devices (/dev/null) and pipes"))


def is_stream(path: str) -> bool:
    """Whether `path` is a character device or a FIFO (written in place, its name kept as given)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return stat.S_ISCHR(mode) or stat.S_ISFIFO(mode)


def _write_in_place(path: str, data: bytes) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | getattr(os, "O_CLOEXEC", 0))  # no O_CREAT, no O_TRUNC: it exists
        with os.fdopen(fd, "wb") as f:
            f.write(data)
    except OSError as e:
        raise _cannot(path, e) from None


def _replace(path: str, data: bytes, old: os.stat_result | None) -> None:
    tmp = None
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        target = os.path.realpath(path)  # a link stays a link: its target is replaced
        tmp, fd = _new_file(os.path.dirname(target), os.path.basename(target))
        with os.fdopen(fd, "wb") as f:
            if old is not None:
                os.fchmod(f.fileno(), stat.S_IMODE(old.st_mode))  # a replaced file keeps its permissions
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except OSError as e:
        if tmp is not None and os.path.lexists(tmp):
            os.remove(tmp)
        raise _cannot(path, e) from None


def _new_file(folder: str, name: str) -> tuple[str, int]:
    """A new file beside the target: O_EXCL, so an existing file of that name is never touched; mode
    0666 less the umask, as a plain `open(path, "w")` would create the target."""
    while True:
        tmp = os.path.join(folder, f".{name}.{secrets.token_hex(4)}.tmp")
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
            return tmp, os.open(tmp, flags, 0o666)
        except FileExistsError:
            continue


def _cannot(path: str, e: OSError) -> DslcError:
    return DslcError(Diagnostic("E0902", f"cannot write {path}: {e.strerror or e}", file_name=path))
