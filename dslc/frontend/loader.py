"""Files -> parsed modules -> one table of declarations.

Imports are relative to the importing file. A missing file, a cycle, a
declaration name used twice and every syntax error of every file are
reported together.
"""
from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, field
from typing import Callable

from ..diagnostics import Diagnostic, DslcError, Label, Reporter, SourceFile
from ..ir.limits import MAX_NESTING, MAX_SOURCE_BYTES, MAX_UNIT_CHARS
from . import ast
from .parser import decode, parse


@dataclass
class Unit:
    """A root file with everything it imports."""
    root: SourceFile
    modules: list[ast.Module] = field(default_factory=list)
    decls: dict[str, object] = field(default_factory=dict)  # name -> decl, in source order
    chars: int = 0  # of every file read, bounded by MAX_UNIT_CHARS

    def of_kind(self, kind: str) -> list:
        return [d for d in self.decls.values() if getattr(d, "kind", None) == kind]

    @property
    def models(self) -> list[str]:
        return [d.name for d in self.of_kind("model")]

    @property
    def plans(self) -> list[str]:
        return [d.name for d in self.of_kind("train")]


def display_name(path: str) -> str:
    """How a path is shown in messages: relative to the working directory when inside it."""
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel




def read_source(path: str, name: str | None = None) -> SourceFile:
    """A source file's text, read with a cap: /dev/zero or an endless pipe is refused, not read to the end."""
    name = name or display_name(path)
    try:
        data = _read_capped(path, MAX_SOURCE_BYTES)
    except FileNotFoundError:
        raise DslcError(Diagnostic("E0901", f"no such file: {name}", file_name=name)) from None
    except IsADirectoryError:
        raise DslcError(Diagnostic("E0901", f"{name} is a directory, not a `.dl` file", file_name=name)) from None
    except OSError as e:
        raise DslcError(Diagnostic("E0901", f"cannot read {name}: {e.strerror}", file_name=name)) from None
    if data is None:
        raise DslcError(Diagnostic("E0704", f"{name} is larger than {MAX_SOURCE_BYTES >> 20} MiB", file_name=name,
                                   help="is this the right file? A larger spec can be split into files joined "
                                        "with `import`"))
    return SourceFile(name, decode(data, name))


def _read_capped(path: str, limit: int) -> bytes | None:
    """The file's bytes, or None when it has more than `limit` of them (found without reading them all).

    Opened without blocking, so a FIFO with no writer reads as empty instead of hanging the open."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
        if stat.S_ISREG(st.st_mode) and st.st_size > limit:
            return None
        if not stat.S_ISREG(st.st_mode):
            os.set_blocking(fd, True)  # a pipe with a writer: wait for its data as a plain read would
        data = f.read(limit + 1)
    return data if len(data) <= limit else None


@dataclass
class Reading:
    """How a unit's files are read and parsed. The defaults read the disk; the language server
    gives the unsaved text of the documents open in the editor (`open_text`: absolute path ->
    text, or None to read the file) and a parse that reuses the module of a text it has seen.
    `paths` records the absolute path of each file read (SourceFile -> path)."""
    open_text: Callable[[str], str | None] = lambda path: None
    parse: Callable[[SourceFile], ast.Module] | None = None   # None: this module's `parse`
    paths: dict = field(default_factory=dict)


def load_unit(path: str) -> Unit:
    root = read_source(path)
    return load_text(root, os.path.abspath(path))


def load_text(root: SourceFile, abspath: str, reading: Reading | None = None) -> Unit:
    unit, reporter = load_partly(root, abspath, reading)
    reporter.raise_if_errors()
    return unit


def load_partly(root: SourceFile, abspath: str, reading: Reading | None = None) -> tuple[Unit, Reporter]:
    """The unit as far as it loads (a file that does not parse is left out), and what was reported."""
    reporter = Reporter()
    unit = Unit(root)
    _load(root, abspath, unit, reporter, stack=[], done=set(), reading=reading or Reading())
    _collect(unit, reporter)
    return unit, reporter


def _load(file: SourceFile, abspath: str, unit: Unit, reporter: Reporter, stack: list, done: set,
          reading: Reading) -> None:
    done.add(abspath)
    reading.paths[file] = abspath
    unit.chars += len(file.text)
    try:
        module = (reading.parse or parse)(file)
    except DslcError as e:
        reporter.extend(e.diagnostics)
        return
    stack.append(abspath)
    for decl in module.decls:
        if isinstance(decl, ast.Import):
            _import(decl, abspath, unit, reporter, stack, done, reading)
    stack.pop()
    unit.modules.append(module)


def _import(decl: ast.Import, importer: str, unit: Unit, reporter: Reporter, stack: list, done: set,
            reading: Reading) -> None:
    if not decl.path.endswith(".dl"):
        # Checked before the file is touched: `import "/etc/passwd"` must not read it, nor echo a
        # line of it in a syntax error.
        reporter.error("E0205", f"cannot import {decl.path!r}: imports must be `.dl` files", decl.path_span,
                       label="not a `.dl` file", help="import the `.dl` file that declares what you need")
        return
    target = os.path.normpath(os.path.join(os.path.dirname(importer), decl.path))
    if target in stack:
        chain = " -> ".join(display_name(p) for p in stack[stack.index(target):] + [target])
        reporter.error("E0206", "circular import", decl.path_span, label="this import closes a cycle",
                       notes=(f"the cycle: {chain}",))
        return
    if target in done:
        return
    if len(stack) >= MAX_NESTING:
        reporter.error("E0705", f"imports nest more than {MAX_NESTING} deep", decl.path_span,
                       label=f"an import inside {len(stack)} others",
                       help="import the files you need from fewer levels")
        return
    if unit.chars > MAX_UNIT_CHARS:
        reporter.error("E0704", f"the imported files hold more than {MAX_UNIT_CHARS >> 20} MiB of text",
                       decl.path_span, label="not read")
        return
    if reading.open_text(target) is None and not os.path.isfile(target):
        # A FIFO or a device is no source file: reading one could hang or never end.
        why = "not a regular file" if os.path.exists(target) else "no such file"
        reporter.error("E0205", f"cannot import {decl.path!r}: {why}", decl.path_span,
                       label=f"looked for {display_name(target)}",
                       help="import paths are relative to the importing file")
        return
    try:
        file = _read_import(target, reading)
    except DslcError as e:
        for d in e.diagnostics:
            reporter.error(d.code, d.message, decl.path_span, label="imported here", help=d.help)
        return
    _load(file, target, unit, reporter, stack, done, reading)


def _read_import(target: str, reading: Reading) -> SourceFile:
    text = reading.open_text(target)
    return read_source(target) if text is None else SourceFile(display_name(target), text)


def _collect(unit: Unit, reporter: Reporter) -> None:
    for module in unit.modules:
        for decl in module.decls:
            if isinstance(decl, ast.Import):
                continue
            first = unit.decls.get(decl.name)
            if first is not None:
                reporter.error("E0204", f"`{decl.name}` is defined twice", decl.name_span,
                               label=f"second {decl.kind} named `{decl.name}`",
                               labels=(Label(first.name_span, f"first defined here as a {first.kind}"),))
                continue
            unit.decls[decl.name] = decl
