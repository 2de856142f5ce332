"""Registry conformance: every entry's shape rule and weights against real torch.

For each op and each of its examples (and hypothesis-drawn arguments from
its `arbitrary`), a one-op graph goes through the production PyTorch
backend; the output shapes and dtypes torch produces must equal the shape
rule's, and the module's parameters must equal the entry's weights.
"""
from __future__ import annotations

import math

import pytest
from hypothesis import given, reject
from hypothesis import strategies as st

from dslc.frontend.errors import EvalError
from dslc.ir.dims import plain
from dslc.ops import REGISTRY
from dslc.ops.registry import ShapeError
from support import Drawer, run_generated, single_op_graph

OPS = sorted(REGISTRY.values(), key=lambda op: op.name)
CASES = [(op, i) for op in OPS for i in range(len(op.examples))]


def _check(op, example):
    import torch
    graph, specs = single_op_graph(op, example)
    model, outs, src = run_generated(graph, specs)
    want = [graph.type_of(ref) for _, ref in graph.outputs]
    assert len(outs) == len(want), src
    for got, t in zip(outs, want):
        assert tuple(got.shape) == tuple(plain(d) for d in t.shape), (op.name, example, src)
        assert str(got.dtype) == f"torch.{t.dtype}", (op.name, example, src)
    inst = next(iter(graph.instances.values()), None)
    expected = inst.weights() if inst else {}
    n_expected = sum(math.prod(plain(d) for d in s) for s in expected.values())
    assert sum(p.numel() for p in model.parameters()) == n_expected, src
    if inst is not None and (expected or inst.buffers()):
        keys = {f"{inst.name}.{k}" for k in list(expected) + list(inst.buffers())}
        assert set(model.state_dict()) == keys, src
        for k, shape in expected.items():
            assert tuple(model.state_dict()[f"{inst.name}.{k}"].shape) == tuple(plain(d) for d in shape)
    _ = torch


@pytest.mark.parametrize("op,i", CASES, ids=[f"{op.name}-{i}" for op, i in CASES])
def test_examples_match_torch(op, i):
    _check(op, op.examples[i])


ARBITRARY = [op for op in OPS if op.arbitrary is not None]


@pytest.mark.parametrize("op", ARBITRARY, ids=[op.name for op in ARBITRARY])
@given(data=st.data())
def test_drawn_arguments_match_torch(op, data):
    example = op.arbitrary(Drawer(data))
    try:
        single_op_graph(op, example)
    except (ShapeError, EvalError):
        reject()
    _check(op, example)


def test_every_op_has_hypothesis_arguments():
    missing = [op.name for op in OPS if op.arbitrary is None]
    assert not missing, f"ops without `arbitrary`: {missing}"


def test_every_op_has_a_label_and_doc():
    for op in OPS:
        assert op.doc and op.source
        if op.kind == "layer":
            assert op.stem.isidentifier()
