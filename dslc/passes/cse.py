"""Common-subexpression elimination: one node for each computation done twice.

Two nodes are the same computation when they apply the same op (or block) with
equal arguments to the same inputs. Arguments compare by value and by the
parameter expression they carry (`hidden` is not `128`, even when hidden is 128
now: the generated constructor can change it). A layer with weights is the same
only as itself: `fc1(x)` twice is one computation, `fc1(x)` and `fc2(x)` are two.
Left alone: random nodes (dropout, noise), and layers or blocks with running
statistics (batch norm), which update them once per application while training.
"""
from __future__ import annotations

from ..ir.graph import Graph, Node
from ..ir.keys import args_key
from ..ir.values import Ref
from .edit import (
    Purity,
    UseIndex,
    describe,
    drop_unused_instances,
    graphs,
    has_buffers,
    has_state,
    remove_nodes,
    replace_uses,
)
from .manager import Pass, PassLog


class CommonSubexpressions(Pass):
    name = "cse"

    def run(self, root: Graph, log: PassLog) -> bool:
        pure = Purity()
        changed = False
        for g in graphs(root):
            changed |= self._graph(g, pure, log)
        return changed

    def _graph(self, g: Graph, pure: Purity, log: PassLog) -> bool:
        seen: dict = {}       # key -> the first node computing it
        similar: dict = {}    # the same op, arguments and inputs, whatever the instance -> the first node
        changed = False
        index = UseIndex(g)
        for node in list(g):
            key, why = self._key(g, node, pure)
            look = _look(node)
            first = similar.setdefault(look, node) if look is not None else None
            if key is not None and key in seen:
                self._merge(g, node, seen[key], log, index)
                changed = True
                continue
            if key is not None:
                seen[key] = node
            if first is not None and first is not node and why:
                log.skip(g, f"kept {describe(g, node)} beside {describe(g, first)} on the same input: {why}")
        drop_unused_instances(g)
        return changed

    def _merge(self, g: Graph, node: Node, keep: Node, log: PassLog, index: UseIndex) -> None:
        for i in range(len(node.outputs)):
            if node.names[i] is not None and keep.names[i] is None and keep.kind in ("op", "call"):
                keep.names[i] = node.names[i]
            replace_uses(g, Ref(node.id, i), Ref(keep.id, i), index)
        remove_nodes(g, [node.id])
        log.did(g, f"merged {describe(g, node)} into {describe(g, keep)}: the same computation")

    def _key(self, g: Graph, node: Node, pure: Purity):
        """(key or None when it may not merge, why it does not merge with a similar node)."""
        inputs = tuple(node.inputs)
        inst = g.instances.get(node.instance) if node.instance else None
        if node.kind == "input":
            return None, None
        if node.kind == "weight":
            return ("weight", node.instance, node.attr), None
        if node.kind in ("param", "buffer"):
            return (node.kind, node.instance), None
        if not pure(g, node):
            return None, "it is random"
        if inst is not None and has_buffers(inst):
            return None, f"{'its block' if node.kind == 'call' else 'it'} updates running statistics while training"
        if inst is not None and has_state(inst):
            return ("instance", inst.id, inputs), "they have their own weights"
        if node.kind == "call":
            return ("block", id(node.args["graph"]), inputs, repr(node.args.get("scan"))), None
        return ("op", node.op.name, inputs, args_key(node.args)), None


def _look(node: Node):
    """What two nodes share when they differ at most in their instance (None: nothing to compare)."""
    if node.kind == "op":
        return ("op", node.op.name, tuple(node.inputs), args_key(node.args))
    if node.kind == "call":
        return ("call", id(node.args["graph"]), tuple(node.inputs), repr(node.args.get("scan")))
    return None
