"""Training plans and losses, checked statically.

A plan's fields are typed (catalog.FIELDS); its data set, optimizers,
schedules and calls come from the catalogs; its models are evaluated like any
model. Each step (a plain plan has one, `train`) is evaluated like a model
body over the batch's fields: models are applied to tensors, so every loss
is shape-checked, and must reduce to a single number. Freeze paths must name
layers of the models.

The result, a `Plan`, is what the training runtime runs.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from .. import catalog
from ..catalog.sources import DataError
from ..diagnostics import Label, Reporter, did_you_mean
from ..ir.dims import Sym, plain, recording, requirements
from ..ir.graph import Graph
from ..ir.nesting import SEP, flatten, leaves, nest, structure, top_names
from ..ir.types import TensorType
from ..ir.values import Ref, TensorValue
from ..ops import REGISTRY
from ..ops import augment as augmentations
from ..ops.ptypes import describe, is_int, is_number
from . import ast
from .binding import Arg, bind_op
from .context import Ctx
from .errors import EvalError, Poisoned
from .evaluator import Evaluator
from .lints import lint_plan
from .producers import scores
from .queues import QUEUE, QueueCalls, QueueFunction
from .steplayers import check_step_modules, foreign_model, foreign_target, named_elsewhere
from .targets import EMA, EmaFunction, TargetCalls, TargetValue
from .values import MISSING, POISON, BlockSpec, DeclRef, Record

_DOTTED = re.compile(r"^[^.\s]+(?:\.[^.\s]+)*$")   # a state-dict name or prefix: `layer1.0.conv1`


class Word(str):
    """A bare plan-level word such as `bf16`, `accuracy` or `val_loss`."""

    def describe(self) -> str:
        return f"`{self}`"


@dataclass(frozen=True)
class EntryRef:
    """A catalog entry named in a plan (a data set, optimizer, schedule or call)."""
    entry: catalog.Entry

    def describe(self) -> str:
        return self.entry.describe()


@dataclass
class PlanCall:
    """`AdamW(lr=1e-3)`, `digits(val=0.15)`: a catalog entry with bound arguments."""
    entry: catalog.Entry
    args: dict
    span: object
    targets: tuple = ()   # optimizers: the models they update
    key_spans: dict = field(default_factory=dict)   # optimizers: `lr_mult` key -> where it is written
    fields: dict | None = None   # data sets: batch field -> TensorType, for these arguments
    base_dir: str = "."          # data sets: the folder of the plan's file (relative paths start there)

    def describe(self) -> str:
        return f"`{self.entry.name}(...)`"


@dataclass
class Step:
    name: str
    graph: Graph
    loss: Ref | None = None
    optimizer: PlanCall | None = None
    span: object = None
    models: dict = field(default_factory=dict)    # instance id in `graph` -> the plan's name of the model it applies
    prediction: Ref | None = None                 # `out`, when the step read it and it is one tensor (for metrics)
    scores: str = "logits"                        # what the prediction holds: logits, probabilities, log_probabilities


@dataclass
class CarriedState:
    """`state = hidden`: the model input fed, batch after batch, from the model's output of that name."""
    name: str
    leaves: list          # (flat name `hidden.0`, shape with None for the batch's size, dtype) per tensor
    structure: object     # how the leaves nest (ir.nesting.structure; an int for one tensor)
    span: object = None


@dataclass
class Prune:
    """`prune(model.conv2, amount=0.5, method=l1_unstructured)`: at the start of its phase, the
    convolution and linear weights under `path` (a tuple: model, then layers) lose `amount` of
    their entries (`global_`: the smallest of all of them together), for good at its end."""
    path: tuple
    amount: float
    method: str = "l1_unstructured"
    n: float = 2.0           # ln_structured: the norm of each slice
    dim: int = 0             # ln_structured: the dimension whose slices go (0: output channels)
    global_: bool = False
    span: object = None

    def text(self) -> str:
        """The statement with every argument, as a run's plan.dl records it."""
        n = int(self.n) if float(self.n).is_integer() else self.n
        return (f"prune({'.'.join(self.path)}, amount={self.amount:g}, method={self.method}, n={n}, dim={self.dim}, "
                f"global={'true' if self.global_ else 'false'})")


@dataclass
class Quantize:
    """`quantize(model, backend=x86)`: the phase (the plan's last) trains `path`'s model with fake
    quantization (torch.ao FX QAT), and the run ends by converting it to int8."""
    path: tuple
    backend: str = "x86"
    span: object = None

    def text(self) -> str:
        """The statement with every argument, as a run's plan.dl records it."""
        return f"quantize({'.'.join(self.path)}, backend={self.backend})"


PRUNE_METHODS = ("l1_unstructured", "ln_structured", "random_unstructured")
PRUNABLE = ("Linear", "Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d")


@dataclass
class Phase:
    name: str
    fields: dict = field(default_factory=dict)
    freeze: list = field(default_factory=list)    # (path tuple, freeze: bool)
    span: object = None
    prunes: list = field(default_factory=list)    # Prune, in order
    quantize: Quantize | None = None


@dataclass
class Plan:
    name: str
    decl: object
    fields: dict = field(default_factory=dict)    # name -> value
    models: dict = field(default_factory=dict)    # name -> (decl, args: dict name -> Arg, Graph)
    data: PlanCall | None = None
    steps: list = field(default_factory=list)
    phases: list = field(default_factory=list)
    calls: list = field(default_factory=list)     # early_stopping, checkpoint
    freeze: list = field(default_factory=list)    # plan-level (path, freeze)
    state: CarriedState | None = None             # `state = hidden`
    targets: dict = field(default_factory=dict)   # key -> targets.Target: `ema(model.encoder, decay=0.99)` in steps
    queues: dict = field(default_factory=dict)    # "step.name" -> queues.Queue: `queue(k, size=4096)` in steps

    @property
    def evaluation(self) -> bool:
        """No step has an optimizer: the plan evaluates its models (an ensemble, a frozen pipeline)."""
        return bool(self.steps) and all(s.optimizer is None for s in self.steps) and \
            not any("optimizer" in p.fields for p in self.phases)

    def has_model(self, spec) -> bool:
        """Whether a model value is one of the plan's (`model = M()`), not another made of its declaration."""
        return any(decl is spec.decl and args is spec.args for decl, args, _ in self.models.values())

    def model_name(self, spec) -> str:
        """The plan's name for a model value (`D` in `models = { D: Discriminator() }`)."""
        for name, (decl, args, _) in self.models.items():
            if decl is spec.decl and args is spec.args:
                return name
        return spec.decl.name

    def freeze_rules(self, model: str, phase: str | None = None) -> list:
        """(layer path within `model`, freeze?) in force during `phase` (the plan's own rules,
        then each phase's in order, up to and including `phase`)."""
        rules = [(path, f) for path, f in self.freeze]
        for p in self.phases:
            rules += p.freeze
            if p.name == phase:
                break
        return [(".".join(path[1:]), f) for path, f in rules if path[0] == model]


def check_plans(unit, ev: Evaluator, reporter: Reporter, make=None) -> set:
    """Check every plan; returns the names of the models and blocks the plans evaluated.
    `make(unit, reporter)`: the checker, a PlanChecker (the language server's reuses blocks)."""
    checker = (make or PlanChecker)(unit, reporter)
    checker.cache, checker.subst_cache = ev.cache, ev.subst_cache
    for decl in unit.of_kind("train"):
        checker.check(decl)
    return checker.evaluated


class PlanChecker(TargetCalls, QueueCalls):
    # ------------------------------------------------------------------ the plan

    def check(self, decl) -> Plan | None:
        before = len(self.reporter.diagnostics)
        plan = Plan(decl.name, decl)
        self.plan = plan
        self.failed = False
        ctx = Ctx(Graph(decl.name, "block", decl=decl), decl, "plan")
        self.plan_ctx = ctx
        parts = self._sort_statements(decl)
        if parts is None:
            return None
        fields, calls, steps, phases, freezes = parts
        self._simple_fields(fields, plan, ctx)
        self._models(fields, plan, ctx)
        self._data(fields, plan, ctx)
        if "state" in fields:
            self._guard(lambda: self._state(fields["state"], plan, steps))
        self._required(decl, fields, steps, phases)
        self._calls(calls, plan, ctx)
        self._init_keys(fields, plan)
        if self.failed:
            return None  # steps and freezes need the models and data
        for stmt in freezes:
            self._guard(lambda s=stmt: plan.freeze.extend(self._freeze_paths(s)))
        if steps:
            for s in steps:
                self._guard(lambda s=s: plan.steps.append(self._step(s.name, s.body, s.span, s.name_span)))
        elif "loss" in fields:
            self._guard(lambda: plan.steps.append(self._step("train", (fields["loss"],), fields["loss"].span,
                                                             decl.name_span)))
        for p in phases:
            self._guard(lambda p=p: plan.phases.append(self._phase(p)))
        self._parts_fit(plan, fields)
        if self.failed or len(self.reporter.diagnostics) > before:
            return None
        lint_plan(plan, self.reporter)   # warnings, once the plan is sound
        return plan

    def _parts_fit(self, plan: Plan, fields: dict) -> None:
        """What the plan's parts require of each other, once each is checked."""
        self._prune_fits(plan)
        self._quantize_fits(plan)
        self._strategy_fits(plan, fields)
        self._lr_mults(plan)
        self._optimizers_cover_models(plan, fields)
        self._queues_written(plan)

    def _guard(self, fn) -> None:
        try:
            fn()
        except EvalError as e:
            self.reporter.add(e.diagnostic)
            self.failed = True
        except Poisoned:
            self.failed = True

    def _sort_statements(self, decl):
        fields, calls, steps, phases, freezes = {}, [], [], [], []
        self.misspelled = set()  # fields the user meant: not reported missing as well
        for stmt in decl.body:
            if isinstance(stmt, ast.AssignStmt) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
                name = stmt.targets[0].id
                if name not in catalog.FIELDS:
                    guess = did_you_mean(name, catalog.FIELDS)
                    self.misspelled.add(guess)
                    self.reporter.error("E0502", f"a training plan has no field `{name}`", stmt.targets[0].span,
                                        label="unknown field", help=f"did you mean `{guess}`?" if guess else
                                        "fields: " + ", ".join(catalog.FIELDS))
                elif name in fields:
                    self.reporter.error("E0502", f"`{name}` is set twice", stmt.targets[0].span,
                                        labels=(Label(fields[name].targets[0].span, "first set here"),))
                else:
                    fields[name] = stmt
            elif isinstance(stmt, ast.ExprStmt) and isinstance(stmt.value, ast.Call) and \
                    isinstance(stmt.value.func, ast.Name) and stmt.value.func.id in catalog.CALLS:
                calls.append(stmt)
            elif isinstance(stmt, ast.StepStmt):
                steps.append(stmt)
            elif isinstance(stmt, ast.PhaseStmt):
                phases.append(stmt)
            elif isinstance(stmt, ast.FreezeStmt):
                freezes.append(stmt)
            elif _is_prune(stmt):
                self.reporter.error("E0107", "`prune` goes in a phase: the phase fine-tunes the pruned model",
                                    stmt.span, help="phase prune { prune(model, amount=0.5)  epochs = 5 }")
            elif _is_phase_call(stmt, "quantize"):
                self.reporter.error("E0107", "`quantize` goes in a phase: the phase trains the model with fake "
                                    "quantization", stmt.span, help="phase qat { quantize(model)  epochs = 3 }")
            else:
                self.reporter.error("E0107", "a training plan holds fields (`epochs = 10`), `step`s, `phase`s, "
                                    "`freeze`s and calls like `early_stopping(...)`", stmt.span)
        return fields, calls, steps, phases, freezes

    # ------------------------------------------------------------------ fields

    def _simple_fields(self, fields: dict, plan: Plan, ctx: Ctx) -> None:
        for name, stmt in fields.items():
            f = catalog.FIELDS[name]
            if f.kind in ("model", "models", "data", "loss", "state"):
                continue
            self._guard(lambda f=f, stmt=stmt: plan.fields.__setitem__(f.name, self._field_value(f, stmt.value, ctx)))
        plan.fields.setdefault("batch_size", catalog.FIELDS["batch_size"].default)

    def _field_value(self, f: catalog.Field, expr, ctx: Ctx):
        if f.kind == "augment":
            return self._augment_value(expr, ctx)
        if f.kind == "metrics" and isinstance(expr, ast.ListExpr):
            return self._metrics_value(expr, ctx)
        v = self._expr(expr, ctx)
        if v is POISON:
            raise Poisoned()
        kind = f.kind
        ok = {"int": is_int(v), "float": is_number(v), "bool": isinstance(v, bool),
              "str": isinstance(v, str) and not isinstance(v, Word)}.get(kind)
        if ok is False:
            want = {"int": "an int", "float": "a number", "bool": "a bool", "str": "a string"}[kind]
            raise EvalError("E0301", f"`{f.name}` must be {want}, got {describe(v)}", expr.span,
                            help=f"{f.name}: {f.doc}")
        if ok and f.check is not None:
            problem = f.check(v)
            if problem:
                raise EvalError("E0302", f"`{f.name}` {problem}", expr.span)
        if kind == "init":
            if not (isinstance(v, str) and not isinstance(v, Word) or isinstance(v, dict) and v and
                    all(isinstance(x, str) and not isinstance(x, Word) for x in v.values())):
                raise EvalError("E0301", f"`init` is a file name or one per model (`{{teacher: \"...\"}}`), got "
                                f"{describe(v)}", expr.span, help=f"init: {f.doc}")
            return v
        if kind == "rename":
            return self._rename_value(v, expr)
        if kind == "precision":
            return self._word(v, catalog.PRECISIONS, "precision", expr.span)
        if kind == "strategy":
            return self._word(v, catalog.STRATEGIES, "strategy", expr.span)
        if kind == "metrics":
            raise EvalError("E0301", f"`metrics` is a list, like `[accuracy]`; got {describe(v)}", expr.span)
        if kind in ("optimizer", "schedule"):
            if not (isinstance(v, PlanCall) and v.entry.kind == kind):
                raise EvalError("E0301", f"`{f.name}` needs {'an' if kind[0] in 'aeiou' else 'a'} {kind}, "
                                f"got {describe(v)}", expr.span, help=_names_help(kind))
        return v

    def _metrics_value(self, expr: ast.ListExpr, ctx: Ctx) -> list:
        """`[accuracy, f1(threshold=0.7)]`: metrics by name (`mse` here is the metric, not the loss of
        that name), each with its arguments."""
        out = []
        for item in expr.items:
            metric = self._metric(item, ctx)
            if metric in out:
                raise EvalError("E0302", f"the metric `{metric}` is listed twice", item.span)
            out.append(metric)
        return out

    def _metric(self, item, ctx: Ctx) -> catalog.Metric:
        head = item.func if isinstance(item, ast.Call) else item
        name = head.id if isinstance(head, ast.Name) else None
        if name not in catalog.METRICS:
            v = self._expr(item, ctx)
            if v is POISON:
                raise Poisoned()
            return catalog.Metric(self._word(v, catalog.METRICS, "metric", item.span))
        if not isinstance(item, ast.Call):
            return catalog.Metric(name)
        pos, kws = self._args(item, ctx)
        values, _ = bind_op(catalog.METRIC_PARAMS.get(name, ()), pos, kws, name, item.span)
        return catalog.Metric(name, values)

    def _rename_value(self, v, expr) -> dict:
        """`rename`: a dict of strings, each a dotted name or empty (every name)."""
        if not (isinstance(v, dict) and v and all(isinstance(x, str) and not isinstance(x, Word) for x in v.values())):
            raise EvalError("E0301", f"`rename` is a dict of name prefixes, like `{{\"conv1\": \"stem.conv1\"}}`; got "
                            f"{describe(v)}", expr.span, help=f"rename: {catalog.FIELDS['rename'].doc}")
        spans = dict(zip(expr.keys, expr.key_spans)) if isinstance(expr, ast.DictExpr) else {}
        for old, new in v.items():
            for name in (old, new):
                if name and not _DOTTED.match(name):
                    raise EvalError("E0302", f"`rename`: {name!r} is not a name prefix (names joined by dots, "
                                    "like \"layer1.0\")", spans.get(old, expr.span))
        return dict(v)

    def _word(self, v, table: dict, what: str, span) -> str:
        if not isinstance(v, str) or v not in table:
            raise EvalError("E0301", f"unknown {what} {describe(v)}", span,
                            help=f"{what}s: " + ", ".join(table))
        return str(v)

    def _models(self, fields: dict, plan: Plan, ctx: Ctx) -> None:
        if "model" in fields and "models" in fields:
            self.reporter.error("E0502", "a plan has `model` or `models`, not both", fields["models"].targets[0].span)
            return
        if "model" in fields:
            self._guard(lambda: self._add_model("model", fields["model"].value, plan, ctx))
        if "models" in fields:
            expr = fields["models"].value
            if not isinstance(expr, ast.DictExpr):
                self.reporter.error("E0301", "`models` names each model: `{ G: Generator(), D: Discriminator() }`",
                                    expr.span)
                return
            for key, value in zip(expr.keys, expr.values):
                self._guard(lambda k=key, v=value: self._add_model(k, v, plan, ctx))

    def _add_model(self, name: str, expr, plan: Plan, ctx: Ctx) -> None:
        v = self._expr(expr, ctx)
        if isinstance(v, DeclRef) and v.decl.kind == "model":
            v = BlockSpec(v.decl, {}, {}, expr.span)
        if not (isinstance(v, BlockSpec) and v.decl.kind == "model"):
            raise EvalError("E0301", f"`{name}` must be a model, like `MLP(hidden=256)`; got {describe(v)}",
                            expr.span, help="blocks are parts of models; train a model" if
                            isinstance(v, BlockSpec) else None)
        graph = self.model(v.decl, v.args, v.span)
        if graph is None:
            raise Poisoned()
        plan.models[name] = (v.decl, v.args, graph)
        ctx.scope[name] = v

    def _data(self, fields: dict, plan: Plan, ctx: Ctx) -> None:
        if "data" not in fields:
            return
        expr = fields["data"].value

        def run():
            v = self._expr(expr, ctx)
            if isinstance(v, EntryRef) and v.entry.kind == "data":
                v = PlanCall(v.entry, bind_op(v.entry.params, [], [], v.entry.name, expr.span)[0], expr.span)
            if not (isinstance(v, PlanCall) and v.entry.kind == "data"):
                raise EvalError("E0503", f"`data` needs a data set, got {describe(v)}", expr.span,
                                help=_names_help("data"))
            split = float(v.args["val"]) + float(v.args["test"])
            if split >= 1.0:
                raise EvalError("E0302", f"val + test = {split:g} leaves nothing to train on", expr.span)
            v.base_dir = os.path.dirname(os.path.abspath(self.plan.decl.span.file.name))
            try:
                v.fields = v.entry.field_types(v.args, v.base_dir)
            except DataError as err:
                raise EvalError(err.code, err.message, expr.span, label="needed to know the batch's fields",
                                help="paths are relative to the plan's `.dl` file" if err.code == "E0508"
                                else None) from None
            plan.data = v
            self._augment_fits(plan)
        self._guard(run)

    def _state(self, stmt, plan: Plan, steps: list) -> None:
        """`state = hidden`: an input of the plan's one model, with an output of the same name and
        shapes, whose sizes are constants or the batch's size."""
        expr = stmt.value
        if not isinstance(expr, ast.Name):
            raise EvalError("E0301", "`state` names the model input that is carried, like `state = hidden`",
                            expr.span, help=f"state: {catalog.FIELDS['state'].doc}")
        if not plan.models:
            raise Poisoned()   # the model's own error was reported
        self._state_plan_fits(expr, plan, steps)
        self._state_of_model(expr, plan)

    def _state_plan_fits(self, expr, plan: Plan, steps: list) -> None:
        """A carried state needs one model trained on its loss, and data read in order."""
        if list(plan.models) != ["model"] or steps:
            raise EvalError("E0502", "`state` carries the state of the plan's one `model` from batch to batch; "
                            "this plan has " + ("`models`" if list(plan.models) != ["model"] else "`step`s"),
                            expr.span, help="train a model with its state in a plan with `model` and `loss`")
        if plan.data is not None and not plan.data.args.get("stream"):
            has = any(p.name == "stream" for p in plan.data.entry.params)
            raise EvalError("E0504", f"`state = {expr.id}` carries the state from each batch to the next, which "
                            f"needs batches that continue each other, but `{plan.data.entry.name}` is read in "
                            "shuffled examples", expr.span, labels=(Label(plan.data.span, "the data"),),
                            help=f"read it in order: `{plan.data.entry.name}(..., stream=true)`" if has else
                            "data sets read in order: " + ", ".join(
                                e.name for e in catalog.DATASETS.values() if any(p.name == "stream" for p in e.params)))

    def _state_of_model(self, expr, plan: Plan) -> None:
        """The carried input, an output of the same name and shapes, and another input read from the batch."""
        decl, _args, graph = plan.models["model"]
        inputs, outputs = _by_top_name(graph, graph.inputs), _by_top_name(graph, graph.outputs)
        name = expr.id
        if name not in inputs:
            guess = did_you_mean(name, inputs)
            raise EvalError("E0504", f"`{decl.name}` has no input `{name}` to carry", expr.span,
                            label="not an input", help=f"did you mean `{guess}`?" if guess else
                            "its inputs: " + ", ".join(inputs))
        where = _input_label(decl, name)
        if name not in outputs:
            raise EvalError("E0504", f"`{decl.name}` has no output `{name}` to feed its input `{name}` with",
                            expr.span, label="no such output", labels=where,
                            help=f"return the final state under the input's name: `output logits, {name}`")
        if len(inputs) < 2:
            raise EvalError("E0504", f"`{decl.name}`'s only input is `{name}`: nothing is read from the batch",
                            expr.span, labels=where)
        want, got = inputs[name], outputs[name]
        if [n for n, _ in want] != [n for n, _ in got] or \
                any(a != b for (_, a), (_, b) in zip(want, got)):
            raise EvalError("E0504", f"`{decl.name}`'s output `{name}` is {_shapes(got)}, but its input `{name}` "
                            f"is {_shapes(want)}: the state it returns cannot be fed back", expr.span,
                            label="carried here", labels=where,
                            help="the output must have the input's shapes and dtypes")
        other = next(t for n, t in inputs.items() if n != name)
        batch = other[0][1].shape[0] if other[0][1].rank else None
        plan.state = CarriedState(name, [(n, _state_shape(decl, name, t, batch, expr.span, where), t.dtype)
                                         for n, t in want], structure([n for n, _ in want])[0], expr.span)
        plan.fields["state"] = Word(name)

    def _augment_value(self, expr, ctx: Ctx) -> list:
        """`augment = [random_flip(), normalize(mean=[0.5], std=[0.5])]`: augmentations only."""
        items = expr.items if isinstance(expr, ast.ListExpr) else [expr]
        out = []
        for item in items:
            head = item.func if isinstance(item, ast.Call) else item
            name = head.id if isinstance(head, ast.Name) else None
            if name not in catalog.AUGMENTS:
                guess = did_you_mean(name, catalog.AUGMENTS) if name else None
                what = f"`{name}`" if name else "this"
                raise EvalError("E0301", f"{what} is not an augmentation", item.span, label="unknown augmentation",
                                help=(f"did you mean `{guess}`? " if guess else "") + "augmentations: " +
                                ", ".join(catalog.AUGMENTS))
            entry = catalog.AUGMENTS[name]   # the augmentation, even where a function has its name (normalize)
            if isinstance(item, ast.Call):
                v = self._entry_call(entry, item, ctx)
            else:
                v = PlanCall(entry, bind_op(entry.params, [], [], entry.name, item.span)[0], item.span)
            out.append(v)
        return out

    def _augment_fits(self, plan: Plan) -> None:
        """Each augmentation applies to `batch.x` as the data set gives it (after the ones before it),
        and training batches come out the size of the others (random ones apply while training only)."""
        x = plan.data.fields.get("x")
        calls = plan.fields.get("augment") or ()
        for call in calls:
            problem = catalog.augment_problem(call.entry.name, call.args, x)
            if problem:
                raise EvalError("E0302", problem, call.span, label=f"`batch.x` is {x}",
                                labels=(Label(plan.data.span, "the data set"),))
            x = augmentations.output_type(x, call.entry.name, call.args)
            if augmentations.AUGMENTATIONS[call.entry.name].labels:
                self._mixing_fits(call, plan)
        pairs = [(c.entry.name, c.args) for c in calls]
        if calls and x is not None:
            start = plan.data.fields["x"]
            train, other = catalog.augmented_type(pairs, start, True), catalog.augmented_type(pairs, start, False)
            if train.shape != other.shape:
                raise EvalError("E0302", f"the augmentations make `batch.x` {train} on training batches but {other} "
                                "on the others (random ones apply while training only)", calls[-1].span,
                                labels=(Label(plan.data.span, "the data set"),),
                                help="end with `resize` or `center_crop` to the same size, or crop to the input's size")

    def _mixing_fits(self, call: PlanCall, plan: Plan) -> None:
        """`mixup` and `cutmix` mix class ids `y` [B] as one-hot targets: of `classes` classes, the data
        set's unless given (then written into the call's arguments, for the run)."""
        y = plan.data.fields.get("y")
        name = call.entry.name
        if y is None or y.rank != 1 or y.dtype != "int64":
            raise EvalError("E0302", f"`{name}` mixes class ids `batch.y` [B] of int64, but the data set's `y` is "
                            f"{y if y is not None else 'missing'}", call.span, labels=(Label(plan.data.span, "the data set"),))
        if call.args.get("classes") is None:
            if plan.data.entry.classes is None:
                raise EvalError("E0302", f"`{name}` needs the number of classes, which `{plan.data.entry.name}` does "
                                "not fix", call.span, help=f"give it: `{name}(classes=10)`")
            call.args["classes"] = plan.data.entry.classes
        if sum(augmentations.AUGMENTATIONS[c.entry.name].labels for c in plan.fields["augment"]) > 1:
            raise EvalError("E0302", "a plan mixes labels once: `mixup` or `cutmix`, not both", call.span)

    def _augment_call(self, e: ast.Call, ctx: Ctx):
        """`augment(batch.x, [random_resized_crop(size=[28, 28]), random_flip()])` in a step: the op
        `augment`, each augmentation checked against the tensor as the ones before it leave it."""
        if len(e.args) != 2 or e.kwargs:
            code = "E0305" if e.kwargs else "E0303" if len(e.args) < 2 else "E0304"
            raise EvalError(code, "`augment` takes a tensor and a list of augmentations, by position: "
                            "`augment(batch.x, [random_flip(), color_jitter(0.4, 0.4)])`", e.span)
        x = self._expr(e.args[0], ctx)
        if x is POISON:
            raise Poisoned()
        if not isinstance(x, TensorValue):
            raise EvalError("E0301", f"`augment` applies to a tensor, got {describe(x)}", e.args[0].span)
        calls = self._augment_value(e.args[1], ctx)
        t = x.type
        for call in calls:
            name = call.entry.name
            if augmentations.AUGMENTATIONS[name].labels:
                raise EvalError("E0302", f"`{name}` mixes `batch.y` too: in a step it is a function of the batch and "
                                "its targets", call.span, help=f"write `x, y = {name}(batch.x, batch.y)` in the step, "
                                f"or the plan field `augment = [{name}()]`")
            if augmentations.AUGMENTATIONS[name].plan_only:
                raise EvalError("E0302", f"`{name}` is a plan-level augmentation (its figures come from the training "
                                "split before training)", call.span, help=f"write it in the plan: `augment = [{name}()]`")
            problem = augmentations.problem(name, call.args, t, "the tensor")
            if problem:
                raise EvalError("E0302", problem, call.span, label=f"the tensor is {t}")
            t = augmentations.output_type(t, name, call.args)
        augs = tuple(augmentations.make(c.entry.name, c.args) for c in calls)
        return self._call_function(REGISTRY["augment"], [Arg(x, e.args[0].span), Arg(augs, e.args[1].span)], [],
                                   e.span, ctx)

    def _mix_call(self, name: str, e: ast.Call, ctx: Ctx):
        """`x, y = mixup(batch.x, batch.y, alpha=0.2)` in a step: the op `mixup` (or `cutmix`), its
        `classes` the data set's unless given."""
        pos, kws = self._args(e, ctx)
        target = pos[1].value if len(pos) > 1 else dict(kws).get("target", Arg(None, e.span)).value
        ids = isinstance(target, TensorValue) and target.type.dtype == "int64"   # soft targets keep their C
        given = len(pos) > 3 or any(k == "classes" for k, _ in kws)
        if ids and not given and self.plan.data is not None and self.plan.data.entry.classes is not None:
            kws.append(("classes", Arg(self.plan.data.entry.classes, e.span)))
        return self._call_function(REGISTRY[name], pos, kws, e.span, ctx)

    def _init_keys(self, fields: dict, plan: Plan) -> None:
        for name in ("rename", "skip_mismatched"):
            if name in fields and "init" not in fields:
                self.reporter.error("E0501", f"`{name}` applies to the weights `init` loads, and the plan "
                                    f"`{plan.name}` has no `init`", fields[name].targets[0].span,
                                    help=f"init: {catalog.FIELDS['init'].doc}")
                self.failed = True
        init = plan.fields.get("init")
        if isinstance(init, dict):
            expr = fields["init"].value
            for key, span in zip(expr.keys, expr.key_spans):
                if key not in plan.models:
                    guess = did_you_mean(key, plan.models)
                    self.reporter.error("E0506", f"`{key}` is not a model of this plan", span,
                                        help=f"did you mean `{guess}`?" if guess else
                                        "models: " + ", ".join(plan.models))
                    self.failed = True

    def _required(self, decl, fields: dict, steps: list, phases: list) -> None:
        self._train_metrics(decl, fields, self.plan)

        def need(name: str, ok: bool, why: str = "") -> None:
            if not ok and name not in self.misspelled:
                self.reporter.error("E0501", f"the plan `{decl.name}` needs `{name}`{why}", decl.name_span,
                                    help=f"{name}: {catalog.FIELDS[name].doc}")
        need("data", "data" in fields)
        if "model" not in fields and "models" not in fields:
            need("model", False)
        if _evaluates(fields, steps, phases):
            self._evaluation_fields(decl, fields, phases)
            return
        need("epochs", "epochs" in fields or bool(phases) and all(_sets(p, "epochs") for p in phases))
        if steps:
            if "loss" in fields:
                self.reporter.error("E0502", "with `step`s, each step has its own `loss`",
                                    fields["loss"].targets[0].span)
        else:
            need("loss", "loss" in fields)
            has_opt = "optimizer" in fields or bool(phases) and all(_sets(p, "optimizer") for p in phases)
            need("optimizer", has_opt, " (here or in every phase)")

    def _train_metrics(self, decl, fields: dict, plan: Plan) -> None:
        if plan.fields.get("train_metrics") and not plan.fields.get("metrics"):
            self.reporter.error("E0501", "`train_metrics` measures the plan's `metrics` on the training batches, and "
                                f"the plan `{decl.name}` has none", fields["train_metrics"].targets[0].span,
                                help="list them: `metrics = [accuracy]`")

    def _evaluation_fields(self, decl, fields: dict, phases: list) -> None:
        """A plan whose steps have no optimizer evaluates: what only training uses is an error (a step
        that lost its optimizer by mistake says so here)."""
        where = fields["epochs"].targets[0].span if "epochs" in fields else phases[0].span if phases else None
        if where is not None:
            self.reporter.error("E0502", f"no step of the plan `{decl.name}` has an `optimizer`, so it evaluates its "
                                "models and trains nothing: `epochs` and `phase`s have no use", where,
                                labels=(Label(decl.name_span, "an evaluation plan"),),
                                help="give a step an `optimizer` to train, or remove `epochs` to evaluate")

    def _calls(self, calls: list, plan: Plan, ctx: Ctx) -> None:
        for stmt in calls:
            def run(stmt=stmt):
                v = self._expr(stmt.value, ctx)
                if v is POISON:
                    raise Poisoned()
                monitor = v.args.get("monitor")
                allowed = catalog.monitors(plan.fields.get("metrics", []), bool(plan.fields.get("train_metrics")))
                if monitor is not None and monitor not in allowed:
                    raise EvalError("E0302", f"cannot monitor `{monitor}`", stmt.value.span,
                                    help="monitor one of " + ", ".join(allowed))
                plan.calls.append(v)
            self._guard(run)

    # ------------------------------------------------------------------ steps

    def _step(self, name: str, body, span, name_span) -> Step:
        graph = Graph(f"{self.plan.name}.{name}", "block", decl=self.plan.decl)
        ctx = Ctx(graph, self.plan.decl, "step", scope=dict(self.plan_ctx.scope))
        step = Step(name, graph, span=span)
        self.step = step
        # a plan without steps makes one of its `loss` field
        self.step_where = "the plan's `loss`" if name_span is self.plan.decl.name_span else "a step"
        batch = self._batch(graph)
        ctx.scope["batch"] = batch
        self.carried_in, self.carried_out = self._carried_input(graph, batch), None
        ctx.scope["batch_size"] = plain(catalog.setting(self.plan.fields, "batch_size"))
        if len(self.plan.models) == 1 and "model" in self.plan.models:
            ctx.scope["out"] = _LazyOut()
        before = len(self.reporter.diagnostics)
        with recording() as found:
            for stmt in body:
                self._statement(stmt, ctx, top=True)
        # what the step's models require of the batch's run-time sizes (`B > 3`), for the trainer
        for g in requirements(found):
            graph.guards.append(g)
        if len(self.reporter.diagnostics) == before and not ctx.failed:
            check_step_modules(self.plan, step, self.reporter, self.step_where)
        if len(self.reporter.diagnostics) > before or ctx.failed:
            raise Poisoned()
        if step.loss is None:
            raise EvalError("E0501", f"step `{name}` needs a `loss`", name_span)
        out = ctx.scope.get("out")
        if isinstance(out, TensorValue):
            step.prediction = out.ref
            step.scores = scores(graph, out.ref)
            graph.outputs.append(("prediction", out.ref))
        if self.plan.state is not None:
            self._carried_output(graph, name_span)
        if step.optimizer is None:
            step.optimizer = self.plan.fields.get("optimizer")
        # a step without one evaluates (its loss and metrics are measured, nothing is trained); a plain
        # plan's missing optimizer was reported with the other required fields
        return step

    def _carried_input(self, graph: Graph, batch: Record):
        """The step's input for the carried state (named as the model's input, so the step's forward
        takes `hidden`), its batch size the batch's."""
        state = self.plan.state
        if state is None:
            return None
        size = next(iter(batch.fields.values())).type.shape[0]
        values = []
        for name, shape, dtype in state.leaves:
            t = TensorType(tuple(size if d is None else d for d in shape), dtype)
            node = graph.add("input", [t], names=[name])
            graph.inputs.append((name, Ref(node.id)))
            values.append(TensorValue(Ref(node.id), t, state.span))
        return nest(state.structure, values)

    def _carried_output(self, graph: Graph, name_span) -> None:
        """The model's final state, the step's last output(s): the trainer feeds it to the next batch."""
        state = self.plan.state
        if self.carried_out is None:
            raise EvalError("E0502", f"`state = {state.name}` is carried through `out`, but the loss does not "
                            "read `out`", state.span, help="compute the loss from `out`, the model applied to "
                            "the batch and the carried state")
        for flat, value in flatten(state.name, self.carried_out):
            graph.outputs.append((flat, value.ref))

    def _batch(self, graph: Graph) -> Record:
        if self.plan.data is None:
            raise Poisoned()
        fields = {}
        augment = [(c.entry.name, c.args) for c in self.plan.fields.get("augment") or ()]
        for name, t in self.plan.data.fields.items():
            if name == "x" and augment:   # as the augmentations leave it (`resize`); the same on every split
                t = catalog.augmented_type(augment, t, True)
            mixing = [a for n, a in augment if augmentations.AUGMENTATIONS[n].labels]
            if name == "y" and mixing:    # one-hot soft targets on every split
                t = TensorType((t.shape[0], plain(mixing[0]["classes"])), "float32")
            node = graph.add("input", [t], names=[f"batch_{name}"])
            graph.inputs.append((f"batch_{name}", Ref(node.id)))
            fields[name] = TensorValue(Ref(node.id), t, self.plan.data.span)
        return Record("batch", fields, self.plan.data.span)

    def _s_AssignStmt(self, stmt: ast.AssignStmt, ctx: Ctx, top: bool) -> None:
        if ctx.kind == "step" and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name) and \
                stmt.targets[0].id in catalog.STEP_FIELDS:
            return self._step_field(stmt.targets[0].id, stmt.value, ctx)
        return super()._s_AssignStmt(stmt, ctx, top)

    def _s_ExprStmt(self, stmt: ast.ExprStmt, ctx: Ctx, top: bool) -> None:
        if ctx.kind == "step":
            raise EvalError("E0107", "a step holds assignments, `loss = ...` and `optimizer = ...`", stmt.span)
        return super()._s_ExprStmt(stmt, ctx, top)

    def _step_field(self, name: str, expr, ctx: Ctx) -> None:
        v = self._expr(expr, ctx)
        if v is POISON:
            raise Poisoned()
        if name == "loss":
            v = self._loss_value(v, expr, ctx)
            if not isinstance(v, TensorValue):
                raise EvalError("E0505", f"a loss must be a tensor, got {describe(v)}", expr.span)
            if v.type.rank != 0:
                raise EvalError("E0505", f"the loss must reduce to a single number, but it has shape "
                                f"{v.type.shape_str()}", expr.span, label="not a scalar",
                                help="use reduction=\"mean\" or \"sum\", or `mean(...)`")
            self.step.loss = v.ref
            ctx.graph.outputs.append(("loss", v.ref))
        else:
            if not (isinstance(v, PlanCall) and v.entry.kind == "optimizer"):
                raise EvalError("E0301", f"`optimizer` needs an optimizer, got {describe(v)}", expr.span,
                                help=_names_help("optimizer"))
            self.step.optimizer = v

    def _loss_value(self, v, expr, ctx: Ctx):
        if isinstance(v, DeclRef) and v.decl.kind == "loss":
            return self._expr(v.decl.value, ctx)
        return v

    # ------------------------------------------------------------------ names in plans

    def _lookup_extra(self, name: str, ctx: Ctx):
        if name == EMA and ctx.kind == "step":
            return EmaFunction()
        if name == QUEUE and ctx.kind == "step":
            return QueueFunction()
        if name == "augment" and ctx.kind == "step":
            return _AUGMENT
        if name in _MIXING and ctx.kind == "step":
            return _MixFunction(name)
        if name in catalog.ALL_NAMES:
            return EntryRef(catalog.ALL_NAMES[name])
        if name in catalog.PRECISIONS or name in catalog.STRATEGIES or name in catalog.METRICS or \
                name in catalog.text.LEVELS:
            return Word(name)   # `bf16`, `ddp`, `accuracy`, `text(..., level=bpe)`
        if name in catalog.monitors(list(catalog.METRICS), train=True):
            return Word(name)
        return MISSING

    def _unknown_name(self, e: ast.Name, ctx: Ctx, called: bool = False) -> EvalError:
        named = named_elsewhere(self.plan, ctx.scope, e, self.step_where) if ctx.kind == "step" else None
        return named or super()._unknown_name(e, ctx, called)

    def visible_names(self, ctx: Ctx) -> list[str]:
        return super().visible_names(ctx) + list(catalog.ALL_NAMES) + list(catalog.PRECISIONS) + \
            list(catalog.STRATEGIES) + list(catalog.METRICS) + catalog.monitors(list(catalog.METRICS), train=True)

    def _e_Name(self, e: ast.Name, ctx: Ctx):
        v = super()._e_Name(e, ctx)
        if isinstance(v, _LazyOut):
            v = self._out(ctx, e.span)
            ctx.scope["out"] = v
        if isinstance(v, DeclRef) and v.decl.kind == "loss" and ctx.kind == "step":
            return self._expr(v.decl.value, ctx)
        return v

    def _out(self, ctx: Ctx, span):
        """`out`: the single model applied to the batch."""
        decl, args, graph = self.plan.models["model"]
        inputs = self._model_inputs(decl, graph, ctx, span)
        spec = BlockSpec(decl, args, {}, span)
        spans = [leaves([v])[0].span for v in inputs]
        result = self._apply_block(spec, inputs, spans, span, ctx)
        names = top_names([n for n, _ in graph.outputs])   # a tuple output is one field: `out.hidden`
        if self.plan.state is not None:   # the carried state is the step's, not `out`'s
            i = names.index(self.plan.state.name)
            self.carried_out = result[i]
            names, result = names[:i] + names[i + 1:], list(result[:i]) + list(result[i + 1:])
        if len(names) == 1:
            return result[0] if isinstance(result, list) else result
        return Record("out", dict(zip(names, result)), span)

    def _model_inputs(self, decl, graph: Graph, ctx: Ctx, span) -> list:
        """The batch fields feeding each model input: by name, or `x` for a single input."""
        batch = ctx.scope["batch"]
        data = self.plan.data
        state = self.plan.state.name if self.plan.state is not None else None
        fed = [(n, ref) for n, ref in graph.inputs if n.split(SEP)[0] != state]
        out = []
        for name, ref in graph.inputs:
            if name.split(SEP)[0] == state:
                if name == state or name.endswith(f"{SEP}0") and name.count(SEP) == 1:
                    out.append(self.carried_in)   # once, for the tuple's first tensor
                continue
            want = graph.type_of(ref)
            if name in batch.fields:
                field_name = name
            elif len(fed) == 1 and data.entry.input_field in batch.fields:
                field_name = data.entry.input_field
            else:
                raise EvalError("E0504", f"`{data.entry.name}` has no field for the model's input `{name}`", span,
                                help="fields: " + ", ".join(batch.fields))
            got = batch.fields[field_name]
            self._match_input(decl, name, want, field_name, got, span)
            out.append(got)
        return out

    def _match_input(self, decl, name: str, want: TensorType, field_name: str, got: TensorValue, span) -> None:
        have = got.type
        fits = want.rank == have.rank and want.dtype == have.dtype and all(
            isinstance(a, Sym) or isinstance(b, Sym) or plain(a) == plain(b) for a, b in zip(want.shape, have.shape))
        if fits:
            return
        stmt = next((s for s in decl.body if isinstance(s, ast.InputStmt) and s.name == name), None)
        labels = (Label(stmt.span, f"the model's input is {want}"),) if stmt is not None else ()
        raise EvalError("E0504", f"`{decl.name}`'s input `{name}` is {want}, but the data's `{field_name}` is {have}",
                        self.plan.data.span, label=f"`batch.{field_name}` is {have}", labels=labels,
                        help="change the model's input shape or the data set")

    def _apply_block(self, spec, inputs, spans, span, ctx, instance=None, **options):
        if ctx.kind == "step" and spec.decl.kind == "model" and not self.plan.has_model(spec):
            raise foreign_model(self.plan, spec.decl, spec.span, self.step_where)
        result = super()._apply_block(spec, inputs, spans, span, ctx, instance, **options)
        if ctx.kind == "step" and spec.decl.kind == "model":
            # every application of a plan's model in a step runs that one model (its weights)
            call = next(reversed(ctx.graph.nodes.values()))
            self.step.models[call.instance] = self.plan.model_name(spec)
        return result

    def _call_other(self, func, e: ast.Call, ctx: Ctx, piped=None):
        if isinstance(func, EntryRef):
            return self._entry_call(func.entry, e, ctx)
        if isinstance(func, EmaFunction) and piped is None:
            return self._ema_call(e, ctx)
        if isinstance(func, TargetValue) and piped is None:
            return self._apply_target(func, e, ctx)
        if isinstance(func, QueueFunction) and piped is None:
            return self._queue_call(e, ctx)
        if func is _AUGMENT and piped is None:
            return self._augment_call(e, ctx)
        if isinstance(func, _MixFunction) and piped is None:
            return self._mix_call(func.name, e, ctx)
        return super()._call_other(func, e, ctx, piped)

    def _entry_call(self, entry: catalog.Entry, e: ast.Call, ctx: Ctx) -> PlanCall:
        pos, kws = self._args(e, ctx)
        targets = ()
        if entry.kind == "optimizer":
            while pos and _is_model_value(pos[0].value):
                arg = pos.pop(0)
                targets += tuple(arg.value) if isinstance(arg.value, list) else (arg.value,)
            other = next((t for t in targets if not self.plan.has_model(t)), None)
            if other is not None:   # `Adam(Head())`: a model of its own, which no step applies
                raise foreign_target(self.plan, other.decl, other.span or e.span)
        values, spans = bind_op(entry.params, pos, kws, entry.name, e.span, convert_hook=_word_hook)
        call = PlanCall(entry, values, e.span, targets)
        if values.get("lr_mult"):
            kw = next((k.value for k in e.kwargs if k.name == "lr_mult"), None)
            keys = dict(zip(kw.keys, kw.key_spans)) if isinstance(kw, ast.DictExpr) else {}
            call.key_spans = {k: keys.get(k, spans["lr_mult"]) for k in values["lr_mult"]}
        return call

    # ------------------------------------------------------------------ phases and freezing

    def _phase(self, stmt: ast.PhaseStmt) -> Phase:
        phase = Phase(stmt.name, span=stmt.span)
        ctx = self.plan_ctx
        for s in stmt.body:
            if isinstance(s, ast.FreezeStmt):
                phase.freeze += self._freeze_paths(s)
            elif _is_prune(s):
                phase.prunes.append(self._prune(s.value))
            elif _is_phase_call(s, "quantize"):
                if phase.quantize is not None:
                    raise EvalError("E0302", "a phase quantizes once", s.span,
                                    labels=(Label(phase.quantize.span, "first here"),))
                phase.quantize = self._quantize(s.value)
            elif isinstance(s, ast.AssignStmt) and len(s.targets) == 1 and isinstance(s.targets[0], ast.Name) \
                    and s.targets[0].id in catalog.PHASE_FIELDS:
                f = catalog.FIELDS[s.targets[0].id]
                phase.fields[f.name] = self._field_value(f, s.value, ctx)
            else:
                raise EvalError("E0107", "a phase holds `freeze`/`unfreeze`, `prune(...)`, `quantize(...)` and "
                                "the fields "
                                + ", ".join(catalog.PHASE_FIELDS), s.span)
        return phase

    def _prune(self, call: ast.Call) -> Prune:
        """A checked `prune(...)`: its path names layers with convolution or linear weights, `amount`
        is in [0, 1], `method` is known, and `global=true` prunes by L1 magnitude."""
        args, spans = bind_op(catalog.PRUNE_PARAMS, [self._prune_arg(a) for a in call.args],
                              [(k.name, self._prune_arg(k.value)) for k in call.kwargs], "prune", call.span)
        path = args["layers"]
        if not isinstance(path, tuple):
            raise EvalError("E0301", f"prune's first argument names layers, such as `model.conv2`, not "
                            f"{describe(path)}", spans["layers"])
        prune = Prune(path, float(args["amount"]), str(args["method"]), float(args["n"]), int(args["dim"]),
                      bool(args["global"]), call.span)
        if not 0.0 <= prune.amount <= 1.0:
            raise EvalError("E0302", f"`amount` must be in [0, 1] (the fraction of weights pruned), got "
                            f"{prune.amount:g}", spans["amount"])
        if prune.method not in PRUNE_METHODS:
            guess = did_you_mean(prune.method, PRUNE_METHODS)
            raise EvalError("E0302", f"unknown pruning method `{prune.method}`", spans["method"],
                            help=f"did you mean `{guess}`?" if guess else "methods: " + ", ".join(PRUNE_METHODS))
        if prune.global_ and prune.method != "l1_unstructured":
            raise EvalError("E0302", "global pruning ranks all the weights by magnitude: its method is "
                            "l1_unstructured", spans["method"])
        if prune.n <= 0:
            raise EvalError("E0302", f"`n` (the norm) must be positive, got {prune.n:g}", spans["n"])
        self._resolve_path(ast.Dotted(spans["layers"], path))
        layers = _prunable(self.plan.models[path[0]][2], path[1:])
        if not layers:
            raise EvalError("E0506", f"`{'.'.join(path)}` has no convolution or linear layer to prune",
                            spans["layers"], help="prune applies to " + ", ".join(PRUNABLE))
        if prune.method == "ln_structured":
            ranks = set(layers)
            if any(not -r <= prune.dim < r for r in ranks):
                raise EvalError("E0302", f"`dim` {prune.dim} is out of range for weights of rank "
                                f"{min(ranks)}", spans.get("dim", call.span))
        return prune

    def _quantize(self, call: ast.Call) -> Quantize:
        """A checked `quantize(...)`: a whole model of the plan (FX traces its forward) and a known engine."""
        args, spans = bind_op(catalog.QUANTIZE_PARAMS, [self._prune_arg(a) for a in call.args],
                              [(k.name, self._prune_arg(k.value)) for k in call.kwargs], "quantize", call.span)
        path = args["model"]
        if isinstance(path, Word):   # a bare name that is no model of the plan
            path = (str(path),)
        if not isinstance(path, tuple):
            raise EvalError("E0301", f"quantize's first argument names a model of the plan, such as `model`, not "
                            f"{describe(path)}", spans["model"])
        self._resolve_path(ast.Dotted(spans["model"], path))
        if len(path) > 1:
            raise EvalError("E0302", f"`quantize` applies to a whole model (`{path[0]}`), not to a part of it",
                            spans["model"], help="torch.ao traces the model's forward and converts all of it")
        backend = str(args["backend"])
        if backend not in catalog.QUANTIZE_BACKENDS:
            guess = did_you_mean(backend, catalog.QUANTIZE_BACKENDS)
            raise EvalError("E0302", f"unknown quantized backend `{backend}`", spans["backend"],
                            help=f"did you mean `{guess}`?" if guess else
                            "backends: " + ", ".join(catalog.QUANTIZE_BACKENDS))
        return Quantize(path, backend, call.span)

    def _quantize_fits(self, plan: Plan) -> None:
        """The quantizing phase is the last (the run ends by converting to int8), of a plan of one model,
        without `ema` (its averaged copy would not be quantized) and without pruning in the same phase."""
        found = [(i, p) for i, p in enumerate(plan.phases) if p.quantize is not None]
        if not found:
            return
        i, phase = found[0]
        span = phase.quantize.span
        problem = None
        if i != len(plan.phases) - 1:
            problem = ("the phase that quantizes must be the plan's last: the run ends by converting the model to "
                       "int8", "move the phase to the end")
        elif len(plan.models) != 1:
            problem = ("`quantize` applies to a plan of one model", None)
        elif plan.fields.get("ema"):
            problem = ("`quantize` cannot be combined with `ema` (the averaged weights would not be quantized)",
                       "leave out `ema` in a quantization plan")
        elif phase.prunes:
            problem = ("a phase does not both prune and quantize", "prune in an earlier phase")
        if problem is not None:
            self.reporter.error("E0302", problem[0], span, help=problem[1])
            self.failed = True

    def _prune_fits(self, plan: Plan) -> None:
        """Pruning re-parametrizes the weights, which the averaged copy of `ema` cannot follow."""
        prunes = [p for phase in plan.phases for p in phase.prunes]
        if prunes and plan.fields.get("ema"):
            self.reporter.error("E0302", "`prune` cannot be combined with `ema` (the averaged weights would "
                                "not be pruned)", prunes[0].span, help="leave out `ema` in a pruning plan")
            self.failed = True

    def _strategy_fits(self, plan: Plan, fields: dict) -> None:
        """`strategy = fsdp` shards the weights of one model, which the trainer's steps reach only
        through that model's own forward: what keeps another copy of the weights, or rewrites them,
        is refused here rather than found by a collective that hangs."""
        if plan.fields.get("strategy") != "fsdp":
            return
        problem = _fsdp_problem(plan)
        if problem is not None:
            self.reporter.error("E0302", f"`strategy = fsdp` {problem[0]}", fields["strategy"].span,
                                help=problem[1])
            self.failed = True

    def _prune_arg(self, e) -> Arg:
        """A prune argument: a layer path (`model.conv2`), a bare word (`l1_unstructured`) or a literal."""
        parts = _dotted(e)
        if parts is not None and (len(parts) > 1 or parts[0] in self.plan.models):
            return Arg(parts, e.span)
        if parts is not None:
            return Arg(Word(parts[0]), e.span)
        v = self._expr(e, self.plan_ctx)
        if v is POISON:
            raise Poisoned()
        return Arg(v, e.span)

    def _freeze_paths(self, stmt: ast.FreezeStmt) -> list:
        return [(self._resolve_path(p), stmt.freeze) for p in stmt.paths]

    def _resolve_path(self, path: ast.Dotted) -> tuple:
        root, rest = path.parts[0], path.parts[1:]
        if root not in self.plan.models:
            guess = did_you_mean(root, self.plan.models)
            raise EvalError("E0506", f"`{root}` is not a model of this plan", path.span,
                            help=f"did you mean `{guess}`?" if guess else
                            "models: " + ", ".join(self.plan.models))
        graph = self.plan.models[root][2]
        for i, part in enumerate(rest):
            by_name = {inst.name: inst for inst in graph.instances.values()}
            if part not in by_name:
                guess = None if part.isdigit() else did_you_mean(part, by_name)   # `3` is not a typo of `0`
                where = ".".join(path.parts[:i + 1])
                raise EvalError("E0506", f"`{where}` has no layer `{part}`", path.span,
                                help=f"did you mean `{guess}`?" if guess else
                                f"its layers: {', '.join(by_name) or 'none'}")
            inst = by_name[part]
            if inst.graph is None and i < len(rest) - 1:
                raise EvalError("E0506", f"`{'.'.join(path.parts[:i + 2])}` is a single layer; "
                                f"`{rest[i + 1]}` cannot be inside it", path.span)
            graph = inst.graph if inst.graph is not None else graph
        return path.parts

    def _lr_mults(self, plan: Plan) -> None:
        """`lr_mult` keys name layers of the optimizer's model (relative to it; with several
        target models, starting with the model's name)."""
        opts = [s.optimizer for s in plan.steps] + [plan.fields.get("optimizer")] + \
            [p.fields.get("optimizer") for p in plan.phases]
        seen = set()
        for opt in opts:
            if opt is None or id(opt) in seen or not opt.args.get("lr_mult"):
                continue
            seen.add(id(opt))
            names = [plan.model_name(t) for t in opt.targets] or (["model"] if "model" in plan.models else [])
            for key, span in opt.key_spans.items():
                parts = tuple(key.split("."))
                if len(names) == 1:
                    parts = (names[0],) + parts
                elif parts[0] not in names:
                    self.reporter.error("E0506", f"`lr_mult` key `{key}` must start with the name of one of "
                                        "the optimizer's models", span, help="models: " + ", ".join(names))
                    continue
                self._guard(lambda p=parts, s=span: self._resolve_path(ast.Dotted(s, p)))

    def _optimizers_cover_models(self, plan: Plan, fields: dict) -> None:
        if not plan.steps or len(plan.models) < 2 or plan.evaluation:
            return
        frozen = {path[0] for path, f in plan.freeze if f and len(path) == 1}
        trained = set()
        for step in plan.steps:
            if step.optimizer is None:
                continue
            names = {plan.model_name(t) for t in step.optimizer.targets}
            if not step.optimizer.targets:
                self.reporter.error("E0507", f"step `{step.name}`'s optimizer must say which model it updates",
                                    step.optimizer.span, help="pass the model first: `Adam(D, lr=2e-4)`")
            trained |= names
        for name in plan.models:
            if name not in trained and name not in frozen:
                self.reporter.error("E0507", f"no step's optimizer updates the model `{name}`",
                                    fields["models"].value.span,
                                    help=f"add a step that optimizes `{name}`, or `freeze {name}`")


@dataclass(frozen=True)
class _AugmentFunction:
    """`augment` in a step: a batch's augmentations (`_augment_call`)."""

    def describe(self) -> str:
        return "`augment`"


_AUGMENT = _AugmentFunction()
_MIXING = [name for name, a in augmentations.AUGMENTATIONS.items() if a.labels]


@dataclass(frozen=True)
class _MixFunction:
    """`mixup` or `cutmix` in a step: a batch and its targets mixed (`_mix_call`)."""
    name: str

    def describe(self) -> str:
        return f"`{self.name}`"


def _fsdp_problem(plan: Plan) -> tuple | None:
    """Why FSDP cannot train `plan` (what it says, and what to do), or None."""
    ddp = "use `strategy = ddp`, which trains it"
    if len(plan.models) != 1:
        return (f"trains plans of one model; this one has {len(plan.models)} "
                f"({', '.join(f'`{k}`' for k in plan.models)})", ddp)
    if plan.targets:
        return ("cannot keep a momentum copy of a sharded model (`ema(...)` in a step)", ddp)
    if plan.fields.get("ema"):
        return ("cannot keep an average of sharded weights (`ema`)", ddp + ", or leave out `ema`")
    if any(p.prunes for p in plan.phases):
        return ("cannot prune sharded weights", ddp + " for the pruning plan")
    if any(p.quantize is not None for p in plan.phases):
        return ("cannot quantize a sharded model", ddp + " for the quantization plan")
    return None


def _is_prune(stmt) -> bool:
    return _is_phase_call(stmt, "prune")


def _is_phase_call(stmt, name: str) -> bool:
    return isinstance(stmt, ast.ExprStmt) and isinstance(stmt.value, ast.Call) and \
        isinstance(stmt.value.func, ast.Name) and stmt.value.func.id == name


def _dotted(e) -> tuple | None:
    """`model.conv2` as ("model", "conv2"); None for anything but names joined by dots."""
    if isinstance(e, ast.Name):
        return (e.id,)
    if isinstance(e, ast.Attr):
        head = _dotted(e.value)
        return head + (e.name,) if head is not None else None
    return None


def _prunable(graph: Graph, rest: tuple) -> list:
    """The weight ranks of the prunable layers at `rest` within `graph` (all of them for ())."""
    for part in rest:
        inst = next(i for i in graph.instances.values() if i.name == part)
        if inst.graph is None:
            return [len(inst.weights()["weight"])] if inst.kind == "layer" and inst.op.name in PRUNABLE else []
        graph = inst.graph
    return _all_prunable(graph)


def _all_prunable(graph: Graph) -> list:
    out = []
    for inst in graph.instances.values():
        if inst.graph is not None and inst.kind == "block":
            out += _all_prunable(inst.graph)
        elif inst.kind == "layer" and inst.op.name in PRUNABLE:
            out.append(len(inst.weights()["weight"]))
    return out


@dataclass
class _LazyOut:
    """`out` before first use: the model is applied to the batch when a step reads it."""

    def describe(self) -> str:
        return "`out`"


def _by_top_name(graph: Graph, entries: list) -> dict:
    """Top-level name -> [(flat name, TensorType)] of a graph's inputs or outputs."""
    out: dict = {}
    for name, ref in entries:
        out.setdefault(name.split(SEP)[0], []).append((name, graph.type_of(ref)))
    return out


def _shapes(leaves: list) -> str:
    return ", ".join(str(t) for _, t in leaves) if len(leaves) == 1 else \
        "(" + ", ".join(str(t) for _, t in leaves) + ")"


def _input_label(decl, name: str) -> tuple:
    stmt = next((s for s in decl.body if isinstance(s, ast.InputStmt) and s.name == name), None)
    return (Label(stmt.span, f"the input `{name}`"),) if stmt is not None else ()


def _state_shape(decl, name: str, t: TensorType, batch, span, where) -> tuple:
    """A carried tensor's shape, with None for the batch's size: each size a number or the batch's."""
    out = []
    for d in t.shape:
        if isinstance(d, Sym) and batch is not None and d == batch:
            out.append(None)
        elif not isinstance(d, Sym) or d.poly.is_const():
            out.append(plain(d))
        else:
            raise EvalError("E0504", f"`{decl.name}`'s input `{name}` is {t}: a carried state's sizes are numbers "
                            f"or the batch's size {batch}, so that it can start as zeros", span,
                            label="carried here", labels=where)
    return tuple(out)


def _is_model_value(v) -> bool:
    if isinstance(v, list):
        return bool(v) and all(_is_model_value(x) for x in v)
    return isinstance(v, BlockSpec) and v.decl.kind == "model"


def _word_hook(p, v):
    return str(v) if isinstance(v, Word) else v


def _evaluates(fields: dict, steps: list, phases: list) -> bool:
    """Steps, and no optimizer anywhere: an evaluation plan."""
    return bool(steps) and "optimizer" not in fields and not any(_sets(s, "optimizer") for s in steps + phases)


def _sets(stmt, name: str) -> bool:
    """A `phase` or `step` sets the field `name`."""
    return any(isinstance(s, ast.AssignStmt) and len(s.targets) == 1 and isinstance(s.targets[0], ast.Name)
               and s.targets[0].id == name for s in stmt.body)


def _names_help(kind: str) -> str:
    table = {"data": catalog.DATASETS, "optimizer": catalog.OPTIMIZERS, "schedule": catalog.SCHEDULES}[kind]
    return f"{kind}s: " + ", ".join(table)


__all__ = ["Arg", "Plan", "PlanCall", "Step", "check_plans"]
