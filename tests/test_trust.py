"""Issue #11, what dslc trusts: the parser-table cache, output paths, what is echoed to the
terminal, and which files are read as source.

- The parse-table cache runs nothing another user planted: no pickle is ever loaded, a
  folder that is not ours alone is not used, and a corrupt file is rebuilt silently.
- `-o` onto a device, a FIFO or a symlink writes through it instead of replacing it.
- Control characters in source lines, file names and messages print escaped.
- Only `.dl` files are imported; a huge, endless or blocking source is refused, not read.
"""
from __future__ import annotations

import errno
import functools
import marshal
import os
import pickle
import stat
import subprocess
import sys
import tempfile

import pytest
from support import ROOT

from dslc.diagnostics import SourceFile, Span
from dslc.frontend import parse_cache, parser

DSLC = os.path.join(os.path.dirname(sys.executable), "dslc")
SPEC = "model M {\n    input x: [B, 4]\n    Linear(3)\n}\n"
AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
OTHER_UID = 54321  # a user that is not us (as root, files can be given to it)


# ---------------------------------------------------------------------- the parse-table cache

class _Plant:
    """A pickle that, when loaded, creates the folder `marker`: proof that it was unpickled."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def _planted_pickle(marker) -> bytes:
    return pickle.dumps(_Plant(str(marker)))


def _lark_style_cache(marker) -> bytes:
    """What lark's own cache reader expects: a hash line, then pickles (the first one runs the plant)."""
    return b"0" * 64 + b"\n" + _planted_pickle(marker) + _planted_pickle(marker)


@pytest.fixture
def places(tmp_path, monkeypatch):
    """HOME, XDG_CACHE_HOME and the temporary folder under tmp_path, and a parser built afresh."""
    dirs = {name: tmp_path / name for name in ("home", "xdg", "tmp")}
    for d in dirs.values():
        d.mkdir()
    monkeypatch.setenv("HOME", str(dirs["home"]))
    monkeypatch.setenv("XDG_CACHE_HOME", str(dirs["xdg"]))
    monkeypatch.setenv("TMPDIR", str(dirs["tmp"]))
    monkeypatch.setattr(tempfile, "tempdir", str(dirs["tmp"]))
    parser._lark.cache_clear()
    yield dirs
    parser._lark.cache_clear()


def _parse_ok() -> None:
    """A fresh parser (from the cache if one is trusted) parses a spec."""
    parser._lark.cache_clear()
    module = parser.parse(SourceFile("m.dl", SPEC))
    assert [d.name for d in module.decls] == ["M"]


def _digest() -> str:
    return parse_cache._digest(parser._grammar_text(), _OPTIONS)


_OPTIONS = dict(parser="lalr", lexer="contextual", keep_all_tokens=True, maybe_placeholders=True,
                start=["start", "expr"])


@functools.lru_cache(maxsize=1)
def _poisoned_tables() -> bytes:
    """Real tables in which no name can be lexed: loading them would make every spec a syntax error."""
    from lark import Lark
    from lark.grammar import Rule
    from lark.lexer import TerminalDef
    data, memo = Lark(parser._grammar_text(), **_OPTIONS).memo_serialize([TerminalDef, Rule])
    for entry in memo.values():
        if entry.get("name") == "NAME":
            entry["pattern"]["value"] = "zz_planted_[0-9]+"
    return marshal.dumps({"data": data, "memo": memo})


def _old_name() -> str:
    """The cache file dslc read before issue #11 (in $XDG_CACHE_HOME or /tmp/dslc-UID, through lark's pickle)."""
    import hashlib
    return f"dl-lark-{hashlib.sha256(parser._grammar_text().encode()).hexdigest()[:16]}.cache"


def _plant_folder(folder, marker, owner=None, mode=0o700) -> dict:
    """A cache folder as an attacker would leave it: their key, tables sealed with it (poisoned), and
    pickles under every name a cache was ever read from. Returns {path: bytes} of what was planted."""
    folder.mkdir(parents=True, exist_ok=True)
    secret = b"k" * parse_cache.KEY_BYTES
    digest = _digest()
    files = {
        folder / parse_cache.KEY_FILE: secret,
        folder / parse_cache.file_name(digest): parse_cache.seal(secret, digest, _poisoned_tables()),
        folder / _old_name(): _lark_style_cache(marker),
    }
    for path, data in files.items():
        path.write_bytes(data)
        path.chmod(0o600)
        if owner is not None:
            os.chown(path, owner, owner)
    if owner is not None:
        os.chown(folder, owner, owner)
    folder.chmod(mode)
    return files


def _unchanged(files: dict) -> bool:
    return all(path.read_bytes() == data for path, data in files.items())


def test_tables_are_cached_and_reused(places, monkeypatch):
    """The first run builds the tables and stores them in ~/.cache/dslc (0700, key 0600); the next loads them."""
    monkeypatch.delenv("XDG_CACHE_HOME")
    _parse_ok()
    folder = places["home"] / ".cache" / "dslc"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE((folder / parse_cache.KEY_FILE).stat().st_mode) == 0o600
    assert (folder / parse_cache.file_name(_digest())).is_file()
    assert _builds(monkeypatch) == 0


def _builds(monkeypatch) -> int:
    """How many times lark builds tables (rather than loading them) while a fresh parser parses a spec."""
    from lark import Lark
    built = []
    real_init = Lark.__init__
    monkeypatch.setattr(Lark, "__init__", lambda self, *a, **k: built.append(1) or real_init(self, *a, **k))
    _parse_ok()
    monkeypatch.setattr(Lark, "__init__", real_init)
    return len(built)


def test_xdg_cache_home_is_used_as_xdg_dslc(places):
    _parse_ok()
    assert (places["xdg"] / "dslc" / parse_cache.file_name(_digest())).is_file()
    assert not (places["home"] / ".cache").exists()


def test_nothing_is_ever_unpickled(places, monkeypatch):
    """Cold (build and store) and warm (load): neither calls pickle at all."""
    calls = []
    for name in ("load", "loads", "Unpickler"):
        real = getattr(pickle, name)
        monkeypatch.setattr(pickle, name, lambda *a, _real=real, _name=name, **k: calls.append(_name) or _real(*a, **k))
    _parse_ok()
    _parse_ok()
    assert calls == []


@pytest.mark.parametrize("xdg", [True, False], ids=["XDG_CACHE_HOME", "home"])
def test_planted_caches_are_not_loaded(places, monkeypatch, xdg):
    """Every place the cache is or ever was looked for holds an attacker's files: the first choice
    is writable by everyone, the fallback in the temporary folder belongs to another user (or, not
    as root, is writable by others too). None is used: no plant runs, the tables are built in
    memory, and the planted files are left as they were."""
    if not xdg:
        monkeypatch.delenv("XDG_CACHE_HOME")
    marker = places["tmp"] / "PLANT-RAN"
    first = places["xdg"] / "dslc" if xdg else places["home"] / ".cache" / "dslc"
    fallback = places["tmp"] / f"dslc-{os.getuid()}"
    assert parse_cache.candidates() == [str(first), str(fallback)]
    planted = _plant_folder(first, marker, mode=0o777)
    planted |= _plant_folder(fallback, marker, owner=OTHER_UID if AS_ROOT else None,
                             mode=0o700 if AS_ROOT else 0o733)
    old = places["xdg"] / _old_name()
    old.write_bytes(_lark_style_cache(marker))
    planted[old] = old.read_bytes()
    _parse_ok()
    _parse_ok()
    assert not marker.exists()
    assert _unchanged(planted)


@pytest.mark.skipif(not AS_ROOT, reason="only root can give a folder to another user")
def test_folder_of_another_user_is_refused_even_when_private():
    import tempfile as tf
    with tf.TemporaryDirectory() as d:
        folder = os.path.join(d, "dslc")
        os.mkdir(folder, 0o700)
        os.chown(folder, OTHER_UID, OTHER_UID)
        assert parse_cache._open_private_folder(folder) is None


def test_link_or_file_in_place_of_the_folder_is_refused(tmp_path):
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    (tmp_path / "link").symlink_to(real)
    (tmp_path / "file").write_text("")
    assert parse_cache._open_private_folder(str(tmp_path / "link")) is None
    assert parse_cache._open_private_folder(str(tmp_path / "file")) is None
    fd = parse_cache._open_private_folder(str(real))
    assert fd is not None
    os.close(fd)


def test_folder_readable_by_others_is_closed_up(tmp_path):
    """A folder only we can write to (an older dslc made /tmp/dslc-UID 0755) is ours: it is kept, made 0700."""
    folder = tmp_path / "dslc"
    folder.mkdir()
    folder.chmod(0o755)
    fd = parse_cache._open_private_folder(str(folder))
    assert fd is not None
    os.close(fd)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700


@pytest.mark.parametrize("flaw", ["foreign owner", "readable by others", "wrong size"])
def test_untrusted_key_in_our_folder_is_replaced(places, flaw):
    """Our folder, but a key we cannot trust, with tables sealed under it: a new key, new tables."""
    if flaw == "foreign owner" and not AS_ROOT:
        pytest.skip("only root can give a file to another user")
    marker = places["tmp"] / "PLANT-RAN"
    folder = places["xdg"] / "dslc"
    planted = _plant_folder(folder, marker)
    key = folder / parse_cache.KEY_FILE
    if flaw == "foreign owner":
        os.chown(key, OTHER_UID, OTHER_UID)
    elif flaw == "readable by others":
        key.chmod(0o644)
    else:
        key.write_bytes(b"short")
    _parse_ok()
    assert not marker.exists()
    new_key = key.read_bytes()
    assert new_key != planted[key] and len(new_key) == parse_cache.KEY_BYTES
    assert key.stat().st_uid == os.getuid() and stat.S_IMODE(key.stat().st_mode) == 0o600
    tables = (folder / parse_cache.file_name(_digest())).read_bytes()
    assert parse_cache.unseal(new_key, _digest(), tables) is not None


@pytest.mark.parametrize("damage", ["truncated", "flipped byte", "empty", "garbage", "a FIFO"])
def test_damaged_cache_is_rebuilt_silently(places, capfd, caplog, monkeypatch, damage):
    _parse_ok()
    path = places["xdg"] / "dslc" / parse_cache.file_name(_digest())
    good = path.read_bytes()
    path.unlink()
    if damage == "a FIFO":
        os.mkfifo(path, 0o600)   # opening it for reading must not wait for a writer
    else:
        data = {"truncated": good[:len(good) // 2], "empty": b"", "garbage": os.urandom(len(good)),
                "flipped byte": good[:-10] + bytes([good[-10] ^ 1]) + good[-9:]}[damage]
        path.write_bytes(data)
        path.chmod(0o600)
    _parse_ok()
    assert capfd.readouterr() == ("", "") and caplog.records == []
    key = (path.parent / parse_cache.KEY_FILE).read_bytes()
    assert path.is_file() and parse_cache.unseal(key, _digest(), path.read_bytes()) is not None
    assert _builds(monkeypatch) == 0   # and the rebuilt file serves the next run


def test_poisoned_tables_would_be_noticed(places):
    """The check behind the tests above: the poisoned tables, sealed with our own key in our own
    folder, are loaded, and then no spec parses."""
    from dslc.diagnostics import DslcError
    _parse_ok()
    folder = places["xdg"] / "dslc"
    key = (folder / parse_cache.KEY_FILE).read_bytes()
    (folder / parse_cache.file_name(_digest())).write_bytes(parse_cache.seal(key, _digest(), _poisoned_tables()))
    parser._lark.cache_clear()
    with pytest.raises(DslcError):
        parser.parse(SourceFile("m.dl", SPEC))


def test_cli_check_with_planted_caches(tmp_path):
    """End to end, as a user would be attacked: `dslc check` in a fresh process, every cache place planted."""
    home, tmp = tmp_path / "home", tmp_path / "tmp"
    marker = tmp / "PLANT-RAN"
    _plant_folder(home / ".cache" / "dslc", marker, mode=0o777)
    _plant_folder(tmp / f"dslc-{os.getuid()}", marker, mode=0o777)
    spec = tmp_path / "m.dl"
    spec.write_text(SPEC)
    env = {k: v for k, v in os.environ.items() if k != "XDG_CACHE_HOME"}
    env.update(HOME=str(home), TMPDIR=str(tmp))
    r = subprocess.run([DSLC, "check", str(spec)], capture_output=True, text=True, env=env, cwd=ROOT)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert r.stdout.startswith("ok:")
    assert not marker.exists()


# ---------------------------------------------------------------------- outputs the user names

def _compile(*args):
    from click.testing import CliRunner

    from dslc.cli import main
    return CliRunner().invoke(main, ["compile", *map(str, args)])


@pytest.fixture
def spec(tmp_path):
    path = tmp_path / "m.dl"
    path.write_text(SPEC)
    return path


@pytest.fixture
def null_device(tmp_path):
    """A character device like /dev/null: a real node in tmp_path as root, else /dev/null itself
    (which a user other than root cannot replace, so a wrong rename fails the test either way)."""
    if not AS_ROOT:
        return "/dev/null"
    path = tmp_path / "null"
    os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    return str(path)


@pytest.mark.parametrize("target", ["pytorch", "onnx"])
def test_output_to_a_character_device_writes_through_it(spec, null_device, target):
    r = _compile(spec, "--target", target, "-o", null_device)
    assert r.exit_code == 0, r.output
    st = os.lstat(null_device)
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, 3)
    assert sorted(os.listdir(os.path.dirname(null_device))) == (["m.dl", "null"] if AS_ROOT else sorted(
        os.listdir("/dev")))


def _reader(fifo) -> tuple:
    """A thread reading `fifo` to its end (it waits for a writer); returns (thread, chunks)."""
    import threading
    chunks = []
    thread = threading.Thread(target=lambda: chunks.append(open(fifo, "rb").read()), daemon=True)
    thread.start()
    return thread, chunks


def _release(fifo, thread) -> None:
    """If the reader still waits (no writer came), open the FIFO for writing so that it ends. A reader
    that got its writer may still be finishing: it is waited for a moment, and one that closed its
    end between the check and the open (ENXIO: no reader) is done."""
    thread.join(0.5)
    if thread.is_alive():
        try:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError as e:
            if e.errno != errno.ENXIO:
                raise
    thread.join(5)


@pytest.mark.parametrize("target", ["pytorch", "onnx"])
def test_output_to_a_fifo_writes_into_the_pipe(spec, tmp_path, target):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    thread, chunks = _reader(fifo)
    r = _compile(spec, "--target", target, "-o", fifo)
    _release(fifo, thread)
    assert r.exit_code == 0, r.output
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    want = b"generated by dslc" if target == "pytorch" else b"dslc"
    assert chunks and want in chunks[0]


def test_output_through_a_symlink_replaces_its_target_atomically(spec, tmp_path, monkeypatch):
    """The link stays a link; the target gets the content by a rename of a temp file made beside
    it (in the target's folder, not the link's) and keeps its permissions."""
    there = tmp_path / "there"
    there.mkdir()
    target = there / "model.py"
    target.write_text("old")
    target.chmod(0o640)
    link = tmp_path / "link.py"
    link.symlink_to(target)
    renames = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b, **k: renames.append((a, b)) or real_replace(a, b, **k))
    r = _compile(spec, "-o", link)
    assert r.exit_code == 0, r.output
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert "generated by dslc" in target.read_text()
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert [(os.path.dirname(a), b) for a, b in renames] == [(str(there), str(target))]
    assert sorted(os.listdir(there)) == ["model.py"]


def test_output_through_a_dangling_symlink_creates_its_target(spec, tmp_path):
    link, target = tmp_path / "link.py", tmp_path / "made.py"
    link.symlink_to(target)
    r = _compile(spec, "-o", link)
    assert r.exit_code == 0, r.output
    assert link.is_symlink() and "generated by dslc" in target.read_text()


def test_the_temporary_file_never_clobbers_a_file(tmp_path, monkeypatch):
    """The temporary name is random and created with O_EXCL: a file that has it is left alone."""
    from dslc.backends import output
    names = iter(["aaaa", "bbbb"])
    monkeypatch.setattr(output.secrets, "token_hex", lambda n: next(names))
    precious = tmp_path / ".out.py.aaaa.tmp"
    precious.write_text("precious")
    output.write_output(str(tmp_path / "out.py"), b"new")
    assert precious.read_text() == "precious"
    assert (tmp_path / "out.py").read_bytes() == b"new"
    assert sorted(os.listdir(tmp_path)) == [".out.py.aaaa.tmp", "out.py"]


def _e0902(r) -> str:
    assert r.exit_code == 1 and "Traceback" not in r.output, r.output
    assert "error[E0902]" in r.stderr, r.stderr
    return r.stderr


def test_a_directory_as_output_is_e0902(spec, tmp_path):
    assert "is a directory" in _e0902(_compile(spec, "-o", tmp_path))
    assert "is a directory" in _e0902(_compile(spec, "--target", "onnx", "-o", tmp_path))


def test_an_output_under_a_file_or_a_read_only_folder_is_e0902(spec, tmp_path):
    (tmp_path / "file").write_text("")
    _e0902(_compile(spec, "-o", tmp_path / "file" / "sub" / "out.py"))
    if AS_ROOT:   # root may write in a 0555 folder; /proc refuses everyone
        read_only = "/proc/dslc-missing/out.py"
    else:
        (tmp_path / "ro").mkdir(mode=0o555)
        read_only = tmp_path / "ro" / "sub" / "out.py"
    _e0902(_compile(spec, "-o", read_only))
    assert sorted(os.listdir(tmp_path)) == ["file", "m.dl"] + (["ro"] if not AS_ROOT else [])


@pytest.mark.skipif(not AS_ROOT, reason="only root can make device nodes")
def test_a_block_device_is_refused(spec, tmp_path):
    disk = tmp_path / "disk"
    os.mknod(disk, stat.S_IFBLK | 0o600, os.makedev(7, 0))
    assert "block device" in _e0902(_compile(spec, "-o", disk))
    assert stat.S_ISBLK(os.lstat(disk).st_mode)


def test_a_default_output_that_is_a_fifo_is_not_read_nor_replaced(spec, tmp_path, monkeypatch):
    """Without -o, an existing m.py that dslc did not write is kept; a FIFO there is not opened."""
    monkeypatch.chdir(tmp_path)
    os.mkfifo("m.py")
    assert "refusing to overwrite" in _e0902(_compile("m.dl"))
    assert stat.S_ISFIFO(os.lstat("m.py").st_mode)


def test_render_writes_through_a_device_and_a_symlink(spec, tmp_path):
    from click.testing import CliRunner

    from dslc.cli import main
    target = tmp_path / "real.dot"
    (tmp_path / "link.dot").symlink_to(target)
    r = CliRunner().invoke(main, ["render", str(spec), "-o", str(tmp_path / "link.dot")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "link.dot").is_symlink() and target.read_text().startswith("digraph")
    if AS_ROOT:
        device = tmp_path / "null.dot"
        os.mknod(device, stat.S_IFCHR | 0o666, os.makedev(1, 3))
        r = CliRunner().invoke(main, ["render", str(spec), "-o", str(device)])
        assert r.exit_code == 0, r.output
        assert stat.S_ISCHR(os.lstat(device).st_mode)


def test_sample_outputs_write_through_a_device(null_device, tmp_path):
    """`sample -o /dev/null`: the array output keeps the device's name (no `.npy` added), and the
    image grid is written into the device."""
    import torch

    from dslc.runtime import sample
    assert sample._output(null_device, str(tmp_path), ".npy", force=True) == null_device
    assert sample._output(str(tmp_path / "a.bin"), str(tmp_path), ".npy", force=True) == str(tmp_path / "a.npy")
    sample.write_grid(torch.zeros(4, 1, 8, 8), null_device)
    assert stat.S_ISCHR(os.lstat(null_device).st_mode)
    link = tmp_path / "grid.png"
    link.symlink_to(tmp_path / "real.png")
    sample.write_grid(torch.zeros(4, 1, 8, 8), str(link))
    assert link.is_symlink() and (tmp_path / "real.png").read_bytes().startswith(b"\x89PNG")


# ---------------------------------------------------------------------- what reaches the terminal

from hypothesis import assume, given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from dslc.diagnostics import Diagnostic  # noqa: E402
from dslc.diagnostics.render import printable  # noqa: E402

CONTROLS = "\x00\x07\x08\x0b\x0c\r\x1b\x7f\x80\x9b\x9d\u202e\u2066"


def _shown(text: str) -> str:
    """The oracle: each control as \\xNN or \\uNNNN, then tabs to the next multiple of 4 of what is printed."""
    out = ""
    for ch in text:
        if ch == "\t":
            out += " " * (4 - len(out) % 4)
        elif ch in CONTROLS:
            out += f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}"
        else:
            out += ch
    return out


def test_printable_escapes_controls_and_keeps_the_rest():
    assert printable("a\x1b[31mb\x9b\x7f\u202ec\x00") == "a\\x1b[31mb\\x9b\\x7f\\u202ec\\x00"
    assert printable("tab\tnew\nline é 中 ✓") == "tab\tnew\nline é 中 ✓"


@given(st.text(alphabet="ab =(\t" + CONTROLS, max_size=40), st.data())
def test_carets_stay_under_their_text(line, data):
    """Whatever controls and tabs a line holds, the rendering holds none, and the caret starts
    where the span's text starts in the printed line."""
    assume(len(_shown(line)) <= 90)   # longer printed lines are cropped around the caret
    start = data.draw(st.integers(0, len(line)))
    end = data.draw(st.integers(start, len(line)))
    file = SourceFile("f\x1b.dl", line + "\n")
    out = Diagnostic("E0101", "bad \x1b[2J", Span(file, start, end), label="here\x07").render()
    assert not any(ch in CONTROLS or ch == "\t" for ch in out.replace("\n", ""))
    head, _, source, caret = out.split("\n")[:4]
    assert head.startswith("f\\x1b.dl:1:") and head.endswith("bad \\x1b[2J")
    shown = line[:-1] if line.endswith("\r") else line   # a CRLF line end: the CR is not shown
    assert source.rstrip() == f"1 | {_shown(shown)}".rstrip()
    assert caret.index("^") - len("  | ") == len(_shown(shown[:start]))
    assert caret.endswith("here\\x07")


def test_a_crlf_line_end_is_not_shown():
    file = SourceFile("f.dl", "model M {\r\n  Linar(3)\r\n}\r\n")
    out = Diagnostic("E0202", "m", Span(file, 13, 18)).render()
    assert out.split("\n")[2] == "2 |   Linar(3)"


def test_file_names_print_escaped(tmp_path):
    from click.testing import CliRunner

    from dslc.cli import main
    evil = tmp_path / "e\x1b]0;pwned\x07.dl"
    evil.write_text(SPEC)
    r = CliRunner().invoke(main, ["check", str(evil)])
    assert r.exit_code == 0 and "\x1b" not in r.stdout and "\x07" not in r.stdout
    assert "e\\x1b]0;pwned\\x07.dl" in r.stdout
    evil.write_text(SPEC.replace("Linear", "Linar"))
    r = CliRunner().invoke(main, ["check", str(evil)])
    assert r.exit_code == 1 and "\x1b" not in r.stderr and "e\\x1b]0;pwned\\x07.dl:3:5" in r.stderr


# ---------------------------------------------------------------------- what is read as source

def _check(*paths):
    from click.testing import CliRunner

    from dslc.cli import main
    return CliRunner().invoke(main, ["check", *map(str, paths)])


def test_a_non_dl_import_is_refused_unread(tmp_path, monkeypatch):
    """`import "secret.txt"` is E0205 naming the rule; the file is never opened, so none of it is shown."""
    from dslc.frontend import loader
    secret = tmp_path / "secret.txt"
    secret.write_text("TOPSECRET = 1\n")
    spec = tmp_path / "m.dl"
    spec.write_text(f'import "secret.txt"\nimport "{secret}"\n' + SPEC)
    opened = []
    real = loader._read_capped
    monkeypatch.setattr(loader, "_read_capped", lambda path, limit: opened.append(path) or real(path, limit))
    r = _check(spec)
    assert r.exit_code == 1 and r.stderr.count("error[E0205]") == 2
    assert "imports must be `.dl` files" in r.stderr and "TOPSECRET" not in r.output
    assert opened == [str(spec)]


@pytest.mark.parametrize("kind", ["fifo", "device", "directory"])
def test_an_import_that_is_not_a_regular_file_is_refused(tmp_path, kind):
    other = tmp_path / "other.dl"
    if kind == "fifo":
        os.mkfifo(other)   # opening it to read would wait for a writer forever
    elif kind == "device":
        other.symlink_to("/dev/zero")   # reading it would never end
    else:
        other.mkdir()
    spec = tmp_path / "m.dl"
    spec.write_text('import "other.dl"\n' + SPEC)
    r = _check(spec)
    assert r.exit_code == 1 and "error[E0205]: cannot import 'other.dl': not a regular file" in r.stderr


def test_a_huge_source_is_e0704_without_reading_it(tmp_path):
    """A 17 MiB file (sparse: no disk used) as the root file or as an import: refused by its size,
    with no more than a little memory used (reading it would take 17 MiB)."""
    import tracemalloc

    from dslc.diagnostics import DslcError
    from dslc.frontend import loader
    huge = tmp_path / "huge.dl"
    with open(huge, "wb") as f:
        f.truncate(loader.MAX_SOURCE_BYTES + 1)
    tracemalloc.start()
    try:
        with pytest.raises(DslcError) as e:
            loader.read_source(str(huge), "huge.dl")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20
    assert e.value.render().startswith("huge.dl: error[E0704]: huge.dl is larger than 2 MiB")
    spec = tmp_path / "m.dl"
    spec.write_text('import "huge.dl"\n' + SPEC)
    r = _check(spec)
    assert r.exit_code == 1 and "m.dl:1:8: error[E0704]" in r.stderr and "imported here" in r.stderr


def test_dev_zero_and_an_endless_pipe_are_refused_with_a_cap(tmp_path):
    """Reading stops after the cap: /dev/zero and a pipe fed without end are E0704, quickly."""
    r = subprocess.run([DSLC, "check", "/dev/zero"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "error[E0704]: /dev/zero is larger than 2 MiB" in r.stderr
    r = subprocess.run(f"yes 'model M' | {DSLC} check /dev/stdin", shell=True, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 1 and "error[E0704]" in r.stderr and "Traceback" not in r.stderr


def test_a_fifo_without_a_writer_does_not_hang(tmp_path):
    fifo = tmp_path / "spec.dl"
    os.mkfifo(fifo)
    r = subprocess.run([DSLC, "check", str(fifo)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip().endswith("nothing to check")


def test_a_pipe_is_read_as_source():
    r = subprocess.run(f"{DSLC} check /dev/stdin", shell=True, input=SPEC, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "ok: /dev/stdin: 1 model", r.stderr


def test_an_interrupted_atomic_write_keeps_the_old_file_and_leaves_nothing(tmp_path):
    """files.atomic_write, under checkpoints, metrics, data caches and figures: a writer that fails
    half-way leaves the previous content and no temporary file."""
    from dslc.files import atomic_write
    path = tmp_path / "metrics.jsonl"
    atomic_write(str(path), b"old\n")

    def half_then_fail(f):
        f.write(b"new, but only h")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(str(path), half_then_fail)
    assert path.read_bytes() == b"old\n" and os.listdir(tmp_path) == ["metrics.jsonl"]
    atomic_write(str(path), lambda f: f.write(b"new\n"))
    assert path.read_bytes() == b"new\n" and os.listdir(tmp_path) == ["metrics.jsonl"]
