"""`and`, `or` and `not` of comparisons of sizes, recorded as the spec's own condition.

`skip = (x -> Downsample(out, stride)) if stride != 1 or x.shape[1] != out else x` decides on the
whole condition. Python's short circuit evaluates `stride != 1` alone where it holds, so the
guards of the operands it ran would say the result was compiled for `stride != 1`, and a class
generated from it would refuse `stride == 1` with another width although the spec builds the same
projection there. What the result relied on is the condition's outcome, so that is what is
recorded (ir/dims.py `Compound`): the generated class branches on `stride != 1 or in_channels !=
out`, as torchvision's BasicBlock does.

The operand that Python skips is evaluated on the side, only where it is plain arithmetic of
sizes, names and `.shape` (nothing it reads makes a layer or a node), it raises nothing and it
relies on no guard of its own. Anything else (a flag, a string, a tensor, a size the operand
computed under guards of its own) keeps the guards of the operands that ran, as before.

Every `if` (a statement's or an expression's) records its decision with the condition's span
(`Guard.at`, `Compound.at`), so that the class of a block that calls this one can leave the
decision to this block's class (backends/torch_codegen.py callee_decided).

A condition bound to a name (`use_res_connect = stride == 1 and x.shape[1] == out`) is recorded
the same way, at the bound expression's span, and the graph keeps the name
(`Graph.named_conditions`): a generated forward that tests the decision reads it as the member
`self.use_res_connect`, set in the constructor, as torchvision's MBConv does, rather than keeping
each argument the condition reads.
"""
from __future__ import annotations

from dataclasses import replace

from ..ir.dims import Compound, Guard, SymbolicDecision, record_all, recorder_active, recording
from ..ir.values import TensorValue
from . import ast
from .context import Ctx
from .errors import EvalError, Poisoned
from .values import POISON

_COMPARISONS = {"==", "!=", "<", "<=", ">", ">="}
_SHAPE_ATTRS = {"shape", "ndim", "rank"}


class ConditionEvaluation:
    """`_logic(e, ctx)` for `and` / `or` (a mixin of `Evaluator`)."""

    def _condition(self, e, ctx: Ctx) -> bool:
        """The truth of an `if`'s condition (a statement's or an expression's); what it decided recorded
        as the spec's condition at its span, so that a caller can tell the block's own decisions
        from its own (backends/torch_codegen.py callee_decided)."""
        if not recorder_active():
            return self._truth(self._expr(e, ctx), e.span)
        return self._truth(self._decided(e, ctx)[0], e.span)

    def _named_condition(self, e, name: str, ctx: Ctx):
        """The value of a condition bound to `name` (`is_condition`), its decision recorded as an
        `if`'s is, and the name kept with it (see the module doc)."""
        if not recorder_active():
            return self._expr(e, ctx)
        value, cond = self._decided(e, ctx)
        if cond is not None:
            known = ctx.graph.named_conditions
            known[e.span] = (name, cond) if known.get(e.span, (name, cond)) == (name, cond) else None
        return value

    def _decided(self, e, ctx: Ctx) -> tuple:
        """(value, the condition at e's span, true when it is; None where it is no decision of sizes)
        of a condition, what it decided recorded: the condition's outcome, else the facts its operands
        relied on."""
        value, cond, facts = self._operand(e, ctx)
        if cond is None or isinstance(cond, bool):
            record_all(facts)
            return value, None
        cond = replace(cond, at=e.span)
        record_all([cond if value else cond.negated()])   # a condition of sizes has a bool value
        return value, cond

    def _logic(self, e: ast.BinOp, ctx: Ctx):
        """The value of `a and b` / `a or b`, Python's; its decision recorded as one condition where
        the operands are comparisons of sizes (see the module doc)."""
        if not recorder_active():
            return self._short_circuit(e, ctx)
        value, _, facts = self._connective(e, ctx)
        record_all(facts)
        return value

    def _short_circuit(self, e: ast.BinOp, ctx: Ctx):
        left = self._expr(e.left, ctx)
        lt = self._truth(left, e.left.span)
        if lt == (e.op == "or"):   # `False and ...`, `True or ...`: the right operand is not evaluated
            return left
        return self._expr(e.right, ctx)

    def _connective(self, e: ast.BinOp, ctx: Ctx) -> tuple:
        """(value, condition, facts): the condition (a Guard or Compound true when the value is, a
        bool where it is settled) or None; the facts the value relied on, for the caller to record
        where it does not use the condition in one of its own."""
        left, lc, lfacts = self._operand(e.left, ctx)
        lt = self._truth(left, e.left.span)
        if lt == (e.op == "or"):   # `False and ...`, `True or ...`: the right operand is not evaluated
            value, rc, rfacts = left, self._skipped(e.right, ctx), []
        else:
            value, rc, rfacts = self._operand(e.right, ctx)
        if lc is None or rc is None:
            return value, None, lfacts + rfacts
        cond = Compound.of(e.op, [lc, rc], e.span)
        if isinstance(cond, bool):
            return value, cond, []
        return value, cond, [cond if value else cond.negated()]

    def _operand(self, e, ctx: Ctx) -> tuple:
        """(value, condition or None, facts) of one operand (see `_connective`)."""
        if isinstance(e, ast.BinOp) and e.op in ("and", "or"):
            return self._connective(e, ctx)
        if isinstance(e, ast.UnaryOp) and e.op == "not":
            v, cond, facts = self._operand(e.operand, ctx)
            if isinstance(v, TensorValue):   # elementwise: no decision
                record_all(facts)
                return self._tensor_unary(e, v, ctx), None, []
            return not self._truth(v, e.operand.span), _negated(cond), facts
        if isinstance(e, ast.BinOp) and e.op in _COMPARISONS:
            return self._comparison(e, ctx)
        return self._expr(e, ctx), None, []

    def _comparison(self, e: ast.BinOp, ctx: Ctx) -> tuple:
        left, right = self._expr(e.left, ctx), self._expr(e.right, ctx)
        if left is POISON or right is POISON:
            raise Poisoned()
        if isinstance(left, TensorValue) or isinstance(right, TensorValue):
            return self._tensor_binop(e, left, right, ctx), None, []
        with recording() as got:
            value = self._scalar_binop(e, left, right)
        return value, _decision(value, list(got), left, right), list(got)

    def _skipped(self, e, ctx: Ctx):
        """The condition of an operand Python's short circuit skips, or None (see the module doc)."""
        if not _plain(e, ctx):
            return None
        try:
            with recording() as side:
                _, cond, _ = self._operand(e, ctx)
        except (EvalError, Poisoned, SymbolicDecision, ArithmeticError, TypeError, ValueError):
            return None
        # settled (a bool) is no decision here: it was never made, and may read a flag
        return None if side or isinstance(cond, bool) else cond


def is_condition(e) -> bool:
    """Whether the expression is a comparison, or `and` / `or` / `not` at its top (a decision of
    sizes where its operands compare sizes)."""
    return (isinstance(e, ast.BinOp) and e.op in _COMPARISONS | {"and", "or"}) or \
        (isinstance(e, ast.UnaryOp) and e.op == "not")


def _decision(value, got: list, left, right):
    """The comparison's condition: its one guard, true when the comparison is; a bool where it
    recorded none between two numbers (known sizes); None where it is no one decision on sizes
    (a string's or a flag's value is decided by the class's own branches on it)."""
    if not isinstance(value, bool) or len(got) > 1:
        return None
    if not got:
        numbers = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (left, right))
        return value if numbers else None
    g = got[0]
    if type(g) is not Guard:    # a float's value, a loop's count
        return None
    return g if value else g.negated()


def _negated(cond):
    if cond is None or isinstance(cond, bool):
        return None if cond is None else not cond
    return cond.negated()


def _plain(e, ctx: Ctx) -> bool:
    """Whether evaluating `e` can only compute (no layer, call or node): constants, names bound
    to numbers, sizes and lists, `.shape` / `.ndim` of a tensor, indexing and arithmetic of those."""
    if isinstance(e, ast.Const):
        return True
    if isinstance(e, ast.Name):
        v = ctx.scope.get(e.id, POISON)
        return isinstance(v, (int, float, str, bool, tuple, list)) or v is None
    if isinstance(e, ast.Attr):
        return e.name in _SHAPE_ATTRS and isinstance(e.value, ast.Name) and \
            isinstance(ctx.scope.get(e.value.id), TensorValue)
    if isinstance(e, ast.Index):
        return len(e.subscripts) == 1 and not isinstance(e.subscripts[0], ast.Slice) and \
            _plain(e.value, ctx) and _plain(e.subscripts[0], ctx)
    if isinstance(e, ast.BinOp):
        return e.op not in ("->", "@") and _plain(e.left, ctx) and _plain(e.right, ctx)
    if isinstance(e, ast.UnaryOp):
        return _plain(e.operand, ctx)
    return False

