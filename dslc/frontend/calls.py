"""Calls, pipes and `as`: calling ops, blocks and built-ins, `x -> stage` and the running value
of sequential bodies, and naming layers with `as`. Applying what a call makes is `apply.py`.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from ..ir.dims import SymbolicDecision
from ..ir.values import TensorValue
from ..ops import REGISTRY
from ..ops.ptypes import SHAPE, ListOf, describe
from . import ast
from .binding import Arg
from .builtins import BUILTINS, BuiltinError
from .context import Ctx
from .errors import EvalError, Poisoned
from .scalar_ops import length
from .templates import fill
from .values import MISSING, POISON, BlockSpec, Builtin, DeclRef, InstanceValue, LayerSpec, OpRef, layer_op

# torch's tensor methods whose dslc function has another name (`x.view(B, -1)` is `reshape`)
METHOD_ALIASES = {"view": "reshape", "contiguous": "contiguous", "size": "size"}


@dataclass(frozen=True)
class TensorMethod:
    """`x.permute` about to be called: the function `permute` with `x` as its first argument."""
    name: str
    tensor: TensorValue


def is_tensor_method(name: str) -> bool:
    """Whether `x.name(...)` on a tensor is a dslc function called as torch's method form."""
    name = METHOD_ALIASES.get(name, name)
    if name in ("contiguous", "size"):
        return True
    op = REGISTRY.get(name)
    if op is not None:
        return op.kind == "function" and not op.internal and bool(op.params) and op.params[0].is_tensor
    builtin = BUILTINS.get(name)
    return builtin is not None and bool(builtin.tensor_op)


def tensor_methods() -> list[str]:
    """Every name `is_tensor_method` accepts, for suggestions."""
    names = [n for n in REGISTRY if is_tensor_method(n)] + [n for n in BUILTINS if is_tensor_method(n)]
    return names + list(METHOD_ALIASES)


def _packed(op, pos: list[Arg]) -> list[Arg]:
    """torch's methods take a shape or dims as separate arguments (`x.permute(0, 2, 1)`,
    `x.view(B, -1)`) as well as one list: pack them into the list dslc's function takes."""
    if len(op.params) < 2 or not _is_list_param(op.params[1]) or len(pos) < 2:
        return pos
    if len(pos) == 2 and isinstance(pos[1].value, (list, tuple)):
        return pos
    return [pos[0], Arg(tuple(a.value for a in pos[1:]), pos[1].span)]


def _is_list_param(param) -> bool:
    return param.type is SHAPE or isinstance(param.type, ListOf)


class CallEvaluation:
    """Calls and pipe stages (a mixin of `Evaluator`)."""

    # ------------------------------------------------------------------ calls

    def _e_Call(self, e: ast.Call, ctx: Ctx):
        func = self._callee(e, ctx)
        return self._call(func, e, ctx)

    def _callee(self, e: ast.Call, ctx: Ctx):
        if isinstance(e.func, ast.Name):
            v = self._lookup(e.func.id, ctx)
            if v is MISSING:
                raise self._unknown_name(e.func, ctx, called=True)
            return v
        if isinstance(e.func, ast.Attr) and is_tensor_method(e.func.name):
            ported = self._torch_prefix(e.func, ctx)
            if ported is not None:
                raise ported
            v = self._expr(e.func.value, ctx)   # once: evaluating it twice would build its layers twice
            if isinstance(v, TensorValue):
                return TensorMethod(e.func.name, v)
            return self._attr_of(e.func, v, ctx)
        return self._expr(e.func, ctx)

    def _size_method(self, tensor: TensorValue, pos: list[Arg], kws, e: ast.Call):
        """`x.size()` is `x.shape`; `x.size(0)` is `x.shape[0]`, as in torch."""
        if kws or len(pos) > 1:
            raise EvalError("E0305", "`size` takes at most one argument, a dimension", e.span,
                            help="`x.size()` is `x.shape`, `x.size(1)` is `x.shape[1]`")
        shape = tuple(tensor.type.shape)
        if not pos:
            return shape
        d = self._index_int(pos[0].value, pos[0].span)
        if not -len(shape) <= d < len(shape):
            raise EvalError("E0308", f"dimension {d} is out of range for a tensor of rank {len(shape)}",
                            pos[0].span, label=f"valid: {-len(shape)} to {len(shape) - 1}")
        return shape[d]

    def _call_method(self, method: "TensorMethod", e: ast.Call, ctx: Ctx):
        """`h.permute(0, 2, 3, 1)`, torch's method form of `permute(h, [0, 2, 3, 1])`."""
        name = METHOD_ALIASES.get(method.name, method.name)
        pos, kws = self._args(e, ctx, piped=method.tensor)
        if name == "contiguous":   # a layout request in torch; dslc's tensors have no layout to fix
            if len(pos) > 1 or kws:
                raise EvalError("E0305", "`contiguous` takes no arguments here", e.span)
            return method.tensor
        if name == "size":
            return self._size_method(method.tensor, pos[1:], kws, e)
        builtin = BUILTINS.get(name)
        if builtin is not None and builtin.tensor_op:   # `x.float()`, `batch.y.long()`
            return self._call_tensor_form(builtin, pos, kws, e.span, ctx)
        op = REGISTRY[name]
        return self._call_function(op, _packed(op, pos), kws, e.span, ctx)

    def _args(self, e: ast.Call, ctx: Ctx, piped=None, skip: tuple = ()) -> tuple[list, list]:
        pos = [Arg(self._expr(a, ctx), a.span) for a in e.args]
        if piped is not None:
            pos.insert(0, Arg(piped, getattr(piped, "span", None) or e.span))
        kws = [(k.name, Arg(self._expr(k.value, ctx), k.value.span, k.span))
               for k in e.kwargs if k.name not in skip]
        for a in pos + [a for _, a in kws]:
            if a.value is POISON:
                raise Poisoned()
        return pos, kws

    def _call(self, func, e: ast.Call, ctx: Ctx, piped=None):
        if func is POISON:
            raise Poisoned()
        if isinstance(func, TensorMethod):
            return self._call_method(func, e, ctx)
        if isinstance(func, OpRef):
            if func.op.is_layer:
                init = next((k for k in e.kwargs if k.name == "init"), None)
                if init is None or func.op.param("init") is not None:
                    pos, kws = self._args(e, ctx)
                    return self._layer_spec(func.op, pos, kws, e.span)
                pos, kws = self._args(e, ctx, skip=("init",))
                return replace(self._layer_spec(func.op, pos, kws, e.span), inits=self._layer_inits(init, ctx))
            pos, kws = self._args(e, ctx, piped)
            number_form = BUILTINS.get(func.op.name)
            if number_form is not None and not _any_tensor(pos, kws):   # `sum(depths)`, `log(10000.0)`
                return self._call_builtin(number_form, pos, kws, e)
            return self._call_function(func.op, pos, kws, e.span, ctx)
        if isinstance(func, DeclRef) and func.decl.kind in ("block", "model"):
            pos, kws = self._args(e, ctx)
            return self._block_spec(func.decl, pos, kws, e.span)
        if isinstance(func, Builtin):
            pos, kws = self._args(e, ctx, piped)
            if func.name == "scan":
                return self._scan(e, pos, kws, ctx)
            if func.tensor_op and _any_tensor(pos, kws):   # `float(x)`: a cast
                return self._call_tensor_form(func, pos, kws, e.span, ctx)
            return self._call_builtin(func, pos, kws, e)
        if isinstance(func, (LayerSpec, BlockSpec, InstanceValue)):
            pos, kws = self._args(e, ctx)
            return self._apply(func, [a.value for a in pos], [a.span for a in pos], e.span, ctx, _parts(e),
                               keywords=kws)
        return self._call_other(func, e, ctx, piped)

    def _call_other(self, func, e: ast.Call, ctx: Ctx, piped=None):
        if isinstance(func, DeclRef):
            raise EvalError("E0307", f"{describe(func)} cannot be called here", e.func.span)
        raise EvalError("E0307", f"{describe(func)} is not callable", e.func.span)

    def _call_tensor_form(self, func: Builtin, pos: list[Arg], kws, span, ctx: Ctx):
        fixed = [(k, Arg(v, span)) for k, v in func.tensor_args]
        return self._call_function(REGISTRY[func.tensor_op], pos, kws + fixed, span, ctx)

    def _call_builtin(self, func: Builtin, pos: list[Arg], kws, e: ast.Call):
        if kws:
            raise EvalError("E0305", f"`{func.name}` takes no keyword arguments", kws[0][1].name_span)
        self._spend(e.span, sum(length(a.value) for a in pos))
        try:
            result = self._bounded(func.fn(*[a.value for a in pos]), e.span)
            self._spend(e.span, length(result))
            return result
        except BuiltinError as err:
            span = pos[err.arg].span if err.arg is not None and err.arg < len(pos) else e.span
            raise EvalError(err.code, str(err), span) from None
        except SymbolicDecision as err:
            raise EvalError("E0311", f"cannot decide this at compile time: {err}", e.span) from None

    # ------------------------------------------------------------------ pipes and `as`

    def _e_Pipe(self, e: ast.Pipe, ctx: Ctx):
        value = self._expr(e.stages[0], ctx)
        for stage in e.stages[1:]:
            if value is POISON:
                raise Poisoned()
            value = self._stage(stage, value, ctx)
        return value

    def _e_AsName(self, e: ast.AsName, ctx: Ctx):
        applied = self._named_application(e, ctx)
        if applied is not None:
            return applied
        v = self._expr(e.value, ctx)
        return self._named_spec(v, e, ctx)

    def _named_application(self, e: ast.AsName, ctx: Ctx):
        """`Up(64)(x, skip) as up1`: `as` names the layer of an explicit application."""
        call = e.value
        if not isinstance(call, ast.Call) or not isinstance(call.func, ast.Call):
            return None
        spec = self._expr(call.func, ctx)
        if spec is POISON:
            raise Poisoned()
        if not isinstance(spec, (LayerSpec, BlockSpec)):
            return None
        spec = self._named_spec(spec, e, ctx)
        pos, kws = self._args(call, ctx)
        return self._apply(spec, [a.value for a in pos], [a.span for a in pos], call.span, ctx, _parts(call),
                           keywords=kws)

    def _named_spec(self, v, e: ast.AsName, ctx: Ctx):
        if v is POISON:
            raise Poisoned()
        if isinstance(v, OpRef) and v.op.is_layer:
            v = self._layer_spec(v.op, [], [], e.value.span)
        if isinstance(v, DeclRef) and v.decl.kind in ("block", "model"):
            v = BlockSpec(v.decl, {}, {}, e.value.span)
        if isinstance(v, InstanceValue):
            raise EvalError("E0210", f"`{v.name}` is already a layer's name: `as` cannot give it another",
                            e.name_span, label="a second name", help=f"apply it by its name: `x -> {v.name}`")
        if not isinstance(v, (LayerSpec, BlockSpec)):
            raise EvalError("E0307", f"`as` names a layer, but this is {describe(v)}", e.span,
                            label="not a layer")
        if e.template:
            name, key = fill(e, lambda piece: self._expr(piece, ctx))
            if not (name.isidentifier() and name.isascii()):
                raise EvalError("E0211", f"the template makes `{name}`, which cannot name a layer: a name is "
                                "ASCII letters, digits and `_`, not starting with a digit", e.name_span,
                                label="made here", help='put a word before the braces: `as "layer{i}"`')
            self._check_layer_name(name, e.name_span)
            return replace(v, name=name, name_span=e.name_span, key=key)
        self._check_layer_name(e.name, e.name_span)
        return replace(v, name=e.name, name_span=e.name_span)

    # ------------------------------------------------------------------ stages (pipes and sequential bodies)

    def _stage(self, e, value, ctx: Ctx, statement: bool = False):
        """Apply the stage `e` to `value` (the piped or running value).

        The stage itself is evaluated first, so its own mistakes are reported even
        when the value it would receive comes from an earlier error."""
        if isinstance(e, ast.AsName):
            spec = self._stage_callable(e.value, ctx, value)
            if isinstance(spec, _Done):
                raise EvalError("E0307", "`as` names a layer, but this stage is a function call", e.span)
            spec = self._named_spec(spec, e, ctx)
            return self._apply_to(spec, value, e, ctx, statement)
        spec = self._stage_callable(e, ctx, value)
        if isinstance(spec, _Done):
            return spec.value
        if spec is POISON:
            raise Poisoned()
        if isinstance(spec, TensorValue) and statement:
            return spec  # a tensor expression written as a statement: it becomes the running value
        return self._apply_to(spec, value, e, ctx, statement)

    def _stage_callable(self, e, ctx: Ctx, value):
        """What a stage applies: a layer-like value, or _Done when a function consumed the value."""
        if isinstance(e, ast.Call):
            func = self._callee(e, ctx)
            if isinstance(func, OpRef) and not func.op.is_layer or isinstance(func, Builtin):
                self._need_value(value, e, ctx)
                if value is POISON:
                    self._args(e, ctx)  # still report mistakes in the arguments
                    raise Poisoned()
                return _Done(self._call(func, e, ctx, piped=value))
            return self._call(func, e, ctx)
        if isinstance(e, ast.Name):
            v = self._lookup(e.id, ctx)
            if v is MISSING:
                raise self._unknown_name(e, ctx)
            if isinstance(v, OpRef) and not v.op.is_layer:
                self._need_value(value, e, ctx)
                if value is POISON:
                    raise Poisoned()
                return _Done(self._call_function(v.op, [Arg(value, getattr(value, "span", e.span))], [],
                                                 e.span, ctx))
            if isinstance(v, Builtin) and v.tensor_op and isinstance(value, TensorValue):   # `x -> float`
                return _Done(self._call_tensor_form(v, [Arg(value, value.span or e.span)], [], e.span, ctx))
            return v
        return self._expr(e, ctx)

    def _need_value(self, value, e, ctx: Ctx) -> None:
        if value is None:
            raise EvalError("E0307", "there is no value to apply this to", e.span,
                            help=self._no_current_help(ctx))

    def _no_current_help(self, ctx: Ctx) -> str:
        if ctx.n_inputs_declared > 1:
            return "with several inputs, say which one: `x -> Linear(10)`"
        return "declare an `input` first"

    def _apply_to(self, spec, value, e, ctx: Ctx, statement: bool):
        if spec is POISON or value is POISON:
            raise Poisoned()
        if value is None:
            raise EvalError("E0307", "there is no value to apply this layer to", e.span,
                            help=self._no_current_help(ctx))
        if isinstance(spec, TensorValue):
            raise EvalError("E0307", "a tensor is not a layer: nothing to pipe into", e.span,
                            help="pipes end in layers or functions: `x -> Linear(10)`")
        if isinstance(value, tuple):
            if isinstance(spec, (LayerSpec, InstanceValue, OpRef)) and len(value) > 1 and \
                    all(isinstance(v, TensorValue) for v in value):
                self._check_spread(spec, value, e)
                return self._apply(spec, list(value), [v.span for v in value], e.span, ctx)
            raise EvalError("E0307", "the value piped here is a tuple of tensors", e.span,
                            help="unpack it first, e.g. `out, (h, c) = x -> LSTM(64)`, or index it: `(...)[0]`")
        if not isinstance(value, TensorValue):
            raise EvalError("E0307", f"only a tensor can go into a layer, but this is {describe(value)}", e.span,
                            help="a pipe starts from a tensor: `x -> Linear(10)`")
        return self._apply(spec, [value], [value.span], e.span, ctx)


    def _check_spread(self, spec, value: tuple, e) -> None:
        """A tuple piped into a layer fills its required inputs only: `x -> GRU(8) -> GRU(8)` would
        otherwise start the second GRU from the first one's final state. Optional inputs (a recurrent
        state, attention's key and value) are given by applying the layer: `GRU(8)(x, h)`."""
        op = layer_op(spec)
        required = op.min_inputs if op is not None and op.min_inputs is not None else len(value)
        if len(value) > required:
            names = ", ".join(op.inputs[required:len(value)])
            raise EvalError("E0307", f"the value piped here is a tuple of {len(value)} tensors, but `{op.name}` "
                            f"requires {required}: a pipe does not fill its optional {names}", e.span,
                            help=f"unpack it first (`out, h = ...`), and apply the layer: "
                                 f"`{op.name}(...)({', '.join(op.inputs[:len(value)])})`")


def _parts(call: ast.Call) -> dict:
    """The element spans of the arguments written as tuples, `(h, c)`, by position."""
    return {i: tuple(x.span for x in a.items) for i, a in enumerate(call.args) if isinstance(a, ast.TupleExpr)}


def _any_tensor(pos: list[Arg], kws) -> bool:
    """Whether a call has a tensor argument: a name that is both a tensor function and a compile-time
    built-in (`sum`, `abs`, `log`) means the tensor function then, the built-in otherwise."""
    return any(isinstance(a.value, TensorValue) for a in pos + [a for _, a in kws])


@dataclass
class _Done:
    """A stage that was a function call: the piped value is already consumed."""
    value: object
