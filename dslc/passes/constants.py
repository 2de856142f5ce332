"""Constant folding: computing compile-time tensors at compile time.

The language's compile-time tensors are `zeros(size)` and `ones(size)` (their
sizes may be run-time ones, such as `B`): every one is uniform, one value
everywhere. A pure node whose tensor inputs are all uniform constants, and that
keeps them uniform, is replaced by `zeros`, `ones` or `full(size, value)` of
its result type. Folded here: arithmetic (+ - * / ** and negation) with numbers
or other constants, the activations below, every reshape, view and permutation,
concat/stack of equal values, mean/amax/amin, sum and matmul over static sizes.

Values are computed in Python and rounded to the result's dtype after each
operation as torch would (float32 and float16 through IEEE single and half
precision); bfloat16 and bool results are left alone.
"""
from __future__ import annotations

import math
import struct

from ..ir.dims import Sym, plain, plain_float, product
from ..ir.graph import Graph, Node
from ..ir.types import FLOAT_DTYPES, format_shape
from ..ir.values import Ref, TensorValue
from ..ops.registry import REGISTRY
from .edit import describe, drop_unused_instances, graphs, has_state
from .manager import Pass, PassLog
from .noops import constant_value, is_parameter

# ops whose result holds the input's values (moved, repeated or reshaped): a constant stays one
SAME_VALUE = ("view", "permute", "gather", "identity", "stop_gradient")
SOFTMAXES = {"Softmax": "softmax", "LogSoftmax": "log_softmax"}
_PACK = {"float32": "f", "float16": "e"}


class ConstantFolding(Pass):
    name = "const"

    def run(self, root: Graph, log: PassLog) -> bool:
        changed = False
        for g in graphs(root):
            values: dict = {}
            for node in list(g):
                if node.kind != "op":
                    continue
                if node.op.name in ("zeros", "ones", "full"):
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
        return _rounded(value, out.dtype), None

    def _value(self, g: Graph, node: Node, ins: list):
        op = node.op
        name = SOFTMAXES.get(op.name, op.name)
        a, x = node.args, ins[0]
        if op.category in SAME_VALUE:
            return x
        if name in ("concat", "stack"):
            return x if all(v == x for v in ins) else None
        if name == "neg":
            return -x
        if name in ("add", "sub", "mul", "div", "pow"):
            return _arith(g, node, name)
        if op.fold is not None:
            if any(is_parameter(v) for v in a.values()):
                return None   # a slope the generated constructor can change
            return op.fold(float(x), a)
        if name in ("softmax", "log_softmax"):
            n = _static(g.type_of(node.inputs[0]).shape[plain(a["dim"])])
            if n is None:
                return None
            return 1.0 / n if name == "softmax" else -math.log(n)
        if name in ("mean", "amax", "amin"):
            return x
        if name == "sum":
            t = g.type_of(node.inputs[0])
            dim = a["dim"]
            listed = dim if isinstance(dim, tuple) else (dim,)
            dims = range(t.rank) if dim in (None, ()) else [plain(d) for d in listed]
            n = _static(product([t.shape[d] for d in dims]))
            return None if n is None else x * n
        if name == "matmul":
            t = g.type_of(node.inputs[0])
            k = _static(t.shape[-1])
            return None if k is None else ins[0] * ins[1] * k
        return None


def _arith(g: Graph, node: Node, name: str):
    """a <op> b with numbers or folded constants, in the result's dtype."""
    dtype = node.outputs[0].dtype
    vals = []
    for key in ("input", "other"):
        v = node.args[key]
        if isinstance(v, TensorValue):
            v = constant_value(g, v.ref)
        elif is_parameter(v) or isinstance(v, (bool, Sym)):  # a run-time size is not known here
            return None
        vals.append(plain_float(v) if dtype in FLOAT_DTYPES else plain(v))
    a, b = (_rounded(v, dtype) for v in vals)
    if dtype not in FLOAT_DTYPES:
        if name == "pow" and b < 0 or name == "div":
            return None
        a, b = int(a), int(b)
    return {"add": lambda: a + b, "sub": lambda: a - b, "mul": lambda: a * b, "div": lambda: a / b,
            "pow": lambda: a ** b}[name]()


def _static(d):
    return None if isinstance(d, Sym) else plain(d)


def _rounded(v, dtype: str):
    if dtype in _PACK:
        return struct.unpack(_PACK[dtype], struct.pack(_PACK[dtype], float(v)))[0]
    if dtype in FLOAT_DTYPES:
        return float(v)
    v = int(v)
    bits = {"int64": 64, "int32": 32, "int16": 16, "int8": 8, "uint8": 8}[dtype]
    lo, hi = (0, 2 ** bits) if dtype == "uint8" else (-2 ** (bits - 1), 2 ** (bits - 1))
    if not lo <= v < hi:
        raise OverflowError
    return v


def _materialize(g: Graph, node: Node, value) -> None:
    """The node becomes zeros/ones/full of its result type (same id, place and name)."""
    t = node.outputs[0]
    size = tuple(t.shape)
    if value in (0, 1) and not (value == 0 and math.copysign(1.0, float(value)) < 0):
        node.op = REGISTRY["ones" if value == 1 else "zeros"]
        node.args = {"size": size, "dtype": t.dtype}
    else:
        node.op = REGISTRY["full"]
        node.args = {"size": size, "value": float(value), "dtype": t.dtype}
    node.inputs = []
    node.instance = None
    g._nx = None


def _show(node: Node) -> str:
    size = format_shape(node.args["size"])
    if node.op.name == "full":
        return f"full({size}, {node.args['value']!r})"
    return f"{node.op.name}({size})"


__all__ = ["ConstantFolding"]
