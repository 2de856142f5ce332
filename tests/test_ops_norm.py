"""Normalization, dropout and embedding entries against hand-built torch modules.

The registry conformance test drives these ops through dslc's own code
generation; here each shape rule is compared with a module constructed
directly with torch, on the cases that are easy to get wrong (BatchNorm1d's two
layouts, LayerNorm over several dimensions, GroupNorm's divisibility), and the
errors are checked for their code and for naming the layer.
"""
from __future__ import annotations

import pytest
import torch
from support import run_generated, single_op_graph
from torch import nn

from dslc.frontend.binding import convert
from dslc.frontend.errors import EvalError
from dslc.ir.dims import Sym, plain
from dslc.ir.types import TensorType
from dslc.ops import REGISTRY
from dslc.ops.registry import Bound, Example, S, ShapeError

B = Sym.var("B")


def rule(name: str, args: dict, shape: tuple, dtype: str = "float32"):
    """The op bound to `args` (converted as the frontend would) and applied to one input."""
    op = REGISTRY[name]
    full = {p.name: p.default for p in op.params}
    full.update({k: op.param(k).type.convert(v) for k, v in args.items()})
    b = Bound(op, full, [TensorType(shape, dtype)])
    if op.resolve:
        b.args.update(op.resolve(b))
    return op, b, op.infer(b)


def agrees(name: str, args: dict, shape: tuple, module: nn.Module, dtype: str = "float32"):
    """Output shape/dtype, parameters and buffers of the rule equal those of `module` on that input."""
    op, b, outs = rule(name, args, shape, dtype)
    x = torch.randint(0, 3, shape) if dtype == "int64" else torch.randn(shape)
    module.eval()
    with torch.no_grad():
        y = module(x)
    assert [tuple(plain(d) for d in t.shape) for t in outs] == [tuple(y.shape)]
    assert outs[0].dtype == str(y.dtype).removeprefix("torch.")
    weights = {k: tuple(plain(d) for d in s) for k, s in op.weight_shapes(b.args).items()}
    assert weights == {k: tuple(p.shape) for k, p in module.named_parameters()}
    buffers = {k: (tuple(plain(d) for d in s), dt) for k, (s, dt) in op.buffer_shapes(b.args).items()}
    assert buffers == {k: (tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in module.named_buffers()}
    return b, outs


def shape_error(name: str, args: dict, shape: tuple, dtype: str = "float32") -> ShapeError:
    with pytest.raises(ShapeError) as err:
        rule(name, args, shape, dtype)
    assert f"`{name}`" in err.value.message
    return err.value


# ---------------------------------------------------------------- agreement with torch

@pytest.mark.parametrize("shape", [(2, 5), (2, 5, 7)])
@pytest.mark.parametrize("affine,track", [(True, True), (False, False), (True, False)])
def test_batchnorm1d_takes_both_layouts(shape, affine, track):
    b, _ = agrees("BatchNorm1d", {"affine": affine, "track_running_stats": track}, shape,
                  nn.BatchNorm1d(5, affine=affine, track_running_stats=track))
    assert b["num_features"] == 5


def test_batchnorm_folds_so_counts_no_macs_but_other_norms_count_their_affine_map():
    # batch norm folds into the layer before it at inference, as torchvision's tables count it
    op, b, outs = rule("BatchNorm2d", {}, (2, 3, 4, 4))
    assert op.macs(b, outs) == 0
    op, b, outs = rule("GroupNorm", {"num_groups": 3}, (2, 3, 4, 4))
    assert op.macs(b, outs) == 2 * 3 * 4 * 4
    op, b, outs = rule("InstanceNorm2d", {"affine": True}, (2, 3, 4, 4))
    assert op.macs(b, outs) == 2 * 3 * 4 * 4
    op, b, outs = rule("InstanceNorm2d", {}, (2, 3, 4, 4))
    assert op.macs(b, outs) == 0


def test_batchnorm2d_with_a_run_time_batch():
    op, b, outs = rule("BatchNorm2d", {}, (B, 3, 4, 4))
    assert outs[0].shape == (B, 3, 4, 4) and b["num_features"] == 3
    assert op.label_text(b.args) == "BatchNorm2d 3"


def test_batchnorm3d_and_instance_norm_with_running_stats():
    agrees("BatchNorm3d", {"momentum": None}, (2, 3, 2, 3, 4), nn.BatchNorm3d(3, momentum=None))
    agrees("InstanceNorm1d", {"affine": True, "track_running_stats": True}, (2, 4, 6),
           nn.InstanceNorm1d(4, affine=True, track_running_stats=True))
    agrees("InstanceNorm2d", {}, (2, 3, 5, 5), nn.InstanceNorm2d(3))


def test_layernorm_over_several_trailing_dims():
    b, _ = agrees("LayerNorm", {"normalized_shape": [3, 4]}, (2, 5, 3, 4), nn.LayerNorm([3, 4]))
    assert b["normalized_shape"] == (3, 4)
    agrees("LayerNorm", {"normalized_shape": [5, 3, 4], "bias": False}, (2, 5, 3, 4),
           nn.LayerNorm([5, 3, 4], bias=False))


def test_layernorm_defaults_to_the_last_dim_even_with_run_time_sizes():
    op, b, outs = rule("LayerNorm", {}, (B, Sym.var("T"), 16))
    assert b["normalized_shape"] == 16 and outs[0].shape[2] == 16
    assert op.weight_shapes(b.args) == {"weight": (16,), "bias": (16,)}
    agrees("LayerNorm", {"elementwise_affine": False}, (2, 7), nn.LayerNorm(7, elementwise_affine=False))


def test_groupnorm_matches_torch_and_rejects_groups_that_do_not_divide():
    b, _ = agrees("GroupNorm", {"num_groups": 3}, (2, 6, 4), nn.GroupNorm(3, 6))
    assert b["num_channels"] == 6
    agrees("GroupNorm", {"num_groups": 2, "affine": False}, (2, 4, 3, 3), nn.GroupNorm(2, 4, affine=False))
    err = shape_error("GroupNorm", {"num_groups": 4}, (2, 6, 4))
    assert err.code == "E0405" and err.arg == "num_groups"
    with pytest.raises(ValueError):
        nn.GroupNorm(4, 6)


def test_embedding_appends_a_float_dim_to_integer_ids():
    agrees("Embedding", {"num_embeddings": 10, "embedding_dim": 4, "padding_idx": -1}, (2, 5),
           nn.Embedding(10, 4, padding_idx=-1), dtype="int64")
    op, b, outs = rule("Embedding", {"num_embeddings": 10, "embedding_dim": 4}, (B, Sym.var("T")), "int32")
    assert outs[0].shape == (B, Sym.var("T"), 4) and outs[0].dtype == "float32"


# ---------------------------------------------------------------- errors

def test_norm_layers_name_the_rank_they_need():
    err = shape_error("BatchNorm2d", {}, (B, 784))
    assert err.code == "E0402" and "[N, C, H, W]" in err.message and "[B, 784]" in err.message
    assert shape_error("BatchNorm1d", {}, (2, 3, 4, 5)).code == "E0402"
    assert shape_error("InstanceNorm1d", {}, (3, 4)).code == "E0402"
    assert shape_error("Dropout2d", {}, (2, 3, 4)).code == "E0402"
    assert shape_error("GroupNorm", {"num_groups": 1}, (8,)).code == "E0402"


def test_channels_must_be_known_at_compile_time():
    err = shape_error("BatchNorm1d", {}, (2, Sym.var("C")))
    assert err.code == "E0403" and "BatchNorm1d" in err.message


def test_layernorm_shape_must_match_the_trailing_dims():
    err = shape_error("LayerNorm", {"normalized_shape": [4, 3]}, (2, 3, 4))
    assert err.code == "E0403" and err.arg == "normalized_shape" and "[3, 4]" in err.message
    with pytest.raises(RuntimeError):
        nn.LayerNorm([4, 3])(torch.randn(2, 3, 4))
    assert shape_error("LayerNorm", {"normalized_shape": [2, 3, 4]}, (3, 4)).code == "E0402"


def test_single_values_per_channel_are_caught_where_torch_always_fails():
    err = shape_error("InstanceNorm1d", {}, (2, 3, 1))
    assert err.code == "E0403"
    with pytest.raises(ValueError):
        nn.InstanceNorm1d(3).eval()(torch.randn(2, 3, 1))
    assert shape_error("GroupNorm", {"num_groups": 4}, (1, 4)).code == "E0403"
    with pytest.raises(ValueError):
        nn.GroupNorm(4, 4).eval()(torch.randn(1, 4))
    assert shape_error("BatchNorm1d", {"track_running_stats": False}, (1, 4)).code == "E0403"
    rule("BatchNorm1d", {}, (1, 4))  # running statistics make a batch of one fine in eval mode


def test_embedding_padding_idx_must_be_a_row():
    err = shape_error("Embedding", {"num_embeddings": 5, "embedding_dim": 2, "padding_idx": 5}, (2,), "int64")
    assert err.code == "E0302" and err.arg == "padding_idx"
    with pytest.raises(AssertionError):
        nn.Embedding(5, 2, padding_idx=5)


@pytest.mark.parametrize("name,param", [("Dropout", "p"), ("AlphaDropout", "p"), ("dropout", "p"),
                                        ("BatchNorm2d", "momentum")])
def test_probabilities_are_range_checked(name, param):
    op = REGISTRY[name]
    with pytest.raises(EvalError) as err:
        convert(op.param(param), 1.5, None, name)
    assert err.value.diagnostic.code == "E0302"


# ---------------------------------------------------------------- generated code

def test_dropout_function_follows_the_module_training_flag():
    graph, specs = single_op_graph(REGISTRY["dropout"], Example({"input": S(4, 256), "p": 0.5}))
    model, outs, src = run_generated(graph, specs)
    assert "F.dropout(input, 0.5, self.training)" in src
    x = torch.ones(4, 256)
    assert torch.equal(model.eval()(x), x)
    y = model.train()(x)
    assert set(y.unique().tolist()) == {0.0, 2.0}


def test_dropout_layers_stay_modules():
    graph, specs = single_op_graph(REGISTRY["Dropout"], Example({"p": 0.1}, (S(2, 3),)))
    _, _, src = run_generated(graph, specs)
    assert "nn.Dropout(0.1)" in src
