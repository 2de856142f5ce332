"""Momentum targets in plan steps: `ema(model.encoder, decay=0.99)`.

A target is a copy of a plan model, or of one of its blocks, that no gradient reaches:
after each optimizer step that updates its model, the runtime moves each of its weights
towards the live one, θ_t ← d·θ_t + (1 − d)·θ (BYOL's target network, MoCo's key
encoder). In a step it is a value that applies like the block it copies; every
`ema(...)` of one path is the same target, so a step may apply it to both views.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..diagnostics import did_you_mean
from ..ir.graph import Graph
from ..ops.ptypes import describe, is_number
from . import ast
from .apply import _block_difference, _code_key
from .binding import Arg
from .errors import EvalError, Poisoned
from .evaluator import Evaluator
from .values import POISON, BlockSpec

EMA = "ema"


@dataclass(frozen=True)
class Target:
    """A momentum target of the plan: `key` names it in the generated code (`ema_model_encoder`)."""
    key: str
    model: str            # the plan's name of the model it copies
    path: tuple           # the block's path inside that model; () for the whole model
    decay: float
    span: object = None

    @property
    def source(self) -> str:
        return ".".join((self.model,) + self.path)


class EmaFunction:
    """The name `ema` inside a step."""

    def describe(self) -> str:
        return "`ema(...)`"


@dataclass(frozen=True)
class TargetValue:
    """`ema(model.encoder, decay=0.99)` in a step: applied to tensors like the block it copies."""
    target: Target
    spec: BlockSpec
    made: Graph           # the copied block as the model holds it: each application must fit it

    def describe(self) -> str:
        return f"the momentum target `ema({self.target.source})`"


class TargetCalls(Evaluator):
    """The plan checker's part that makes and applies momentum targets (`self.plan`, `self.step`)."""

    def _ema_call(self, e: ast.Call, ctx) -> TargetValue:
        if not e.args:
            raise EvalError("E0303", "`ema` needs the model or block to copy: `ema(model.encoder, decay=0.99)`", e.span)
        if len(e.args) > 2:
            raise EvalError("E0304", "`ema` takes the model or block and `decay`", e.args[2].span)
        path = _dotted(e.args[0])
        if path is None:
            raise EvalError("E0301", "`ema` copies a model of the plan or one of its blocks, named by its path "
                            "(`model`, `model.encoder`)", e.args[0].span)
        decay_expr = self._decay_expr(e)
        decay = self._expr(decay_expr, ctx)
        if decay is POISON:
            raise Poisoned()
        if not is_number(decay) or isinstance(decay, bool) or not 0.0 <= float(decay) < 1.0:
            raise EvalError("E0302", f"`decay` must be a number in [0, 1), got {describe(decay)}", decay_expr.span,
                            help="0.99 to 0.999 is usual: the target follows the model slowly")
        spec, made = self._target_spec(path, e.args[0].span)
        return TargetValue(self._claim_target(path, float(decay), e.span), spec, made)

    def _decay_expr(self, e: ast.Call):
        kws = {k.name: k for k in e.kwargs}
        for k in e.kwargs:
            if k.name != "decay":
                raise EvalError("E0305", f"`ema` has no parameter `{k.name}`", k.span, help="it takes `decay`")
        if len(e.args) == 2 and "decay" in kws:
            raise EvalError("E0306", "`decay` is given twice", kws["decay"].span)
        if len(e.args) == 2:
            return e.args[1]
        if "decay" not in kws:
            raise EvalError("E0303", "`ema` needs `decay`, the weight of the old target in each update",
                            e.span, help="`ema(model.encoder, decay=0.99)`")
        return kws["decay"].value

    def _target_spec(self, path: tuple, span) -> tuple:
        """The block a target copies, to apply in the step as the model applies it, and its graph there."""
        root = path[0]
        if root not in self.plan.models:
            guess = did_you_mean(root, self.plan.models)
            raise EvalError("E0506", f"`{root}` is not a model of this plan", span,
                            help=f"did you mean `{guess}`?" if guess else "models: " + ", ".join(self.plan.models))
        decl, args, graph = self.plan.models[root]
        if len(path) == 1:
            return BlockSpec(decl, args, {}, span), graph
        inst = _block_at(graph, path, span)
        return BlockSpec(inst.graph.decl, {k: Arg(v, span) for k, v in inst.args.items()}, {}, span), inst.graph

    def _claim_target(self, path: tuple, decay: float, span) -> Target:
        """One target per path: a second `ema` of it must agree on the decay."""
        key = "ema_" + "_".join(path)
        old = self.plan.targets.get(key)
        if old is not None and old.path == tuple(path[1:]):
            if old.decay != decay:
                raise EvalError("E0302", f"`ema({old.source})` was made with decay {old.decay} at {old.span}; "
                                "one target has one decay", span)
            return old
        if old is not None or key in self.plan.models:
            raise EvalError("E0502", f"the target of `{'.'.join(path)}` would be named `{key}`, which is taken",
                            span, help="rename the model or the block")
        target = Target(key, path[0], tuple(path[1:]), decay, span)
        self.plan.targets[key] = target
        return target

    def _apply_target(self, value: TargetValue, e: ast.Call, ctx):
        """`target(x)`: the copied block applied in the step; the step's code reads the target's module."""
        if e.kwargs:
            raise EvalError("E0305", f"{value.describe()} takes tensors only", e.kwargs[0].span)
        pos, _ = self._args(e, ctx)
        result = Evaluator._apply_block(self, value.spec, [a.value for a in pos], [a.span for a in pos], e.span, ctx)
        call = next(reversed(ctx.graph.nodes.values()))
        sub = call.args["graph"]
        if _code_key(sub) != _code_key(value.made):
            shapes = ", ".join(ctx.graph.type_of(r).shape_str() for r in call.inputs)
            raise EvalError("E0408", f"{value.describe()} is a copy of `{value.target.source}` as the model holds "
                            f"it, which does not fit these inputs{_block_difference(value.made, sub)}", e.span,
                            label=f"inputs {shapes}",
                            help=f"apply it to what the model feeds `{value.target.source}`")
        self.step.models[call.instance] = value.target.key
        return result


def _dotted(expr) -> tuple | None:
    """`model.encoder.stem` as ("model", "encoder", "stem"); None for anything else."""
    parts = []
    while isinstance(expr, ast.Attr):
        parts.insert(0, expr.name)
        expr = expr.value
    if not isinstance(expr, ast.Name):
        return None
    return (expr.id, *parts)


def _block_at(graph: Graph, path: tuple, span):
    """The block instance at `path` (below the model's name) of a model's graph."""
    inst = None
    for i, part in enumerate(path[1:]):
        by_name = {x.name: x for x in graph.instances.values()}
        where = ".".join(path[:i + 1])
        if part not in by_name:
            guess = did_you_mean(part, by_name)
            raise EvalError("E0506", f"`{where}` has no block `{part}`", span,
                            help=f"did you mean `{guess}`?" if guess else f"its layers: {', '.join(by_name) or 'none'}")
        inst = by_name[part]
        if inst.kind != "block" or inst.graph is None or inst.graph.decl is None:
            raise EvalError("E0506", f"`{where}.{part}` is a single layer; `ema` copies a model or a block of one",
                            span, help="wrap the layers in a block and name it with `as`")
        graph = inst.graph
    return inst
