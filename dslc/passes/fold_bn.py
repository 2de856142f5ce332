"""Batch norm folding, for inference (-O2).

In eval mode a batch norm with running statistics is a per-channel affine map,
y = (x - mean) * s + beta with s = gamma / sqrt(var + eps). Right after a
convolution or linear layer (z = W x + b) the two are one layer:

    W' = W * s   (scaled per output channel)       b' = (b - mean) * s + beta

The pass removes the batch-norm node and records it on the layer's instance
(`Instance.folded`); the layer's `bias` becomes true. The generated module
builds both layers as the unoptimized one would (so a seed gives the same
initial weights, folded) and folds them at construction; it folds a checkpoint
of the unoptimized model the same way as it loads (dslc/ops/norm.py's helpers).

Folded: Conv1d/2d/3d + BatchNorm1d/2d/3d over the same channels, and Linear on
[N, C] + BatchNorm1d. Not folded, with the reason in the log: a batch norm
without running statistics (eval mode still normalizes by the batch), one that is
applied more than once, one whose input has other users, or comes from a layer
whose weights are shared or read elsewhere.
"""
from __future__ import annotations

from ..ir.dims import plain
from ..ir.graph import FoldedNorm, Graph, Node
from ..ir.values import Ref
from .edit import UseIndex, describe, graphs, remove_nodes, replace_uses
from .manager import Pass, PassLog

# A batch norm folds into the convolution or linear layer before it (the registry's `category`;
# `spatial` gives their spatial dims, which must agree).
INTO = ("conv", "linear")


class FoldBatchNorm(Pass):
    name = "fold-bn"

    def run(self, root: Graph, log: PassLog) -> bool:
        changed = False
        for g in graphs(root):
            facts = _Facts(g)
            for node in list(g):
                if node.kind != "op" or node.op.category != "batchnorm":
                    continue
                reason = _why_not(g, node, facts)
                if reason:
                    log.skip(g, f"{describe(g, node)} not folded: {reason}")
                    continue
                layer = g.nodes[node.inputs[0].node]
                before = describe(g, node)
                _fold(g, layer, node, facts.index)
                log.did(g, f"folded {before} into {describe(g, layer)}")
                changed = True
        return changed


class _Facts:
    """What the checks ask of a graph, found once per pass over it: folding only removes batch-norm
    nodes (and their instances), so the counts of the other instances stay right."""

    def __init__(self, g: Graph):
        self.index = UseIndex(g)
        self.applications: dict = {}
        for n in g:
            if n.instance is not None:
                self.applications[n.instance] = self.applications.get(n.instance, 0) + 1
        self.weights_read = {n.instance for n in g if n.kind == "weight"}


def _why_not(g: Graph, bn: Node, facts: _Facts) -> str | None:
    inst = g.instances[bn.instance]
    if not bn.args["track_running_stats"]:
        return "it keeps no running statistics (track_running_stats=false), so eval mode still normalizes by the batch"
    if facts.applications.get(inst.id, 0) > 1:
        return f"`{inst.name}` is applied more than once"
    x = bn.inputs[0]
    src = g.nodes[x.node]
    if src.kind != "op" or src.op.category not in INTO:
        what = describe(g, src) if src.kind != "input" else "the block's input" if g.kind == "block" else \
            "the model's input"
        return f"its input comes from {what}, not a convolution or linear layer"
    layer = g.instances[src.instance]
    n = src.op.spatial
    rank = src.outputs[0].rank
    if n == 0 and rank != 2:
        return f"`{layer.name}`'s output is {rank}-d: {bn.op.name} normalizes its dimension 1, not the features"
    if n and (bn.op.spatial != n or rank != n + 2):
        return f"`{layer.name}` makes {rank}-d maps, which {bn.op.name} does not normalize per its channels"
    channels = layer.args["out_features" if n == 0 else "out_channels"]
    if plain(channels) != plain(bn.args["num_features"]):
        return f"`{layer.name}` has {plain(channels)} output channels, the batch norm {plain(bn.args['num_features'])}"
    if layer.folded is not None:
        return f"`{layer.name}` already has `{layer.folded.norm.name}` folded in"
    if facts.applications.get(layer.id, 0) > 1:
        return f"`{layer.name}` is applied more than once (its weights are shared)"
    if layer.id in facts.weights_read:
        return f"`{layer.name}`'s weights are read elsewhere"
    if layer.inits or inst.inits:
        # folding happens as the layers are made; an `init=` runs after that (kept simple: not folded)
        return f"`{(layer if layer.inits else inst).name}` has its own `init=`"
    if facts.index.of(x) != {bn.id}:
        return f"`{layer.name}`'s output has another user"
    for i in (layer, inst):
        if i.container is not None and not _listed_sequential(g, i.container):
            return f"`{i.name}` is an element of a module list made by a loop, whose elements would no longer be alike"
    return None


def _listed_sequential(g: Graph, container: str) -> bool:
    """An nn.Sequential block whose elements are listed one by one: folding one element into the one
    before keeps the others' keys (frontend/containers.py)."""
    c = g.containers.get(container)
    return c is not None and c.sequential and c.uniform_from is None


def _fold(g: Graph, layer: Node, bn: Node, index: UseIndex) -> None:
    inst, norm = g.instances[layer.instance], g.instances[bn.instance]
    inst.folded = FoldedNorm(norm, bool(inst.args["bias"]))
    inst.args["bias"] = True
    layer.args["bias"] = True
    if layer.names[0] is None:
        layer.names[0] = bn.names[0]
    replace_uses(g, Ref(bn.id), Ref(layer.id), index)
    remove_nodes(g, [bn.id])
    del g.instances[norm.id]
