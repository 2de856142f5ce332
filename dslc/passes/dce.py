"""Dead-code elimination: nodes whose results nothing uses, and block outputs no caller reads.

A node is live when a graph output or a live node uses one of its results, or
when it is random (dropout, noise: removing one would change the random stream
the others see while training), or a buffer (state, as a `param` is: a buffer
that forward never reads stays in the module and its state dict, as in torch).
The rest go, and so do the layers and blocks no node applies any more. A layer with weights that goes is recorded in the
graph (`dropped`): the generated module skips its entries when it loads a
checkpoint of the unoptimized model.

A block output that no call of that block reads is removed from the block and
from its calls; model outputs and inputs never change.
"""
from __future__ import annotations

from ..ir.graph import Graph
from ..ir.values import Ref
from .edit import (
    Purity,
    UseIndex,
    arg_refs,
    describe,
    drop_unused_instances,
    graphs,
    has_state,
    remove_nodes,
    replace_uses,
)
from .manager import Pass, PassLog


class DeadCode(Pass):
    name = "dce"

    def run(self, root: Graph, log: PassLog) -> bool:
        changed = self._unused_block_outputs(root, log)
        pure = Purity()
        for g in graphs(root):
            changed |= self._sweep(g, pure, log)
        return changed

    def _sweep(self, g: Graph, pure: Purity, log: PassLog) -> bool:
        used = {ref for _, ref in g.outputs}
        dead = []
        for node in reversed(list(g)):
            live = node.kind in ("input", "buffer") or any(Ref(node.id, i) in used for i in range(len(node.outputs)))
            if not live and not pure(g, node):
                log.skip(g, f"kept {describe(g, node)}: its result is unused, but it is random")
                live = True
            if live:
                used.update(node.inputs)
                used.update(arg_refs(node))
            else:
                dead.append(node)
        if not dead:
            return False
        for node in reversed(dead):
            log.did(g, f"removed {describe(g, node)}: its result is never used")
        remove_nodes(g, [n.id for n in dead])
        for inst in drop_unused_instances(g):
            if has_state(inst):
                log.did(g, f"dropped `{inst.name}` and its weights: nothing applies it")
        return True

    def _unused_block_outputs(self, root: Graph, log: PassLog) -> bool:
        sites: dict = {}   # id(block graph) -> [(caller graph, call node)]
        for g in graphs(root):
            for node in g:
                if node.kind == "call":
                    sites.setdefault(id(node.args["graph"]), []).append((g, node))
        changed = False
        indexes: dict = {}  # id(graph) -> its UseIndex, made when first needed (one per graph, not per call)
        for calls in sites.values():
            sub = calls[0][1].args["graph"]
            if len(sub.outputs) < 2:
                continue
            read = set()
            for g, node in calls:
                u = indexes.setdefault(id(g), UseIndex(g)) if id(g) not in indexes else indexes[id(g)]
                read |= {i for i in range(len(node.outputs)) if u.of(Ref(node.id, i))}
            if any("scan" in node.args for _, node in calls):
                continue   # a scan carries the state it returns into its next step, read or not
            keep = [i for i in range(len(sub.outputs)) if i in read]
            if not keep or len(keep) == len(sub.outputs):
                continue
            gone = [sub.outputs[i][0] for i in range(len(sub.outputs)) if i not in read]
            sub.outputs = [sub.outputs[i] for i in keep]
            for g, node in calls:
                for new, old in enumerate(keep):
                    if new != old:
                        replace_uses(g, Ref(node.id, old), Ref(node.id, new), indexes[id(g)])
                node.outputs = [node.outputs[i] for i in keep]
                node.names = [node.names[i] for i in keep]
                g._nx = None
            log.did(sub, f"removed the output{'s' if len(gone) > 1 else ''} {', '.join(gone)}: no call reads "
                         f"{'them' if len(gone) > 1 else 'it'}")
            changed = True
        return changed
