"""How long the generated PyTorch of a zoo model is, next to its hand-written twin.

Both sides are counted by one rule (docs/codegen.md states it too):

- **Code lines only.** Blank lines, comment-only lines and docstrings (of the module,
  a class or a function) do not count; a line with code and a trailing comment does,
  and so does every line of a statement that spans several.
- **What the model uses, transitively.** A definition is a top-level class, function
  or constant (`NAME = ...`). Counted are the root's definition and every definition
  of the same files that it names, and that those name, and so on. Names are read
  with `symtable`, so a local or a parameter that happens to share a definition's
  name is not followed, and an attribute (`nn.Linear`) is not a name.
- **The generated side.** The root is the model's class in the file that
  `dslc compile` writes for the spec (one compile of all the file's models, at
  -O0, the default). Its header, imports, `MODELS` table and `build` function are
  not definitions the model uses, so they do not count.
- **The twin's side.** The root is the case's twin: its class or function in
  tests/. A twin written as a factory (`lambda: ResNetTwin(Bottleneck, [3, 4, 6, 3])`)
  counts what it names (`ResNetTwin`, `Bottleneck`), not its own line. Names are
  followed across the test modules (an imported `CifarResNet18Twin` counts where it
  is defined); torch's classes and anything else outside tests/ do not count.

    from codegen_size import compile_zoo, measure
    sources = compile_zoo(cases)        # case id -> generated source, one compile per spec file
    size = measure(case, sources[case.id])
    size.generated, size.twin, size.ratio
"""
from __future__ import annotations

import ast
import dis
import functools
import inspect
import io
import os
import symtable
import sys
import tokenize
import types
from dataclasses import dataclass

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.join(ROOT, "tests")
SPECS = os.path.join(ROOT, "specs")


# ---------------------------------------------------------------- one file's definitions


@dataclass(frozen=True)
class Definition:
    name: str
    start: int          # first line (a decorator's), 1-based
    end: int            # last line
    text: str           # the source, as written (docstrings and comments included)
    lines: int          # its code lines
    uses: frozenset     # the global names it reads


class Source:
    """A Python file's top-level definitions; `namespace` (a test module's) lets names imported
    from another test module be followed there."""

    def __init__(self, text: str, label: str, namespace: dict | None = None):
        self.text, self.label, self.namespace = text, label, namespace
        tree = ast.parse(text)
        rows = code_rows(text, tree)
        lines = text.splitlines()
        self.defs: dict[str, Definition] = {}
        for node in tree.body:
            names = defined_names(node)
            if not names:
                continue
            start = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
            body = "\n".join(lines[start - 1:node.end_lineno])
            found = Definition(names[0], start, node.end_lineno, body,
                               sum(1 for r in rows if start <= r <= node.end_lineno),
                               frozenset(global_names(body)) - set(names))
            for name in names:
                self.defs[name] = found


def defined_names(node: ast.stmt) -> list[str]:
    """The names a top-level statement defines: a class, a function, or constants."""
    if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
        return [node.name]
    targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
    names = []
    for target in targets:
        elts = target.elts if isinstance(target, ast.Tuple) else [target]
        names += [t.id for t in elts if isinstance(t, ast.Name)]
    return names


def code_rows(text: str, tree: ast.Module) -> set[int]:
    """The line numbers that hold code: touched by a token other than a comment or layout,
    outside every docstring."""
    layout = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER}
    rows = set()
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type not in layout:
            rows.update(range(tok.start[0], tok.end[0] + 1))
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
                    and isinstance(first.value.value, str):
                rows.difference_update(range(first.lineno, first.end_lineno + 1))
    return rows


def global_names(text: str) -> set[str]:
    """The global names that code reads, in every scope inside it."""
    def walk(table: symtable.SymbolTable):
        for sym in table.get_symbols():
            if sym.is_referenced() and sym.is_global():
                yield sym.get_name()
        for child in table.get_children():
            yield from walk(child)
    return set(walk(symtable.symtable(text, "<definition>", "exec")))


# ---------------------------------------------------------------- following names


@dataclass(frozen=True)
class Code:
    """The definitions one side counts, in reading order, and their code lines."""
    parts: tuple            # Definition, ...
    files: tuple            # the Sources they come from

    @property
    def lines(self) -> int:
        return sum(d.lines for d in self.parts)

    @property
    def text(self) -> str:
        return "\n\n\n".join(d.text for d in self.parts) + "\n"

    @property
    def names(self) -> list[str]:
        return [d.name for d in self.parts]


def closure(roots: list[tuple[Source, str]]) -> Code:
    """Every definition the roots use, transitively; ordered by file (first reached first), then line."""
    seen: dict[tuple[int, str], tuple[Source, Definition]] = {}
    files: list[Source] = []
    todo = list(roots)
    while todo:
        src, name = todo.pop()
        found = src.defs[name]
        if (id(src), found.name) in seen:
            continue
        seen[id(src), found.name] = src, found
        if src not in files:
            files.append(src)
        todo += [hit for use in sorted(found.uses) if (hit := resolve(src, use)) is not None]
    parts = sorted(seen.values(), key=lambda p: (files.index(p[0]), p[1].start))
    return Code(tuple(d for _, d in parts), tuple(files))


def resolve(src: Source, name: str) -> tuple[Source, str] | None:
    """Where a name read in `src` is defined among the counted files, or None (torch, the standard library)."""
    if name in src.defs:
        return src, name
    obj = (src.namespace or {}).get(name)
    return defined_in_tests(obj)


def defined_in_tests(obj) -> tuple[Source, str] | None:
    """A class or function defined at the top level of a test module: its file and name."""
    if not (inspect.isclass(obj) or inspect.isfunction(obj)):
        return None
    module = sys.modules.get(obj.__module__)
    src = test_module_source(module) if module is not None else None
    if src is None or obj.__name__ != obj.__qualname__ or obj.__name__ not in src.defs:
        return None
    return src, obj.__name__


def test_module_source(module: types.ModuleType) -> Source | None:
    path = getattr(module, "__file__", None)
    if not path or os.path.dirname(os.path.realpath(path)) != os.path.realpath(TESTS):
        return None
    return _read_module(os.path.realpath(path), module.__name__)


@functools.lru_cache(maxsize=None)
def _read_module(path: str, name: str) -> Source:
    with open(path, encoding="utf-8") as f:
        return Source(f.read(), os.path.relpath(path, ROOT), vars(sys.modules[name]))


# ---------------------------------------------------------------- the two sides


def twin_code(twin) -> Code:
    """The twin's class or function and what it uses; a factory (a lambda) counts what it names."""
    top = defined_in_tests(twin)
    if top is not None:
        return closure([top])
    if not inspect.isfunction(twin):
        raise TypeError(f"cannot measure a twin of type {type(twin).__name__}")
    roots = [hit for name in code_globals(twin.__code__) if (hit := defined_in_tests(twin.__globals__.get(name)))]
    if not roots:
        raise LookupError(f"the twin {twin!r} names no class or function of tests/")
    return closure(roots)


def code_globals(code: types.CodeType) -> list[str]:
    """The global names a compiled function (a lambda) reads, nested functions included: the compiled
    code, as a lambda's source is the middle of a line."""
    names = [i.argval for i in dis.get_instructions(code) if i.opname in ("LOAD_GLOBAL", "LOAD_NAME")]
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names += code_globals(const)
    return list(dict.fromkeys(names))


def generated_code(source: str, model: str) -> Code:
    """The model's class in a generated file and what it uses."""
    src = _generated(source)
    name = model_classes(source).get(model, model)
    if name not in src.defs:
        raise LookupError(f"no class {name} for the model {model} in the generated file")
    return closure([(src, name)])


@functools.lru_cache(maxsize=64)
def _generated(source: str) -> Source:
    return Source(source, "<generated>")


def model_classes(source: str) -> dict[str, str]:
    """The generated file's MODELS table, model name -> class name (a model called `float` has the class `float_`)."""
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["MODELS"] \
                and isinstance(node.value, ast.Dict):
            return {k.value: v.id for k, v in zip(node.value.keys, node.value.values)
                    if isinstance(k, ast.Constant) and isinstance(v, ast.Name)}
    return {}


def compile_zoo(cases) -> dict[str, str]:
    """case id -> the generated file holding its model: one compile per spec file for the models that
    build as declared, and one per model that needs parameters (compiled at the case's)."""
    import dslc
    by_file: dict[str, list] = {}
    for case in cases:
        by_file.setdefault(case.file, []).append(case)
    out = {}
    for file, group in by_file.items():
        prog = dslc.load(os.path.join(SPECS, file))
        plain = [c for c in group if not c.params]
        if plain:
            shared = prog.source(list(dict.fromkeys(c.model for c in plain)))
            out.update((c.id, shared) for c in plain)
        for case in group:
            if case.params:
                out[case.id] = prog.source([case.model], params=case.params)
    return out


@dataclass(frozen=True)
class Size:
    file: str
    model: str
    generated: int
    twin: int

    @property
    def ratio(self) -> float:
        return self.generated / self.twin


def measure(case, source: str) -> Size:
    """One zoo case's generated and twin code lines (`source`: the generated file that holds it)."""
    twin = twin_code(case.twin).lines
    if not twin:
        raise LookupError(f"{case.id}: the twin has no code lines")
    return Size(case.file, case.model, generated_code(source, case.model).lines, twin)


def zoo_cases() -> list:
    """tests/test_specs.py's CASES: every zoo model with its twin (tests/ joins the import path)."""
    if TESTS not in sys.path:
        sys.path.insert(0, TESTS)
    import test_specs
    return test_specs.CASES
