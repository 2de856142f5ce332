"""Loading published weights by name (issue #14 item 5): a state dict saved from the hand-written
torchvision-layout ResNet-18 twin (tests/test_specs.py, no download) loads into the zoo's ResNet18 by
name, as it is (the zoo's keys are torchvision's); a file in another layout loads through `rename`
prefix rules; the report says what matched, what was left and which shapes differ.

The reference is the twin itself: every weight must equal the twin's and the forward pass must be
bit-equal to the twin's own."""
import json
import os
import re

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file, save_file
from test_specs import BasicBlock, MobileNetV2Twin, ResNetTwin, conv1x1
from test_train import run, write
from zoo_vision import EfficientNetB0Twin

import dslc
from dslc.cli import main
from dslc.diagnostics import DslcError
from dslc.runtime.weights import load_by_name, read_state, renamed

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESNET = os.path.join(ROOT, "specs", "resnet.dl")

# Another layout, for the rename rules: the names the zoo's ResNet18 had before its keys became
# torchvision's, written out (torchvision's prefix -> the other layout's): the stem was `stem.`, a
# stage's blocks `basic_blockN` (1-based), the shortcut's Sequential(conv, bn) a block with `conv` and `bn`.
OTHER = {
    "conv1": "stem.conv1", "bn1": "stem.bn1",
    "layer1.0": "layer1.basic_block1", "layer1.1": "layer1.basic_block2",
    "layer2.0": "layer2.basic_block1", "layer2.1": "layer2.basic_block2",
    "layer3.0": "layer3.basic_block1", "layer3.1": "layer3.basic_block2",
    "layer4.0": "layer4.basic_block1", "layer4.1": "layer4.basic_block2",
    "layer2.0.downsample.0": "layer2.basic_block1.downsample.conv",
    "layer2.0.downsample.1": "layer2.basic_block1.downsample.bn",
    "layer3.0.downsample.0": "layer3.basic_block1.downsample.conv",
    "layer3.0.downsample.1": "layer3.basic_block1.downsample.bn",
    "layer4.0.downsample.0": "layer4.basic_block1.downsample.conv",
    "layer4.0.downsample.1": "layer4.basic_block1.downsample.bn",
}
RULES = {theirs: ours for ours, theirs in OTHER.items()}   # the file's names -> the model's


def other_layout(state: dict, names: dict = OTHER) -> dict:
    """A torchvision-layout state dict under the other layout's names (written independently of `renamed`)."""
    def name(key: str) -> str:
        best = max((p for p in names if key.startswith(p + ".")), key=len, default=None)
        return key if best is None else names[best] + key[len(best):]
    return {name(k): v for k, v in state.items()}


def scrambled(net: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Every parameter and batch-norm statistic drawn at random, so that no value can agree with a
    freshly initialized model by chance (running variances kept positive)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in net.state_dict().items():
            if t.is_floating_point():
                t.copy_(torch.randn(t.shape, generator=g) * 0.1 + (1.0 if name.endswith("running_var") else 0.0))
                if name.endswith("running_var"):
                    t.abs_()
            else:
                t.fill_(7)   # num_batches_tracked
    return net.eval()


@pytest.fixture(scope="module")
def twin():
    return scrambled(ResNetTwin(BasicBlock, [2, 2, 2, 2]), seed=1)


@pytest.fixture(scope="module")
def resnet():
    return dslc.load(RESNET)


def test_rename_rules_map_the_files_prefixes_longest_first():
    state = {"conv1.weight": 1, "conv10.weight": 2, "layer2.0.downsample.0.weight": 3, "layer2.0.conv1.weight": 4}
    moved = renamed(state, {"conv1": "stem.conv1", "layer2.0": "layer2.b1",
                            "layer2.0.downsample.0": "layer2.b1.downsample.conv", "nothing": "x"}, "f.pth")
    assert moved.state == {"stem.conv1.weight": 1, "conv10.weight": 2, "layer2.b1.downsample.conv.weight": 3,
                           "layer2.b1.conv1.weight": 4}
    assert moved.origin["stem.conv1.weight"] == "conv1.weight" and "conv10.weight" not in moved.origin
    assert moved.applied == {"conv1", "layer2.0", "layer2.0.downsample.0"}
    # the empty prefix is every name: add a prefix, or drop one
    assert renamed({"a.b": 1}, {"": "backbone"}, "f").state == {"backbone.a.b": 1}
    assert renamed({"model.a.b": 1}, {"model": ""}, "f").state == {"a.b": 1}
    with pytest.raises(DslcError, match="a.w and b.w both become b.w"):
        renamed({"a.w": 1, "b.w": 2}, {"a": "b"}, "f")


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
@pytest.mark.parametrize("layout", ["torchvision", "other"])
def test_a_twin_state_dict_loads_into_the_zoo_resnet18(tmp_path, twin, resnet, suffix, layout):
    """torchvision's names fit as they are; another layout's through the rules."""
    path = str(tmp_path / ("resnet18" + suffix))
    state = {k: v.clone().contiguous() for k, v in twin.state_dict().items()}
    file_state = state if layout == "torchvision" else other_layout(state)
    torch.save(file_state, path) if suffix == ".pth" else save_file(file_state, path)
    net = resnet.build("ResNet18", seed=0).eval()
    report = load_by_name(net, read_state(path), path, {} if layout == "torchvision" else RULES)
    assert report["loaded"] == report["model_tensors"] == len(state) == 122
    assert report["left_at_initial_values"] == report["unused_in_file"] == report["shape_mismatches"] == []
    assert report["rules_that_matched_nothing"] == []
    if layout == "other":
        assert report["renamed"]["layer2.0.downsample.1.running_var"] == \
            "layer2.basic_block1.downsample.bn.running_var"
    ours = net.state_dict()
    assert list(ours) == list(state)
    for name, value in state.items():
        assert torch.equal(ours[name], value), name
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(net(x), twin(x))


@pytest.mark.parametrize("spec,model,make_twin", [("mobilenet.dl", "MobileNetV2", MobileNetV2Twin),
                                                    ("efficientnet.dl", "EfficientNetB0", EfficientNetB0Twin)])
def test_a_torchvision_layout_checkpoint_loads_into_the_zoo_mobile_models(tmp_path, spec, model, make_twin):
    """MobileNetV2's and EfficientNet-B0's keys are torchvision's: a state dict saved from a twin
    written in torchvision's layout loads by name, without rules, and the model then computes what
    the twin does."""
    twin = scrambled(make_twin(), seed=2)
    path = str(tmp_path / (model + ".pth"))
    torch.save(twin.state_dict(), path)
    net = dslc.load(os.path.join(ROOT, "specs", spec)).build(model, seed=0).eval()
    report = load_by_name(net, read_state(path), path, {})
    assert report["loaded"] == report["model_tensors"] == len(twin.state_dict())
    assert report["left_at_initial_values"] == report["unused_in_file"] == report["shape_mismatches"] == []
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(net(x), twin(x))


def test_a_1000_class_checkpoint_loads_into_a_10_class_model_with_the_head_skipped(tmp_path, twin, resnet):
    path = str(tmp_path / "resnet18.pth")
    torch.save(twin.state_dict(), path)
    net = resnet.build("ResNet18", seed=0, params={"classes": 10}).eval()
    fc_before = {k: v.clone() for k, v in net.state_dict().items() if k.startswith("fc.")}
    with pytest.raises(DslcError) as refused:
        load_by_name(net, read_state(path), path, {})
    text = str(refused.value)
    assert "error[E0602]" in text and "skip_mismatched" in text
    assert "fc.weight: (1000, 512) in the file, (10, 512) in the model" in text
    assert "fc.bias: (1000,) in the file, (10,) in the model" in text
    report = load_by_name(net, read_state(path), path, {}, skip_mismatched=True)
    assert report["loaded"] == 120 and report["model_tensors"] == 122
    assert report["shape_mismatches"] == [
        {"name": "fc.weight", "file_name": "fc.weight", "file_shape": [1000, 512], "model_shape": [10, 512]},
        {"name": "fc.bias", "file_name": "fc.bias", "file_shape": [1000], "model_shape": [10]}]
    ours = net.state_dict()
    for k, v in fc_before.items():
        assert torch.equal(ours[k], v)          # the new head keeps its own initial values
    # everything but the head computes what the twin does: compare the pooled features
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        feats = {}
        net.fc.register_forward_hook(lambda m, i, o: feats.__setitem__("ours", i[0]))
        twin_fc = twin.fc.register_forward_hook(lambda m, i, o: feats.__setitem__("twin", i[0]))
        net(x), twin(x)
        twin_fc.remove()
    assert torch.equal(feats["ours"], feats["twin"])


def test_what_is_left_and_unused_is_reported(tmp_path, twin, resnet):
    path = str(tmp_path / "partial.pth")
    state = {k: v for k, v in twin.state_dict().items() if not k.startswith("layer4.")}
    state["extra.weight"] = torch.zeros(3)
    torch.save(other_layout(state), path)
    net = resnet.build("ResNet18", seed=0)
    report = load_by_name(net, read_state(path), path, {**RULES, "laier1.basic_block1": "layer1.0"})
    layer4 = [k for k in net.state_dict() if k.startswith("layer4.")]
    assert report["left_at_initial_values"] == layer4 and len(layer4) == 30
    assert report["unused_in_file"] == ["extra.weight"]
    assert set(report["rules_that_matched_nothing"]) == {
        "laier1.basic_block1", "layer4.basic_block1", "layer4.basic_block2", "layer4.basic_block1.downsample.conv",
        "layer4.basic_block1.downsample.bn"}


def test_wrapped_and_ddp_prefixed_state_dicts_are_unwrapped(tmp_path, twin, resnet):
    """Lightning's {"state_dict": ...} and timm's {"model": ...} with DDP's `module.` on every name."""
    plain = twin.state_dict()
    for wrapper in ("state_dict", "model"):
        path = str(tmp_path / f"{wrapper}.pth")
        torch.save({wrapper: {"module." + k: v for k, v in plain.items()}, "epoch": 90, "arch": "resnet18"}, path)
        net = resnet.build("ResNet18", seed=0)
        assert load_by_name(net, read_state(path), path, {})["loaded"] == 122
        assert torch.equal(net.state_dict()["layer3.1.bn2.running_mean"], plain["layer3.1.bn2.running_mean"])


def test_compile_weights_with_rename_exports_the_twins_weights(tmp_path, twin):
    import onnxruntime as ort
    path = tmp_path / "resnet18.safetensors"
    save_file(other_layout({k: v.contiguous() for k, v in twin.state_dict().items()}), str(path))
    out = tmp_path / "r.onnx"
    args = ["compile", RESNET, "--model", "ResNet18", "--target", "onnx", "-o", str(out), "--weights", str(path)]
    result = CliRunner().invoke(main, args + [f"--rename={k}={v}" for k, v in RULES.items()])
    assert result.exit_code == 0, result.output
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(3))
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(got), twin(x), rtol=1e-4, atol=1e-4)
    # without the rules the names do not fit, and the export says which
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1 and "error[E0602]" in result.stderr and "not in the file: conv1.weight" \
        in result.stderr and "Traceback" not in result.stderr
    assert CliRunner().invoke(main, args + ["--rename", "conv1"]).exit_code == 2   # not OLD=NEW


def test_unreadable_weights_are_diagnostics(tmp_path, resnet):
    torch.save(TinyTwin(), tmp_path / "whole.pth")                 # a pickled model, not a state dict
    (tmp_path / "junk.pth").write_bytes(b"not a zip or a pickle" * 10)
    save_file({"a": torch.zeros(4)}, str(tmp_path / "cut.safetensors"))
    data = (tmp_path / "cut.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[:len(data) - 5])
    for name, words in (("whole.pth", ("it holds more than tensors (loading it would call", "model.state_dict()")),
                        ("junk.pth", ("cannot read weights from",)), ("cut.safetensors", ("cannot read weights",))):
        with pytest.raises(DslcError) as refused:
            read_state(str(tmp_path / name))
        text = str(refused.value)
        assert "error[E0602]" in text and name in text and "Traceback" not in text, text
        for w in words:
            assert w in text, (w, text)


# ---------------------------------------------------------------------- in a plan

TINY = """
import "RESNET"

# a small torchvision-layout ResNet: the zoo's stem and one stage of basic blocks, on the digits
model Tiny(classes: int = 10) {
    input x: [B, 1, 8, 8]
    Conv2d(64, 7, stride=2, padding=3, bias=false) as conv1
    BatchNorm2d() as bn1
    ReLU()
    MaxPool2d(3, stride=2, padding=1)
    BasicStage(16, 2, stride=2) as layer1
    AdaptiveAvgPool2d(1)
    Flatten()
    Linear(classes) as fc
}

train tune {
    model      = Tiny()
    data       = digits(val=0.2, labels=[0, 1, 2])
    loss       = cross_entropy(out, batch.y)
    optimizer  = Adam(lr=1e-3)
    epochs     = 1
    batch_size = 64
    INIT
    freeze model.conv1, model.bn1, model.layer1
}
"""

TINY_OTHER = {"conv1": "stem.conv1", "bn1": "stem.bn1", "layer1.0": "layer1.basic_block1",
              "layer1.1": "layer1.basic_block2", "layer1.0.downsample.0": "layer1.basic_block1.downsample.conv",
              "layer1.0.downsample.1": "layer1.basic_block1.downsample.bn"}
TINY_RULES = {theirs: ours for ours, theirs in TINY_OTHER.items()}


class TinyTwin(torch.nn.Module):
    """Tiny in torchvision's layout (its pretrained checkpoint has 5 classes, the plan's model 10)."""

    def __init__(self, classes: int = 5):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = torch.nn.BatchNorm2d(64)
        self.maxpool = torch.nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        down = torch.nn.Sequential(conv1x1(64, 16, 2), torch.nn.BatchNorm2d(16))
        self.layer1 = torch.nn.Sequential(BasicBlock(64, 16, 2, down), BasicBlock(16, 16))
        self.fc = torch.nn.Linear(16, classes)


def tiny_plan(tmp_path, init: str) -> str:
    return TINY.replace("RESNET", RESNET).replace("INIT", init)


def test_a_plan_fine_tunes_from_renamed_weights_with_the_report_in_the_run(tmp_path):
    twin = scrambled(TinyTwin(), seed=2)
    torch.save(other_layout(twin.state_dict(), TINY_OTHER), tmp_path / "tiny.pth")
    rules = "{" + ", ".join(f'"{k}": "{v}"' for k, v in TINY_RULES.items()) + ', "nope": "x"}'
    init = f'init = "tiny.pth"\n    rename = {rules}\n    skip_mismatched = true'
    result = run(tmp_path, tiny_plan(tmp_path, init))
    text = "\n".join(result["_lines"])
    assert f"weights from {tmp_path / 'tiny.pth'} (7 rename rules): loaded 36 of the model's 38 tensors" in text, text
    assert "fc.weight: (5, 16) in the file, (10, 16) in the model" in text
    assert "warning[W0601]: the rename rule 'nope' matches no name in tiny.pth" in text and "plan.dl:" in text
    report = json.loads((tmp_path / "run" / "weights_report.json").read_text())["model"]
    assert report["loaded"] == 36 and report["rules_that_matched_nothing"] == ["nope"]
    assert [m["name"] for m in report["shape_mismatches"]] == ["fc.weight", "fc.bias"]
    # the frozen stem and stage kept the twin's weights through training; the head trained
    best = load_file(str(tmp_path / "run" / "checkpoints" / "best.safetensors"))
    for name, value in twin.state_dict().items():
        if not name.startswith("fc."):
            assert torch.equal(best[name], value), name
    assert best["fc.weight"].shape == (10, 16)
    assert "init" in (tmp_path / "run" / "plan.dl").read_text()


def test_dslc_train_weights_and_rename_options_stand_for_the_plan_fields(tmp_path):
    twin = scrambled(TinyTwin(classes=10), seed=3)
    state = other_layout(twin.state_dict(), TINY_OTHER)
    torch.save({"state_dict": {"module." + k: v for k, v in state.items()}}, tmp_path / "tiny.pt")
    path = write(tmp_path, tiny_plan(tmp_path, ""))
    args = ["train", path, "--out", str(tmp_path / "run"), "--no-progress", "--weights", str(tmp_path / "tiny.pt")]
    result = CliRunner().invoke(main, args + [f"--rename={k}={v}" for k, v in TINY_RULES.items()])
    assert result.exit_code == 0, result.output
    assert "(6 rename rules): loaded 38 of the model's 38 tensors" in result.stderr
    written = (tmp_path / "run" / "plan.dl").read_text()
    assert re.search(r"^ +rename +=\s*\{", written, re.M) and '"layer1.basic_block1": "layer1.0"' in written
    assert json.loads((tmp_path / "run" / "weights_report.json").read_text())["model"]["loaded"] == 38


@pytest.mark.parametrize("init, code, words", [
    ('rename = {"a": "b"}', "E0501", ("`rename` applies to the weights `init` loads",)),
    ('init = "w.pth"\n    rename = ["a"]', "E0301", ("`rename` is a dict of name prefixes",)),
    ('init = "w.pth"\n    rename = {"a..b": "c"}', "E0302", ("'a..b' is not a name prefix",)),
    ('init = "none.pth"', "E0901", ("`init`: no such file: none.pth",)),
    ('init = "junk.pth"', "E0602", ("cannot read weights from", "junk.pth")),
    ('init = "w.pth"', "E0602", ("no weight in", "map the file's names to the model's with `rename`")),
])
def test_plan_weight_problems_are_diagnostics_at_the_field(tmp_path, init, code, words):
    (tmp_path / "junk.pth").write_bytes(b"\x00garbage" * 20)
    torch.save({"other.weight": torch.zeros(2)}, tmp_path / "w.pth")
    path = write(tmp_path, tiny_plan(tmp_path, init))
    result = CliRunner().invoke(main, ["train", path, "--out", str(tmp_path / "run")])
    err = result.stderr
    assert result.exit_code == 1 and f"error[{code}]" in err and "Traceback" not in err, result.output
    assert "plan.dl:" in err and "^" in err, err                    # file:line:col, the line and a caret
    for w in words:
        assert w in err, (w, err)
    assert not (tmp_path / "run").exists()                         # nothing claimed, nothing overwritten
