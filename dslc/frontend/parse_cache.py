"""A per-user cache of the parser's tables, that nobody else can write.

Building the LALR tables takes about 0.2 s, longer than the rest of `dslc check`'s
start-up, so they are kept on disk. Lark's own cache (`Lark(cache=path)`) unpickles
whatever file it finds at `path`: a file planted there by another user would run
their code as ours. So this cache trusts nothing it did not write itself:

- the folder is `$XDG_CACHE_HOME/dslc`, else `~/.cache/dslc`, else `$TMPDIR/dslc-UID`;
  it is created with mode 0700 and used only when it is a real folder (not a link)
  owned by us that nobody else can write to; otherwise the next place is tried, and
  with none left the tables are built in memory every time;
- each file carries an HMAC-SHA256 of its content under a random key kept in that
  folder (mode 0600), checked before the content is decoded, so a truncated, corrupt
  or foreign file is ignored and rewritten;
- the tables are plain data (dicts, lists, strings, numbers) stored with `marshal`,
  which builds values and never runs code, and handed to lark as a dict: lark's
  pickle reader never sees a file.

Every file is opened relative to the verified folder's descriptor and with
O_NOFOLLOW, so a link swapped in after the check cannot redirect a read or a write.
"""
from __future__ import annotations

import hashlib
import hmac
import marshal
import os
import stat
import sys
import tempfile

from lark import Lark
from lark import __version__ as lark_version
from lark.grammar import Rule
from lark.lexer import TerminalDef

FORMAT = b"dslc-tables 1\n"
KEY_FILE = "key"
KEY_BYTES = 32
MAX_BYTES = 16 << 20  # far above the tables' ~100 KB; a larger file is not ours
# Options lark takes again when loading tables (objects, not data): never stored.
RUNTIME_OPTIONS = frozenset({"postlex", "transformer", "lexer_callbacks", "use_bytes", "debug", "g_regex_flags",
                             "regex", "propagate_positions", "tree_class", "_plugins"})
# O_NOFOLLOW: a link is never followed; O_NONBLOCK: opening a FIFO planted under our name cannot hang.
_OPEN_FLAGS = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)


def cached_lark(grammar: str, **options) -> Lark:
    """`Lark(grammar, **options)`, with its tables from the cache when a trusted copy is there."""
    digest = _digest(grammar, options)
    runtime = {k: v for k, v in options.items() if k in RUNTIME_OPTIONS}
    folder = open_folder()
    try:
        tables = _read_tables(folder, digest) if folder is not None else None
        parser = _from_tables(tables, runtime) if tables is not None else None
        if parser is None:
            parser = Lark(grammar, **options)
            if folder is not None:
                _write_tables(folder, digest, parser)
        return parser
    finally:
        if folder is not None:
            os.close(folder)


def _digest(grammar: str, options: dict) -> str:
    """Names one set of tables: the grammar, the options, lark's and Python's versions (marshal's format)."""
    stored = sorted((k, repr(v)) for k, v in options.items() if k not in RUNTIME_OPTIONS)
    text = "\0".join([FORMAT.decode(), grammar, repr(stored), lark_version, sys.implementation.cache_tag or ""])
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]


def file_name(digest: str) -> str:
    return f"tables-{digest}.bin"


# ---- the folder

def candidates() -> list[str]:
    """Where the cache may live, in order of preference."""
    out = []
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    home = os.path.expanduser("~")
    if os.path.isabs(xdg):  # the XDG spec: a relative value is ignored
        out.append(os.path.join(xdg, "dslc"))
    elif os.path.isabs(home):
        out.append(os.path.join(home, ".cache", "dslc"))
    if hasattr(os, "getuid"):
        out.append(os.path.join(tempfile.gettempdir(), f"dslc-{os.getuid()}"))
    return out


def open_folder() -> int | None:
    """A descriptor of the first usable cache folder, or None."""
    if not hasattr(os, "getuid") or os.open not in os.supports_dir_fd:
        return None
    for path in candidates():
        fd = _open_private_folder(path)
        if fd is not None:
            return fd
    return None


def _open_private_folder(path: str) -> int | None:
    """Create `path` (mode 0700) if needed and open it; None unless it is ours and nobody else can write to it."""
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | _OPEN_FLAGS)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if trusted_folder(st):
            if st.st_mode & 0o077:
                # Readable by others but writable only by us (an older dslc made /tmp/dslc-UID 0755):
                # everything in it is ours, so close it up rather than show the key to others.
                os.fchmod(fd, 0o700)
            return fd
    except OSError:
        pass
    os.close(fd)
    return None


def trusted_folder(st: os.stat_result) -> bool:
    """Ours, a directory, and nobody else may create, replace or delete files in it."""
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and not st.st_mode & 0o022


# ---- files in the folder

def _read_private(folder: int, name: str, limit: int) -> bytes | None:
    """A regular file of ours, unreadable by others, at most `limit` bytes; else None."""
    try:
        fd = os.open(name, os.O_RDONLY | _OPEN_FLAGS, dir_fd=folder)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077 or st.st_size > limit:
            return None
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read(limit + 1)
        return data if len(data) <= limit else None
    except OSError:
        return None
    finally:
        os.close(fd)


def _publish(folder: int, name: str, data: bytes, replace: bool) -> None:
    """Write `data` to a new temporary file (0600) and move it to `name`: atomically, and over an
    existing file only when `replace`. Failing is fine: the cache is an optimization."""
    tmp = f".{name}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _OPEN_FLAGS, 0o600, dir_fd=folder)
    except OSError:
        return
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        if replace:
            os.replace(tmp, name, src_dir_fd=folder, dst_dir_fd=folder)
        else:
            os.link(tmp, name, src_dir_fd=folder, dst_dir_fd=folder, follow_symlinks=False)
    except OSError:
        pass  # e.g. another dslc linked its key first: theirs is as good as ours
    finally:
        try:
            os.unlink(tmp, dir_fd=folder)
        except OSError:
            pass  # renamed away already


def key(folder: int) -> bytes | None:
    """This user's secret key, made on first use."""
    found = _read_private(folder, KEY_FILE, KEY_BYTES)
    if found is None or len(found) != KEY_BYTES:
        # A missing key is created without replacing one another dslc process has just made; one we
        # cannot trust (wrong size, owner or mode) is replaced, which voids every table signed with it.
        _publish(folder, KEY_FILE, os.urandom(KEY_BYTES), replace=_exists(folder, KEY_FILE))
        found = _read_private(folder, KEY_FILE, KEY_BYTES)
    return found if found is not None and len(found) == KEY_BYTES else None


def _exists(folder: int, name: str) -> bool:
    try:
        os.stat(name, dir_fd=folder, follow_symlinks=False)
        return True
    except OSError:
        return False


def _mac(secret: bytes, digest: str, payload: bytes) -> bytes:
    return hmac.new(secret, digest.encode("ascii") + b"\0" + payload, hashlib.sha256).digest()


def seal(secret: bytes, digest: str, payload: bytes) -> bytes:
    """The file's bytes: a header, the HMAC of (digest, payload), then the payload."""
    return FORMAT + _mac(secret, digest, payload) + payload


def unseal(secret: bytes, digest: str, data: bytes) -> bytes | None:
    """The payload, when `data` was sealed with `secret` for `digest`; else None."""
    head = len(FORMAT) + hashlib.sha256().digest_size
    if len(data) < head or not data.startswith(FORMAT):
        return None
    payload = data[head:]
    return payload if hmac.compare_digest(_mac(secret, digest, payload), data[len(FORMAT):head]) else None


# ---- the tables

def _read_tables(folder: int, digest: str) -> dict | None:
    secret = key(folder)
    data = _read_private(folder, file_name(digest), MAX_BYTES) if secret is not None else None
    payload = unseal(secret, digest, data) if data is not None else None
    if payload is None:
        return None
    try:
        tables = marshal.loads(payload)
    except (ValueError, EOFError, TypeError):
        return None
    return tables if isinstance(tables, dict) else None


def _from_tables(tables: dict, runtime: dict) -> Lark | None:
    """A parser from stored tables; None when they do not load (written by another lark, say)."""
    try:
        return Lark.__new__(Lark)._load(tables, **runtime)
    except Exception:  # noqa: BLE001 - any failure means: build the tables instead
        return None


def _write_tables(folder: int, digest: str, parser: Lark) -> None:
    secret = key(folder)
    if secret is None:
        return
    try:
        data, memo = parser.memo_serialize([TerminalDef, Rule])
        data["options"] = {k: v for k, v in data["options"].items() if k not in RUNTIME_OPTIONS}
        payload = marshal.dumps({"data": data, "memo": memo})
    except Exception:  # noqa: BLE001 - a lark that serializes otherwise, or not plain data: no cache
        return
    _publish(folder, file_name(digest), seal(secret, digest, payload), replace=True)
