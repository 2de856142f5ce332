"""The invariants every pass keeps, checked after each one.

- structure (Graph.verify): each input is defined before its use, instances exist, no cycles;
- every tensor among a node's arguments is a defined value of the type recorded there;
- every op node's output types are what its op's shape rule gives for its inputs now;
- a call has as many outputs as its block returns;
- every output refers to a node, and every instance is applied by some node (none dangling).
"""
from __future__ import annotations

from ..ir.dims import not_recording
from ..ir.graph import Graph
from ..ir.values import Ref, TensorValue
from ..ops.registry import Bound
from .edit import arg_refs, graphs


class VerifyError(AssertionError):
    """A pass broke an invariant of the IR (a bug in the pass, never the user's)."""


def verify(root: Graph, after: str = "") -> None:
    where = f" after {after}" if after else ""
    for g in graphs(root):
        problem = _problem(g)
        if problem:
            raise VerifyError(f"IR check failed{where}, in {g.kind} {g.name}: {problem}")


def _problem(g: Graph) -> str | None:
    try:
        g.verify()
    except AssertionError as e:
        return str(e)
    defined = {Ref(n.id, i) for n in g for i in range(len(n.outputs))}
    for node in g:
        for ref in arg_refs(node):
            if ref not in defined:
                return f"{node.id} has an argument from a missing value {ref}"
        for v in node.args.values():
            for t in (v if isinstance(v, tuple) else (v,)):
                if isinstance(t, TensorValue) and g.type_of(t.ref) != t.type:
                    return f"{node.id}: the argument {t.ref} is recorded as {t.type}, but is {g.type_of(t.ref)}"
        if node.kind == "op":
            problem = _rule_problem(g, node)
            if problem:
                return problem
        if node.kind == "call" and len(node.outputs) != len(node.args["graph"].outputs):
            return f"{node.id} has {len(node.outputs)} outputs, its block returns {len(node.args['graph'].outputs)}"
    applied = {n.instance for n in g if n.instance}
    dangling = [i.name or i.id for k, i in g.instances.items() if k not in applied]
    if dangling:
        return f"instances no node applies: {', '.join(dangling)}"
    return None


def _rule_problem(g: Graph, node) -> str | None:
    """The op's shape rule, run again on the node's current inputs, must give its recorded types."""
    b = Bound(node.op, dict(node.args), [g.type_of(r) for r in node.op.positional(node.args, node.inputs)])
    try:
        with not_recording():
            outs = list(node.op.infer(b))
    except Exception as e:  # noqa: BLE001 - a rule that now fails is the finding
        return f"{node.id} ({node.op.name}): its shape rule now fails: {e}"
    if [t.key() for t in outs] != [t.key() for t in node.outputs]:
        have = ", ".join(str(t) for t in node.outputs)
        want = ", ".join(str(t) for t in outs)
        return f"{node.id} ({node.op.name}) is typed {have}, but its shape rule gives {want}"
    return None
