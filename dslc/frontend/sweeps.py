"""`sweep NAME { ... }`: a hyperparameter search over a training plan, checked as plans are.

A sweep names a plan, an objective (`maximize(val_accuracy)`: a metric the plan logs), a
sampler, a pruner, a number of trials and a `space` of ranges. Each range's key is what
`dslc train --set` accepts (`epochs`, `optimizer.lr`, `model.hidden`), or a bare parameter of
the plan's model (`dropout` stands for `model.dropout`). A trial is the plan with one value of
each range applied as `--set` applies it, so the checker asks the plan checker itself: the
bounds of each range and each of its choices must make a plan that checks. Types come first:
an int parameter takes `int_uniform`/`int_loguniform` or int choices, a float one `uniform`/
`loguniform` (bounds above 0) or numbers.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from .. import catalog
from ..diagnostics import DslcError, Reporter, Span, did_you_mean
from ..ops.ptypes import BOOL, FLOAT, INT, Optional
from . import ast
from .errors import EvalError
from .plans import PlanChecker
from .settings import apply_plan_sets, parse_sets

DISTRIBUTIONS = {"uniform": "float", "loguniform": "float", "int_uniform": "int", "int_loguniform": "int",
                 "choice": None}
SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("median", "none")
DIRECTIONS = ("maximize", "minimize")
SETTINGS = ("plan", "trials", "objective", "sampler", "pruner", "seed")


@dataclass(frozen=True)
class Dimension:
    """One range of the space: `key` as `--set` takes it, a distribution and its bounds or choices."""
    key: str
    kind: str                 # uniform | loguniform | int_uniform | int_loguniform | choice
    low: float | int | None = None
    high: float | int | None = None
    choices: tuple = ()
    span: Span | None = None

    def setting(self, value) -> str:
        """The `--set` string that gives this key `value`."""
        return f"{self.key}={dl_literal(value)}"


@dataclass(frozen=True)
class Sweep:
    name: str
    plan: str
    trials: int
    direction: str            # maximize | minimize
    metric: str               # a key of metrics.jsonl: val_accuracy, val_loss, ...
    sampler: str
    pruner: str
    seed: int
    dimensions: tuple[Dimension, ...]
    decl: object = None


def dl_literal(value) -> str:
    """A Python value as a `.dl` literal."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(dl_literal(v) for v in value) + "]"
    return repr(value)


def check_sweeps(unit, reporter: Reporter) -> dict:
    """Check every sweep of the unit; returns name -> Sweep for those that check."""
    out = {}
    for decl in unit.of_kind("sweep"):
        before = len(reporter.diagnostics)
        try:
            sweep = SweepChecker(unit, reporter).check(decl)
        except EvalError as e:
            reporter.add(e.diagnostic)
            continue
        if sweep is not None and len(reporter.diagnostics) == before:
            out[decl.name] = sweep
    return out


def checked_sweep(unit, decl) -> Sweep:
    """The checked sweep `decl`, or DslcError with every problem."""
    reporter = Reporter()
    sweeps = check_sweeps(unit, reporter)
    reporter.raise_if_errors()
    return sweeps[decl.name]


def plan_with(unit, plan_name: str, sets: tuple):
    """The plan `plan_name` of the unit, checked with `sets` (`--set` strings) applied; DslcError if it
    does not check."""
    reporter = Reporter()
    decl = apply_plan_sets(unit.decls[plan_name], parse_sets(sets)) if sets else unit.decls[plan_name]
    plan = PlanChecker(unit, reporter).check(decl)
    reporter.raise_if_errors()
    return plan


class SweepChecker:
    def __init__(self, unit, reporter: Reporter):
        self.unit, self.reporter = unit, reporter

    def check(self, decl) -> Sweep | None:
        fields = self._fields(decl)
        plan_decl = self._plan_decl(decl, fields)
        plan = self._plan(plan_decl)
        if plan is None:
            return None   # the plan's own errors are reported by the plan checker
        direction, metric = self._guard(lambda: self._objective(fields, plan), ("minimize", "val_loss"))
        sampler = self._guard(lambda: self._word(fields, "sampler", SAMPLERS, "tpe"), "tpe")
        pruner = self._guard(lambda: self._word(fields, "pruner", PRUNERS, "none"), "none")
        trials = self._guard(lambda: self._int(fields, "trials", 20, minimum=1), 1)
        seed = self._guard(lambda: self._int(fields, "seed", 0, minimum=0), 0)
        dims = []
        for rng in self._guard(lambda: self._space(decl), ()):
            dim = self._guard(lambda rng=rng: self._dimension(rng, plan_decl, plan), None)
            dims += [dim] if dim is not None else []
        if sampler == "grid":
            for d in dims:
                if d.kind != "choice":
                    self.reporter.error("E0510", f"the grid sampler tries every combination: `{d.key}` needs "
                                        "`choice([...])`", d.span, help="list the values to try, or use "
                                        "`sampler = tpe`")
        return Sweep(decl.name, plan_decl.name, trials, direction, metric, sampler, pruner, seed, tuple(dims), decl)

    def _guard(self, fn, default):
        """fn(), or `default` once its error is reported (the other settings are still checked)."""
        try:
            return fn()
        except EvalError as e:
            self.reporter.add(e.diagnostic)
            return default

    # ------------------------------------------------------------------ settings

    def _fields(self, decl) -> dict:
        fields = {}
        for f in decl.fields:
            if f.name not in SETTINGS:   # reported, and the others still checked
                guess = did_you_mean(f.name, SETTINGS)
                self.reporter.error("E0512", f"a sweep has no setting `{f.name}`", f.name_span, label="unknown",
                                    help=f"did you mean `{guess}`?" if guess else "settings: " + ", ".join(SETTINGS))
            elif f.name in fields:
                self.reporter.error("E0512", f"`{f.name}` is set twice in the sweep `{decl.name}`", f.name_span,
                                    label="second setting")
            else:
                fields[f.name] = f
        return fields

    def _plan_decl(self, decl, fields: dict):
        if "plan" not in fields:
            raise EvalError("E0512", f"the sweep `{decl.name}` names no plan", decl.name_span,
                            help="add `plan = NAME`, the training plan each trial runs")
        f = fields["plan"]
        name = f.value.id if isinstance(f.value, ast.Name) else None
        found = self.unit.decls.get(name) if name else None
        if found is None or found.kind != "train":
            plans = [d.name for d in self.unit.of_kind("train")]
            guess = did_you_mean(name, plans) if name else None
            raise EvalError("E0512", f"`{_text(f.value)}` is not a training plan", f.value.span,
                            help=f"did you mean `{guess}`?" if guess else "plans: " + (", ".join(plans) or "none"))
        return found

    def _plan(self, plan_decl):
        """The checked plan, or None when it has errors (the plan checker reports them)."""
        plan, _ = self._attempt(plan_decl, ())
        return plan

    def _attempt(self, plan_decl, sets: tuple):
        """(the checked plan with `sets` applied or None, its errors)."""
        reporter = Reporter()
        try:
            decl = apply_plan_sets(plan_decl, parse_sets(sets)) if sets else plan_decl
            plan = PlanChecker(self.unit, reporter).check(decl)
        except DslcError as e:
            return None, list(e.diagnostics)
        errors = [d for d in reporter.diagnostics if d.severity == "error"]
        return (None if errors else plan), errors

    def _objective(self, fields: dict, plan) -> tuple[str, str]:
        logged = logged_metrics(plan)
        f = fields.get("objective")
        if f is None:
            return "minimize", "val_loss" if "val_loss" in logged else "train_loss"
        v = f.value
        if not (isinstance(v, ast.Call) and isinstance(v.func, ast.Name) and v.func.id in DIRECTIONS
                and len(v.args) == 1 and not v.kwargs and isinstance(v.args[0], ast.Name)):
            raise EvalError("E0512", "the objective is `maximize(METRIC)` or `minimize(METRIC)`", v.span,
                            help="for example `objective = maximize(val_accuracy)`")
        metric = v.args[0].id
        if metric not in logged:
            guess = did_you_mean(metric, logged)
            raise EvalError("E0511", f"the plan `{plan.name}` does not log `{metric}`", v.args[0].span,
                            label="not in metrics.jsonl",
                            help=f"did you mean `{guess}`?" if guess else "it logs: " + ", ".join(sorted(logged)))
        return v.func.id, metric

    def _word(self, fields: dict, name: str, allowed: tuple, default: str) -> str:
        f = fields.get(name)
        if f is None:
            return default
        word = f.value.id if isinstance(f.value, ast.Name) else None
        if word not in allowed:
            raise EvalError("E0512", f"`{name}` is one of {', '.join(allowed)}", f.value.span,
                            label="not one of them")
        return word

    def _int(self, fields: dict, name: str, default: int, minimum: int) -> int:
        f = fields.get(name)
        if f is None:
            return default
        value = literal(f.value)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise EvalError("E0512", f"`{name}` is an integer of at least {minimum}", f.value.span)
        return value

    def _space(self, decl) -> tuple:
        if not decl.spaces:
            raise EvalError("E0512", f"the sweep `{decl.name}` has no `space`", decl.name_span,
                            help="add `space { optimizer.lr = loguniform(1e-4, 1e-1) }`")
        if len(decl.spaces) > 1:
            raise EvalError("E0512", f"the sweep `{decl.name}` has two `space` blocks", decl.space_spans[1],
                            label="second space", help="put every range in one `space { ... }`")
        seen = {}
        for rng in decl.spaces[0]:
            key = str(rng.key)
            if key in seen:
                raise EvalError("E0306", f"`{key}` is given two ranges", rng.key.span, label="second range")
            seen[key] = rng
        if not seen:
            raise EvalError("E0512", f"the space of the sweep `{decl.name}` is empty", decl.space_spans[0])
        return tuple(seen.values())

    # ------------------------------------------------------------------ ranges

    def _dimension(self, rng, plan_decl, plan) -> Dimension:
        key = set_key(str(rng.key), plan)
        kind, low, high, choices = self._distribution(rng.value)
        dim = Dimension(key, kind, low, high, choices, rng.span)
        want = key_type(key, plan_decl, plan, self.unit)
        self._fits_type(dim, want, rng)
        values = choices if kind == "choice" else (low, high)
        for value in values:
            _, errors = self._attempt(plan_decl, (dim.setting(value),))
            if errors:
                self._rejected(rng, dim, value, errors, plan_decl)
        return dim

    def _rejected(self, rng, dim: Dimension, value, errors: list, plan_decl) -> None:
        first = errors[0]
        if first.code in ("E0305", "E0502"):   # the key itself: no such field or parameter
            raise EvalError("E0509", f"`{rng.key}` is not a field of the plan `{plan_decl.name}` or a parameter "
                            "of its model", rng.key.span, label="unknown key", help=first.help)
        raise EvalError("E0510", f"`{dim.key} = {dl_literal(value)}` does not fit the plan `{plan_decl.name}`: "
                        f"{first.message}", rng.value.span, label="in this range", help=first.help)

    def _distribution(self, expr):
        if not (isinstance(expr, ast.Call) and isinstance(expr.func, ast.Name) and expr.func.id in DISTRIBUTIONS):
            raise EvalError("E0510", "a range is `uniform(lo, hi)`, `loguniform(lo, hi)`, `int_uniform(lo, hi)`, "
                            "`int_loguniform(lo, hi)` or `choice([...])`", expr.span, label="not a range")
        kind = expr.func.id
        args = [literal(a) for a in expr.args]
        if expr.kwargs:
            raise EvalError("E0510", f"`{kind}` takes its values by position", expr.kwargs[0].span)
        if kind == "choice":
            if len(args) != 1 or not isinstance(args[0], list) or not args[0]:
                raise EvalError("E0510", "`choice` takes one non-empty list: `choice([64, 128, 256])`", expr.span)
            if not all(v is None or isinstance(v, (bool, int, float, str)) for v in args[0]):
                raise EvalError("E0510", "`choice` takes numbers, strings or booleans (Optuna stores each as one "
                                "value)", expr.span)
            return kind, None, None, tuple(args[0])
        return (kind, *self._bounds(kind, args, expr), ())

    def _bounds(self, kind: str, args: list, expr) -> tuple:
        if len(args) != 2 or not all(_number(a) for a in args):
            raise EvalError("E0510", f"`{kind}` takes two numbers, its lower and upper bounds", expr.span)
        low, high = args
        if kind.startswith("int_") and not all(isinstance(a, int) for a in args):
            raise EvalError("E0510", f"`{kind}` takes integer bounds", expr.span)
        if not low < high:
            raise EvalError("E0510", f"the lower bound {low} is not below the upper bound {high}", expr.span)
        if kind.endswith("loguniform") and low <= 0:
            raise EvalError("E0510", f"`{kind}` samples the logarithm: its bounds must be above 0, not {low}",
                            expr.args[0].span, label="not above 0")
        return low, high

    def _fits_type(self, dim: Dimension, want: str | None, rng) -> None:
        """An int key takes an int distribution or int choices; a float key a float one (or numbers)."""
        if want is None:
            return
        if dim.kind == "choice":
            for v in dim.choices:
                if not _of_type(v, want):
                    raise EvalError("E0510", f"`{rng.key}` is {_a(want)}: {dl_literal(v)} is not", rng.value.span,
                                    label=f"choices of {want}")
            return
        have = DISTRIBUTIONS[dim.kind]
        if want != have:
            use = {"int": "`int_uniform(lo, hi)`, `int_loguniform(lo, hi)` or `choice([...])`",
                   "float": "`uniform(lo, hi)`, `loguniform(lo, hi)` or `choice([...])`"}.get(want, "`choice([...])`")
            raise EvalError("E0510", f"`{rng.key}` is {_a(want)}, but `{dim.kind}` draws {_a(have)}",
                            rng.value.span, label="wrong type of range", help=f"use {use}")


# ---------------------------------------------------------------------- keys

def set_key(key: str, plan) -> str:
    """The `--set` key of a range: a bare name that is no plan field but a parameter of the plan's
    model stands for `model.NAME`."""
    if "." in key or key in catalog.FIELDS or key in catalog.CALLS:
        return key
    model = _model_decl(plan)
    if model is not None and any(p.name == key for p in model.params):
        return f"model.{key}"
    return key


def key_type(key: str, plan_decl, plan, unit) -> str | None:
    """`int`, `float`, `bool`, `str` or None (not known statically: the plan checker decides)."""
    parts = key.split(".")
    if len(parts) == 1 and parts[0] in catalog.FIELDS:
        kind = catalog.FIELDS[parts[0]].kind
        return kind if kind in ("int", "float", "bool") else None
    if len(parts) != 2:
        return None
    head, arg = parts
    if head == "model":
        model = _model_decl(plan)
        param = next((p for p in model.params if p.name == arg), None) if model is not None else None
        return _param_type(param)
    call = plan.fields.get(head) if head in ("optimizer", "schedule") else plan.data if head == "data" else None
    entry = call.entry if call is not None else catalog.CALLS.get(head)
    spec = next((p for p in entry.params if p.name == arg), None) if entry is not None else None
    return _ptype_name(spec.type) if spec is not None else None


def _model_decl(plan):
    if list(plan.models) != ["model"]:
        return None
    return plan.models["model"][0]


def _param_type(param) -> str | None:
    if param is None:
        return None
    if param.type is not None and param.type.name in ("int", "float", "bool", "str"):
        return param.type.name
    if isinstance(param.default, ast.Const) and param.default.value is not None:
        return {bool: "bool", int: "int", float: "float", str: "str"}.get(type(param.default.value))
    return None


def _ptype_name(t) -> str | None:
    if isinstance(t, Optional):
        t = t.inner
    return {id(INT): "int", id(FLOAT): "float", id(BOOL): "bool"}.get(id(t))


def logged_metrics(plan) -> list[str]:
    """The numbers metrics.jsonl holds for each epoch of `plan` (an objective names one)."""
    names = ["train_loss"]
    if len(plan.steps) > 1:
        names += [f"{s.name}_loss" for s in plan.steps]
    metrics = [str(m) for m in plan.fields.get("metrics") or []]
    if plan.fields.get("train_metrics"):
        names += [f"train_{m}" for m in metrics]
    if _has_val(plan):
        names += ["val_loss"] + [f"val_{m}" for m in metrics]
    return names


def _has_val(plan) -> bool:
    data = plan.data
    if data is None or not any(p.name == "val" for p in data.entry.params):
        return data is not None
    return bool(data.args.get("val"))


# ---------------------------------------------------------------------- values

def literal(expr):
    """A literal's value: numbers (with a sign), strings, booleans, lists of them."""
    if isinstance(expr, ast.Const):
        return expr.value
    if isinstance(expr, ast.UnaryOp) and expr.op in ("-", "+") and isinstance(expr.operand, ast.Const) \
            and _number(expr.operand.value):
        return -expr.operand.value if expr.op == "-" else expr.operand.value
    if isinstance(expr, ast.ListExpr):
        return [literal(e) for e in expr.items]
    raise EvalError("E0510", "a sweep's values are literals (numbers, strings, booleans, lists)", expr.span,
                    label="not a literal")


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _of_type(v, want: str) -> bool:
    if want == "float":
        return _number(v)
    return {"int": int, "bool": bool, "str": str}[want] is type(v)


def _a(t: str) -> str:
    return {"int": "an int", "float": "a float", "bool": "a bool", "str": "a string"}.get(t, t)


def _text(expr) -> str:
    return expr.span.text if expr.span is not None else "?"


__all__ = ["DISTRIBUTIONS", "Dimension", "Sweep", "check_sweeps", "checked_sweep", "dl_literal",
           "logged_metrics", "plan_with"]
