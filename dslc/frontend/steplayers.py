"""What a step may apply besides functions: the plan's models (by their plan names), their `ema`
targets, its queues, and layers that generated PyTorch writes as functions (`ReLU()` is `F.relu`).

Anything else would be a module of the step's class in plan.py (`self.fc = nn.Linear(6, 3)`),
outside every model: no optimizer updates its weights, no checkpoint saves them or its running
statistics, `--resume` cannot restore them and evaluation leaves it in training mode. Trainable
layers belong in models, so `check` refuses them (E0513) where they are made.
"""
from __future__ import annotations

from ..diagnostics import Reporter
from ..ops import REGISTRY
from .errors import EvalError

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
    op = inst.op
    if not op.is_module(bool(inst.user_name)):
        return None   # written as a function of the step's forward
    move = _MOVE.format(model=_models_text(plan))
    if inst.weights() or inst.buffers():
        what = " and ".join(w for w, has in (("weights", inst.weights()), ("running statistics", inst.buffers()))
                            if has)
        return (f"`{op.name}` has {what}, but a layer made in {where} belongs to no model: no optimizer would "
                f"train it and no checkpoint would save it", f"a layer with {what} in {where}", move)
    if inst.user_name and op.torch.functional is not None:
        return (f"a layer in {where} is not named: `{op.name}() as {inst.user_name}` would be a module of the "
                "step in plan.py, outside every model", f"a named layer in {where}",
                f"leave out `as {inst.user_name}`, or {move}")
    function = REGISTRY.get(op.name.lower())
    instead = f"use the function `{function.name}(...)`, which follows training and evaluation, or " \
        if function is not None and function.kind == "function" else ""
    return (f"`{op.name}` in {where} would be a module of the step in plan.py, outside every model: evaluation "
            "would leave it in training mode", "a layer written as a module", instead + move)


def _block(plan, inst, where: str):
    decl = getattr(inst.graph, "decl", None)
    name = f"the block `{decl.name}`" if decl is not None else f"a {inst.kind}"
    return (f"{name} in {where} would be a module of the step in plan.py, outside every model: a plan trains "
            "and saves only its models", f"a block applied in {where}",
            _MOVE.format(model=_models_text(plan)).replace("declare it", "apply it"))


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
