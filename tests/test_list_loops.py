"""A `for` over a list parameter stays a Python loop in the generated PyTorch (issue #14): the class
compiled once takes the list as a live constructor argument and builds, for other lists, exactly
what dslc builds when it compiles for them (parameter count, state-dict keys and shapes, initial
weights for the same seed, a bit-equal forward). The reference at other values is dslc's own build
there, which the twins of tests/test_specs.py pin down at the defaults.
"""
from __future__ import annotations

import os
import re

import pytest
import torch
from test_variants import CONFIGS

import dslc

SPECS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "specs")
torch.set_num_threads(1)


def _same(mine: torch.nn.Module, theirs: torch.nn.Module, x: torch.Tensor, prefix: str = "") -> None:
    assert sum(p.numel() for p in mine.parameters()) == sum(p.numel() for p in theirs.parameters())
    got, want = mine.state_dict(), theirs.state_dict()
    assert [prefix + k for k in got] == list(want)
    for k, v in got.items():
        assert v.shape == want[prefix + k].shape and torch.equal(v, want[prefix + k]), k
    with torch.no_grad():
        assert torch.equal(mine.eval()(x), theirs.eval()(x))


@pytest.mark.parametrize("widths", [[64, 32], [100, 50, 25, 12]])
def test_deep_mlp_takes_its_widths_live(widths):
    prog = dslc.load(os.path.join(SPECS, "perceptron.dl"))
    source = prog.source(["DeepMLP"])
    assert "for width in widths:" in source and "was compiled for" not in source
    module = prog.module(["DeepMLP"])
    torch.manual_seed(0)
    mine = module.DeepMLP(widths=widths)
    theirs = prog.build("DeepMLP", seed=0, widths=widths)
    _same(mine, theirs, torch.randn(2, 1, 28, 28))
    assert len([m for m in mine if isinstance(m, torch.nn.Linear)]) == len(widths) + 1


def _vgg_probe(tmp_path, config: str) -> dslc.Program:
    """vgg.dl's VGGFeatures, alone in a model built for `config` (a block is built through a model)."""
    text = open(os.path.join(SPECS, "vgg.dl")).read()
    block = re.search(r"^block VGGFeatures.*?^}\n", text, re.M | re.S).group(0)
    path = tmp_path / "probe.dl"
    path.write_text(block + "\nmodel Probe {\n    input x: [B, 3, 32, 32]\n"
                    f"    VGGFeatures({config}, bn=true) as features\n    Flatten()\n}}\n")
    return dslc.load(str(path))


def test_one_vgg_features_class_builds_any_config(tmp_path):
    source = dslc.load(os.path.join(SPECS, "vgg.dl")).source()
    assert source.count("class VGGFeatures") == 1 and "VGGFeatures2" not in source
    module = dslc.load(os.path.join(SPECS, "vgg.dl")).module()
    config = [[8, 1], [16, 2], [24, 3]]
    torch.manual_seed(0)
    mine = module.VGGFeatures(3, config, bn=True)
    theirs = _vgg_probe(tmp_path, "[[8, 1], [16, 2], [24, 3]]").build("Probe", seed=0)
    x = torch.randn(2, 3, 32, 32)
    probe = torch.nn.Sequential()
    probe.add_module("features", mine)
    probe.append(torch.nn.Flatten())
    _same(probe, theirs, x)


def test_list_loops_script_and_compile_the_same_twice():
    prog = dslc.load(os.path.join(SPECS, "vgg.dl"))
    assert prog.source() == dslc.load(os.path.join(SPECS, "vgg.dl")).source()   # -O0 is deterministic
    features = prog.module().VGGFeatures(3, [[4, 2], [8, 1]], bn=True).eval()
    x = torch.randn(1, 3, 16, 16)
    assert torch.equal(torch.jit.script(features)(x), features(x))


# test_variants.py's configurations without its `Large`: no use takes the `if bn` branch
SMALL_ONLY = CONFIGS[:CONFIGS.index("\nmodel Large")]


def test_a_branch_no_use_took_keeps_the_loop_unrolled(tmp_path):
    """With only `bn=false` compiled, nothing says what `if bn` builds: the class stays as it ran, for
    lists of that length (its items are sizes: `config[0]`), and checks the length."""
    path = tmp_path / "configs.dl"
    path.write_text(SMALL_ONLY)
    prog = dslc.load(str(path))
    source = prog.source()
    assert "for width in config" not in source and "nn.Conv2d(config[0], config[-1], 3, padding=1)" in source
    with pytest.raises(ValueError, match=r"Features needs len\(config\) == 2 \(configs\.dl:2\)"):
        prog.module().Features(3, [4, 8, 16])
    torch.manual_seed(0)
    other = prog.module().Features(3, [5, 7])
    assert [tuple(p.shape) for p in other.parameters()] == [(5, 3, 3, 3), (5,), (7, 5, 3, 3), (7,)]
    torch.manual_seed(0)
    assert torch.equal(prog.module().Small().eval()(torch.ones(1, 3, 8, 8)),
                       prog.build("Small", seed=0).eval()(torch.ones(1, 3, 8, 8)))


def test_folded_batch_norm_unrolls_the_loop():
    """-O2 folds each batch norm into its convolution: the elements are no longer the loop's calls."""
    prog = dslc.load(os.path.join(SPECS, "vgg.dl"))
    source = prog.source(["VGG11BN"], opt=2)
    assert "for width, convs in config" not in source and "fold_batchnorm(" in source
