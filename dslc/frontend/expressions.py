"""Evaluating expressions at compile time: literals, operators, conditions, indexing and
attributes, and the limits on the values they compute (sizes of lists and strings, int64).
"""
from __future__ import annotations

from ..diagnostics import Label, did_you_mean
from ..ir.dims import Size, Sym, SymbolicDecision, plain
from ..ir.limits import MAX_ITEMS, MAX_NESTING, int_too_large, magnitude, power_too_large
from ..ir.values import TensorValue
from ..ops.ptypes import describe, is_int, is_number
from . import ast
from .calls import tensor_methods
from .context import Ctx
from .errors import EvalError, Poisoned
from .scalar_ops import SCALAR_OPS, check_lengths, invert, length
from .values import POISON, InstanceValue, Record

# `0.5 * dim`: float's operator would drop the size's expression; the size's reflected one keeps it
_REFLECTED = {"+": "__radd__", "-": "__rsub__", "*": "__rmul__", "/": "__rtruediv__", "**": "__rpow__"}


class ExpressionEvaluation:
    """`_expr(e, ctx)` and the `_e_<Node>` method of each expression (a mixin of `Evaluator`)."""

    def _expr(self, e, ctx: Ctx):
        return getattr(self, "_e_" + type(e).__name__)(e, ctx)

    def _e_Const(self, e: ast.Const, ctx: Ctx):
        return e.value

    def _e_ListExpr(self, e: ast.ListExpr, ctx: Ctx):
        items = [self._expr(x, ctx) for x in e.items]
        if any(x is POISON for x in items):
            raise Poisoned()   # an item already failed and was reported: no follow-on error about the list
        return self._collection(items, e.span)

    def _e_TupleExpr(self, e: ast.TupleExpr, ctx: Ctx):
        return self._collection(tuple(self._expr(x, ctx) for x in e.items), e.span)

    def _e_DictExpr(self, e: ast.DictExpr, ctx: Ctx):
        return self._collection({k: self._expr(v, ctx) for k, v in zip(e.keys, e.values)}, e.span)

    # ------------------------------------------------------------------ limits on values

    def _collection(self, value, span):
        """A new list, tuple, dict or string, checked against MAX_ITEMS (nested items counted
        each time they appear, as printing or walking the value would) and MAX_NESTING."""
        size, depth = self._measure(value)
        if size - 1 > MAX_ITEMS:  # the container itself is not one of its items
            what = "this string" if isinstance(value, str) else "this value"
            unit = "characters" if isinstance(value, str) else "items (nested ones included)"
            raise EvalError("E0702", f"{what} holds more than {MAX_ITEMS:,} {unit}", span, label="too large")
        if depth > MAX_NESTING:
            raise EvalError("E0705", f"lists nest more than {MAX_NESTING} deep here", span, label="too deep")
        return value

    def _measure(self, v) -> tuple[int, int]:
        """(items, nesting) of a value; containers of containers are remembered, so a value
        built by nesting another is measured in time proportional to its own length."""
        if isinstance(v, str):
            return max(len(v), 1), 0
        if not isinstance(v, (list, tuple, dict)):
            return 1, 0
        hit = self.measured.get(id(v))
        if hit is not None and hit[0] is v:
            return hit[1], hit[2]
        size, depth = 1, 0
        for x in (v.values() if isinstance(v, dict) else v):
            if isinstance(x, (list, tuple, dict, str)):
                n, d = self._measure(x)
                size, depth = size + n, max(depth, d)
            else:
                size += 1
        if depth or len(v) > 64:
            self.measured[id(v)] = (v, size, depth + 1)
        return size, depth + 1

    def _bounded(self, v, span):
        """A computed value within the limits: an int in int64, a list or string not too long."""
        if isinstance(v, int) and int_too_large(v):
            raise EvalError("E0701", f"this integer is too large: {magnitude(v)}, more than 2**63 - 1", span,
                            label="evaluated at compile time", help="sizes and counts are int64 in PyTorch")
        if isinstance(v, (list, tuple, dict, str)):
            return self._collection(v, span)
        return v

    # ------------------------------------------------------------------ operators and conditions

    def _e_BinOp(self, e: ast.BinOp, ctx: Ctx):
        if e.op in ("and", "or"):
            return self._logic(e, ctx)   # frontend/conditions.py
        left, right = self._expr(e.left, ctx), self._expr(e.right, ctx)
        if left is POISON or right is POISON:
            raise Poisoned()
        if isinstance(left, TensorValue) or isinstance(right, TensorValue):
            return self._tensor_binop(e, left, right, ctx)
        return self._scalar_binop(e, left, right)

    def _scalar_binop(self, e: ast.BinOp, a, b):
        # float ∘ Size would run float's own operator, which drops the size's expression: ask the
        # size instead (a float that keeps `0.5 * dim`), or record that the value was fixed
        if isinstance(b, Size) and type(a) is float:
            if e.op in _REFLECTED:
                return self._scalar_result(e, lambda: getattr(b, _REFLECTED[e.op])(a), a, b)
            b._lose("mixing with a float")
        if e.op == "**" and is_int(a) and is_int(b) and plain(b) >= 0 and power_too_large(plain(a), plain(b)):
            raise EvalError("E0701", f"`{plain(a)} ** {plain(b)}` is too large: more than 2**63 - 1", e.span,
                            label="evaluated at compile time", help="sizes and counts are int64 in PyTorch")
        check_lengths(e.op, a, b, e.span)
        self._spend(e.span, length(a) + length(b))
        return self._scalar_result(e, lambda: SCALAR_OPS[e.op](a, b), a, b)

    def _scalar_result(self, e: ast.BinOp, compute, a=None, b=None):
        try:
            result = self._bounded(compute(), e.span)
        except ZeroDivisionError:
            raise EvalError("E0308", "division by zero", e.span, label="evaluated at compile time",
                            labels=(Label(e.right.span, "this is zero"),)) from None
        except SymbolicDecision as err:
            raise EvalError("E0311", f"cannot decide this at compile time: {err}", e.span) from None
        except (TypeError, KeyError, ValueError, OverflowError):
            raise EvalError("E0307", f"cannot apply `{e.op}` to {describe(a)} and {describe(b)}",
                            e.op_span, label="unsupported operands") from None
        self._spend(e.span, length(result))
        return result


    def _e_UnaryOp(self, e: ast.UnaryOp, ctx: Ctx):
        v = self._expr(e.operand, ctx)
        if v is POISON:
            raise Poisoned()
        if isinstance(v, TensorValue):
            return self._tensor_unary(e, v, ctx)
        if e.op == "not":
            return not self._truth(v, e.operand.span)
        if e.op == "~" and is_int(v):
            return invert(v)
        if not is_number(v) and not isinstance(v, Sym) or e.op == "~":
            raise EvalError("E0307", f"cannot apply `{e.op}` to {describe(v)}", e.span)
        return self._bounded(-v if e.op == "-" else v, e.span)

    def _e_Cond(self, e: ast.Cond, ctx: Ctx):
        return self._expr(e.then if self._condition(e.cond, ctx) else e.orelse, ctx)   # frontend/conditions.py

    def _truth(self, v, span) -> bool:
        if v is POISON:
            raise Poisoned()
        if isinstance(v, TensorValue):
            raise EvalError("E0307", "a tensor cannot decide a compile-time condition", span,
                            help="on bool tensors, `&`, `|` and `~` are elementwise and, or and not")
        try:
            return bool(v)
        except SymbolicDecision as e:
            raise EvalError("E0311", f"cannot decide this at compile time: {e}", span,
                            help="conditions may only use sizes known at compile time") from None

    # ------------------------------------------------------------------ indexing and attributes

    def _e_Index(self, e: ast.Index, ctx: Ctx):
        v = self._expr(e.value, ctx)
        if v is POISON:
            raise Poisoned()
        if isinstance(v, TensorValue):
            return self._tensor_index(e, v, ctx)
        if len(e.subscripts) != 1:
            raise EvalError("E0307", f"{describe(v)} takes one index", e.span)
        sub = e.subscripts[0]
        if isinstance(sub, ast.Slice):
            if not isinstance(v, (list, tuple)):
                raise EvalError("E0307", f"cannot slice {describe(v)}", e.span)
            parts = [None if x is None else self._index_int(self._expr(x, ctx), x.span)
                     for x in (sub.start, sub.stop, sub.step)]
            if parts[2] == 0:
                raise EvalError("E0308", "slice step cannot be zero", sub.span)
            out = v[slice(*parts)]
            self._spend(e.span, len(out))
            return out
        i = self._index_int(self._expr(sub, ctx), sub.span)
        if isinstance(v, dict):
            raise EvalError("E0307", "index a dictionary with `.name`", e.span)
        if not isinstance(v, (list, tuple, str)):
            raise EvalError("E0307", f"cannot index {describe(v)}", e.value.span)
        if not -len(v) <= i < len(v):
            raise EvalError("E0308", f"index {i} is out of range for {len(v)} item{'s' if len(v) != 1 else ''}",
                            sub.span, label=f"valid: {-len(v)} to {len(v) - 1}" if v else "it is empty")
        return v[i]

    def _index_int(self, v, span) -> int:
        if v is POISON:
            raise Poisoned()
        if isinstance(v, Sym):
            raise EvalError("E0311", f"an index must be known at compile time, got `{v}`", span)
        if not is_int(v):
            raise EvalError("E0301", f"an index must be an int, got {describe(v)}", span)
        if isinstance(v, Size):
            v._lose("an index")
        return plain(v)

    def _e_Attr(self, e: ast.Attr, ctx: Ctx):
        ported = self._torch_prefix(e, ctx)
        if ported is not None:
            raise ported
        return self._attr_of(e, self._expr(e.value, ctx), ctx)

    def _attr_of(self, e: ast.Attr, v, ctx: Ctx):
        """`v.name` for the value `v` of `e.value`, already evaluated."""
        if v is POISON:
            raise Poisoned()
        if isinstance(v, TensorValue):
            return self._tensor_attr(e, v)
        if isinstance(v, InstanceValue):
            return self._instance_attr(e, v, ctx)
        if isinstance(v, Record):
            if e.name not in v.fields:
                guess = did_you_mean(e.name, v.fields)
                raise EvalError("E0208", f"{describe(v)} has no field `{e.name}`", e.name_span,
                                help=f"did you mean `{guess}`?" if guess else
                                "fields: " + ", ".join(f"`{f}`" for f in v.fields))
            return v.fields[e.name]
        raise EvalError("E0208", f"{describe(v)} has no attribute `{e.name}`", e.name_span)

    def _tensor_attr(self, e: ast.Attr, v: TensorValue):
        t = v.type
        if e.name == "shape":
            return tuple(t.shape)
        if e.name in ("ndim", "rank"):
            return t.rank
        if e.name == "dtype":
            return t.dtype
        guess = did_you_mean(e.name, ["shape", "ndim", "dtype"] + tensor_methods())
        raise EvalError("E0208", f"a tensor has no attribute `{e.name}`", e.name_span,
                        help=f"did you mean `{guess}`?" if guess else "tensors have `.shape`, `.ndim` and `.dtype`")
