"""Applying layers, functions and blocks (`LayerApplication`): where IR nodes are made.

Each application binds arguments, checks input dtypes, runs the op's shape
rule and adds a node. A block is specialized once per (arguments, input
types) and cached; its guards and output shapes come back in the caller's
terms (see ir/subst.py).
"""
from __future__ import annotations

from dataclasses import replace

from ..diagnostics import Label, did_you_mean
from ..ir.dims import InDim, Item, Param, Real, Size, Sym, SymbolicDecision, atom_values, plain, record_all, recording, settled
from ..ir.graph import Failure, Graph
from ..ir.limits import MAX_NESTING, elements_too_many
from ..ir.nesting import leaves, nest, structure
from ..ir.pyliteral import literal
from ..ir.subst import poly_of_value, subst_guard, subst_type, subst_value
from ..ir.types import FLOAT_DTYPES, TensorType
from ..ir.values import Fill, Ref, TensorValue
from ..ops import REGISTRY
from ..ops.ptypes import describe, is_number
from ..ops.registry import Bound, ShapeError
from . import ast
from .binding import Arg, bind, bind_op, unknown_keyword
from .context import Ctx, block_input_type
from .errors import EvalError, Poisoned
from .values import POISON, BlockSpec, DeclRef, InstanceValue, LayerSpec, OpRef, layer_op

# Keywords of torch's forward that dslc's layers take otherwise (their keyword inputs are real).
_ZERO_STATE = "the initial state is the layer's second input: `LSTM(8)(x, (h0, c0))`, `GRU(8)(x, h0)`"
FORWARD_KEYWORDS = {
    ("LSTM", "hx"): _ZERO_STATE, ("GRU", "hx"): _ZERO_STATE, ("RNN", "hx"): _ZERO_STATE,
}


# `a + b` and `~x` apply the op whose registry entry has that symbol
_BINOPS = {op.symbol: op.name for op in REGISTRY.values() if op.symbol and len(op.params) == 2}
_UNARY = {op.symbol: op.name for op in REGISTRY.values() if op.symbol and len(op.params) == 1}


class LayerApplication:
    """Making layer, block and function applications into nodes (a mixin of `Evaluator`)."""

    # ------------------------------------------------------------------ specs

    def _layer_spec(self, op, pos: list[Arg], kws, span) -> LayerSpec:
        if _takes_a_layer(op, pos, kws):
            return self._layer_form_spec(op, pos, kws, span)
        known = [p.name for p in op.params] + list(_extra_keywords(op))
        for name, a in kws:  # a keyword torch's forward takes: neither here nor at the application
            if op.keyword_input(name) is not None:
                raise EvalError("E0305", f"`{name}` is given where `{op.name}` is applied, not where it is made",
                                a.name_span or a.span, label="an application-time keyword",
                                help=f"`{op.name}(...)({', '.join(op.inputs[:1])}, ..., {name}=...)`")
            if name not in known:
                raise self._unknown_layer_keyword(op.name, name, known, None, a.name_span or a.span)
        for a in pos + [a for _, a in kws]:
            if isinstance(a.value, TensorValue):
                raise EvalError("E0301", f"`{op.name}(...)` takes its settings here; apply it to tensors "
                                f"afterwards: `{op.name}(...)(x)` or `x -> {op.name}(...)`", a.span,
                                label="a tensor")
        values, spans = bind_op(op.params, pos, kws, op.name, span, also=_extra_keywords(op))
        return LayerSpec(op, values, spans, span)

    def _layer_form_spec(self, op, pos: list[Arg], kws, span) -> LayerSpec:
        """torch's form, `TransformerEncoder(TransformerEncoderLayer(256, 8), 6, norm=LayerNorm(256))`: bound to
        `op.layer_form`'s signature, then flattened into the entry's own arguments. Each flat argument keeps
        its place: in the inner layer's call, or the argument it came from."""
        form = op.layer_form
        values, spans = bind_op(form.params, pos, kws, op.name, span, convert_hook=_layer_of)
        inner_spans = {}
        for p in form.params:
            v = values[p.name]
            if isinstance(v, LayerSpec):
                if v.inits:
                    raise EvalError("E0302", f"`{p.name}` of `{op.name}` is a layer's settings only: no `init=` "
                                    "there", spans[p.name], label="a layer given as an argument",
                                    help=f"give `init=` to `{op.name}(...)` itself, by its weight names")
                inner_spans |= v.arg_spans
        try:
            flat = form.flatten(values)
        except ShapeError as err:
            raise EvalError(err.code, err.message, spans.get(err.arg, span), label=err.label or "here",
                            help=err.help) from None
        return LayerSpec(op, flat, inner_spans | {k: s for k, s in spans.items() if k in flat}, span)

    def _block_spec(self, decl, pos: list[Arg], kws, span) -> BlockSpec:
        names = [p.name for p in decl.params]
        given = bind(names, pos, kws, decl.name, span)
        for arg in given.values():
            if isinstance(arg.value, TensorValue):
                raise EvalError("E0301", f"`{decl.name}(...)` takes its parameters here; apply it to tensors "
                                f"afterwards: `x -> {decl.name}(...)`", arg.span, label="a tensor")
        return BlockSpec(decl, given, {n: a.span for n, a in given.items()}, span)

    def _keyword_at_application(self, func, name: str, arg: Arg) -> EvalError:
        """`lin(x, bias=true)`: an application takes tensors only. A setting of the layer goes where it
        is made (said with that place); any other keyword is not a parameter (the real ones listed)."""
        spec = func.spec if isinstance(func, InstanceValue) else func
        if isinstance(spec, LayerSpec):
            callee, what = spec.op.name, "layer"
            inputs = list(spec.op.inputs) + [f"{p.name}=" for p in spec.op.keyword_inputs]
            known = [p.name for p in spec.op.params] + list(_extra_keywords(spec.op))
        else:
            callee, what, known = spec.decl.name, spec.decl.kind, [p.name for p in spec.decl.params]
            inputs = [st.name for st in spec.decl.body if isinstance(st, ast.InputStmt)] or ["x"]
        span = arg.name_span or arg.span
        applied = [p.name for p in spec.op.keyword_inputs] if isinstance(spec, LayerSpec) else []
        guess = did_you_mean(name, applied) if name not in known else None
        if guess:   # a misspelt keyword input (`key_padding=`)
            return EvalError("E0305", f"`{callee}` takes no keyword `{name}` where it is applied", span,
                             label="unknown keyword", help=f"did you mean `{guess}`? It takes {', '.join(inputs)}")
        if name not in known:
            return self._unknown_layer_keyword(callee, name, known, inputs, span)
        made = (Label(spec.span, "made here"),) if spec.span is not None else ()
        return EvalError("E0305", f"`{name}` is a setting of `{callee}`, given where the {what} is made", span,
                         label="not at its application", labels=made,
                         help=f"write it in `{callee}(..., {name}=...)`; applied, a {what} takes only its input "
                              f"tensors ({', '.join(inputs)})")

    def _unknown_layer_keyword(self, callee: str, name: str, known: list, inputs, span) -> EvalError:
        """`inputs`: the input tensors' names, for a keyword given where the layer is applied (else None)."""
        hint = FORWARD_KEYWORDS.get((callee, name))
        if hint is not None:
            return EvalError("E0305", f"`{callee}` has no parameter `{name}`", span, label="torch's forward "
                             "takes it; dslc's layer does not", help=hint)
        where = f" where it is made, and its input tensors ({', '.join(inputs)}) where it is applied" if inputs else ""
        return unknown_keyword(callee, name, known, span, where=where)

    # ------------------------------------------------------------------ application

    def _apply(self, spec, inputs: list, spans: list, span, ctx, parts: dict | None = None, keywords=()):
        """Apply a layer, block or function to `inputs` (their spans; `parts[i]`: the element spans of
        input i when it is written as a tuple, `(h, c)`); `keywords`: (name, Arg) given by keyword."""
        if any(v is POISON for v in leaves(inputs)):
            raise Poisoned()
        op = layer_op(spec)
        applied = self._applied_keywords(spec, op, keywords, span)
        if op is not None:
            inputs, spans = self._layer_inputs(op, inputs, spans, span, parts or {})
        block = isinstance(spec, (BlockSpec, DeclRef)) or isinstance(spec, InstanceValue) and isinstance(spec.spec, BlockSpec)
        for v, s in zip(inputs, spans):
            if not isinstance(v, TensorValue) and not (block and _tensors(v)):
                raise EvalError("E0307", f"a layer is applied to tensors, got {describe(v)}", s)
        if isinstance(spec, OpRef):
            if not spec.op.is_layer:
                return self._call_function(spec.op, [Arg(v, s) for v, s in zip(inputs, spans)], [], span, ctx)
            spec = self._layer_spec(spec.op, [], [], span)  # a bare `Linear`: its required settings are missing
        if isinstance(spec, LayerSpec):
            return self._apply_layer(spec, inputs, spans, span, ctx, applied=applied)
        if isinstance(spec, BlockSpec):
            return self._apply_block(spec, inputs, spans, span, ctx)
        if isinstance(spec, InstanceValue):
            return self._apply_instance(spec, inputs, spans, span, ctx, applied)
        if isinstance(spec, DeclRef) and spec.decl.kind in ("block", "model"):
            return self._apply_block(BlockSpec(spec.decl, {}, {}, span), inputs, spans, span, ctx)
        raise EvalError("E0307", f"{describe(spec)} cannot be applied to a tensor", span)

    def _applied_keywords(self, spec, op, keywords, span) -> tuple[dict, dict]:
        """The keyword inputs of a layer's application (every one, defaults filled in) and their spans;
        any other keyword is an error that names the real ones."""
        if not keywords:
            return ({p.name: p.default for p in op.keyword_inputs} if op is not None else {}), {}
        for name, arg in keywords:
            if op is None or op.keyword_input(name) is None:
                raise self._keyword_at_application(spec, name, arg)
        values, spans = bind_op(op.keyword_inputs, [], list(keywords), op.name, span)
        for name, arg in keywords:
            p = op.keyword_input(name)
            if p.is_tensor and not isinstance(values[name], TensorValue):
                raise EvalError("E0301", f"`{name}` of `{op.name}` expects a tensor, got {describe(arg.value)}",
                                arg.span, label="expected a tensor")
        return values, spans

    def _apply_layer(self, spec: LayerSpec, inputs, spans, span, ctx, named: InstanceValue | None = None,
                     applied=({}, {})):
        op = spec.op
        self._check_dtypes(op, inputs, spans, span)
        b = Bound(op, dict(spec.args) | applied[0], [v.type for v in inputs], where=span)
        outs = self._run_rule(op, b, spec.arg_spans | applied[1], inputs, spans, spec.span, resolve=True, ctx=ctx)
        _check_weights(op, b.args, spec.span)
        own = op.without_keywords(b.args) if op.keyword_inputs else b.args   # the node's args are the instance's
        instance = self._new_layer_instance(spec, own, ctx, named)
        node = ctx.graph.add("op", outs, [v.ref for v in inputs + op.keyword_tensors(b.args)], op=op, args=b.args,
                             instance=instance.id, span=span)
        return self._results(op.results, ctx.graph.values(node), op.sequence)

    def _new_layer_instance(self, spec, args, ctx, named: InstanceValue | None = None):
        """The layer `spec` makes; `named`: the name it was bound to (`lin = Linear(8)`), which now holds it."""
        if spec.name:
            self._claim_layer_name(spec, ctx)
        inits = _weight_inits(spec, spec.op.weight_shapes(args)) if spec.inits else {}
        inst = ctx.graph.new_instance("layer", op=spec.op, args=args, user_name=spec.name, span=spec.span,
                                      inits=inits, key=spec.key, arg_spans=dict(spec.arg_spans))
        self._hold(inst, spec, ctx, named)
        return inst

    def _hold(self, inst, spec, ctx, named: InstanceValue | None) -> None:
        """A named layer just made: its name now means it (`as lin`), or the name it was bound to holds it."""
        if named is not None:
            named.instance = inst
        elif spec.name and not spec.key:   # a name from a template is a key, not a name in the body
            ctx.scope[spec.name] = InstanceValue(inst, spec, ctx.graph)
        if spec.name:
            ctx.layer_names[spec.name] = (inst, spec.name_span)

    def _bound_layer(self, spec, target: ast.Name, ctx) -> InstanceValue:
        """`lin = Linear(8)`: the name is one layer, made where it is first applied (its input gives its
        inferred sizes) and shared by every later application. An `as` name in it stays its name."""
        if not spec.name:
            self._check_layer_name(target.id, target.span)
            spec = replace(spec, name=target.id, name_span=target.span)
        self._claim_layer_name(spec, ctx)
        return InstanceValue(None, spec, ctx.graph)

    def _claim_layer_name(self, spec, ctx) -> None:
        """A layer's name is its attribute: one layer per name in a model or block."""
        if spec.name not in ctx.layer_names:
            return
        made, first = ctx.layer_names[spec.name]
        if getattr(made, "kind", None) in ("param", "buffer"):
            self._claim_state_name(spec.name, spec.name_span, ctx)
        how = f"`{spec.name} = {spec.span.text}`" if spec.span is not None else f"`{spec.name} = ...`"
        if first == spec.name_span:  # the same words again: a loop's next pass
            raise EvalError("E0210", f"`{spec.name}` would name a new layer on every pass of this loop",
                            spec.name_span, label="named again on the next pass",
                            help=f"to share one layer across the passes, make it once before the loop ({how}) "
                                 f"and apply it inside (`h = {spec.name}(h)`); for a layer per pass, leave it "
                                 "unnamed")
        raise EvalError("E0210", f"a layer named `{spec.name}` already exists", spec.name_span,
                        labels=(Label(first, "first named here"),) if first is not None else (),
                        help=f"to share its weights, apply it again: `{spec.name}(x)`; for another layer, "
                             "choose another name")

    def _apply_instance(self, iv: InstanceValue, inputs, spans, span, ctx, applied=({}, {}), scan=None):
        if iv.graph is not ctx.graph:
            raise EvalError("E0307", f"`{iv.name}` is a layer of `{iv.graph.name}`: a block applies only its "
                            "own layers", span, help="pass the layer's settings to the block, and make the "
                            "layer inside it")
        inst = iv.instance
        if inst is None:  # its first application makes it
            if isinstance(iv.spec, BlockSpec):
                return self._apply_block(iv.spec, inputs, spans, span, ctx, named=iv, scan=scan)
            return self._apply_layer(iv.spec, inputs, spans, span, ctx, named=iv, applied=applied)
        if inst.kind == "block":
            return self._apply_block(iv.spec, inputs, spans, span, ctx, instance=inst, scan=scan)
        op = inst.op
        self._check_dtypes(op, inputs, spans, span)
        b = Bound(op, dict(iv.spec.args) | applied[0], [v.type for v in inputs], where=span)
        outs = self._run_rule(op, b, dict(applied[1]), inputs, spans, span, resolve=True, ctx=ctx)
        own = op.without_keywords(b.args)
        if op.weight_shapes(own) != inst.weights() or _plain_args(own) != _plain_args(inst.args):
            raise self._misfit(inst, _arg_difference(inst.args, own), inputs, span, ctx)
        args = inst.args if not op.keyword_inputs else \
            inst.args | {k: v for k, v in b.args.items() if op.keyword_input(k) is not None}
        node = ctx.graph.add("op", outs, [v.ref for v in inputs + op.keyword_tensors(b.args)], op=op, args=args,
                             instance=inst.id, span=span)
        return self._results(op.results, ctx.graph.values(node), op.sequence)

    def _misfit(self, inst, detail: str, inputs, span, ctx) -> EvalError:
        """A shared layer or block applied to inputs that would give it other inferred sizes (`in_features`)."""
        what = "layer" if inst.kind == "layer" else "block"
        first = _first_application(inst, ctx)
        made = f"made for {', '.join(ctx.graph.type_of(r).shape_str() for r in first.inputs)} here" \
            if first is not None else "made here"
        return EvalError("E0408", f"the shared {what} `{inst.user_name}` does not fit these inputs{detail}", span,
                         label=f"inputs {', '.join(v.type.shape_str() for v in inputs)}",
                         labels=(Label(first.span if first is not None else inst.span, made),),
                         help=f"`{inst.user_name}` is one {what}, with the same weights wherever it is applied; "
                              "for separate weights, make one per use (leave it unnamed, or give each a name)")

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
                                help=_dtype_help(op, v.type.dtype, s))
            if op.is_layer and op.has_state and v.type.dtype in FLOAT_DTYPES and v.type.dtype != "float32":
                # its weights are float32 and torch mixes no dtypes in a layer (it would fail at run time)
                raise EvalError("E0310", f"`{op.name}` has float32 weights, so its input must be float32, got "
                                f"{v.type.dtype}", span, label="float32 weights",
                                labels=(Label(s, f"this is {v.type}"),) if s != span else (),
                                help="cast the input first: `float(x)`")

    def _run_rule(self, op, b: Bound, arg_spans, inputs, spans, span, resolve: bool, ctx=None):
        try:
            outs = op.result_types(b, resolve)
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

    def _results(self, nesting, values: list, sequence: bool = False):
        """The values as the op or block returns them: nested as `nesting` says, or one tensor, or a
        tuple (always a tuple for a `sequence` op: chunk and split)."""
        if nesting is not None:
            return nest(nesting, values)
        return values[0] if len(values) == 1 and not sequence else tuple(values)

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
        return self._results(op.results, ctx.graph.values(node), op.sequence)

    def _tensor_binop(self, e: ast.BinOp, left, right, ctx):
        name = _BINOPS.get(e.op)
        if name is None:
            raise EvalError("E0307", f"`{e.op}` is not defined for tensors", e.op_span,
                            help="tensor operators: + - * / @ ** & | ^ and comparisons")
        for v, s in ((left, e.left.span), (right, e.right.span)):
            if not isinstance(v, (TensorValue, Sym)) and not is_number(v):
                raise EvalError("E0307", f"cannot apply `{e.op}` to a tensor and {describe(v)}", s)
        return self._call_function(REGISTRY[name], [Arg(left, e.left.span), Arg(right, e.right.span)], [],
                                   e.span, ctx)

    def _tensor_unary(self, e: ast.UnaryOp, v, ctx):
        if e.op == "+":
            return v
        name = "neg" if e.op == "-" else "logical_not" if e.op == "not" else _UNARY[e.op]
        return self._call_function(REGISTRY[name], [Arg(v, e.operand.span)], [], e.span, ctx)

    def _tensor_index(self, e: ast.Index, v: TensorValue, ctx):
        items = []
        for sub in e.subscripts:
            if isinstance(sub, ast.Slice):
                parts = tuple(None if x is None else self._slice_bound(self._expr(x, ctx), x.span, k < 2)
                              for k, x in enumerate((sub.start, sub.stop, sub.step)))
                if parts[2] is not None and parts[2] <= 0:
                    raise EvalError("E0308", "a tensor slice's step must be positive", sub.step.span)
                items.append(("slice",) + parts)
            else:
                items.append(self._index_int(self._expr(sub, ctx), sub.span))
        return self._call_function(REGISTRY["index"], [Arg(v, e.value.span), Arg(tuple(items), e.span)], [],
                                   e.span, ctx)

    def _slice_bound(self, v, span, may_run_time: bool):
        """A slice's start or stop may be a run-time size (`pe[:T]`); its step is an int."""
        return v if may_run_time and isinstance(v, Sym) else self._index_int(v, span)

    def _instance_attr(self, e: ast.Attr, iv: InstanceValue, ctx):
        inst = iv.instance if iv.instance is not None else self._made_unapplied(iv, e, ctx)
        weights = inst.weights()
        if e.name not in weights:
            guess = did_you_mean(e.name, weights)
            have = ", ".join(f"`{w}`" for w in weights) or "no weights"
            raise EvalError("E0208", f"`{inst.user_name}` has no weight `{e.name}`", e.name_span,
                            help=f"did you mean `{guess}`?" if guess else f"it has {have}")
        t = TensorType(tuple(weights[e.name]))
        node = ctx.graph.add("weight", [t], instance=inst.id, attr=e.name, span=e.span)
        return TensorValue(Ref(node.id), t, e.span)

    def _made_unapplied(self, iv: InstanceValue, e: ast.Attr, ctx):
        """`emb.weight` before `emb` is applied: a layer whose sizes are all given (`Embedding(100, 16)`)
        is made now; one that infers a size from its input (`Linear`'s `in_features`) is not known yet."""
        spec = iv.spec
        if iv.graph is not ctx.graph:
            raise EvalError("E0307", f"`{iv.name}` is a layer of `{iv.graph.name}`", e.span)
        if isinstance(spec, BlockSpec) or spec.op.resolve is not None:
            raise EvalError("E0208", f"`{iv.name}` has no weights yet: they are made where it is first applied",
                            e.span, label="read before any application",
                            help=f"`{iv.name}` infers its input sizes from its first input: apply it before "
                                 f"reading `{e.name}`")
        args = dict(spec.args)
        _check_weights(spec.op, args, spec.span)
        return self._new_layer_instance(spec, args, ctx, iv)

    # ------------------------------------------------------------------ blocks

    def _apply_block(self, spec: BlockSpec, inputs, spans, span, ctx, instance=None,
                     named: InstanceValue | None = None, scan=None):
        """Apply a block (or a model) to its inputs: tensors, or tuples of tensors where it declares them.
        With `scan` (a `ScanSite`, frontend/scan.py), `inputs` are one step's and the node is the whole
        recurrence: its inputs are the sequence and the initial state, its outputs all steps' and the last state."""
        # long: one application from cache to node; the scan's two changes sit where they apply
        decl = spec.decl
        n_declared = self._check_block_use(spec, inputs, span, ctx)
        flat = leaves(inputs)
        key = specialization_key(spec, inputs)
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
        if scan is not None:
            out_types = scan.outputs(out_types, sub)
        if instance is None:
            if spec.name:
                self._claim_layer_name(spec, ctx)
            # given arguments are already in the caller's terms; defaults are re-expressed in them
            call_args = {p: spec.args[p].value if p in spec.args else subst_value(v, f)
                         for p, v in sub.params.items()}
            instance = ctx.graph.new_instance("block", graph=sub, args=call_args, user_name=spec.name,
                                              span=spec.span, key=spec.key, arg_spans=dict(spec.arg_spans))
            self._hold(instance, spec, ctx, named)
        elif sub is not instance.graph and _code_key(sub) != _code_key(instance.graph):
            # the class made for its first inputs would not do for these
            raise self._misfit(instance, _block_difference(instance.graph, sub), inputs, span, ctx)
        refs = [v.ref for v in inputs] if scan is None else scan.refs
        node = ctx.graph.add("call", out_types, refs, instance=instance.id, span=span,
                             args={"graph": sub} if scan is None else {"graph": sub, "scan": scan.args()})
        values = ctx.graph.values(node)
        nested = nest(structure([n for n, _ in sub.outputs]), values)   # `out, (h, c)`
        return nested[0] if len(nested) == 1 else nested

    def _check_block_use(self, spec: BlockSpec, inputs, span, ctx) -> int:
        """A block applied inside itself, too deep, or to the wrong number of tensors is an error;
        returns how many `input` statements it declares."""
        decl = spec.decl
        if decl.name in ctx.stack:
            # a block made of a repeat's body (frontend/bodyblocks.py) is not in the user's text
            chain = " -> ".join(n for n in ctx.stack[ctx.stack.index(decl.name):] + (decl.name,)
                                if n not in self.body_block_names)
            hidden = REGISTRY.get(decl.name)
            raise EvalError("E0207", f"`{decl.name}` uses itself", spec.span, label="recursive use",
                            notes=(f"the cycle: {chain}",),
                            help=f"the {decl.kind} `{decl.name}` hides the library {hidden.kind} of that name: "
                                 f"rename the {decl.kind} to use the library's in it"
                            if hidden is not None and not hidden.internal else
                            "blocks unroll at compile time; use `repeat` or `for` for repetition")
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
            note = f"in `{decl.name}`, used at {span}" if not getattr(decl, "repeat_of", "") else \
                f"in a pass of the `repeat` at {span}"   # a block made of a repeat's body (frontend/bodyblocks.py)
            self.reporter.diagnostics[before:] = [d if d.span == span else _with_note(d, note) for d in new]
            return None
        self.name_instances(graph, decl)
        return graph

    def _in_caller_terms(self, sub, spec: BlockSpec, inputs, f):
        """The block's output types and guards in the caller's terms (memoized: a block
        called the same way many times is substituted once)."""
        key = (id(sub), caller_terms_key(spec, inputs))
        hit = self.subst_cache.get(key)
        if hit is None:
            out_types = [subst_type(sub.result_type(ref), f) for _, ref in sub.outputs]
            guards = [_from(sub, g2) for g2 in (subst_guard(g, f) for g in settled(sub.guards)) if not g2.is_trivial()]
            hit = self.subst_cache[key] = (out_types, guards, sub)  # `sub` keeps id(sub) unique
        return hit[0], hit[1]

    def _caller_mapping(self, sub, spec: BlockSpec, inputs):
        """f(atom) taking the block's parameters and input dims to the caller's expressions."""
        return _CallerTerms(sub, {n: a.value for n, a in spec.args.items()}, inputs)


def _from(sub, g):
    """A condition of the block `sub` in its caller's terms, knowing it comes from `sub` (the caller's
    class need not decide it where `sub`'s own does: backends/torch_codegen.py callee_decided)."""
    return replace(g, origin=sub) if getattr(g, "at", None) is not None else g


class _CallerTerms:
    """A block's atoms in its caller's terms: a given argument as given, a default through the
    others, an input's dim as the caller's input has it (None: an atom of the caller's own).
    An object rather than a closure that calls itself: such a closure is a reference cycle, and
    every block application would leave one to the cyclic collector."""

    def __init__(self, sub, given: dict, inputs):
        self.sub, self.given, self.inputs = sub, given, inputs
        self.input_index = {name: i for i, (name, _) in enumerate(sub.inputs)}

    def __call__(self, a):
        if isinstance(a, Param):
            if a.name in self.given:
                return poly_of_value(self.given[a.name])
            v = self.sub.params.get(a.name)
            p = poly_of_value(v) if v is not None else None
            return p.subst(self) if p is not None else None
        if isinstance(a, Item):
            return self._item(a)
        if isinstance(a, InDim) and a.input in self.input_index:
            d = self.inputs[self.input_index[a.input]].type.shape[a.index]
            return poly_of_value(d)
        return None

    def _item(self, a: Item):
        """A list's item as the caller gave the list, or as the block's default made it."""
        values = self.given[a.name] if a.name in self.given else self.sub.params.get(a.name)
        if not isinstance(values, list) or a.index >= len(values):
            return None
        p = poly_of_value(values[a.index])
        return p if a.name in self.given or p is None else p.subst(self)


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


def caller_terms_key(spec: BlockSpec, inputs) -> tuple:
    """What a specialization's results in its caller's terms depend on, besides the specialization:
    the arguments and the input dims, as the caller has them."""
    return (tuple((n, _poly_key(a.value)) for n, a in sorted(spec.args.items())),
            tuple(tuple(_poly_key(d) for d in v.type.shape) for v in inputs))


def _poly_key(v):
    p = poly_of_value(v)
    return p if p is not None else _value_key(v)


def _tensors(v) -> bool:
    """A non-empty (nested) tuple of tensors."""
    return isinstance(v, tuple) and bool(v) and all(isinstance(x, TensorValue) or _tensors(x) for x in v)


def specialization_key(spec: BlockSpec, inputs) -> tuple:
    """What a block's specialization is made for: the block, its arguments, its inputs' types."""
    return spec.decl.name, _args_key(spec.args), tuple(_structure_key(v) for v in inputs)


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


def _code_key(graph) -> tuple:
    """What the generated class of a block specialization depends on: its nodes, their arguments and
    its layers' arguments (sizes by value; run-time sizes alike, since forward reads them). A shared
    block is one module: a second application must not need another class."""
    nodes = tuple((n.kind, n.op.name if n.op is not None else None, n.instance, n.attr, tuple(n.inputs),
                   _code_args(n.args)) for n in graph)
    insts = tuple((i.kind, i.op.name if i.op is not None else None, _code_args(i.args), _value_key(i.shape),
                   _code_key(i.graph) if i.graph is not None else None) for i in graph.instances.values())
    return nodes, insts


def _code_args(args: dict) -> tuple:
    return tuple(sorted((k, _code_key(v) if isinstance(v, Graph) else _sym_blind(_value_key(v)))
                        for k, v in args.items()))


def _sym_blind(key):
    if isinstance(key, tuple):
        if key and key[0] == "sym":
            return ("sym",)
        return tuple(_sym_blind(k) for k in key)
    return key


def _arg_difference(made: dict, needed: dict, where: str = "its") -> str:
    """`: its `in_features` is 8, these inputs need 16`, or "" when the arguments agree; `where`
    may hold `{}` for the argument (`the {} of its `Linear` (`1`, line 11)`)."""
    for k, v in needed.items():
        if k in made and _value_key(v) != _value_key(made[k]):
            what = where.format(f"`{k}`") if "{}" in where else f"{where} `{k}`"
            return f": {what} is {_shown(made[k])}, these inputs need {_shown(v)}"
    return ""


def _owner(inst, path: str) -> str:
    """How a message names a block's layer: `its `fc`'s`; a place in an nn.Sequential (`1`) says
    little alone, so its kind and line come with it."""
    if not inst.name.isdigit():
        return f"its `{path}{inst.name}`'s"
    line = f", line {inst.span.line}" if inst.span is not None else ""
    return f"the {{}} of its `{inst.op.name}` (`{path}{inst.name}`{line})"


def _block_difference(made, needed, path: str = "") -> str:
    """What differs between a shared block's specialization and the one these inputs need."""
    pairs = list(zip(made.instances.values(), needed.instances.values()))
    for a, b in pairs:
        if a.kind == b.kind == "layer" and a.op is b.op:
            detail = _arg_difference(a.args, b.args, _owner(a, path))
            if detail:
                return detail
        elif a.kind == b.kind == "block" and a.graph is not None and b.graph is not None:
            detail = _block_difference(a.graph, b.graph, f"{path}{a.name}.")
            if detail:
                return detail
    for a, b in zip(made, needed):
        if a.op is not None and a.op is b.op and _code_args(a.args) != _code_args(b.args) and a.span is not None:
            return f": its `{a.op.name}` (line {a.span.line}) depends on the input's sizes"
    return ""


def _first_application(inst, ctx):
    return next((n for n in ctx.graph if n.instance == inst.id and n.kind in ("op", "call")), None)


def _shown(v) -> str:
    try:
        return literal(v)
    except TypeError:
        return describe(v)


def _dtype_help(op, dtype: str, span=None) -> str | None:
    if op.kind == "loss" and dtype not in FLOAT_DTYPES:   # labels read as class ids, given to a loss of values
        what = span.text if span is not None and "\n" not in span.text and len(span.text) <= 60 else "..."
        return f"`{op.name}` takes float targets: cast the labels with `float({what})`"
    if dtype in ("int64", "int32") and op.name != "Embedding":
        return "integer token ids go through `Embedding` first"
    if op.name == "Embedding":
        return "Embedding looks up integer ids: declare the input `of int64`"
    return None


def _takes_a_layer(op, pos: list[Arg], kws) -> bool:
    """A call in torch's form (`op.layer_form`): its first argument is a layer, or it names the form's first."""
    form = op.layer_form
    if form is None:
        return False
    if pos:
        return isinstance(_layer_of(None, pos[0].value), LayerSpec)
    return any(name == form.params[0].name for name, _ in kws)


def _layer_of(p, v):
    """A named layer given as an argument stands for its settings (torch copies the layer it is given)."""
    if isinstance(v, InstanceValue) and isinstance(v.spec, LayerSpec):
        return replace(v.spec, name=None, name_span=None)
    return v


def _extra_keywords(op) -> tuple:
    """What a layer's call takes besides its parameters: `init=`, for a layer with weights."""
    return ("init",) if op.weights is not None and op.param("init") is None else ()


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
