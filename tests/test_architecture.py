"""The code's structure, checked: import-linter's contracts (pyproject.toml: the layers, who may
import torch and click, no circles inside a package) and ruff's lint rules.

Each check also runs on a copy of the package with one wrong-way import planted, so a
configuration that checks nothing would fail here."""
from __future__ import annotations

import ast
import functools
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)


def lint_imports(root: str) -> subprocess.CompletedProcess:
    # cwd decides which pyproject.toml is read and which `dslc` package is analysed
    env = {**os.environ, "PYTHONPATH": root}
    return subprocess.run([os.path.join(BIN, "lint-imports"), "--no-cache"], cwd=root, env=env,
                          capture_output=True, text=True)


def ruff(root: str, *paths: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", *paths], cwd=root,
                          capture_output=True, text=True)


def test_import_contracts_are_kept():
    r = lint_imports(ROOT)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert "4 kept, 0 broken" in r.stdout


@pytest.fixture
def copy(tmp_path):
    """The package and pyproject.toml, copied: a place to plant a wrong import."""
    shutil.copytree(os.path.join(ROOT, "dslc"), tmp_path / "dslc", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(os.path.join(ROOT, "pyproject.toml"), tmp_path / "pyproject.toml")
    return tmp_path


@pytest.mark.parametrize("module, planted, contract", [
    # an op reaching into a backend, inside a function as the old code did
    ("dslc/ops/cost.py", "def _late():\n    from ..backends import summary\n    return summary\n",
     "Each layer imports only the layers below it BROKEN"),
    ("dslc/frontend/context.py", "def _late():\n    from .evaluator import Evaluator\n    return Evaluator\n",
     "do not import each other in a circle BROKEN"),
    ("dslc/backends/diagram.py", "def _late():\n    import torch\n    return torch\n",
     "imports torch (check, compile and render start without\nit) BROKEN"),
])
def test_a_planted_wrong_import_is_caught(copy, module, planted, contract):
    with open(copy / module, "a") as f:
        f.write("\n\n" + planted)
    r = lint_imports(str(copy))
    assert r.returncode != 0 and contract in r.stdout, r.stdout[-3000:]


# The entry points import per command or method (their docstrings say so); elsewhere an import of
# our own modules inside a function hides an arrow from import-linter's reader and from the reader
# of the module's head, so it is allowed only with a comment that says it is for start-up time.
ENTRY_POINTS = {"dslc/cli.py", "dslc/api.py", "dslc/__init__.py"}


@functools.lru_cache(maxsize=None)
def _tree(text: str) -> ast.Module:
    """A module's syntax tree. Parsing the package takes seconds; a copy with one file changed parses
    only that file again (the checks below only read the trees)."""
    return ast.parse(text)


@pytest.fixture(scope="module", autouse=True)
def _forget_trees():
    yield
    _tree.cache_clear()


def lazy_own_imports(root: str) -> list[str]:
    found = []
    for path in sorted(pathlib.Path(root, "dslc").rglob("*.py")):
        name = path.relative_to(root).as_posix()
        if name in ENTRY_POINTS:
            continue
        lines = path.read_text(encoding="utf-8").splitlines()
        for fn in ast.walk(_tree("\n".join(lines))):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(fn):
                    if isinstance(node, ast.ImportFrom) and node.level > 0 \
                            and "start-up" not in lines[node.lineno - 1]:
                        found.append(f"{name}:{node.lineno}: {lines[node.lineno - 1].strip()}")
    return found


def test_own_modules_are_imported_at_the_top_of_a_module(copy):
    assert lazy_own_imports(ROOT) == []
    # and a hidden import of our own is found (one test: the copy reuses the package's parsed trees)
    with open(copy / "dslc/ops/cost.py", "a") as f:
        f.write("\n\ndef _late():\n    from .registry import REGISTRY\n    return REGISTRY\n")
    assert [x.split(":")[0] for x in lazy_own_imports(str(copy))] == ["dslc/ops/cost.py"]


MAX_LINES = 40   # a function's lines, its signature and docstring included


def long_functions(root: str) -> list[str]:
    """Functions over MAX_LINES lines without a `# long: <why>` comment in their first lines."""
    found = []
    for path in sorted(pathlib.Path(root, "dslc").rglob("*.py")):
        lines = path.read_text(encoding="utf-8").splitlines()
        for fn in ast.walk(_tree("\n".join(lines))):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)) and fn.end_lineno - fn.lineno >= MAX_LINES:
                head = lines[fn.lineno - 1:fn.lineno + 5]
                if not any(line.strip().startswith("# long:") for line in head):
                    found.append(f"{path.relative_to(root).as_posix()}:{fn.lineno} {fn.name}")
    return found


def test_functions_are_short_or_say_why_not(copy):
    assert long_functions(ROOT) == []
    # and a long function is found (one test: the copy reuses the package's parsed trees)
    body = "".join(f"    x{i} = {i}\n" for i in range(45))
    with open(copy / "dslc/ops/cost.py", "a") as f:
        f.write(f"\n\ndef _long():\n{body}    return x0\n")
    assert long_functions(str(copy)) == [f"dslc/ops/cost.py:{_line_of(copy / 'dslc/ops/cost.py', 'def _long')} _long"]


def _line_of(path, text: str) -> int:
    return next(i for i, line in enumerate(open(path).read().splitlines(), 1) if line.startswith(text))


def test_ruff_passes():
    r = ruff(ROOT, "dslc", "tests", "tools", "bench")
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]


def test_ruff_catches_an_undefined_name(copy):
    # the kind of slip ruff found while the layers were straightened: a name moved, one use left
    with open(copy / "dslc/ops/cost.py", "a") as f:
        f.write("\n\ndef _late():\n    return block_input_type\n")
    r = ruff(str(copy), "dslc")
    assert r.returncode != 0 and "F821" in r.stdout, r.stdout
