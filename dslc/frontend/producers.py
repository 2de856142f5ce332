"""What computed a value: the op behind it, seen through the ops that only move values.

A classifier's output is `Linear -> Sigmoid -> flatten`, or a block whose last layer is a
softmax, or a model applied in a training step. `producer` walks back from a value through
reshapes, permutations, gathers, identities, detach and dropout (SAME_VALUE, and dropout,
which only zeroes and rescales) and into the outputs of block and model calls, and returns the
op that made the values. `scores` says what that op's values are on a classifier's scale
(the registry's `produces`): probabilities, log-probabilities, or else logits.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..ir.graph import Graph, Node
from ..ir.values import Ref
from ..ops.registry import SAME_VALUE

_PASSED = SAME_VALUE + ("dropout",)


@dataclass(frozen=True)
class Producer:
    """The op node that made a value, and the graph it sits in (a block's or model's own)."""
    graph: Graph
    node: Node

    @property
    def op(self):
        return self.node.op


def producer(graph: Graph, ref: Ref) -> Producer | None:
    """The op that computed `ref`'s values, or None when they come straight from an input."""
    while True:   # each turn moves to an earlier node or into a called graph: it ends
        node = graph.nodes[ref.node]
        if node.kind == "call" and isinstance(node.args.get("graph"), Graph):
            graph = node.args["graph"]
            ref = graph.outputs[ref.index][1]
            continue
        if node.kind == "op" and node.op is not None and node.op.category in _PASSED and node.inputs:
            ref = node.inputs[0]
            continue
        return Producer(graph, node) if node.kind == "op" and node.op is not None else None


def scores(graph: Graph, ref: Ref) -> str:
    """What `ref`'s values are to a loss or a metric: "probabilities" (after a sigmoid or softmax),
    "log_probabilities" (after log_softmax), or "logits" (anything else)."""
    found = producer(graph, ref)
    return (found.op.produces if found is not None else "") or "logits"


__all__ = ["Producer", "producer", "scores"]
