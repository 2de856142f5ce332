"""Constant folding: computing compile-time tensors at compile time.

The language's compile-time tensors are `zeros(size)` and `ones(size)` (their
sizes may be run-time ones, such as `B`): every one is uniform, one value
everywhere. A pure node whose tensor inputs are all uniform constants, and that
keeps them uniform, is replaced by `zeros`, `ones` or `full(size, value)` of
its result type. Which ops keep them uniform, and with what value, is in the
registry: an entry's `fold` computes the op's value from its inputs' values
(arithmetic, activations, concat/stack of equal values, reductions and matmul
over static sizes), and the ops of the categories in `SAME_VALUE` (reshapes,
views, permutations, gathers) keep the input's value.

Values are computed in Python and rounded to the result's dtype after each
operation as torch would (float32 and float16 through IEEE single and half
precision); bfloat16 and bool results are left alone.
"""
from __future__ import annotations

import math

from ..ir.dims import Sym, plain, plain_float
from ..ir.graph import Graph, Node
from ..ir.types import FLOAT_DTYPES, format_shape, rounded
from ..ir.values import Ref, TensorValue
from ..ops.registry import SAME_VALUE, Constants
from ..ops.tensor.helpers import uniform
from .edit import describe, drop_unused_instances, graphs, has_state
from .manager import Pass, PassLog
from .noops import constant_value, is_parameter


class ConstantFolding(Pass):
    name = "const"

    def run(self, root: Graph, log: PassLog) -> bool:
        changed = False
        for g in graphs(root):
            values: dict = {}
            for node in list(g):
                if node.kind != "op":
                    continue
                if node.op.category == "constant":
                    values[Ref(node.id)] = constant_value(g, Ref(node.id))
                    continue
                if not node.inputs or any(r not in values for r in node.inputs):
                    continue
                value, why = self._fold(g, node, [values[r] for r in node.inputs])
                if value is None:
                    if why:
                        log.skip(g, f"kept {describe(g, node)} of constants: {why}")
                    continue
                before = describe(g, node)
                _materialize(g, node, value)
                values[Ref(node.id)] = value
                log.did(g, f"folded {before} into {_show(node)}")
                changed = True
            drop_unused_instances(g)
        return changed

    def _fold(self, g: Graph, node: Node, ins: list):
        inst = g.instances.get(node.instance) if node.instance else None
        if not node.op.pure:
            return None, "it is random"
        if inst is not None and has_state(inst):
            return None, "it has weights"
        if len(node.outputs) != 1:
            return None, "it has several outputs"
        out = node.outputs[0]
        if out.dtype not in FLOAT_DTYPES and out.dtype not in ("int64", "int32", "int16", "int8", "uint8"):
            return None, f"{out.dtype} results are not folded"
        if out.dtype == "bfloat16":
            return None, "bfloat16 results are not folded"
        try:
            value = self._value(g, node, ins)
        except (OverflowError, ValueError, ZeroDivisionError):
            return None, "its value is not finite"
        if value is None:
            return None, None
        if isinstance(value, complex):
            return None, "its value is not a real number"
        if isinstance(value, float) and not math.isfinite(value):
            return None, "its value is not finite"
        return rounded(value, out.dtype), None

    def _value(self, g: Graph, node: Node, ins: list):
        op = node.op
        if op.category in SAME_VALUE:
            return ins[0]
        if op.fold is None:
            return None
        dtype = node.outputs[0].dtype
        return op.fold(Constants(node.args, [g.type_of(r) for r in node.inputs], ins, dtype,
                                 parametric=any(is_parameter(v) for v in node.args.values()),
                                 operand=lambda name: _operand(g, node.args[name], dtype)))


def _operand(g: Graph, v, dtype: str):
    """A number-or-tensor argument's value: a number, or its constant tensor's; None if not known here."""
    if isinstance(v, TensorValue):
        v = constant_value(g, v.ref)
    elif is_parameter(v) or isinstance(v, (bool, Sym)):  # a run-time size is not known here
        return None
    return plain_float(v) if dtype in FLOAT_DTYPES else plain(v)


def _materialize(g: Graph, node: Node, value) -> None:
    """The node becomes zeros/ones/full of its result type (same id, place and name)."""
    t = node.outputs[0]
    node.op, node.args = uniform(tuple(t.shape), value, t.dtype)
    node.inputs = []
    node.instance = None
    g._nx = None


def _show(node: Node) -> str:
    size = format_shape(node.args["size"])
    if "value" in node.args:
        return f"{node.op.name}({size}, {node.args['value']!r})"
    return f"{node.op.name}({size})"


__all__ = ["ConstantFolding"]
