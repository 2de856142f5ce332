"""What a model costs: multiply-accumulates from each op's registry entry, for the summary and
for passes that weigh a model (channels_last where convolutions do most of the work)."""
from __future__ import annotations

from collections.abc import Iterator

from ..ir.dims import Poly, Sym, Var, make_dim, plain
from ..ir.graph import Graph, Node
from .registry import Bound


def node_macs(graph: Graph, node: Node, sizes: dict):
    """A node's MACs: an int, or a Poly in the run-time sizes `sizes` gives no value."""
    op = node.op
    if op.macs is None:
        return 0

    def known_value(a):   # run-time sizes from `sizes`; parameters and block input sizes from the graph
        return sizes.get(a.name) if isinstance(a, Var) else graph.atom_env.get(a)
    # the known values go into the shapes first: a product of shapes still in a block's parameters
    # (`upsample * (H // 4) + 2 * (k // 2)`, squared) could outgrow a polynomial's limit
    types = [_known(graph.type_of(r), known_value) for r in op.positional(node.args, node.inputs)]
    value = op.macs(Bound(op, dict(node.args), types), [_known(t, known_value) for t in node.outputs])
    if isinstance(value, Sym):
        total = value.poly.evaluate(known_value)
        if total is None:  # depends on a size with no value: keep it as a polynomial in that size
            return value.poly.subst(lambda a: Poly.const(known_value(a)) if known_value(a) is not None else None)
        return int(total)
    return int(plain(value))


def _known(t, known_value):
    """A tensor type whose run-time dims hold the values known here (the rest stay symbolic)."""
    if not any(isinstance(d, Sym) for d in t.shape):
        return t
    return t.with_shape(tuple(_known_dim(d, known_value) for d in t.shape))


def _known_dim(d, known_value):
    if not isinstance(d, Sym):
        return d
    total = d.poly.evaluate(known_value)
    if total is not None:
        return int(total)
    p = d.poly.subst(lambda a: Poly.const(known_value(a)) if known_value(a) is not None else None)
    return make_dim(p, None)


def scan_steps(graph: Graph, node: Node, sizes: dict):
    """How many times a scan runs its step block: the sequence's length along `dim`, plus `future`
    (an int, or a Poly in the run-time sizes `sizes` gives no value)."""
    scan = node.args["scan"]
    steps = graph.type_of(node.inputs[0]).shape[scan["dim"]] + plain(scan["future"])
    if not isinstance(steps, Sym):
        return int(plain(steps))

    def known_value(a):
        return sizes.get(a.name) if isinstance(a, Var) else graph.atom_env.get(a)
    total = steps.poly.evaluate(known_value)
    if total is None:
        return steps.poly.subst(lambda a: Poly.const(known_value(a)) if known_value(a) is not None else None)
    return int(total)


def times(macs, steps):
    """MACs once per step."""
    if isinstance(macs, Poly) or isinstance(steps, Poly):
        p = (macs if isinstance(macs, Poly) else Poly.const(macs)) * (steps if isinstance(steps, Poly) else Poly.const(steps))
        return p.const_value() if p.is_const() else p
    return macs * steps


def total_macs(values):
    """A sum of MACs: an int, or a polynomial when some part depends on an unknown size."""
    total = Poly()
    for v in values:
        total = total + (v if isinstance(v, Poly) else Poly.const(v))
    return total.const_value() if total.is_const() else total


def macs_by_op(graph: Graph, sizes: dict) -> Iterator[tuple[object, object]]:
    """(OpDef, MACs) of every op node, a block's nodes once per call site."""
    for node in graph:
        if node.kind == "call" and "scan" in node.args:   # the step block, once per step
            steps = scan_steps(graph, node, sizes)
            yield from ((op, times(m, steps)) for op, m in macs_by_op(node.args["graph"], sizes))
        elif node.kind == "call":
            yield from macs_by_op(node.args["graph"], sizes)
        elif node.kind not in ("input", "weight", "param", "buffer"):
            yield node.op, node_macs(graph, node, sizes)
