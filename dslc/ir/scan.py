"""A scan node: a block call that runs once per step of a sequence (`scan(...)`, frontend/scan.py).

Its `args["scan"]` holds `dim`, `keepdim` and `future`; its inputs are the sequence and the initial
state's tensors, its outputs every step's y (stacked along `dim`, or concatenated with `keepdim`)
and the last state. The block receives one step: these helpers give the types it sees.
"""
from __future__ import annotations

from .types import TensorType


def is_scan(node) -> bool:
    return node.kind == "call" and "scan" in node.args


def step_type(t: TensorType, scan: dict) -> TensorType:
    """One step of the sequence `t`: without `dim`, or with it of size 1 (`keepdim`: torch's `split(1, dim)`)."""
    dim = scan["dim"]
    return t.with_shape(t.shape[:dim] + ((1,) if scan["keepdim"] else ()) + t.shape[dim + 1:])


def block_input_types(graph, node) -> list:
    """The types a call node's block receives: the inputs', or one step's for a scan."""
    types = [graph.type_of(r) for r in node.inputs]
    if is_scan(node):
        types[0] = step_type(types[0], node.args["scan"])
    return types
