"""The language server's incremental check: after every edit, the diagnostics it computes from
what it kept (declarations parsed piece by piece, models known clean not evaluated again) are
exactly those of a fresh full check of the same text (`dslc.api.load`, what `dslc check` runs);
and an edit inside one model evaluates that model only."""
from __future__ import annotations

import contextlib
import gc
import glob
import os
import random
import weakref

import pytest

from dslc.api import load
from dslc.diagnostics import DslcError, SourceFile, Span
from dslc.frontend.apply import LayerApplication
from dslc.frontend.loopvars import ast_nodes
from dslc.frontend.parser import parse
from dslc.frontend.plans import PlanChecker
from dslc.frontend.reparse import Reparser
from dslc.ir.values import TensorValue
from dslc.lsp.analysis import Checker
from dslc.lsp.heap import FrozenHeap

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

block Head(classes: int, p: float = 0.2) {
    Linear(classes)
    Dropout(p)
}

model Noisy(width: int = 24) {
    input x: [B, 12]
    Linear(width)
    Mlp(width, p=0.0)
    Head(4)
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
    "# a comment that moves every declaration below it",
    "",
]

MOVES = ["\n", "# moved\n# and again\n", "x"]   # "x": a syntax error above everything

# Edits inside the blocks every model uses: ones that change their shapes or parameters, break
# them (an unknown layer, a shape mismatch, a type error), and put them back.
BLOCK_EDITS = [
    ("Linear(hidden) -> GELU()", "Linear(2 * hidden) -> GELU()"),      # a shape error in Mlp
    ("hidden: int = 4 * dim", "hidden: int = 2 * dim"),                # other shapes, no error
    ("p: float = 0.1", "p: float = 0.3"),
    ("-> Dropout(p) -> Linear(dim)", "-> Dropout(p) -> Linearr(dim)"),  # an unknown layer in Mlp
    ("BatchNorm2d()\n", "BatchNorm2d()\n    Linear(out)\n"),            # a type error in ConvUnit's users
    ("Conv2d(out, k, stride=stride", "Conv2d(out, k, stride=\"two\""),
    ("padding=k // 2", "padding=k"),                                   # other shapes in ConvUnit
    ("    Dropout(p)\n}", "    Dropout(p)\n    ReLU()\n}"),               # Head's warning goes
    ("output x + h", "output h"),
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
    kind = rng.choice(["delete", "insert", "copy", "rename", "retype", "revert", "typo", "block", "block", "move"])
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
    elif kind == "block":   # an edit inside a shared block, or its undoing
        old, new = rng.choice(BLOCK_EDITS)
        return text.replace(new, old, 1) if new in text and rng.random() < 0.6 else text.replace(old, new, 1)
    elif kind == "move":    # lines added or removed above the blocks: every declaration moves
        for prefix in MOVES:
            if text.startswith(prefix) and rng.random() < 0.5:
                return text[len(prefix):]
        return rng.choice(MOVES) + text
    else:   # fix: back to the first text, or to an earlier one
        return SPEC if rng.random() < 0.5 else rng.choice(history)
    return "\n".join(lines)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_edits_give_what_a_full_check_gives(tmp_path, seed):
    path = str(tmp_path / "spec.dl")
    checker, rng, text, history = Checker(), random.Random(seed), SPEC, [SPEC]
    skipped = reused = 0
    for step in range(40):
        with open(path, "w") as f:
            f.write(text)
        checker.open[path] = text
        analysis = checker.check(path, text)
        assert sorted(_facts(d) for d in analysis.diagnostics) == _full(path), (seed, step, text)
        if analysis.unit is not None and step % 4 == 0:   # the shapes hovers show: as a fresh check's
            assert _places(analysis) == _places(Checker().check(path, text)), (seed, step, text)
        skipped += len(analysis.skipped)
        reused += checker._models[path].reused + checker._models[path].resumed
        history.append(text)
        text = _edit(rng, text, history)
    assert skipped > 0 and reused > 0   # the caches were used, not only filled


def _places(analysis) -> dict:
    """Every node and layer of every model's graph (its blocks' included, made or reused) with
    its span and type, and that no span is in a text other than the current one."""
    analysis.finish()
    files = {m.file for m in analysis.unit.modules}
    out: dict = {}

    def walk(graph, into: list) -> None:
        for node in graph.nodes.values():
            if node.span is not None:
                assert node.span.file in files
            into.append((node.kind, node.op.name if node.op is not None else None, str(node.outputs),
                         (node.span.start, node.span.end) if node.span is not None else None))
            for v in node.args.values():
                if isinstance(v, TensorValue) and v.span is not None:
                    assert v.span.file in files
                    into.append(("value", v.span.start, v.span.end))
        for inst in graph.instances.values():
            assert inst.span is None or inst.span.file in files
            into.append((inst.kind, inst.name, (inst.span.start, inst.span.end) if inst.span is not None else None))
            if inst.graph is not None:
                assert inst.graph.decl is None or inst.graph.decl is analysis.unit.decls.get(inst.graph.decl.name)
                walk(inst.graph, into)

    for name, graph in analysis.graphs.items():
        walk(graph, out.setdefault(name, []))
    return out


def test_an_edit_inside_one_model_evaluates_that_model_only(tmp_path):
    path = str(tmp_path / "spec.dl")
    checker = Checker()
    assert checker.check(path, SPEC).skipped == []
    edited = SPEC.replace("Linear(3)", "Linear(4)")
    analysis = checker.check(path, edited)
    assert [d.code for d in analysis.diagnostics] == ["W0401"]   # Noisy's, in Head
    # Plain changed; Noisy has a warning (evaluated every time); Open has no defaults
    assert sorted(analysis.skipped) == ["Small", "Wide"]
    assert set(analysis.graphs) == {"Plain", "Noisy"}
    # a hover's shapes: the skipped models are evaluated when asked, as a full check would
    analysis.finish()
    assert set(analysis.graphs) == {"Small", "Wide", "Plain", "Noisy"} and not analysis.partial
    assert analysis.graphs["Wide"].outputs   # a whole graph, not a partial one
    # an edit in a block its models share evaluates them again
    assert checker.check(path, edited.replace("GELU()", "ReLU()")).skipped == []


def _made(monkeypatch) -> list:
    """The names of the blocks the models' evaluation specializes (makes, not takes from a cache)
    from now on; a plan's check makes its own (it is evaluated every time)."""
    made = []
    real = LayerApplication._specialize

    def counting(self, spec, *args):
        if not isinstance(self, PlanChecker):
            made.append(spec.decl.name)
        return real(self, spec, *args)
    monkeypatch.setattr(LayerApplication, "_specialize", counting)
    return made


def test_an_edit_inside_a_block_makes_that_blocks_specializations_only(tmp_path, monkeypatch):
    """The blocks that did not change are taken from the last check, moved where the edit moved
    them; their users' diagnostics (a warning inside one of them) are where a full check puts them."""
    path = str(tmp_path / "spec.dl")
    checker = Checker()
    checker.check(path, SPEC)
    made, text = _made(monkeypatch), SPEC
    for old, new in [("GELU()", "ReLU()"), ("-> Linear(dim)", "-> Linearr(dim)")]:
        text = text.replace(old, new, 1)
        made.clear()
        analysis = checker.check(path, text)
        # ConvUnit, Stage and Head moved (Mlp's text changed length), not made: taken from the last
        # check, or in the state of a model resumed from before its first use of Mlp
        assert set(made) == {"Mlp"}, made
        assert checker._models[path].reused + checker._models[path].resumed > 0
        with open(path, "w") as f:
            f.write(text)
        assert sorted(_facts(d) for d in analysis.diagnostics) == _full(path)
        assert _places(analysis) == _places(Checker().check(path, text))
    # the typo undone: the text of two checks ago, whose models were clean, is evaluated no more
    made.clear()
    text = text.replace("Linearr(dim)", "Linear(dim)")
    analysis = checker.check(path, text)
    assert made == [] and analysis.diagnostics[0].code == "W0401"   # Noisy's warning: evaluated again
    assert sorted(analysis.skipped) == ["Plain", "Small", "Wide"]
    # a block that reaches an edited one is made again too: Stage uses ConvUnit
    made.clear()
    checker.check(path, text.replace("ReLU()\n}", "ReLU6()\n}", 1))
    assert set(made) == {"ConvUnit", "Stage"}, made


def test_a_plan_takes_its_models_blocks_from_the_last_check(tmp_path, monkeypatch):
    """A plan evaluates its model with the plan's arguments on every check; the blocks that model
    uses are taken from the last check (the plan's own, `Plain(width=32)`'s Mlp), not made again."""
    path = str(tmp_path / "spec.dl")
    checker = Checker()
    checker.check(path, SPEC)
    made, real = [], LayerApplication._specialize

    def counting(self, spec, *args):
        made.append((type(self).__name__, spec.decl.name))
        return real(self, spec, *args)
    monkeypatch.setattr(LayerApplication, "_specialize", counting)
    text = SPEC.replace("epochs     = 2", "epochs     = 3")
    analysis = checker.check(path, text)
    assert made == [] and sorted(analysis.skipped) == ["Plain", "Small", "Wide"]
    with open(path, "w") as f:
        f.write(text)
    assert sorted(_facts(d) for d in analysis.diagnostics) == _full(path)
    # the plan's own arguments changed: its model (applied as a block) and the blocks it uses
    # with them are made, by the plan
    made.clear()
    checker.check(path, text.replace("model      = Plain(width=32)", "model      = Plain(width=40)"))
    assert sorted(made) == [("_Plans", "Mlp"), ("_Plans", "Plain")], made


def test_a_model_with_a_problem_is_evaluated_again(tmp_path):
    path = str(tmp_path / "spec.dl")
    checker = Checker()
    broken = SPEC.replace("Linear(width)\n    Mlp", "Linear(\"w\")\n    Mlp")
    first = checker.check(path, broken)
    assert [d.code for d in first.diagnostics if d.severity == "error"]
    again = checker.check(path, broken.replace("# blocks", "# the blocks"))
    assert "Plain" not in again.skipped
    assert [d.code for d in again.diagnostics] == [d.code for d in first.diagnostics]


def _spans(o, seen: set, out: list) -> None:
    """Every span reachable from `o` (through graphs, nodes, values, guards, containers...),
    not into syntax trees and ops (which are the unit's own)."""
    if id(o) in seen:
        return
    seen.add(id(o))
    if type(o) is Span:
        out.append(o)
    elif type(o) is SourceFile or type(o).__module__ in ("dslc.frontend.ast", "dslc.ops.registry"):
        return
    elif isinstance(o, dict):
        for k, v in o.items():
            _spans(k, seen, out)
            _spans(v, seen, out)
    elif isinstance(o, (list, tuple, set, frozenset)):
        for v in o:
            _spans(v, seen, out)
    elif hasattr(o, "__dict__"):
        for v in vars(o).values():
            _spans(v, seen, out)


def test_moved_specializations_hold_no_span_of_an_older_text():
    """Every spec of the zoo with blocks, checked, then moved a line down with every model evaluated again
    (as after an edit in a block they share): the specializations taken from the first check
    hold only spans of the new text, the ones a fresh check of it has."""
    reused = 0
    for path in sorted(glob.glob(os.path.join(ROOT, "specs", "*.dl"))):
        with open(path, encoding="utf-8") as f:
            text = "# moved\n" + f.read()
        if "\nblock " not in text:
            continue   # nothing to reuse
        checker = Checker()
        checker.check(path, text[len("# moved\n"):])
        checker._models[path].clean = {}
        analysis = checker.check(path, text)
        reused += checker._models[path].reused
        analysis.finish()
        found: list = []
        _spans(analysis.graphs, set(), found)
        files = {m.file for m in analysis.unit.modules}
        assert all(span.file in files for span in found), path
        fresh = Checker().check(path, text)
        fresh.finish()
        theirs: list = []
        _spans(fresh.graphs, set(), theirs)
        assert {(s.file.name, s.start, s.end) for s in found} == {(s.file.name, s.start, s.end) for s in theirs}, path
    assert reused > 50


RESUMING_SPECS = ["alexnet", "autoencoder", "cifar_resnet", "conv_vae", "dcgan", "ddpm", "finetune", "simclr",
                  "style_transfer", "translator", "unet", "vgg"]


def _graph_spans(analysis) -> set:
    """The places of every span in the analysis's graphs, all of them in its own text."""
    analysis.finish()
    found: list = []
    _spans(analysis.graphs, set(), found)
    files = {m.file for m in analysis.unit.modules}
    assert all(span.file in files for span in found)
    return {(s.file.name, s.start, s.end) for s in found}


def test_models_resume_from_before_the_first_statement_an_edit_reaches():
    """Specs of the zoo (the quicker ones whose models resume), edited twice inside their first
    block (the second edit, as the next keystroke, in the same place): the models that use it
    resume from their state before their first use of it, kept by the check before; their
    diagnostics, shapes and spans are a fresh check's."""
    resumed = 0
    for name in RESUMING_SPECS:
        path = os.path.join(ROOT, "specs", name + ".dl")
        with open(path, encoding="utf-8") as f:
            text = f.read()
        start = text.index("\nblock ")
        body = text.index("{\n", start) + 2   # the first block's first line
        checker = Checker()
        checker.check(path, text)
        for edit in ["    # an edit\n", "    # an edit, longer\n"]:
            edited = text[:body] + edit + text[body:]
            analysis = checker.check(path, edited)
        resumed += checker._models[path].resumed
        fresh = Checker().check(path, edited)
        assert sorted(_facts(d) for d in analysis.diagnostics) == sorted(_facts(d) for d in fresh.diagnostics), path
        assert _places(analysis) == _places(fresh), path
        assert _graph_spans(analysis) == _graph_spans(fresh), path
        # a node made in a loop names the loop statement by its id: one of the current text's
        statements = {id(n) for decl in analysis.unit.decls.values() for n in ast_nodes(decl)}
        assert all(n.region is None or n.region[0] in statements for g in analysis.graphs.values() for n in g), path
    assert resumed > 10


LOOPED = """
model Looped(dim: int = 16) {
    input x: [B, dim]
    for w in [dim, 2 * dim] {
        x = x -> Linear(w) -> ReLU()
    }
    output x -> Mlp(2 * dim)
}
"""


def test_typing_a_layer_inside_a_block_resumes_its_users(tmp_path):
    """A layer typed into the block every model uses, a character at a time (most texts on the
    way are broken: an unknown layer, a call still open): each check gives a fresh check's
    diagnostics and shapes, and the models resume."""
    path = str(tmp_path / "spec.dl")
    spec = SPEC + LOOPED
    checker = Checker()
    checker.check(path, spec)
    at = spec.index("    output x + h")
    typed, resumed = "    h = h -> Dropout(0.5)\n", 0
    for n in range(1, len(typed) + 1):
        text = spec[:at] + typed[:n] + spec[at:]
        with open(path, "w") as f:
            f.write(text)
        analysis = checker.check(path, text)
        assert sorted(_facts(d) for d in analysis.diagnostics) == _full(path), typed[:n]
        if n % 6 == 0 and analysis.unit is not None:
            assert _places(analysis) == _places(Checker().check(path, text)), typed[:n]
        # a node made in a loop names the loop statement by its id: one of the current text's
        statements = {id(n) for decl in analysis.unit.decls.values() for n in ast_nodes(decl)} \
            if analysis.unit is not None else set()
        assert all(n.region is None or n.region[0] in statements for g in analysis.graphs.values() for n in g)
        resumed += checker._models[path].resumed
    assert resumed >= 10 and checker._models[path].prefixes["Looped"].count == 2


def test_checks_leave_little_to_the_cyclic_collector(tmp_path):
    """What a check drops, reference counting frees: the server freezes each check's objects
    (dslc/lsp/heap.py) and collects cycles rarely. A block application that left a cycle (a
    closure that calls itself) made some 3,000 objects of cyclic garbage a check here."""
    path = str(tmp_path / "spec.dl")
    checker, text, checks = Checker(), SPEC, 0
    checker.check(path, text)
    gc.collect()
    was = gc.isenabled()
    gc.disable()
    try:
        for old, new in BLOCK_EDITS:
            for a, b in ((old, new), (new, old)):
                text = text.replace(a, b, 1)
                checker.check(path, text)
                checks += 1
        assert gc.collect() < 50 * checks
    finally:
        if was:
            gc.enable()


def test_the_servers_heap_freezes_each_check_and_collects_when_memory_grows():
    heap, was = FrozenHeap(), gc.isenabled()
    gc.enable()
    try:
        with heap:
            assert not gc.isenabled()
        assert gc.isenabled() and heap.full == 0 and heap.survivors > 0   # the first check sets the baseline
        with heap:
            cycle: list = []
            cycle.append(cycle)
            kept = weakref.ref(_Box(cycle))
        assert gc.isenabled() and heap.full == 0 and gc.get_freeze_count() > 0
        del cycle
        gc.collect()
        assert kept() is not None   # frozen: the collector between checks does not scan it
        heap.collect()   # what a check left in a cycle goes at the next full collection
        assert heap.full == 1 and kept() is None
        with heap:
            garbage = [[] for _ in range(heap.survivors // 2 + 10_000)]   # the memory in use grows by half
        assert heap.full == 2
        del garbage
    finally:
        gc.unfreeze()
        if not was:
            gc.disable()


class _Box:
    def __init__(self, inside):
        self.inside = inside
        inside.append(self)


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


@pytest.mark.parametrize("where, typed", [
    ("    output x + h\n", "    h = h -> Dropout(0.5, p=[1, (2)])\n"),   # in the first block
    ("model Noisy", "model Typed(n: int = 2) {\n    Linear(n)\n}\n"),  # a declaration, before another
    ("    epochs ", "    lr = {\n"),                                     # in the plan: a brace left open
    ("    ReLU()\n}", "block = 1\n"),   # a keyword at the start of a line, inside a block's body
])
@pytest.mark.parametrize("tail", ["", "\nmodel Broken {\n    Linear(\n}\n"])   # and one more error below
def test_piecewise_parse_while_typing_reports_what_parse_reports(where, typed, tail):
    """A line typed a character at a time (most texts on the way do not parse), each text parsed
    by one Reparser and by a whole parse: the same trees, or the same errors. The Reparser parses
    only the pieces it does not know to parse on their own."""
    spec = SPEC + tail
    reparser, at = Reparser(), spec.index(where)
    with contextlib.suppress(DslcError):
        reparser.parse(SourceFile("a.dl", spec))
    for n in range(1, len(typed) + 1):
        file = SourceFile("a.dl", spec[:at] + typed[:n] + spec[at:])
        try:
            theirs = parse(file)
        except DslcError as e:
            with pytest.raises(DslcError) as ours:
                reparser.parse(file)
            assert [_facts(d) for d in ours.value.diagnostics] == [_facts(d) for d in e.diagnostics], typed[:n]
            # the error below is reported too, whatever the one typed
            assert not tail or any(d.span.start >= len(file.text) - len(tail) for d in ours.value.diagnostics)
        else:
            assert reparser.parse(file).decls == theirs.decls, typed[:n]
