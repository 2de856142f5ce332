"""Where the generated code keeps torch's `inplace=True`.

Overwriting a tensor is safe only where nothing else reads it: not another node, not the caller
(a model or block input, an output), and not autograd. So `inplace=True` is kept where the input
is the fresh result of a convolution, linear layer or batch norm that this node alone reads. Those
ops' backward needs their inputs and weights, never their output, and their result is no view of
another tensor (torchvision's conv-bn-ReLU(inplace=True) is this case). Elsewhere it is dropped:
the same function, one more tensor in memory. It is dropped too where torch's in-place form has no
backward for the op's settings (`OpDef.inplace_backward`: leaky_relu_ with a negative slope). A
layer instance applied several times keeps it only where every application is safe, since its one
constructor serves them all.
"""
from __future__ import annotations

from ..ir.graph import Graph, Node
from ..ir.values import TensorValue

# The categories (ops/registry.py CATEGORIES) whose result autograd never saves and which is no view.
SAFE_PRODUCERS = ("conv", "conv_transpose", "linear", "batchnorm")


def kept_inplace(graph: Graph) -> set[str]:
    """The node and instance ids whose `inplace=True` the generated code keeps."""
    readers = _readers(graph)
    outputs = {ref for _, ref in graph.outputs}
    kept, unsafe_instances = set(), set()
    for node in graph.nodes.values():
        if node.kind != "op" or not node.args.get("inplace"):
            continue
        if _safe(graph, node, readers, outputs):
            kept.add(node.id)
        elif node.instance is not None:
            unsafe_instances.add(node.instance)
    applied = {n.instance for n in graph.nodes.values() if n.id in kept and n.instance is not None}
    return kept | (applied - unsafe_instances)


def _safe(graph: Graph, node: Node, readers: dict, outputs: set) -> bool:
    if not node.inputs:
        return False
    ref = node.inputs[0]
    producer = graph.nodes[ref.node]
    if node.op.inplace_backward is not None and not node.op.inplace_backward(node.args):
        return False
    return (producer.kind == "op" and producer.op.category in SAFE_PRODUCERS and ref not in outputs
            and readers.get(ref) == [node.id] and node.inputs.count(ref) == 1)


def _readers(graph: Graph) -> dict:
    """Each tensor's reading nodes (inputs and tensor arguments), once per node."""
    out: dict = {}
    for node in graph.nodes.values():
        refs = list(node.inputs)
        for v in node.args.values():
            for t in (v if isinstance(v, tuple) else (v,)):
                if isinstance(t, TensorValue):
                    refs.append(t.ref)
        for ref in dict.fromkeys(refs):
            out.setdefault(ref, []).append(node.id)
    return out
