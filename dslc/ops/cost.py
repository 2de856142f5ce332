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
    known = _known_values(graph, sizes)
    # the known values go into the shapes first: a product of shapes still in a block's parameters
    # (`upsample * (H // 4) + 2 * (k // 2)`, squared) could outgrow a polynomial's limit
    types = [_known_type(graph.type_of(r), known) for r in op.positional(node.args, node.inputs)]
    value = op.macs(Bound(op, dict(node.args), types), [_known_type(t, known) for t in node.outputs])
    return _with_known(value.poly, known) if isinstance(value, Sym) else int(plain(value))


def scan_steps(graph: Graph, node: Node, sizes: dict):
    """How many times a scan runs its step block: the sequence's length along `dim`, plus `future`
    (an int, or a Poly in the run-time sizes `sizes` gives no value)."""
    scan = node.args["scan"]
    steps = graph.type_of(node.inputs[0]).shape[scan["dim"]] + plain(scan["future"])
    if not isinstance(steps, Sym):
        return int(plain(steps))
    return _with_known(steps.poly, _known_values(graph, sizes))


def _known_values(graph: Graph, sizes: dict):
    """An atom's value where it is known: run-time sizes from `sizes`, parameters and block input
    sizes from the graph's own values."""
    return lambda a: sizes.get(a.name) if isinstance(a, Var) else graph.atom_env.get(a)


def _with_known(poly: Poly, known):
    """`poly` with the known values put in: an int, or a Poly in the sizes with no value."""
    total = poly.evaluate(known)
    if total is not None:
        return int(total)
    return poly.subst(lambda a: Poly.const(known(a)) if known(a) is not None else None)


def _known_type(t, known):
    """A tensor type whose run-time dims hold the values known here (the rest stay symbolic)."""
    if not any(isinstance(d, Sym) for d in t.shape):
        return t
    dims = (d if not isinstance(d, Sym) else _with_known(d.poly, known) for d in t.shape)
    return t.with_shape(tuple(d if not isinstance(d, Poly) else make_dim(d, None) for d in dims))


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
