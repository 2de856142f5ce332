"""Applying layers, functions and blocks (`LayerApplication`): where IR nodes are made.

Each application binds arguments, checks input dtypes, runs the op's shape
rule and adds a node. A block is specialized once per (arguments, input
types) and cached; its guards and output shapes come back in the caller's
terms (see ir/subst.py).
"""
from __future__ import annotations

from dataclasses import replace

from ..diagnostics import Label, did_you_mean
from ..ir.dims import InDim, Param, Real, Size, Sym, SymbolicDecision, atom_values, plain, record_all, recording
from ..ir.graph import Failure, Graph
from ..ir.limits import MAX_NESTING, elements_too_many
from ..ir.naming import name_instances
from ..ir.nesting import leaves, nest, structure
from ..ir.subst import poly_of_value, subst_guard, subst_type, subst_value
from ..ir.types import FLOAT_DTYPES, TensorType
from ..ir.values import Fill, Ref, TensorValue
from ..ops import REGISTRY
from ..ops.ptypes import describe, is_number
from ..ops.registry import Bound, ShapeError
from . import ast
from .binding import Arg, bind, bind_op
from .context import Ctx, block_input_type
from .errors import EvalError, Poisoned
from .values import POISON, BlockSpec, DeclRef, InstanceValue, LayerSpec, OpRef, layer_op

# `a + b` applies the op whose registry entry has that symbol
_BINOPS = {op.symbol: op.name for op in REGISTRY.values() if op.symbol}


class LayerApplication:
    """Making layer, block and function applications into nodes (a mixin of `Evaluator`)."""

    # ------------------------------------------------------------------ specs

    def _layer_spec(self, op, pos: list[Arg], kws, span) -> LayerSpec:
        for a in pos + [a for _, a in kws]:
            if isinstance(a.value, TensorValue):
                raise EvalError("E0301", f"`{op.name}(...)` takes its settings here; apply it to tensors "
                                f"afterwards: `{op.name}(...)(x)` or `x -> {op.name}(...)`", a.span,
                                label="a tensor")
        values, spans = bind_op(op.params, pos, kws, op.name, span)
        return LayerSpec(op, values, spans, span)

    def _block_spec(self, decl, pos: list[Arg], kws, span) -> BlockSpec:
        names = [p.name for p in decl.params]
        given = bind(names, pos, kws, decl.name, span)
        for arg in given.values():
            if isinstance(arg.value, TensorValue):
                raise EvalError("E0301", f"`{decl.name}(...)` takes its parameters here; apply it to tensors "
                                f"afterwards: `x -> {decl.name}(...)`", arg.span, label="a tensor")
        return BlockSpec(decl, given, {n: a.span for n, a in given.items()}, span)

    # ------------------------------------------------------------------ application

    def _apply(self, spec, inputs: list, spans: list, span, ctx, parts: dict | None = None):
        """Apply a layer, block or function to `inputs` (their spans; `parts[i]`: the element spans of
        input i when it is written as a tuple, `(h, c)`)."""
        if any(v is POISON for v in leaves(inputs)):
            raise Poisoned()
        op = layer_op(spec)
        if op is not None:
            inputs, spans = self._layer_inputs(op, inputs, spans, span, parts or {})
        block = isinstance(spec, (BlockSpec, DeclRef)) or isinstance(spec, InstanceValue) and spec.instance.kind == "block"
        for v, s in zip(inputs, spans):
            if not isinstance(v, TensorValue) and not (block and _tensors(v)):
                raise EvalError("E0307", f"a layer is applied to tensors, got {describe(v)}", s)
        if isinstance(spec, OpRef):
            if not spec.op.is_layer:
                return self._call_function(spec.op, [Arg(v, s) for v, s in zip(inputs, spans)], [], span, ctx)
            spec = self._layer_spec(spec.op, [], [], span)  # a bare `Linear`: its required settings are missing
        if isinstance(spec, LayerSpec):
            return self._apply_layer(spec, inputs, spans, span, ctx)
        if isinstance(spec, BlockSpec):
            return self._apply_block(spec, inputs, spans, span, ctx)
        if isinstance(spec, InstanceValue):
            return self._apply_instance(spec, inputs, spans, span, ctx)
        if isinstance(spec, DeclRef) and spec.decl.kind in ("block", "model"):
            return self._apply_block(BlockSpec(spec.decl, {}, {}, span), inputs, spans, span, ctx)
        raise EvalError("E0307", f"{describe(spec)} cannot be applied to a tensor", span)

    def _apply_layer(self, spec: LayerSpec, inputs, spans, span, ctx, instance=None):
        op = spec.op
        self._check_dtypes(op, inputs, spans, span)
        b = Bound(op, dict(spec.args), [v.type for v in inputs], where=span)
        outs = self._run_rule(op, b, spec.arg_spans, inputs, spans, spec.span, resolve=True, ctx=ctx)
        _check_weights(op, b.args, spec.span)
        if instance is None:
            instance = self._new_layer_instance(spec, b.args, ctx)
        node = ctx.graph.add("op", outs, [v.ref for v in inputs], op=op, args=b.args, instance=instance.id,
                             span=span)
        return self._results(op.results, ctx.graph.values(node))

    def _new_layer_instance(self, spec, args, ctx):
        if spec.name:
            self._claim_layer_name(spec, ctx)
        inits = _weight_inits(spec, spec.op.weight_shapes(args)) if spec.inits else {}
        inst = ctx.graph.new_instance("layer", op=spec.op, args=args, user_name=spec.name, span=spec.span,
                                      inits=inits)
        if spec.name:
            ctx.scope[spec.name] = InstanceValue(inst, spec, ctx.graph)
        return inst

    def _claim_layer_name(self, spec, ctx) -> None:
        if ctx.loop_depth:
            raise EvalError("E0210", f"`as {spec.name}` inside a loop would name a new layer on every pass",
                            spec.name_span, help="leave layers in loops unnamed, or build them in a block")
        prev = ctx.scope.get(spec.name)
        if isinstance(prev, InstanceValue) or any(i.user_name == spec.name for i in ctx.graph.instances.values()):
            first = prev.instance.span if isinstance(prev, InstanceValue) else None
            raise EvalError("E0210", f"a layer named `{spec.name}` already exists", spec.name_span,
                            labels=(Label(first, "first named here"),) if first is not None else (),
                            help=f"to share its weights, call it again: `{spec.name}(x)`")

    def _apply_instance(self, iv: InstanceValue, inputs, spans, span, ctx):
        inst = iv.instance
        if iv.graph is not ctx.graph:
            raise EvalError("E0307", f"`{inst.user_name}` belongs to another model or block", span)
        if inst.kind == "block":
            return self._apply_block(iv.spec, inputs, spans, span, ctx, instance=inst)
        op = inst.op
        self._check_dtypes(op, inputs, spans, span)
        b = Bound(op, dict(iv.spec.args), [v.type for v in inputs], where=span)
        outs = self._run_rule(op, b, {}, inputs, spans, span, resolve=True, ctx=ctx)
        if op.weight_shapes(b.args) != inst.weights() or _plain_args(b.args) != _plain_args(inst.args):
            raise EvalError("E0408", f"the shared layer `{inst.user_name}` does not fit these inputs",
                            span, label=f"inputs {', '.join(v.type.shape_str() for v in inputs)}",
                            labels=(Label(inst.span, "its weights were made for other inputs here"),))
        node = ctx.graph.add("op", outs, [v.ref for v in inputs], op=op, args=inst.args, instance=inst.id,
                             span=span)
        return self._results(op.results, ctx.graph.values(node))

    def _layer_inputs(self, op, inputs: list, spans: list, span, parts: dict) -> tuple[list, list]:
        """The tensors a layer's node holds, flat, and their spans: an input the op takes as a tuple
        (LSTM's `(h_0, c_0)`) is checked to be that many tensors and spread."""
        self._check_input_count(op, inputs, span)
        flat, flat_spans = [], []
        for i, (v, s) in enumerate(zip(inputs, spans)):
            arity = op.input_arity(i)
            if arity is None:
                if isinstance(v, tuple) and i > 0:
                    raise EvalError("E0307", f"`{op.name}`'s `{op.inputs[i]}` is one tensor, got {describe(v)}", s,
                                    label=f"expects one tensor, {op.inputs[i]}")
                flat.append(v)
                flat_spans.append(s)
                continue
            names = dict(op.tuple_inputs)[op.inputs[i]]
            if not isinstance(v, tuple) or len(v) != arity:
                raise EvalError("E0307", f"`{op.name}`'s `{op.inputs[i]}` is a tuple of {arity} tensors "
                                f"({', '.join(names)}), got {describe(v)}", s, label=f"expects ({', '.join(names)})",
                                help=f"apply it as `{op.name}(...)(x, ({', '.join(names)}))`")
            flat += list(v)
            flat_spans += list(parts[i]) if i in parts and len(parts[i]) == arity else [s] * arity
        return flat, flat_spans

    def _check_input_count(self, op, inputs, span) -> None:
        lo = op.min_inputs if op.min_inputs is not None else len(op.inputs)
        hi = len(op.inputs)
        if not lo <= len(inputs) <= hi:
            want = str(hi) if lo == hi else f"{lo} to {hi}"
            names = ", ".join(op.inputs)
            raise EvalError("E0409", f"`{op.name}` takes {want} input tensor{'s' if hi > 1 else ''} ({names}), "
                            f"got {len(inputs)}", span)

    def _check_dtypes(self, op, inputs, spans, span) -> None:
        allowed = op.dtypes or FLOAT_DTYPES
        for v, s in zip(inputs, spans):
            if v.type.dtype not in allowed:
                kind = "floating-point" if allowed == FLOAT_DTYPES else "/".join(allowed)
                article = "an" if kind[0] in "aeiou" else "a"
                raise EvalError("E0310", f"`{op.name}` expects {article} {kind} tensor, got {v.type.dtype}", span,
                                label=f"needs {kind}", labels=(Label(s, f"this is {v.type}"),) if s != span else (),
                                help=_dtype_help(op, v.type.dtype))

    def _run_rule(self, op, b: Bound, arg_spans, inputs, spans, span, resolve: bool, ctx=None):
        try:
            if resolve and op.resolve:
                b.args.update(op.resolve(b))
            outs = op.infer(b)
            _check_elements(op, outs, span)
        except ShapeError as err:
            self._failed(ctx, span, inputs, err.message)
            raise self._shape_diagnostic(op, err, arg_spans, inputs, spans, span) from None
        except SymbolicDecision as err:
            self._failed(ctx, span, inputs, str(err))
            raise EvalError("E0311", f"`{op.name}`: cannot check this at compile time: {err}", span) from None
        return list(outs)

    def _failed(self, ctx, span, inputs, message: str) -> None:
        """Remember the failing call, so a diagram of the partial graph can draw it in red."""
        if ctx is not None and span is not None:
            ctx.graph.failures.append(Failure(span.text, tuple(v.ref for v in inputs if isinstance(v, TensorValue)),
                                              message))

    def _shape_diagnostic(self, op, err: ShapeError, arg_spans, inputs, spans, span) -> EvalError:
        """Point at the argument or input the rule blames; label the inputs only when they matter."""
        labels = []
        if err.arg and err.arg in arg_spans:
            primary = arg_spans[err.arg]
            if primary.line != span.line:
                labels.append(Label(span, f"in this `{op.name}`"))
        else:
            primary = span
            blamed = [err.input] if err.input is not None and err.input < len(inputs) else \
                (range(len(inputs)) if len(inputs) > 1 else [])
            for i in blamed:
                s = spans[i]
                if s is not None and s != primary:
                    labels.append(Label(s, f"this is {inputs[i].type.shape_str()}"))
        return EvalError(err.code, err.message, primary, label=err.label, labels=tuple(labels), help=err.help)

    def _results(self, nesting, values: list):
        if nesting is not None:
            return nest(nesting, values)
        return values[0] if len(values) == 1 else tuple(values)

    # ------------------------------------------------------------------ functions

    def _call_function(self, op, pos: list[Arg], kws, span, ctx):
        values, arg_spans = bind_op(op.params, pos, kws, op.name, span, convert_hook=_fill_hook)
        tensors, tspans = [], []
        for p in op.params:
            if not p.is_tensor:
                continue
            v = values[p.name]
            items = v if isinstance(v, tuple) else (v,)
            for item in items:
                if isinstance(item, TensorValue):
                    tensors.append(item)
                    tspans.append(item.span if p.name not in arg_spans else
                                  (arg_spans[p.name] if not isinstance(v, tuple) else item.span))
        if op.params and op.params[0].is_tensor and not tensors and op.name not in ("zeros", "ones", "noise"):
            raise EvalError("E0301", f"`{op.name}` needs at least one tensor", span)
        self._check_dtypes(op, tensors, tspans, span)
        b = Bound(op, values, [t.type for t in tensors], where=span)
        outs = self._run_rule(op, b, arg_spans, tensors, tspans, span, resolve=False, ctx=ctx)
        node = ctx.graph.add("op", outs, [t.ref for t in tensors], op=op, args=b.args, span=span)
        return self._results(op.results, ctx.graph.values(node))

    def _tensor_binop(self, e: ast.BinOp, left, right, ctx):
        name = _BINOPS.get(e.op)
        if name is None:
            raise EvalError("E0307", f"`{e.op}` is not defined for tensors", e.op_span,
                            help="tensor operators: + - * / @ ** and comparisons")
        for v, s in ((left, e.left.span), (right, e.right.span)):
            if not isinstance(v, (TensorValue, Sym)) and not is_number(v):
                raise EvalError("E0307", f"cannot apply `{e.op}` to a tensor and {describe(v)}", s)
        return self._call_function(REGISTRY[name], [Arg(left, e.left.span), Arg(right, e.right.span)], [],
                                   e.span, ctx)

    def _tensor_unary(self, e: ast.UnaryOp, v, ctx):
        if e.op == "+":
            return v
        return self._call_function(REGISTRY["neg"], [Arg(v, e.operand.span)], [], e.span, ctx)

    def _tensor_index(self, e: ast.Index, v: TensorValue, ctx):
        items = []
        for sub in e.subscripts:
            if isinstance(sub, ast.Slice):
                parts = tuple(None if x is None else self._index_int(self._expr(x, ctx), x.span)
                              for x in (sub.start, sub.stop, sub.step))
                if parts[2] is not None and parts[2] <= 0:
                    raise EvalError("E0308", "a tensor slice's step must be positive", sub.step.span)
                items.append(("slice",) + parts)
            else:
                items.append(self._index_int(self._expr(sub, ctx), sub.span))
        return self._call_function(REGISTRY["index"], [Arg(v, e.value.span), Arg(tuple(items), e.span)], [],
                                   e.span, ctx)

    def _instance_attr(self, e: ast.Attr, iv: InstanceValue, ctx):
        inst = iv.instance
        weights = inst.weights()
        if e.name not in weights:
            guess = did_you_mean(e.name, weights)
            have = ", ".join(f"`{w}`" for w in weights) or "no weights"
            raise EvalError("E0208", f"`{inst.user_name}` has no weight `{e.name}`", e.name_span,
                            help=f"did you mean `{guess}`?" if guess else f"it has {have}")
        t = TensorType(tuple(weights[e.name]))
        node = ctx.graph.add("weight", [t], instance=inst.id, attr=e.name, span=e.span)
        return TensorValue(Ref(node.id), t, e.span)

    # ------------------------------------------------------------------ blocks

    def _apply_block(self, spec: BlockSpec, inputs, spans, span, ctx, instance=None):
        """Apply a block (or a model) to its inputs: tensors, or tuples of tensors where it declares them."""
        decl = spec.decl
        n_declared = self._check_block_use(spec, inputs, span, ctx)
        flat = leaves(inputs)
        key = (decl.name, _args_key(spec.args), tuple(_structure_key(v) for v in inputs))
        if key in self.cache:
            sub = self.cache[key]
        else:
            sub = self._specialize(spec, inputs, n_declared, span, ctx)
            self.cache[key] = sub
        if sub is None:
            self._failed(ctx, span, flat, f"`{decl.name}` has an error")
            raise Poisoned()
        inputs = flat
        f = self._caller_mapping(sub, spec, inputs)
        out_types, guards = self._in_caller_terms(sub, spec, inputs, f)
        record_all(guards)
        if instance is None:
            if spec.name:
                self._claim_layer_name(spec, ctx)
            # given arguments are already in the caller's terms; defaults are re-expressed in them
            call_args = {p: spec.args[p].value if p in spec.args else subst_value(v, f)
                         for p, v in sub.params.items()}
            instance = ctx.graph.new_instance("block", graph=sub, args=call_args, user_name=spec.name,
                                              span=spec.span)
            if spec.name:
                ctx.scope[spec.name] = InstanceValue(instance, spec, ctx.graph)
        elif _state_shapes(instance.graph) != _state_shapes(sub):
            raise EvalError("E0408", f"the shared block `{instance.user_name}` does not fit these inputs", span,
                            labels=(Label(instance.span, "its weights were made for other inputs here"),))
        node = ctx.graph.add("call", out_types, [v.ref for v in inputs], instance=instance.id, span=span,
                             args={"graph": sub})
        values = ctx.graph.values(node)
        nested = nest(structure([n for n, _ in sub.outputs]), values)   # `out, (h, c)`
        return nested[0] if len(nested) == 1 else nested

    def _check_block_use(self, spec: BlockSpec, inputs, span, ctx) -> int:
        """A block applied inside itself, too deep, or to the wrong number of tensors is an error;
        returns how many `input` statements it declares."""
        decl = spec.decl
        if decl.name in ctx.stack:
            chain = " -> ".join(ctx.stack[ctx.stack.index(decl.name):] + (decl.name,))
            raise EvalError("E0207", f"`{decl.name}` uses itself", spec.span, label="recursive use",
                            notes=(f"the cycle: {chain}",),
                            help="blocks unroll at compile time; use `repeat` or `for` for repetition")
        if len(ctx.stack) >= MAX_NESTING:
            raise EvalError("E0705", f"blocks nest more than {MAX_NESTING} deep here", spec.span,
                            label=f"`{decl.name}` inside {len(ctx.stack)} others",
                            notes=(f"the outermost: {' -> '.join(ctx.stack[:3])} -> ...",),
                            help="flatten the blocks: apply several in sequence rather than each inside the last")
        n_declared = sum(isinstance(s, ast.InputStmt) for s in decl.body)
        expected = max(n_declared, 1)
        if len(inputs) != expected:
            raise EvalError("E0409", f"`{decl.name}` takes {expected} input tensor{'s' if expected > 1 else ''}, "
                            f"got {len(inputs)}", span)
        if n_declared == 0 and isinstance(inputs[0], tuple):
            raise EvalError("E0307", f"`{decl.name}` is applied to one tensor, got {describe(inputs[0])}", span,
                            help="a block takes a tuple of tensors through an `input` statement: `input state`")
        return n_declared

    def _specialize(self, spec: BlockSpec, inputs, n_declared, span, ctx):
        decl = spec.decl
        self.evaluated.add(decl.name)
        graph = Graph(decl.name, "block" if decl.kind == "block" else "model", decl=decl)
        sub = Ctx(graph, decl, "block" if decl.kind == "block" else "model", stack=ctx.stack + (decl.name,),
                  inputs_left=list(inputs))
        before = len(self.reporter.diagnostics)
        with recording(graph.guards), atom_values(graph.atom_env):
            try:
                self._bind_params(decl, spec.args, sub, span)
                if n_declared == 0:
                    t = block_input_type("x", inputs[0].type, graph.atom_env)
                    node = graph.add("input", [t], span=decl.name_span, names=["x"])
                    graph.inputs.append(("x", Ref(node.id)))
                    sub.current = TensorValue(Ref(node.id), t, decl.name_span)
                    sub.n_inputs_declared = 1
                self._run_body(decl.body, sub, top=True)
                self._finish_outputs(sub)
            except EvalError as err:
                self.reporter.add(err.diagnostic)
                sub.failed = True
            except Poisoned:
                sub.failed = True
        new = self.reporter.diagnostics[before:]
        if new or sub.failed or not graph.outputs:
            note = f"in `{decl.name}`, used at {span}"
            self.reporter.diagnostics[before:] = [d if d.span == span else _with_note(d, note) for d in new]
            return None
        name_instances(graph)
        return graph

    def _in_caller_terms(self, sub, spec: BlockSpec, inputs, f):
        """The block's output types and guards in the caller's terms (memoized: a block
        called the same way many times is substituted once)."""
        key = (id(sub), tuple((n, _poly_key(a.value)) for n, a in sorted(spec.args.items())),
               tuple(tuple(_poly_key(d) for d in v.type.shape) for v in inputs))
        hit = self.subst_cache.get(key)
        if hit is None:
            out_types = [subst_type(sub.type_of(ref), f) for _, ref in sub.outputs]
            guards = [g2 for g2 in (subst_guard(g, f) for g in sub.guards) if not g2.is_trivial()]
            hit = self.subst_cache[key] = (out_types, guards, sub)  # `sub` keeps id(sub) unique
        return hit[0], hit[1]

    def _caller_mapping(self, sub, spec: BlockSpec, inputs):
        """f(atom) taking the block's parameters and input dims to the caller's expressions."""
        given = {n: a.value for n, a in spec.args.items()}
        input_index = {name: i for i, (name, _) in enumerate(sub.inputs)}

        def f(a):
            if isinstance(a, Param):
                if a.name in given:
                    return poly_of_value(given[a.name])
                v = sub.params.get(a.name)
                p = poly_of_value(v) if v is not None else None
                return p.subst(f) if p is not None else None
            if isinstance(a, InDim) and a.input in input_index:
                d = inputs[input_index[a.input]].type.shape[a.index]
                return poly_of_value(d)
            return None
        return f


MAX_CHAIN_NOTES = 8  # "in `Block`, used at ..." notes of one diagnostic, then one "..."


def _with_note(d, note: str):
    if len(d.notes) > MAX_CHAIN_NOTES:
        return d
    return replace(d, notes=d.notes + (note if len(d.notes) < MAX_CHAIN_NOTES else "... (in more blocks)",))


def _check_weights(op, args: dict, span) -> None:
    for name, shape in op.weight_shapes(args).items():
        if elements_too_many(shape):
            raise EvalError("E0706", f"the weight `{name}` of `{op.name}` would be "
                            f"[{', '.join(str(plain(d)) for d in shape)}]: more elements than int64 can count",
                            span, label="too large")


def _check_elements(op, outs, span) -> None:
    for t in outs:
        if elements_too_many(t.shape):
            raise EvalError("E0706", f"`{op.name}` would make a tensor of {t.shape_str()}: more elements than "
                            "int64 can count", span, label="too large")


def _poly_key(v):
    p = poly_of_value(v)
    return p if p is not None else _value_key(v)


def _tensors(v) -> bool:
    """A non-empty (nested) tuple of tensors."""
    return isinstance(v, tuple) and bool(v) and all(isinstance(x, TensorValue) or _tensors(x) for x in v)


def _structure_key(v):
    """A block input's types, a tuple's by element (a block is specialized for each)."""
    return tuple(_structure_key(x) for x in v) if isinstance(v, tuple) else v.type.key()


def _fill_hook(p, v):
    """`ones` / `zeros` named without a call, where a tensor is expected, fill it like the other operand."""
    if isinstance(v, OpRef) and v.op.name in ("ones", "zeros") and p.is_tensor:
        return Fill(1.0 if v.op.name == "ones" else 0.0)
    return v


def _plain_args(args: dict) -> dict:
    return {k: _value_key(v) for k, v in args.items()}


def _value_key(v):
    if isinstance(v, Size):
        return ("int", plain(v))
    if isinstance(v, Real):
        return ("float", float.__float__(v))
    if isinstance(v, Sym):
        return ("sym", v.key())
    if isinstance(v, (list, tuple)):
        return (type(v).__name__, tuple(_value_key(x) for x in v))
    if isinstance(v, TensorValue):
        return ("tensor", v.ref)
    if isinstance(v, Arg):
        return _value_key(v.value)
    if isinstance(v, dict):
        return tuple(sorted((k, _value_key(x)) for k, x in v.items()))
    return (type(v).__name__, v if isinstance(v, (int, float, str, bool, type(None))) else id(v))


def _args_key(args: dict) -> tuple:
    return tuple(sorted((k, _value_key(a)) for k, a in args.items()))


def _state_shapes(graph) -> dict:
    """State-dict shapes of a specialization, for checking that a shared block fits."""
    out = {}
    for inst in graph.instances.values():
        for k, shape in inst.weights().items():
            out[(inst.id, k)] = tuple(plain(d) for d in shape)
        if inst.graph is not None:
            out[(inst.id, "graph")] = tuple(sorted(_state_shapes(inst.graph).items()))
    return out


def _dtype_help(op, dtype: str) -> str | None:
    if dtype in ("int64", "int32") and op.name != "Embedding":
        return "integer token ids go through `Embedding` first"
    if op.name == "Embedding":
        return "Embedding looks up integer ids: declare the input `of int64`"
    return None


def _is_bias(weight: str) -> bool:
    return weight.rsplit(".", 1)[-1].startswith("bias")


def _weight_inits(spec, weights: dict) -> dict:
    """A layer's `init=` resolved against its weights (known once its input sizes are): weight name ->
    InitSpec. One initializer covers every weight but the biases; a dict names weights."""
    out = {}
    for name, init, span in spec.inits:
        if name is None:
            chosen = [w for w in weights if not _is_bias(w)]
            if not chosen:
                raise EvalError("E0301", f"`{spec.op.name}` has no weights to initialize" if not weights else
                                f"`{spec.op.name}` has only biases: name them, `init={{bias: ...}}`", span)
        elif name not in weights:
            guess = did_you_mean(name, weights)
            have = ", ".join(f"`{w}`" for w in weights) or "no weights"
            raise EvalError("E0208", f"`{spec.op.name}` has no weight `{name}`", span,
                            help=f"did you mean `{guess}`?" if guess else f"it has {have}")
        else:
            chosen = [name]
        for w in chosen:
            rank = len(weights[w])
            if rank < init.init.min_rank:
                raise EvalError("E0302", f"`{init.init.name}` needs a tensor of {init.init.min_rank} or more dims; "
                                f"`{spec.op.name}`'s `{w}` is {list(weights[w])}", span)
            out[w] = init
    return out
