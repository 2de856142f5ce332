"""Diagrams: every format, deterministic DOT (golden files), nesting depth, ×N runs and loops,
and a spec with a shape error drawn up to the failing layer in red."""
from __future__ import annotations

import os
import shutil

import pytest
from click.testing import CliRunner
from conftest import golden
from support import ROOT

import dslc
from dslc.cli import main

EXAMPLE = os.path.join(ROOT, "examples", "language.dl")
MAGIC = {"svg": b"<?xml", "png": b"\x89PNG", "pdf": b"%PDF", "dot": b"digraph"}


@pytest.mark.parametrize("fmt", sorted(MAGIC))
def test_every_format(tmp_path, fmt):
    if fmt != "dot" and shutil.which("dot") is None:
        pytest.fail("Graphviz is not installed: `make test` installs it")
    out = tmp_path / f"resnet.{fmt}"
    r = CliRunner().invoke(main, ["render", EXAMPLE, "--model", "ResNet18", "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert out.read_bytes().startswith(MAGIC[fmt])


@pytest.mark.parametrize("spec,model", [("examples/language.dl", "TwoTower"), ("specs/vit.dl", "ViT"),
                                        ("specs/gpt.dl", "GPT"), ("specs/unet.dl", "UNet"),
                                        ("specs/resnet.dl", "ResNet50")])
def test_dot_is_deterministic(spec, model, update_goldens):
    dot = dslc.load(os.path.join(ROOT, spec)).diagram(model)
    assert dot == dslc.load(os.path.join(ROOT, spec)).diagram(model)
    golden(os.path.join(ROOT, "tests", "golden", "diagrams", f"{model}.dot"), dot, update_goldens)


def test_runs_and_loops_collapse_unless_expanded():
    vit = dslc.load(os.path.join(ROOT, "specs", "vit.dl"))
    assert "EncoderBlock ×12" in vit.diagram("ViT")
    assert "EncoderBlock ×12" not in vit.diagram("ViT", collapse=False)
    gpt = dslc.load(os.path.join(ROOT, "specs", "gpt.dl")).diagram("GPT")
    assert "Block ×12" in gpt and gpt.count("Embedding") == 2   # a module list's blocks: a run
    # a repeat of several statements over the running tensor: one block a pass, a run of them
    char_gpt = dslc.load(os.path.join(ROOT, "examples", "shakespeare", "shakespeare.dl")).diagram("CharGPT")
    assert "CharGPTBlock ×2" in char_gpt


def test_a_repeat_that_reads_another_tensor_collapses_as_a_loop(tmp_path):
    path = tmp_path / "m.dl"
    path.write_text("model M(dim: int = 8) {\n    input x: [B, dim]\n    y = x -> Linear(dim)\n    h = x\n"
                    "    repeat 2 {\n        h = (h -> Linear(dim) -> ReLU() -> Linear(dim)) + y\n    }\n    output h\n}\n")
    assert "repeat ×2" in dslc.load(str(path)).diagram("M")


def test_depth_nests_blocks():
    prog = dslc.load(os.path.join(ROOT, "specs", "resnet.dl"))
    flat, nested = prog.diagram("ResNet50", depth=0), prog.diagram("ResNet50", depth=1)
    assert "subgraph cluster" not in flat and "layer1: BottleneckStage" not in flat
    assert "layer1: BottleneckStage" in nested
    assert prog.diagram("ResNet50", depth=0).count(" [label=") < nested.count(" [label=")


def test_a_shape_error_is_drawn_in_red(tmp_path):
    bad = tmp_path / "bad.dl"
    bad.write_text("model Net {\n    input x: [B, 1, 28, 28]\n    Conv2d(8, 3)\n    Flatten()\n"
                   "    Conv2d(16, 3)\n}\n")
    out = tmp_path / "net.dot"
    r = CliRunner().invoke(main, ["render", str(bad), "-o", str(out)])
    assert r.exit_code == 1
    assert "error[E0402]" in r.stderr and "Traceback" not in r.stderr
    text = out.read_text()
    assert 'color="#cc0000"' in text and "Conv2d(16, 3)" in text and "Conv2d 3×3, 8" in text


def test_a_missing_graphviz_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    r = CliRunner().invoke(main, ["render", EXAMPLE, "--model", "VAE", "-o", str(tmp_path / "vae.png")])
    assert r.exit_code == 1 and "error[E0902]" in r.stderr and "apt-get install graphviz" in r.stderr
    assert not (tmp_path / "vae.png").exists()


def test_a_diagram_too_large_for_graphviz_is_refused_with_the_specs_errors(tmp_path):
    # 20,000 ReLUs (the unroll limit's partial graph) drawn to every depth: `dot` ran out of memory and
    # crashed (exit 3); now the spec's E0703 comes with an E0902 saying what to do
    spec = tmp_path / "many.dl"
    spec.write_text("model Many {\n    input x: [B, 4]\n    repeat 10000 {\n        repeat 10000 {\n"
                    "            ReLU()\n        }\n    }\n}\n")
    result = CliRunner().invoke(main, ["render", str(spec), "-o", str(tmp_path / "m.svg"), "--depth", "100"])
    assert result.exit_code == 1 and "Traceback" not in result.stderr
    assert "error[E0703]" in result.stderr and "too many for Graphviz to lay out" in result.stderr
    assert not (tmp_path / "m.svg").exists()
    dot = CliRunner().invoke(main, ["render", str(spec), "-o", str(tmp_path / "m.dot"), "--depth", "100"])
    assert dot.exit_code == 1 and (tmp_path / "m.dot").exists()   # .dot is written: no Graphviz involved


def test_graphviz_failures_are_diagnostics(monkeypatch, tmp_path):
    import subprocess

    import graphviz

    from dslc.backends import diagram

    def crash(self, *a, **k):
        raise subprocess.CalledProcessError(-11, ["dot"], stderr=b"out of memory\n")
    monkeypatch.setattr(graphviz.Source, "pipe", crash)
    with pytest.raises(diagram.DiagramError, match="Graphviz's dot failed: out of memory"):
        diagram.render('digraph "M" {\n  n1 [label="x"];\n}\n', str(tmp_path / "m.svg"))
