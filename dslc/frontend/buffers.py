"""`buffer NAME = expr`: state of a model or block that is computed once, in its constructor.

A buffer is what `register_buffer` makes in PyTorch: a tensor moved by `.to()`, in the state
dict unless `buffer(persistent=false)`, never a parameter. Its value may read only what the
constructor knows: the parameters, numbers, and tensors computed from them alone (`arange`,
`sin`, `ones`, ...), never an input, a run-time size (`B`, `T`), a weight or a layer.

In the IR the buffer is an instance of kind `buffer` whose own graph (kind `buffer`, no
inputs, one output) computes the value: the statement's expression and the constant tensors
it reads, copied there. A node of kind `buffer` applies the instance in the body, so forward
reads it as it reads a `param`. Nodes of the body that only fed buffers are removed when the
body ends: the value is computed in the constructor, not again in forward.
"""
from __future__ import annotations

from ..diagnostics import Label
from ..ir.dims import Real, Size, Sym
from ..ir.graph import Graph, Node
from ..ir.nesting import leaves
from ..ir.types import TensorType
from ..ir.values import Ref, TensorValue
from ..ops.ptypes import BOOL, describe
from ..ops.registry import ParamSpec
from . import ast
from .binding import Arg, bind_op
from .context import Ctx
from .errors import EvalError, Poisoned
from .values import POISON

BUFFER_PARAMS = (ParamSpec("persistent", BOOL, True, doc="in the state dict (saved and loaded) when true"),)


class BufferEvaluation:
    """The `buffer` statement (a mixin of `Evaluator`)."""

    def _s_BufferStmt(self, stmt: ast.BufferStmt, ctx: Ctx, top: bool) -> None:
        if ctx.kind not in ("model", "block"):
            raise EvalError("E0107", "`buffer` belongs in a model or block", stmt.span)
        if ctx.loop_depth:
            raise EvalError("E0107", "`buffer` cannot be declared inside a loop", stmt.span,
                            help="declare it before the loop; a loop may read it")
        self._check_layer_name(stmt.name, stmt.name_span, "a `buffer`")
        self._claim_state_name(stmt.name, stmt.name_span, ctx)
        persistent = self._buffer_settings(stmt, ctx)
        first_new = ctx.graph._counter + 1
        value = self._expr(stmt.value, ctx)
        if value is POISON or isinstance(value, tuple) and any(v is POISON for v in leaves(value)):
            raise Poisoned()
        if not isinstance(value, TensorValue):
            raise EvalError("E0307", f"a buffer holds a tensor, got {describe(value)}", stmt.value.span,
                            help="make one with `zeros`, `ones`, `full`, `arange`, ...")
        cone = self._buffer_cone(stmt, value, ctx)
        sub = _extract(ctx.graph, cone, value.ref, stmt.name)
        inst = ctx.graph.new_instance("buffer", user_name=stmt.name, graph=sub, args={"persistent": persistent},
                                      shape=value.type.shape, span=stmt.span)
        node = ctx.graph.add("buffer", [value.type], instance=inst.id, span=stmt.span, names=[stmt.name])
        _remove(ctx.graph, [n for n in cone if int(n[1:]) >= first_new])   # this statement's own nodes
        ctx.buffer_sources.update(n for n in cone if n in ctx.graph.nodes)
        ctx.layer_names[stmt.name] = (inst, stmt.name_span)
        ctx.scope[stmt.name] = TensorValue(Ref(node.id), value.type, stmt.name_span)

    def _claim_state_name(self, name: str, span, ctx: Ctx) -> None:
        """A layer, `param` or buffer name is an attribute and state-dict key: one thing per name."""
        if name not in ctx.layer_names:
            return
        inst, first = ctx.layer_names[name]
        what = {"param": "a `param`", "buffer": "a buffer"}.get(getattr(inst, "kind", None), "a layer")
        raise EvalError("E0210", f"`{name}` already names {what}", span,
                        labels=(Label(first, "first named here"),) if first is not None else (),
                        help="it becomes the module's attribute and state-dict key: choose another name")

    def _buffer_settings(self, stmt: ast.BufferStmt, ctx: Ctx) -> bool:
        pos = [Arg(self._expr(a, ctx), a.span) for a in stmt.args]
        kws = [(k.name, Arg(self._expr(k.value, ctx), k.value.span, k.span)) for k in stmt.kwargs]
        if any(a.value is POISON for a in pos) or any(a.value is POISON for _, a in kws):
            raise Poisoned()
        values, _ = bind_op(BUFFER_PARAMS, pos, kws, "buffer", stmt.span)
        return values["persistent"]

    def _buffer_cone(self, stmt: ast.BufferStmt, value: TensorValue, ctx: Ctx) -> list[str]:
        """The ids of the nodes the value is computed from, in order, after checking that the
        constructor can compute each of them."""
        g = ctx.graph
        cone = _ancestors(g, value.ref)
        for node_id in cone:
            node = g.nodes[node_id]
            why = _not_constant(g, node)
            if why is not None:
                raise self._buffer_error(stmt, node, why, cone, ctx)
        return cone

    def _buffer_error(self, stmt: ast.BufferStmt, bad: Node, why: str, cone: list, ctx: Ctx) -> EvalError:
        """Point at the name in the expression that brings `bad` in, else at the call that makes it."""
        for name in _names_in(stmt.value):
            v = ctx.scope.get(name.id)
            if isinstance(v, Sym) and bad.kind != "input" and "run-time size" in why:
                return EvalError("E0307", f"a buffer's value cannot use the run-time size `{name.id}`", name.span,
                                 label="known only when the model runs", help=_HELP)
            refs = [t.ref for t in _tensors(v)]
            if any(r.node in cone and bad.id in _ancestors(ctx.graph, r) for r in refs):
                labels = (Label(bad.span, why),) if bad.span is not None and bad.span != name.span else ()
                return EvalError("E0307", f"a buffer's value cannot depend on {_what(ctx.graph, bad)}", name.span,
                                 label=f"`{name.id}` depends on {_what(ctx.graph, bad)}", labels=labels,
                                 help=_HELP)
        span = bad.span if bad.span is not None and bad.kind == "op" else stmt.value.span
        return EvalError("E0307", f"a buffer's value cannot depend on {_what(ctx.graph, bad)}", span,
                         label=why, help=_HELP)

    def _drop_buffer_sources(self, ctx: Ctx) -> None:
        """Nodes of the body that fed only buffers (bound to a name before a `buffer` read them, as
        `position` in a positional encoding) go: the constructor computes them, forward need not."""
        g = ctx.graph
        while True:
            used = {r.node for _, r in g.outputs}
            for node in g:
                used.update(r.node for r in _reads(node))
            dead = [n for n in ctx.buffer_sources if n in g.nodes and n not in used]
            if not dead:
                return
            _remove(g, dead)


_HELP = ("a buffer is computed once, in the constructor: from the parameters and tensors made of them "
         "(`arange`, `ones`, `sin`, ...); use the input or size in forward instead (`pe[:T]`)")


def _tensors(v) -> list[TensorValue]:
    """The tensors a name holds: a tensor, or those of a tuple."""
    if isinstance(v, TensorValue):
        return [v]
    return [t for x in v for t in _tensors(x)] if isinstance(v, tuple) else []


def _reads(node: Node) -> list[Ref]:
    """The values a node reads: its inputs and the tensors among its arguments."""
    out = list(node.inputs)
    for v in node.args.values():
        for t in (v if isinstance(v, tuple) else (v,)):
            if isinstance(t, TensorValue):
                out.append(t.ref)
    return out


def _ancestors(g: Graph, ref: Ref) -> list[str]:
    """The ids of the nodes `ref` is computed from (its own included), in graph order."""
    seen, stack = set(), [ref.node]
    while stack:
        n = stack.pop()
        if n in seen:
            continue
        seen.add(n)
        stack += [r.node for r in _reads(g.nodes[n])]
    return [n for n in g.nodes if n in seen]


def _not_constant(g: Graph, node: Node) -> str | None:
    """Why the constructor cannot compute `node` (None: it can)."""
    if node.kind == "input":
        return "an input of the model, known only when it runs"
    if node.kind == "param":
        return "a learnable `param`, which training changes"
    if node.kind == "weight":
        return "a layer's weight, which training changes"
    if node.kind == "buffer":
        return "another buffer: compute both from the same tensors instead"
    if node.kind == "call" or node.instance is not None:
        return "a layer: buffers are made with functions (`relu(x)`, not `ReLU()`)"
    if any(_run_time(d) for t in node.outputs for d in t.shape) or any(_run_time(v) for v in node.args.values()):
        return "a run-time size, known only when the model runs"
    return None


def _run_time(v) -> bool:
    if isinstance(v, Sym):
        return True
    if isinstance(v, (list, tuple)):
        return any(_run_time(x) for x in v)
    if isinstance(v, (Size, Real)):
        return False
    return isinstance(v, TensorType) and any(isinstance(d, Sym) for d in v.shape)


def _what(g: Graph, node: Node) -> str:
    if node.kind == "input":
        return f"the input `{node.names[0]}`"
    inst = g.instances.get(node.instance) if node.instance else None
    if node.kind in ("param", "buffer"):
        return f"the {node.kind} `{inst.user_name}`"
    if node.kind == "weight":
        return f"the weight `{inst.user_name or inst.op.name}.{node.attr}`"
    if inst is not None:
        return "a layer"
    return "a run-time size"


def _names_in(e) -> list:
    """The names an expression reads, in source order."""
    out = []
    stack = [e]
    while stack:
        n = stack.pop()
        if isinstance(n, ast.Name):
            out.append(n)
        elif isinstance(n, tuple):
            stack += list(n)
        elif hasattr(n, "__dataclass_fields__"):
            stack += [getattr(n, f) for f in n.__dataclass_fields__ if f != "span"]
    return sorted(out, key=lambda n: n.span.start)


def _extract(g: Graph, cone: list[str], out: Ref, name: str) -> Graph:
    """A graph of kind `buffer` that computes `out` from the cone's nodes, copied (ids renumbered)."""
    sub = Graph(name, "buffer")
    new: dict = {}
    for node_id in cone:
        node = g.nodes[node_id]
        args = {k: _moved(v, new) for k, v in node.args.items()}
        copy = sub.add(node.kind, list(node.outputs), [new[r] for r in node.inputs], op=node.op, args=args,
                       span=node.span, names=list(node.names))
        for i in range(len(node.outputs)):
            new[Ref(node.id, i)] = Ref(copy.id, i)
    sub.outputs = [(name, new[out])]
    return sub


def _moved(v, new: dict):
    if isinstance(v, TensorValue):
        return TensorValue(new[v.ref], v.type, v.span)
    if isinstance(v, tuple) and any(isinstance(t, TensorValue) for t in v):
        return tuple(_moved(t, new) for t in v)
    return v


def _remove(g: Graph, ids) -> None:
    for i in ids:
        g.nodes.pop(i, None)
    g._nx = None
