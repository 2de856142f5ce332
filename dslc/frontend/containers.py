"""Repeats kept as module lists: `repeat depth { h = h -> Block(dim) }` is
`nn.ModuleList([Block(dim) for _ in range(depth)])` and a loop in forward, keyed
0, 1, 2, ... as PyTorch keys it (`blocks.3.attn.weight`).

A repeat qualifies when each pass applies one layer with weights or one block
(made in that pass, used once) to the value the pass before made, with the same
other inputs, and nothing but the next pass reads a pass's result. Then:
- its elements are alike (same class, same arguments, the output typed as the
  input), so the count stays a constructor argument: no guard `depth == 12`;
- or they differ (a first block with a stride), and the list is written out,
  its count fixed as any unrolled repeat's.

`repeat depth as h { ... }` names the list (nanoGPT's `h`); a named repeat that
does not qualify is E0212, saying why. Unnamed ones that qualify and are alike
are lists too, named after their element (`blocks`); others unroll as before.
The decision waits for the end of the body, when every use of a pass's result
is known.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..diagnostics import Label
from ..ir.dims import Size
from ..ir.graph import Container, Graph
from ..ir.keys import value_key
from ..ir.naming import attribute_problem
from ..ir.values import Ref
from . import ast
from .context import Ctx
from .errors import EvalError


@dataclass
class Repeat:
    """A repeat as it ran: its count, the nodes each pass made, and the name it was given."""
    count: object
    passes: list            # [[node id, ...] per pass]
    name: str | None
    name_span: object
    span: object


def split_name(count: ast.Expr) -> tuple:
    """`repeat depth as h`: the count's expression, and the list's name and its span (or None)."""
    if isinstance(count, ast.AsName):
        return count.value, count.name, count.name_span
    return count, None, None


def check_name(name: str, span, ctx: Ctx) -> None:
    problem = attribute_problem(name)
    if problem:
        raise EvalError("E0211", f"`{name}` cannot name a list of layers: {problem}", span)
    if name in ctx.layer_names or name in ctx.graph.containers:
        raise EvalError("E0210", f"`{name}` already names a layer of `{ctx.graph.name}`", span,
                        label="a second use of the name")


def finish_repeats(ctx: Ctx) -> None:
    """Decide, for each repeat of the body, whether it is a module list (see the module's doc)."""
    if not ctx.repeats:
        return
    consumers = _consumers(ctx.graph)
    for r in ctx.repeats:
        if not r.passes:   # `repeat 0`: nothing to keep, and nothing that says what one pass would make
            if isinstance(r.count, Size):
                r.count._lose("a repeat count")
            continue
        why, elements = _qualifies(r, ctx.graph, consumers)
        if why is not None and r.name is not None:
            raise EvalError("E0212", f"`repeat ... as {r.name}` keeps one layer or block per pass in a list, "
                            f"but {why}", r.name_span, label="names the list",
                            labels=(Label(r.span, "this repeat"),),
                            help="apply one layer or block per pass to the running value "
                                 "(`h = h -> Block(dim)`), or leave the repeat unnamed to unroll it")
        uniform = why is None and _alike(elements, ctx.graph)
        if not uniform and isinstance(r.count, Size):
            r.count._lose("a repeat count")
        if why is None and (uniform or r.name is not None):
            _keep(r, elements, uniform, ctx.graph)
    ctx.repeats.clear()


def _keep(r: Repeat, elements: list, uniform: bool, graph: Graph) -> None:
    name = r.name or f"__auto{len(graph.containers)}"   # named by ir/naming.py with the other instances
    ids = [graph.nodes[n].instance for n in elements]
    graph.containers[name] = Container(name, ids, r.count, uniform, user_name=r.name)
    for i, inst_id in enumerate(ids):
        inst = graph.instances[inst_id]
        inst.container, inst.index = name, i


def _qualifies(r: Repeat, graph: Graph, consumers: dict) -> tuple:
    """(None, the element nodes in order) when the repeat can be a module list, else (why, [])."""
    elements = []
    for i, made in enumerate(r.passes):
        applied = [n for n in made if graph.nodes[n].instance is not None and graph.nodes[n].kind in ("op", "call")]
        if len(applied) != 1 or len(made) != 1:
            return f"pass {i + 1} makes {len(made)} operations, not one layer or block", []
        node = graph.nodes[applied[0]]
        inst = graph.instances[node.instance]
        if inst.kind == "layer" and (not inst.op.has_state or inst.inits or inst.op.keyword_inputs):
            return f"pass {i + 1} applies `{inst.op.name}`, a layer without weights of its own or with `init=`", []
        if len(node.outputs) != 1 or not node.inputs:
            return f"pass {i + 1}'s layer or block does not map one tensor to one tensor", []
        if sum(1 for m in graph.nodes.values() if m.instance == inst.id) != 1:
            return f"pass {i + 1} applies a layer that is applied elsewhere too (a shared, named layer)", []
        if elements:
            first, prev = graph.nodes[elements[0]], graph.nodes[elements[-1]]
            if node.inputs[0] != Ref(prev.id) or node.inputs[1:] != first.inputs[1:]:
                return f"pass {i + 1} is not applied to the result of pass {i}", []
        elements.append(node.id)
    for n in elements[:-1]:
        if consumers.get(Ref(n), 0) != 1:
            return "a pass's result is read by more than the next pass", []
    return None, elements


def _alike(elements: list, graph: Graph) -> bool:
    """Every element made with the same class and arguments, and the value's type unchanged by
    one (so that any count of them chains)."""
    first = graph.nodes[elements[0]]
    if _type_key(first.outputs[0]) != _type_key(graph.type_of(first.inputs[0])):
        return False
    key = _instance_key(graph.instances[first.instance])
    return all(_instance_key(graph.instances[graph.nodes[n].instance]) == key for n in elements[1:])


def _instance_key(inst) -> tuple:
    if inst.kind == "block":
        return ("block", id(inst.graph), value_key(inst.args))
    return ("layer", inst.op.name, value_key(inst.args))


def _type_key(t) -> tuple:
    return (value_key(t.shape), t.dtype)


def _consumers(graph: Graph) -> dict:
    """How many times each value is read: by nodes, and by the graph's outputs."""
    out: dict = {}
    for node in graph.nodes.values():
        for r in node.inputs:
            out[r] = out.get(r, 0) + 1
    for _, r in graph.outputs:
        out[r] = out.get(r, 0) + 1
    return out
