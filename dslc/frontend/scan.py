"""`scan(step, x, state, dim=1, keepdim=false, future=0)`: a recurrence over a run-time length.

The step is a block applied to one time step and the state, `(x_t, state) -> (y_t, state')`. It is
specialized and checked once, for one step's types, and the whole recurrence is ONE call node: its
inputs are the sequence and the initial state, its outputs every step's `y` (stacked along `dim`, or
concatenated with `keepdim=true`) and the last state. With `future=n`, n more steps follow, each fed
the previous step's `y` (as a forecaster generates). The node's `args["scan"]` says how it loops;
the backends write it as a loop (PyTorch), a Scan and a Loop (ONNX), and count the body's MACs once
per step.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..ir.dims import Size, Sym, require_parameter, same
from ..ir.nesting import leaves
from ..ir.types import TensorType
from ..ir.values import TensorValue
from ..ops.ptypes import describe, is_int
from . import ast
from .context import Ctx
from .errors import EvalError, Poisoned
from .values import POISON, BlockSpec, DeclRef, InstanceValue

_KEYWORDS = ("dim", "keepdim", "future")


@dataclass
class ScanSite:
    """One `scan(...)` call: what the node holds besides the step's block."""
    refs: list          # the node's inputs: the sequence, then the initial state's tensors
    state: list         # the initial state's types
    step: TensorType    # one step of the sequence, as the step block receives it
    dim: int
    keepdim: bool
    future: object      # int (or a Size: a model parameter)
    length: object      # the sequence's length along dim (an int or a Sym)
    span: object
    state_span: object

    def args(self) -> dict:
        return {"dim": self.dim, "keepdim": self.keepdim, "future": self.future}

    def outputs(self, step_types: list, sub) -> list:
        """The node's output types from the step's (y_t, state'): every step's y and the last state."""
        y, *after = step_types
        if len(after) != len(self.state) or len(sub.inputs) != 1 + len(self.state):
            raise EvalError("E0307", f"a scan's step returns (y, state) with the state as it received it: "
                            f"it received {len(self.state)} state tensor(s) and returned {len(after)}", self.span,
                            help="end the step block with `output y, state`")
        for i, (before, now) in enumerate(zip(self.state, after)):
            if not _same_type(before, now):
                which = f"state tensor {i}" if len(self.state) > 1 else "state"
                raise EvalError("E0403", f"the scan's {which} is {now} after a step but {before} before it: a "
                                "carried state must keep its shape and dtype", self.state_span,
                                label=f"{before} here, {now} after one step",
                                help="each step must return the state as it received it (the same shapes)")
        if (isinstance(self.future, Size) or self.future > 0) and not _same_type(y, self.step):
            raise EvalError("E0403", f"with `future`, each step's y is fed back as the next input, so it must be "
                            f"{self.step} like one step of the sequence, but the step returns {y}", self.span,
                            help="make the step return y shaped like x_t, or leave out `future`")
        steps = self.length + self.future
        if self.keepdim:
            if self.dim >= y.rank:
                raise EvalError("E0403", f"the step's y {y} has no dimension {self.dim} to concatenate along",
                                self.span)
            shape = y.shape[:self.dim] + (y.shape[self.dim] * steps,) + y.shape[self.dim + 1:]
        else:
            if self.dim > y.rank:
                raise EvalError("E0403", f"the step's y {y} cannot be stacked along dimension {self.dim}", self.span)
            shape = y.shape[:self.dim] + (steps,) + y.shape[self.dim:]
        return [y.with_shape(shape)] + list(self.state)


def _same_type(a: TensorType, b: TensorType) -> bool:
    return a.dtype == b.dtype and a.rank == b.rank and all(same(x, y) for x, y in zip(a.shape, b.shape))


class ScanEvaluation:
    """`scan(...)` (a mixin of `Evaluator`)."""

    def _scan(self, e: ast.Call, pos: list, kws: list, ctx: Ctx):
        if len(pos) != 3:
            raise EvalError("E0304" if len(pos) > 3 else "E0307",
                            f"`scan` takes a step block, a sequence and a state, got {len(pos)} argument(s)", e.span,
                            help="`ys, state = scan(step, x, state, dim=1)`")
        step, x, state = pos
        opts = self._scan_options(kws)
        if any(v is POISON for v in leaves([step.value, x.value, state.value])):
            raise Poisoned()
        spec = self._scan_step(step)
        if not isinstance(x.value, TensorValue):
            raise EvalError("E0307", f"`scan` runs over a tensor, got {describe(x.value)}", x.span)
        tensors = leaves([state.value]) if isinstance(state.value, tuple) else [state.value]
        if not tensors or not all(isinstance(t, TensorValue) for t in tensors):
            raise EvalError("E0307", f"a scan's state is a tensor or a tuple of tensors, got {describe(state.value)}",
                            state.span)
        site = self._scan_site(e, x, tensors, state.span, opts)
        step_x = TensorValue(x.value.ref, site.step, x.span)
        inputs, spans = [step_x, state.value], [x.span, state.span]
        if isinstance(spec, InstanceValue):
            return self._apply_instance(spec, inputs, spans, e.span, ctx, scan=site)
        return self._apply_block(spec, inputs, spans, e.span, ctx, scan=site)

    def _scan_options(self, kws: list) -> dict:
        opts = {"dim": 1, "keepdim": False, "future": 0}
        for name, arg in kws:
            if name not in _KEYWORDS:
                raise EvalError("E0305", f"`scan` has no parameter `{name}`", arg.name_span or arg.span,
                                help="its keywords are dim, keepdim and future")
            v = arg.value
            if name == "keepdim" and not isinstance(v, bool):
                raise EvalError("E0301", f"`keepdim` is a bool, got {describe(v)}", arg.span)
            if name != "keepdim" and (not is_int(v) or isinstance(v, Sym)):
                raise EvalError("E0301" if not isinstance(v, Sym) else "E0311",
                                f"`{name}` is an int known when the model is built, got {describe(v)}", arg.span)
            if name == "future" and not require_parameter(v, ">=", 0, arg.span):   # the constructor checks it
                raise EvalError("E0302", f"`future` counts steps: it cannot be negative, got {int.__int__(v)}",
                                arg.span)
            opts[name] = v if name == "future" and isinstance(v, Size) else (v if name == "keepdim" else int(v))
            opts[name + "_span"] = arg.span
        return opts

    def _scan_step(self, step):
        v = step.value
        if isinstance(v, DeclRef) and v.decl.kind in ("block", "model"):
            return BlockSpec(v.decl, {}, {}, step.span)
        if isinstance(v, BlockSpec) or isinstance(v, InstanceValue) and isinstance(v.spec, BlockSpec):
            return v
        raise EvalError("E0307", f"a scan's step is a block, `(x_t, state) -> (y_t, state)`, got {describe(v)}",
                        step.span, help="declare `block Step { input x_t; input state; ... output y, state }`")

    def _scan_site(self, e, x, tensors: list, state_span, opts: dict) -> ScanSite:
        t = x.value.type
        dim = opts["dim"]
        if not -t.rank <= dim < t.rank:
            raise EvalError("E0406", f"`dim={dim}` is out of range for the sequence {t}",
                            opts.get("dim_span", e.span))
        dim %= t.rank
        # one step of the sequence: without `dim`, or with it of size 1 (`keepdim`, torch's `split(1, dim)`)
        step = t.with_shape(t.shape[:dim] + ((1,) if opts["keepdim"] else ()) + t.shape[dim + 1:])
        return ScanSite([x.value.ref] + [v.ref for v in tensors], [v.type for v in tensors], step, dim,
                        opts["keepdim"], opts["future"], t.shape[dim], e.span, state_span)

