"""Golden files: the generated PyTorch and the IR text of every spec, reviewed like code.

Refresh with `pytest tests/test_golden.py --update-goldens`, then read the diff:
a change in emitted code is a change in what users get.
"""
from __future__ import annotations

import glob
import os

import pytest
from conftest import golden
from support import ROOT

import dslc
from dslc.ir.printer import print_graph

GOLDEN = os.path.join(ROOT, "tests", "golden")
SPECS = sorted(glob.glob(os.path.join(ROOT, "specs", "*.dl"))) + [os.path.join(ROOT, "examples", "language.dl")]
IDS = [os.path.relpath(p, ROOT) for p in SPECS]
# Models without defaults are compiled with the values the contract's plans give them.
ARGUMENTS = {"MLP": {"hidden": 256, "classes": 10}}


def _stem(path: str) -> str:
    return os.path.splitext(os.path.relpath(path, ROOT))[0].replace(os.sep, "__")


def _sources(prog) -> list[str]:
    texts = [prog.source()] if prog.buildable else []
    texts += [prog.source([name], **ARGUMENTS[name]) for name in prog.needs_arguments()]
    return texts


@pytest.mark.parametrize("path", SPECS, ids=IDS)
def test_generated_pytorch(path, update_goldens):
    prog = dslc.load(path)
    golden(os.path.join(GOLDEN, _stem(path) + ".py"), "\n\n".join(_sources(prog)), update_goldens)


@pytest.mark.parametrize("path", SPECS, ids=IDS)
def test_ir_text(path, update_goldens):
    prog = dslc.load(path)
    graphs = [prog.graph(name) for name in prog.buildable]
    graphs += [prog.graph(name, **ARGUMENTS[name]) for name in prog.needs_arguments()]
    golden(os.path.join(GOLDEN, _stem(path) + ".ir"), "\n".join(print_graph(g) for g in graphs), update_goldens)


def test_generated_lines_fit_in_120_columns():
    """torchvision's black line-length: signatures, long calls, raises and docstrings wrap (the goldens
    are the generator's output: the test above keeps them so)."""
    long = [f"{os.path.basename(path)}:{n}" for path in sorted(glob.glob(os.path.join(GOLDEN, "*.py")))
            for n, line in enumerate(open(path, encoding="utf-8"), 1) if len(line.rstrip("\n")) > 120]
    assert not long, long
