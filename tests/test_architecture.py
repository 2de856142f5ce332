"""The code's structure, checked: import-linter's contracts (pyproject.toml: the layers, who may
import torch and click, no circles inside a package) and ruff's lint rules.

Each check also runs on a copy of the package with one wrong-way import planted, so a
configuration that checks nothing would fail here."""
from __future__ import annotations

import os
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
    ("dslc/frontend/context.py", "def _late():\n    from .evaluate import Evaluator\n    return Evaluator\n",
     "do not import each other in a circle BROKEN"),
    ("dslc/backends/diagram.py", "def _late():\n    import torch\n    return torch\n",
     "imports torch (check, compile and render start without\nit) BROKEN"),
])
def test_a_planted_wrong_import_is_caught(copy, module, planted, contract):
    with open(copy / module, "a") as f:
        f.write("\n\n" + planted)
    r = lint_imports(str(copy))
    assert r.returncode != 0 and contract in r.stdout, r.stdout[-3000:]


def test_ruff_passes():
    r = ruff(ROOT, "dslc", "tests", "tools", "bench")
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]


def test_ruff_catches_an_undefined_name(copy):
    # the kind of slip ruff found while the layers were straightened: a name moved, one use left
    with open(copy / "dslc/ops/cost.py", "a") as f:
        f.write("\n\ndef _late():\n    return block_input_type\n")
    r = ruff(str(copy), "dslc")
    assert r.returncode != 0 and "F821" in r.stdout, r.stdout
