"""What a step may apply besides functions: the plan's models (by their plan names), their `ema`
targets, its queues, and layers that generated PyTorch writes as functions (`ReLU()` is `F.relu`).

Anything else would be a module of the step's class in plan.py (`self.fc = nn.Linear(6, 3)`),
outside every model: no optimizer updates its weights, no checkpoint saves them or its running
statistics, `--resume` cannot restore them and evaluation leaves it in training mode. Trainable
layers belong in models, so `check` refuses them (E0513) where they are made.
"""
from __future__ import annotations

from ..diagnostics import Label, Reporter
from ..ops import REGISTRY
from .errors import EvalError
from .values import BlockSpec, LayerSpec

CODE = "E0513"
_MOVE = ("declare it in a model: at the end of {model}, or in a model of its own, listed in the plan's `models` "
         "and named by the optimizer that trains it")


def check_step_modules(plan, step, reporter: Reporter, where: str = "a step") -> None:
    """One error for each layer or block the step `step` of `plan` would hold as its own module; `where`:
    "a step", or "the plan's `loss`" for the step a plan without steps makes of it."""
    queues = {q.name for q in plan.queues.values() if q.step == step.name}
    seen = set()
    for inst in step.graph.instances.values():
        if inst.span in seen:   # one report for a layer a loop makes on every pass
            continue
        if inst.id in step.models or inst.kind == "layer" and inst.name in queues:
            problem = None
        elif inst.kind == "layer":
            problem = _layer(plan, inst, where)
        else:
            problem = _block(plan, inst, where)
        if problem is not None:
            seen.add(inst.span)
            message, label, help_text = problem
            reporter.error(CODE, message, inst.span, label=label, help=help_text)


def _models_text(plan) -> str:
    return " or ".join(f"`{decl.name}`" for decl, _args, _graph in plan.models.values()) or "a model"


def _layer(plan, inst, where: str):
    return _layer_problem(plan, inst.op, inst.user_name, bool(inst.weights()), bool(inst.buffers()), where)


def _layer_problem(plan, op, user_name, weights: bool, buffers: bool, where: str):
    if not op.is_module(bool(user_name)):
        return None   # written as a function of the step's forward
    move = _MOVE.format(model=_models_text(plan))
    if weights or buffers:
        what = " and ".join(w for w, has in (("weights", weights), ("running statistics", buffers)) if has)
        return (f"`{op.name}` has {what}, but a layer made in {where} belongs to no model: no optimizer would "
                f"train it and no checkpoint would save it", f"a layer with {what} in {where}", move)
    if user_name and op.torch.functional is not None:
        return (f"a layer in {where} is not named: `{op.name}() as {user_name}` would be a module of the "
                "step in plan.py, outside every model", f"a named layer in {where}",
                f"leave out `as {user_name}`, or {move}")
    function = REGISTRY.get(op.name.lower())
    instead = f"use the function `{function.name}(...)`, which follows training and evaluation, or " \
        if function is not None and function.kind == "function" else ""
    return (f"`{op.name}` in {where} would be a module of the step in plan.py, outside every model: evaluation "
            "would leave it in training mode", "a layer written as a module", instead + move)


def _block(plan, inst, where: str):
    return _block_problem(plan, getattr(inst.graph, "decl", None), inst.kind, where)


def _block_problem(plan, decl, kind: str, where: str):
    name = f"the block `{decl.name}`" if decl is not None else f"a {kind}"
    return (f"{name} in {where} would be a module of the step in plan.py, outside every model: a plan trains "
            "and saves only its models", f"a block applied in {where}",
            _MOVE.format(model=_models_text(plan)).replace("declare it", "apply it"))


def named_elsewhere(plan, scope: dict, name, where: str = "a step") -> EvalError | None:
    """`x = Linear(3) as head`, then `head(z)`: the step names a layer it makes, bound to `x` and not
    applied yet, so `head` means nothing. The layer itself is the mistake: E0513 at it, as `x(z)` gives,
    where an unknown function `head` would send the user looking for a typo."""
    spec = next((v for v in scope.values() if isinstance(v, (LayerSpec, BlockSpec)) and v.name == name.id), None)
    if spec is None:
        return None
    if isinstance(spec, BlockSpec) and spec.decl.kind == "model":
        return None if plan.has_model(spec) else foreign_model(plan, spec.decl, spec.span, where)
    if isinstance(spec, BlockSpec):
        problem = _block_problem(plan, spec.decl, spec.decl.kind, where)
    else:
        problem = _layer_problem(plan, spec.op, spec.name, _has(spec.op.weight_shapes, spec.args),
                                 _has(spec.op.buffer_shapes, spec.args), where)
    if problem is None:
        return None
    message, label, help_text = problem
    return EvalError(CODE, message, spec.span, label=label, help=help_text,
                     labels=(Label(name.span, f"`{name.id}` is that layer's name, which a step cannot give"),))


def _has(shapes, args: dict) -> bool:
    """Whether a layer not applied yet has weights (or buffers). The sizes its input gives (a `Linear`'s
    `in_features`) are not among its arguments yet: any size does to tell whether there are some."""
    return bool(shapes(_AnySize(args)))


class _AnySize(dict):
    def __missing__(self, key):
        return 1


def foreign_model(plan, decl, span, where: str = "a step") -> EvalError:
    """A model the step makes (`Head()(x)`, `M()(x)`) rather than applies one of the plan's (`model(x)`)."""
    same = _plan_keys(plan, decl)
    help_text = f"apply the plan's `{same[0]}` instead of making another `{decl.name}`" if same else \
        f"list it in the plan's `models` (`models = {{..., {decl.name.lower()}: {decl.name}()}}`) and apply it " \
        "by that name"
    return EvalError(CODE, f"`{decl.name}` is not one of the plan's models: a model made in {where} would be "
                     "trained by no optimizer and saved in no checkpoint", span, label=f"a model made in {where}",
                     help=help_text)


def foreign_target(plan, decl, span) -> EvalError:
    """An optimizer given a model of its own (`Adam(Head())`) rather than one of the plan's (`Adam(head)`)."""
    same = _plan_keys(plan, decl)
    return EvalError(CODE, f"`{decl.name}` is not one of the plan's models: an optimizer updates the plan's models, "
                     "named as the plan names them", span, label="a model made for the optimizer",
                     help=f"name the plan's `{same[0]}`" if same else
                     f"list it in the plan's `models` (`models = {{..., {decl.name.lower()}: {decl.name}()}}`) and "
                     "name it so")


def _plan_keys(plan, decl) -> list:
    """The plan's names for its models declared as `decl`."""
    return [k for k, (d, _args, _graph) in plan.models.items() if d is decl]
