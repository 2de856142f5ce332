"""ONNX conformance of every registry entry: for each example (and hypothesis-drawn
arguments), the exported one-op model passes onnx.checker's full check and
onnxruntime's outputs equal the PyTorch backend's, with the same weights."""
from __future__ import annotations

import pytest
from hypothesis import given, reject
from hypothesis import strategies as st
from support import Drawer, onnx_parity, single_op_graph

from dslc.frontend.errors import EvalError
from dslc.ops import REGISTRY
from dslc.ops.registry import ShapeError

TOLERANCE = 1e-4
OPS = sorted(REGISTRY.values(), key=lambda op: op.name)
CASES = [(op, i) for op in OPS for i in range(len(op.examples))]


def _check(op, example):
    graph, specs = single_op_graph(op, example)
    err = onnx_parity(graph, specs, random_outputs=op.family == "random")   # shapes only: values are random
    assert err < TOLERANCE, f"{op.name}: relative error {err:.2e}"


def test_every_op_has_an_onnx_form():
    missing = [op.name for op in OPS if op.onnx is None]
    assert not missing, f"ops without an ONNX form: {missing}"


@pytest.mark.parametrize("op,i", CASES, ids=[f"{op.name}-{i}" for op, i in CASES])
def test_examples_match_torch_in_onnxruntime(op, i):
    if op.onnx is None:
        pytest.fail(f"`{op.name}` has no ONNX form")
    _check(op, op.examples[i])


@pytest.mark.parametrize("op", [op for op in OPS if op.arbitrary], ids=[op.name for op in OPS if op.arbitrary])
@given(data=st.data())
def test_drawn_arguments_match_torch_in_onnxruntime(op, data):
    if op.onnx is None:
        pytest.fail(f"`{op.name}` has no ONNX form")
    example = op.arbitrary(Drawer(data))
    try:
        single_op_graph(op, example)
    except (ShapeError, EvalError):
        reject()
    _check(op, example)
