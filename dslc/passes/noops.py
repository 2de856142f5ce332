"""No-op removal: nodes whose output is their input, read through.

Removed (each the identity on values, in training and in eval mode):
- `Identity()`; dropout of every kind with p = 0;
- reshapes, flattens, unflattens, squeezes, expands and slices whose result has the
  input's shape (a view in the same order: the same tensor);
- a chain of such reshapes that ends in the shape it started from (`unsqueeze` then
  `squeeze`), and a `reshape` of a reshape reads the original tensor;
- transpose/permute pairs that compose to the identity (`transpose(1, 2)` twice);
- x + 0, x - 0, x * 1, x / 1, x ** 1 with a number or a zeros/ones/full tensor that
  leaves x's shape and dtype as they are.
For inference only (-O2): every dropout, and `reparameterize(mu, log_var)`, which is
mu in eval mode.

A size or probability that is a model parameter (`Dropout(p)`) is left alone: the
generated constructor takes the parameter, so the node is a no-op only for today's
value. The log says so.
"""
from __future__ import annotations

from ..ir.dims import Real, Size, Sym, expr_of, not_recording, plain, plain_float, to_python
from ..ir.graph import Graph, Node
from ..ir.values import Ref, TensorValue
from ..ops.registry import Bound, Constants
from ..ops.shapes import norm_dim
from .edit import UseIndex, describe, drop_unused_instances, graphs, remove_nodes, replace_uses
from .manager import Pass, PassLog

# What an op is comes from its registry entry (`category`, `identity`, `symbol`): a view's result
# is the input's elements in the same order, in another shape; a gather's of that shape is the input.
SAME_SHAPE_IDENTITY = ("view", "gather")
REWIRED = Ref("<rewired>")   # _source: the node was changed in place, not removed
CHAIN_LIMIT = 64             # reshapes walked back from one node (each node walks: a long chain is quadratic)


def is_parameter(v) -> bool:
    """A value the generated constructor can change (it carries a parameter's expression)."""
    return isinstance(v, Size) or (isinstance(v, Real) and not v.expr.is_const())


def same_shape(a, b) -> bool:
    """Equal shapes for every parameter value (sizes compared as expressions; no guard recorded)."""
    return a.rank == b.rank and all(expr_of(x) == expr_of(y) for x, y in zip(a.shape, b.shape))


def constant_value(graph: Graph, ref: Ref):
    """The value of a zeros/ones/full tensor (None for anything else): its entry's `fold`."""
    node = graph.nodes[ref.node]
    if node.kind != "op" or node.op.category != "constant" or node.op.fold is None:
        return None
    return node.op.fold(Constants(node.args, [], [], node.outputs[0].dtype))


class NoOps(Pass):
    name = "noop"

    def __init__(self, inference: bool = False):
        self.inference = inference

    def run(self, root: Graph, log: PassLog) -> bool:
        changed = False
        for g in graphs(root):
            index = UseIndex(g)
            for node in list(g):
                if node.id not in g.nodes or node.kind != "op":
                    continue
                source, why = self._source(g, node, log)
                if source is REWIRED:
                    index.add(node)
                    changed = True
                    continue
                if source is None:
                    continue
                _read_through(g, node, source, index)
                log.did(g, f"removed {describe(g, node)}: {why}")
                changed = True
            drop_unused_instances(g)
        return changed

    def _source(self, g: Graph, node: Node, log: PassLog):
        """(the value the node's output equals, why) or (None, None)."""
        name, category = node.op.name, node.op.category
        if category == "identity":
            return node.inputs[0], "the identity"
        if category == "dropout":
            return self._dropout(g, node, log)
        if name == "reparameterize" and self.inference:
            return node.args["mu"].ref, "in eval mode it is mu"
        if category == "permute":
            return _permutes(g, node, log)
        if name in ("concat",) and len(node.inputs) == 1:
            return node.inputs[0], "it joins a single tensor"
        if name in ("chunk", "split") and len(node.outputs) == 1 \
                and same_shape(node.outputs[0], g.type_of(node.inputs[0])):
            return node.inputs[0], "it has a single piece, the whole tensor"
        if node.op.identity is not None:
            return _arithmetic(g, node, log)
        if category in SAME_SHAPE_IDENTITY:
            return _reshape(g, node, log)
        return None, None

    def _dropout(self, g: Graph, node: Node, log: PassLog):
        p = node.args["p"]
        if self.inference:
            return node.inputs[0], "dropout is the identity in eval mode (-O2)"
        if plain_float(p) != 0.0:
            return None, None
        if is_parameter(p):
            log.skip(g, f"kept {describe(g, node)}: p is the parameter `{_expr(p)}`, 0 now, which the generated "
                        f"constructor can change")
            return None, None
        return node.inputs[0], "p = 0"


def _expr(v) -> str:
    return to_python(v.expr)


def _read_through(g: Graph, node: Node, source: Ref, index: UseIndex) -> None:
    """Every use of the node's output reads `source`, which inherits the user's name; the node goes."""
    out = Ref(node.id)
    producer = g.nodes[source.node]
    if node.names[0] is not None and producer.kind in ("op", "call") and producer.names[source.index] is None:
        producer.names[source.index] = node.names[0]
    replace_uses(g, out, source, index)
    remove_nodes(g, [node.id])


def _reshape(g: Graph, node: Node, log: PassLog):
    x = node.inputs[0]
    out, have = node.outputs[0], g.type_of(x)
    if same_shape(out, have) and out.dtype == have.dtype:
        if node.op.name == "index" and not _whole_slices(node.args["index"]):
            return None, None
        return x, f"its result has its input's shape {have}"
    if node.op.category != "view":
        return None, None
    start = x
    for _ in range(CHAIN_LIMIT):  # walk back through a chain of reshapes: does it end where it began?
        inner = g.nodes[start.node]
        if inner.kind != "op" or inner.op.category != "view":
            break
        start = inner.inputs[0]
        if same_shape(out, g.type_of(start)):
            return start, f"the reshapes from {describe(g, inner)} on end in the shape they started from"
    inner = g.nodes[x.node]
    if node.op.name == "reshape" and inner.kind == "op" and inner.op.category == "view":
        if not _same_result(g, node, inner.inputs[0]):
            return None, None
        node.inputs = [inner.inputs[0]]
        node.args["input"] = TensorValue(inner.inputs[0], g.type_of(inner.inputs[0]), node.args["input"].span)
        g._nx = None
        log.did(g, f"{describe(g, node)} now reads the input of {describe(g, inner)}: a reshape of a reshape "
                   f"is one reshape")
        return REWIRED, None
    return None, None


def _same_result(g: Graph, node: Node, x: Ref) -> bool:
    """Does the node's shape rule give the same type when applied to `x` instead?"""
    args = dict(node.args, input=TensorValue(x, g.type_of(x), None))
    try:
        with not_recording():
            outs = node.op.infer(Bound(node.op, args, [g.type_of(x)]))
    except Exception:  # noqa: BLE001 - then it is not the same reshape
        return False
    return [t.key() for t in outs] == [t.key() for t in node.outputs]


def _whole_slices(items) -> bool:
    return all(isinstance(i, tuple) and i[0] == "slice" and i[3] in (None, 1) for i in items)


def _perm(node: Node, rank: int):
    """The node's permutation of `rank` dims (None when a dim is a model parameter)."""
    a = node.args
    dims = [a["dim0"], a["dim1"]] if node.op.name == "transpose" else list(a["dims"])
    if any(is_parameter(d) for d in dims):
        return None
    if node.op.name == "transpose":
        p = list(range(rank))
        i, j = norm_dim(dims[0], rank), norm_dim(dims[1], rank)
        p[i], p[j] = p[j], p[i]
        return p
    return [norm_dim(d, rank) for d in dims]


def _permutes(g: Graph, node: Node, log: PassLog):
    x = node.inputs[0]
    rank = g.type_of(x).rank
    outer = _perm(node, rank)
    if outer is None:
        return None, None
    if outer == list(range(rank)):
        return x, "it permutes nothing"
    inner_node = g.nodes[x.node]
    if inner_node.kind != "op" or inner_node.op.category != "permute":
        return None, None
    inner = _perm(inner_node, rank)
    if inner is None:
        return None, None
    composed = [inner[i] for i in outer]
    if composed == list(range(rank)):
        return inner_node.inputs[0], f"it undoes {describe(g, inner_node)}"
    log.skip(g, f"kept {describe(g, node)} after {describe(g, inner_node)}: together they permute the dims "
                f"to {composed}, not the identity")
    return None, None


def _arithmetic(g: Graph, node: Node, log: PassLog):
    unit, sides = node.op.identity
    out = node.outputs[0]
    for side in sides:
        other = "other" if side == "input" else "input"
        x, v = node.args[other], node.args[side]
        if not hasattr(x, "ref"):
            continue
        value = constant_value(g, v.ref) if hasattr(v, "ref") else v
        if value is None or isinstance(value, (bool, Sym)) or plain_float(plain(value)) != unit:
            continue
        if is_parameter(value):
            log.skip(g, f"kept {describe(g, node)}: its operand is the parameter `{_expr(value)}`, {unit} now, "
                        f"which the generated constructor can change")
            continue
        if not (same_shape(out, x.type) and out.dtype == x.type.dtype):
            log.skip(g, f"kept {describe(g, node)}: with {unit} it still changes the shape or dtype of its operand "
                        f"({x.type} to {out})")
            continue
        return x.ref, f"{'x' if side == 'other' else unit} {node.op.symbol} {unit if side == 'other' else 'x'} is x"
    return None, None


__all__ = ["NoOps", "constant_value", "is_parameter", "same_shape"]
