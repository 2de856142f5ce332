"""The language server's incremental check: after every edit, the diagnostics it computes from
what it kept (declarations parsed piece by piece, models known clean not evaluated again) are
exactly those of a fresh full check of the same text (`dslc.api.load`, what `dslc check` runs);
and an edit inside one model evaluates that model only."""
from __future__ import annotations

import glob
import os
import random

import pytest

from dslc.api import load
from dslc.diagnostics import DslcError, SourceFile
from dslc.frontend.parser import parse
from dslc.frontend.reparse import Reparser
from dslc.lsp.analysis import Checker

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SPEC = """\
# blocks that models share, models with and without defaults, a loss and a plan
block Mlp(dim: int, hidden: int = 4 * dim, p: float = 0.1) {
    input x
    h = x -> LayerNorm() -> Linear(hidden) -> GELU() -> Dropout(p) -> Linear(dim)
    output x + h
}

block ConvUnit(out: int, k: int = 3, stride: int = 1) {
    Conv2d(out, k, stride=stride, padding=k // 2, bias=false)
    BatchNorm2d()
    ReLU()
}

block Stage(out: int, n: int = 2) {
    input x
    h = x -> ConvUnit(out, stride=2)
    for i in range(n) {
        h = h -> ConvUnit(out)
    }
    output h
}

model Small(dim: int = 32, classes: int = 10) {
    input x: [B, 3, 32, 32]
    h = x -> Stage(dim) -> AdaptiveAvgPool2d(1) -> flatten(start_dim=1)
    v = h -> Mlp(dim) -> Linear(classes)
    output v
}

model Wide(dim: int = 64, classes: int = 5) {
    input x: [B, 3, 32, 32]
    h = x -> ConvUnit(dim // 2) -> Stage(dim, n=3)
    v = h -> AdaptiveAvgPool2d(1) -> flatten(start_dim=1) -> Mlp(dim, p=0.2)
    output v -> Linear(classes)
}

model Plain(width: int = 48) {
    input x: [B, 1, 8, 8]
    Flatten()
    Linear(width)
    ReLU()
    Dropout(0.1)
    Linear(width)
    Mlp(width)
    Linear(3)
}

model Open(dim: int, classes: int) {
    input x: [B, dim]
    Mlp(dim)
    Linear(classes)
}

loss smooth = cross_entropy(out, batch.y, label_smoothing=0.1)

train fit {
    model      = Plain(width=32)
    data       = digits(val=0.15, test=0.15)
    loss       = smooth
    optimizer  = AdamW(lr=1e-3)
    epochs     = 2
    batch_size = 32
}
"""

# Lines an edit may insert: fine ones, and ones with a type error, an unknown name, a shape
# mismatch or a syntax error.
INSERTS = [
    "    h = h -> ReLU()",
    "    Linear(\"wide\")",
    "    h = h -> Linearr(8)",
    "    h = h -> Conv2d(16, 3)",
    "    v = v -> Linear(7",
    "    x = x -> Mlp(dim, p=0.5)",
    "    Dropout(p=2)",
    "block Extra(n: int = 3) {\n    Linear(n)\n}",
]


def _full(path: str) -> list[tuple]:
    """What `dslc check` reports for the file as it is on disk."""
    try:
        diagnostics = load(path).warnings
    except DslcError as e:
        diagnostics = e.diagnostics
    return sorted(_facts(d) for d in diagnostics)


def _facts(d) -> tuple:
    span = (d.span.file.name, d.span.start, d.span.end) if d.span is not None else None
    labels = tuple((lb.span.start, lb.span.end, lb.text) for lb in d.labels)
    return (d.code, d.severity, d.message, span, d.label, labels, tuple(d.notes), d.help)


def _edit(rng: random.Random, text: str, history: list[str]) -> str:
    lines = text.split("\n")
    kind = rng.choice(["delete", "insert", "copy", "rename", "retype", "revert", "typo"])
    i = rng.randrange(len(lines))
    if kind == "delete":
        del lines[i]
    elif kind == "insert":
        lines.insert(i, rng.choice(INSERTS))
    elif kind == "copy":
        lines.insert(i, lines[rng.randrange(len(lines))])
    elif kind == "rename":   # the declaration only, or every use as well
        old = rng.choice(["Mlp", "ConvUnit", "Stage", "Plain"])
        new = old + rng.choice(["2", "X"])
        return text.replace(f"block {old}(", f"block {new}(") if rng.random() < 0.5 else text.replace(old, new)
    elif kind == "retype":   # a type error in one declaration
        return text.replace(rng.choice(["Linear(classes)", "Linear(width)", "ConvUnit(out)"]), "Linear(\"x\")", 1)
    elif kind == "typo":
        return text.replace(rng.choice(["GELU()", "ReLU()", "BatchNorm2d()"]), "Gelu()", 1)
    else:   # fix: back to the first text, or to an earlier one
        return SPEC if rng.random() < 0.5 else rng.choice(history)
    return "\n".join(lines)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_edits_give_what_a_full_check_gives(tmp_path, seed):
    path = str(tmp_path / "spec.dl")
    checker, rng, text, history = Checker(), random.Random(seed), SPEC, [SPEC]
    skipped = 0
    for step in range(40):
        with open(path, "w") as f:
            f.write(text)
        checker.open[path] = text
        analysis = checker.check(path, text)
        assert sorted(_facts(d) for d in analysis.diagnostics) == _full(path), (seed, step, text)
        skipped += len(analysis.skipped)
        history.append(text)
        text = _edit(rng, text, history)
    assert skipped > 0   # the cache was used, not only filled


def test_an_edit_inside_one_model_evaluates_that_model_only(tmp_path):
    path = str(tmp_path / "spec.dl")
    checker = Checker()
    assert checker.check(path, SPEC).skipped == []
    edited = SPEC.replace("Linear(3)", "Linear(4)")
    analysis = checker.check(path, edited)
    assert analysis.diagnostics == []
    assert sorted(analysis.skipped) == ["Small", "Wide"]   # Plain changed; Open has no defaults
    assert set(analysis.graphs) == {"Plain"}
    # a hover's shapes: the skipped models are evaluated when asked, as a full check would
    analysis.finish()
    assert set(analysis.graphs) == {"Small", "Wide", "Plain"} and not analysis.partial
    assert analysis.graphs["Wide"].outputs   # a whole graph, not a partial one
    # an edit in a block its models share evaluates them again
    assert checker.check(path, edited.replace("GELU()", "ReLU()")).skipped == []


def test_a_model_with_a_problem_is_evaluated_again(tmp_path):
    path = str(tmp_path / "spec.dl")
    checker = Checker()
    broken = SPEC.replace("Linear(width)\n    Mlp", "Linear(\"w\")\n    Mlp")
    first = checker.check(path, broken)
    assert [d.code for d in first.diagnostics if d.severity == "error"]
    again = checker.check(path, broken.replace("# blocks", "# the blocks"))
    assert "Plain" not in again.skipped
    assert [d.code for d in again.diagnostics] == [d.code for d in first.diagnostics]


def test_piecewise_parse_equals_a_whole_parse():
    """Every spec of the repository, and the same after an edit that moves all but the first
    declaration: the trees are equal (spans included) to a fresh parse's."""
    reparser = Reparser()
    paths = sorted(glob.glob(os.path.join(ROOT, "specs", "*.dl")) + glob.glob(os.path.join(ROOT, "examples", "**", "*.dl"),
                                                                               recursive=True))
    assert len(paths) > 10
    for path in paths:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        for version in (text, "# moved\n" + text):
            file = SourceFile(path, version)
            assert reparser.parse(file) == parse(file), path


def test_piecewise_parse_of_a_broken_text_reports_what_parse_reports():
    reparser = Reparser()
    reparser.parse(SourceFile("a.dl", SPEC))
    broken = SPEC.replace("Linear(width)\n", "Linear(width\n", 1).replace("ReLU()\n}", "ReLU(\n}", 1)
    with pytest.raises(DslcError) as ours:
        reparser.parse(SourceFile("a.dl", broken))
    with pytest.raises(DslcError) as theirs:
        parse(SourceFile("a.dl", broken))
    assert [_facts(d) for d in ours.value.diagnostics] == [_facts(d) for d in theirs.value.diagnostics]
    assert len(ours.value.diagnostics) >= 2
