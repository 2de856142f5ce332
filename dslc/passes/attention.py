"""`attention(q, k, v, heads)` through torch.nn.functional.scaled_dot_product_attention (-O1).

The unoptimized code spells attention out (scores, mask, softmax, weighted sum;
the `multi_head_attention` helper), as a reader would write it. At -O1 each
`attention` node becomes `sdpa` with the same arguments and type, emitted as one
call of F.scaled_dot_product_attention, which picks torch's fused kernels (flash
or memory-efficient attention where the device has them; the scaled product
with the same mask and scale 1/sqrt(d) otherwise).

`MultiheadAttention` layers are left as they are: torch's nn.MultiheadAttention
already calls scaled_dot_product_attention (generated code asks for no weights).
"""
from __future__ import annotations

from ..ir.graph import Graph
from ..ops.registry import REGISTRY
from .edit import describe, graphs
from .manager import Pass, PassLog


class ScaledDotProduct(Pass):
    name = "sdpa"

    def run(self, root: Graph, log: PassLog) -> bool:
        changed = False
        for g in graphs(root):
            for node in g:
                if node.kind != "op":
                    continue
                if node.op.name == "attention":
                    log.did(g, f"{describe(g, node)} now runs F.scaled_dot_product_attention")
                    node.op = REGISTRY["sdpa"]
                    changed = True
                elif node.op.name == "MultiheadAttention":
                    log.skip(g, f"{describe(g, node)} left as it is: nn.MultiheadAttention already calls "
                                "scaled_dot_product_attention")
        return changed
