"""A copy of a graph that passes may rewrite without touching the original.

Nodes, instances, their argument dictionaries, and every block specialization
below the graph are copied; a specialization several calls share stays shared
in the copy, and a node whose arguments were its instance's arguments (one
dict, as the evaluator makes them) keeps that identity. Values that are never
mutated (types, refs, sizes, op definitions, spans, guards, the AST) are shared.
"""
from __future__ import annotations

import copy
from dataclasses import replace

from .dims import GuardList
from .graph import FoldedNorm, Graph, Instance, Node


def clone(graph: Graph) -> Graph:
    return _graph(graph, {})


def _graph(graph: Graph, memo: dict) -> Graph:
    if id(graph) in memo:
        return memo[id(graph)]
    new = copy.copy(graph)
    memo[id(graph)] = new
    new._nx = None
    new.params = dict(graph.params)
    new.param_types = dict(graph.param_types)
    new.param_defaults = dict(graph.param_defaults)
    new.inputs = list(graph.inputs)
    new.outputs = list(graph.outputs)
    new.guards = GuardList(graph.guards)
    new.atom_env = dict(graph.atom_env)
    new.failures = list(graph.failures)
    new.dropped = list(graph.dropped)
    args_of = {}   # id(old args dict) -> new dict, so node.args stays its instance's args
    new.instances = {k: _instance(i, memo, args_of) for k, i in graph.instances.items()}
    new.nodes = {k: _node(n, memo, args_of) for k, n in graph.nodes.items()}
    return new


def _instance(inst: Instance, memo: dict, args_of: dict) -> Instance:
    args = dict(inst.args)
    args_of[id(inst.args)] = args
    folded = inst.folded
    if folded is not None:
        folded = FoldedNorm(_instance(folded.norm, memo, {}), folded.bias)
    graph = _graph(inst.graph, memo) if inst.graph is not None else None
    return replace(inst, args=args, graph=graph, folded=folded)


def _node(node: Node, memo: dict, args_of: dict) -> Node:
    args = args_of.get(id(node.args))
    if args is None:
        args = dict(node.args)
        if node.kind == "call":
            args["graph"] = _graph(node.args["graph"], memo)
    return replace(node, outputs=list(node.outputs), inputs=list(node.inputs), args=args,
                   names=list(node.names))
