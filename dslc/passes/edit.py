"""Editing a graph in place: uses, replacing a value, removing nodes and instances.

A value is a `Ref` (node, output index). It is used by a node's inputs, by
tensors inside a node's arguments (a function's `tensors` or `q`), and by the
graph's outputs; `replace_uses` rewrites all three, so the graph stays one
consistent picture for every backend.
"""
from __future__ import annotations

import os

from ..ir.graph import Graph, Node
from ..ir.values import Ref, TensorValue


def graphs(root: Graph) -> list[Graph]:
    """The root and every block specialization below it, each once (parents first)."""
    out, seen = [], set()

    def visit(g: Graph) -> None:
        if id(g) in seen:
            return
        seen.add(id(g))
        out.append(g)
        for inst in g.instances.values():
            if inst.graph is not None:
                visit(inst.graph)
    visit(root)
    return out


def arg_refs(node: Node) -> list[Ref]:
    """Refs of the tensors among a node's arguments."""
    out = []
    for v in node.args.values():
        for t in (v if isinstance(v, tuple) else (v,)):
            if isinstance(t, TensorValue):
                out.append(t.ref)
    return out


def uses(graph: Graph) -> dict:
    """Ref -> ids of the nodes that use it (in order, once each); graph outputs count as "<output>"."""
    out: dict = {}
    for node in graph:
        for ref in dict.fromkeys(list(node.inputs) + arg_refs(node)):
            out.setdefault(ref, []).append(node.id)
    for _, ref in graph.outputs:
        out.setdefault(ref, []).append("<output>")
    return out


def used_refs(graph: Graph) -> set:
    return set(uses(graph))


OUTPUT = "<output>"   # a reader that is the graph's output list


class UseIndex:
    """Who reads each value of one graph: built once for a pass over it and kept in step by
    `replace_uses`, so rewiring many values costs time in proportion to their readers, not a
    scan of the whole graph each (20,000 no-ops took minutes to remove at -O1)."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self.readers: dict = {}
        for node in graph:
            self.add(node)
        for _, ref in graph.outputs:
            self.readers.setdefault(ref, set()).add(OUTPUT)

    def add(self, node: Node) -> None:
        """Record what `node` reads (after it was made to read something new)."""
        for ref in list(node.inputs) + arg_refs(node):
            self.readers.setdefault(ref, set()).add(node.id)

    def of(self, ref: Ref) -> set:
        """The ids of the nodes that read `ref` now (OUTPUT for the graph's outputs)."""
        return {i for i in self.readers.get(ref, ()) if self._reads(i, ref)}

    def _reads(self, reader: str, ref: Ref) -> bool:
        if reader == OUTPUT:
            return any(r == ref for _, r in self.graph.outputs)
        node = self.graph.nodes.get(reader)  # entries of removed or rewired nodes are left behind
        return node is not None and (ref in node.inputs or ref in arg_refs(node))

    def move(self, old: Ref, new: Ref) -> None:
        moved = self.readers.pop(old, set())
        if moved:
            self.readers.setdefault(new, set()).update(moved)


def replace_uses(graph: Graph, old: Ref, new: Ref, index: UseIndex | None = None) -> None:
    """Every use of `old` reads `new` instead (their types are equal). With the graph's `index`,
    only the nodes that read `old` are visited, and the index follows."""
    readers = graph if index is None else [graph.nodes[i] for i in index.of(old) if i != OUTPUT]
    for node in readers:
        if old in node.inputs:
            node.inputs = [new if r == old else r for r in node.inputs]
        for k, v in node.args.items():
            if isinstance(v, TensorValue) and v.ref == old:
                node.args[k] = TensorValue(new, v.type, v.span)
            elif isinstance(v, tuple) and any(isinstance(t, TensorValue) and t.ref == old for t in v):
                node.args[k] = tuple(TensorValue(new, t.type, t.span) if isinstance(t, TensorValue) and t.ref == old
                                     else t for t in v)
    if index is None or OUTPUT in index.of(old):
        graph.outputs = [(n, new if r == old else r) for n, r in graph.outputs]
    if index is not None:
        index.move(old, new)
    graph._nx = None


def remove_nodes(graph: Graph, ids) -> None:
    for i in ids:
        del graph.nodes[i]
    graph._nx = None


def has_state(inst) -> bool:
    """Does the instance own weights or buffers (so that removing it changes the state dict)?"""
    if inst.kind in ("param", "buffer"):
        return True
    if inst.kind == "layer":
        return bool(inst.weights() or inst.buffers())
    return any(has_state(i) for i in inst.graph.instances.values())


def drop_unused_instances(graph: Graph) -> list:
    """Remove instances no node applies; those with weights are remembered in `graph.dropped`
    (a checkpoint of the unoptimized model still loads: their entries are skipped)."""
    applied = {n.instance for n in graph if n.instance}
    gone = [i for k, i in graph.instances.items() if k not in applied]
    for inst in gone:
        del graph.instances[inst.id]
        names = [inst.name] + ([inst.folded.norm.name] if inst.folded is not None else [])
        for name in names:
            if has_state(inst) and name not in graph.dropped:
                graph.dropped.append(name)
    return gone


def describe(graph: Graph, node: Node) -> str:
    """`bn1` (BatchNorm2d) for a layer or block, `transpose` at gpt.dl:12 for a function."""
    inst = graph.instances.get(node.instance) if node.instance else None
    if node.kind == "call":
        return f"`{inst.name}` ({node.args['graph'].name})"
    if node.kind in ("weight", "param", "buffer"):
        return f"`{inst.name}" + (f".{node.attr}`" if node.kind == "weight" else "`")
    if node.kind == "input":
        return f"the input `{node.names[0]}`"
    if inst is not None:
        return f"`{inst.name}` ({node.op.name})"
    where = ""
    span = node.span
    if span is not None and getattr(span, "file", None) is not None:
        where = f" at {os.path.basename(span.file.name)}:{span.line}"
    return f"`{node.op.name}`{where}"


def producer(graph: Graph, ref: Ref) -> Node:
    return graph.nodes[ref.node]


def has_buffers(inst) -> bool:
    """Does the instance hold buffers (running statistics) that training updates?"""
    if inst.kind == "layer":
        return bool(inst.buffers())
    if inst.kind == "block":
        return any(has_buffers(i) for i in inst.graph.instances.values())
    return False


class Purity:
    """Whether a node may be removed or merged: not random, and (for a call) nothing random inside."""

    def __init__(self):
        self._graphs: dict = {}

    def graph(self, g: Graph) -> bool:
        if id(g) not in self._graphs:
            self._graphs[id(g)] = True
            self._graphs[id(g)] = all(self(g, n) for n in g)
        return self._graphs[id(g)]

    def __call__(self, g: Graph, node: Node) -> bool:
        if node.kind == "op":
            return node.op.pure
        if node.kind == "call":
            return self.graph(node.args["graph"])
        return True
