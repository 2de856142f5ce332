"""Summaries: parameter counts, MACs against torchvision's published figures and hand
formulas, the JSON interface, shared weights counted once, and plans' frozen layers."""
from __future__ import annotations

import json
import os

import pytest
from click.testing import CliRunner
from support import ROOT

import dslc
from dslc.cli import main

EXAMPLE = os.path.join(ROOT, "examples", "language.dl")

# torchvision's model tables, GMACs at 224×224 (their "GFLOPS" column counts multiply-accumulates)
PUBLISHED = [("resnet.dl", "ResNet18", 1.81), ("resnet.dl", "ResNet50", 4.09), ("vgg.dl", "VGG16", 15.47),
             ("mobilenet.dl", "MobileNetV2", 0.30), ("vit.dl", "ViT", 17.56)]


@pytest.mark.parametrize("spec,model,gmacs", PUBLISHED, ids=[m for _, m, _ in PUBLISHED])
def test_macs_match_torchvisions_tables(spec, model, gmacs):
    s = dslc.load(os.path.join(ROOT, "specs", spec)).summary(model)
    assert abs(s.macs / 1e9 - gmacs) / gmacs < 0.02, s.macs


def _rows(tmp_path, body: str, sizes=None):
    path = tmp_path / "m.dl"
    path.write_text(f"model M {{\n{body}\n}}\n")
    return dslc.load(str(path)).summary("M", sizes=sizes)


def test_linear_macs_are_in_times_out_per_position(tmp_path):
    s = _rows(tmp_path, "    input x: [B, T, 6]\n    Linear(5)", sizes={"T": 4})
    assert s.layers[0].macs == 4 * 6 * 5 and s.layers[0].params == 6 * 5 + 5
    unknown = _rows(tmp_path, "    input x: [B, T, 6]\n    Linear(5)")
    assert unknown.as_json()["macs"] == "30 * T"


def test_conv_macs_are_output_size_times_kernel_volume(tmp_path):
    s = _rows(tmp_path, "    input x: [B, 4, 32, 32]\n    Conv2d(8, 3, stride=2, groups=2)")
    out = 15 * 15  # (32 - 3) // 2 + 1 = 15
    assert s.layers[0].macs == out * 8 * (4 // 2) * 3 * 3
    s = _rows(tmp_path, "    input x: [B, 3, T]\n    Conv1d(5, 4, padding=1)", sizes={"T": 10})
    assert s.layers[0].macs == (10 + 2 - 4 + 1) * 5 * 3 * 4


def test_attention_matmuls_count(tmp_path):
    s = _rows(tmp_path, "    input x: [B, T, 8]\n    output attention(x, x, x, heads=2)", sizes={"T": 5})
    assert s.macs == 2 * 5 * 5 * 8  # q kᵀ and the weighted sum of v


def test_json_is_exactly_the_interface():
    r = CliRunner().invoke(main, ["summary", EXAMPLE, "--model", "ResNet18", "--format", "json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert list(data) == ["model", "inputs", "total_params", "trainable_params", "macs", "layers"]
    assert data["inputs"] == {"x": "[B, 3, 32, 32]"}
    assert data["total_params"] == data["trainable_params"] == 11_178_762
    assert all(list(layer) == ["name", "type", "output_shape", "params", "macs"] for layer in data["layers"])
    assert data["layers"][0]["output_shape"].startswith("[B,")


def test_shared_and_tied_weights_count_once():
    prog = dslc.load(os.path.join(ROOT, "specs", "gpt.dl"))
    s = prog.summary("GPT")
    assert s.total_params == 124_439_808  # wte serves the input and the tied output head
    with_torch = sum(p.numel() for p in prog.build("GPT", depth=2, dim=64, heads=4, vocab=100,
                                                    context=16).parameters())
    assert prog.summary("GPT", depth=2, dim=64, heads=4, vocab=100, context=16).total_params == with_torch


def test_a_plans_frozen_layers_are_not_trainable():
    prog = dslc.load(EXAMPLE)
    plan = prog.plan("finetune")
    head = prog.summary("Classifier", frozen=plan.freeze_rules("model", "head"))
    full = prog.summary("Classifier", frozen=plan.freeze_rules("model", "full"))
    assert head.trainable_params == 128 * 10 + 10
    assert full.trainable_params == 128 * 10 + 10 + (128 * 128 * 9 + 128 + 2 * 128)  # layer4 thawed
    assert head.total_params == full.total_params == 242_250
    r = CliRunner().invoke(main, ["summary", EXAMPLE, "--plan", "finetune", "--phase", "head", "--format", "json"])
    assert json.loads(r.stdout)["trainable_params"] == head.trainable_params


def test_parameter_counts_equal_torch_for_every_spec():
    import glob

    import torch
    for path in sorted(glob.glob(os.path.join(ROOT, "specs", "*.dl"))):
        prog = dslc.load(path)
        for name in prog.buildable:
            with torch.device("meta"):
                net = prog.build(name)
            assert prog.summary(name).total_params == sum(p.numel() for p in net.parameters()), (path, name)


def test_a_table_of_thousands_of_rows_prints_as_plain_columns(tmp_path, capsys):
    # rich lays out about 1,000 rows a second: 20,000 layers took half a minute
    import dslc
    from dslc.backends.summary import RICH_ROWS, render_table
    spec = tmp_path / "long.dl"
    spec.write_text("model Long {\n    input x: [B, 4]\n    repeat 1500 {\n        Linear(4)\n        ReLU()\n    }\n}\n")
    s = dslc.load(str(spec)).summary("Long")
    assert len(s.layers) > RICH_ROWS
    render_table(s)
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split() == ["layer", "type", "output", "shape", "params", "MACs"]
    assert lines[2].split() == ["0", "Linear", "[B,", "4]", "20", "16"]   # an nn.Sequential's first layer
    assert len(lines) == 2 + len(s.layers) + 2 and lines[-2].startswith("total params: 30,000")


def test_a_lists_elements_show_the_lists_name(capsys):
    """The table nests a block's layers under it; an element of a module list has no row of the
    list above it, so it shows `h.0` (its state-dict prefix), not a bare `0`."""
    from dslc.backends.summary import render_table
    render_table(dslc.load(os.path.join(ROOT, "specs", "gpt.dl")).summary("GPT"))
    names = [line.split("│")[1].rstrip() for line in capsys.readouterr().out.splitlines() if line.startswith("│")]
    assert names[:4] == [" wte", " wpe", " h.0", "   ln_1"] and " h.11" in names
