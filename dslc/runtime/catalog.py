"""What a training plan may name: data sets, optimizers, schedules, metrics,
precisions and plan-level calls. One entry each, with typed parameters, so
`dslc check` validates a plan without importing torch or loading data, and
the runtime builds from the same entries.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..ir.dims import Sym
from ..ir.types import TensorType
from ..ops import checks
from ..ops.ptypes import BOOL, FLOAT, INT, STR, ListOf, OneOf, Optional, Str
from ..ops.registry import ParamSpec


@dataclass(frozen=True)
class Entry:
    name: str
    kind: str                 # data | optimizer | schedule | call
    params: tuple[ParamSpec, ...]
    doc: str
    fields: dict = field(default_factory=dict)   # data sets: batch field -> TensorType
    input_field: str = "x"                       # data sets: what a single-input model receives
    classes: int | None = None                   # data sets: number of classes, if classification

    def describe(self) -> str:
        return f"the {self.kind} `{self.name}`"


B = Sym.var("B")
_SPLITS = (ParamSpec("val", FLOAT, 0.0, checks.open_probability, "fraction held out for validation"),
           ParamSpec("test", FLOAT, 0.0, checks.open_probability, "fraction held out for testing"),
           ParamSpec("seed", INT, 0, None, "seed of the split"))


def _data(name, doc, fields, extra=(), classes=None, input_field="x") -> Entry:
    return Entry(name, "data", _SPLITS + tuple(extra), doc, fields, input_field, classes)


DATASETS = {e.name: e for e in (
    _data("digits", "scikit-learn's 1,797 handwritten 8×8 digits; x in [0, 1] (or `scale`), y the digit.",
          {"x": TensorType((B, 1, 8, 8)), "y": TensorType((B,), "int64")},
          (ParamSpec("scale", ListOf(FLOAT), (0.0, 1.0), None, "the range pixel values are scaled to"),),
          classes=10),
)}

_BETAS = ParamSpec("betas", ListOf(FLOAT), (0.9, 0.999))
_WD = ParamSpec("weight_decay", FLOAT, 0.0, checks.non_negative_number)


def _lr(default: float) -> ParamSpec:
    return ParamSpec("lr", FLOAT, default, checks.positive_number)


def _opt(name, *params, doc="") -> Entry:
    return Entry(name, "optimizer", tuple(params), doc or f"torch.optim.{name}")


# Defaults are torch.optim's (a test compares them with torch's signatures).
OPTIMIZERS = {e.name: e for e in (
    _opt("SGD", _lr(1e-3), ParamSpec("momentum", FLOAT, 0.0, checks.non_negative_number),
         ParamSpec("dampening", FLOAT, 0.0), _WD, ParamSpec("nesterov", BOOL, False)),
    _opt("Adam", _lr(1e-3), _BETAS, ParamSpec("eps", FLOAT, 1e-8, checks.positive_number), _WD,
         ParamSpec("amsgrad", BOOL, False)),
    _opt("AdamW", _lr(1e-3), _BETAS, ParamSpec("eps", FLOAT, 1e-8, checks.positive_number),
         ParamSpec("weight_decay", FLOAT, 1e-2, checks.non_negative_number), ParamSpec("amsgrad", BOOL, False)),
    _opt("RMSprop", _lr(1e-2), ParamSpec("alpha", FLOAT, 0.99), ParamSpec("eps", FLOAT, 1e-8), _WD,
         ParamSpec("momentum", FLOAT, 0.0), ParamSpec("centered", BOOL, False)),
    _opt("Adagrad", _lr(1e-2), ParamSpec("lr_decay", FLOAT, 0.0), _WD, ParamSpec("eps", FLOAT, 1e-10)),
    _opt("Adadelta", _lr(1.0), ParamSpec("rho", FLOAT, 0.9), ParamSpec("eps", FLOAT, 1e-6), _WD),
    _opt("Adamax", _lr(2e-3), _BETAS, ParamSpec("eps", FLOAT, 1e-8), _WD),
    _opt("NAdam", _lr(2e-3), _BETAS, ParamSpec("eps", FLOAT, 1e-8), _WD),
    _opt("RAdam", _lr(1e-3), _BETAS, ParamSpec("eps", FLOAT, 1e-8), _WD),
)}

_POS_INT = dict(check=checks.positive)


def _sched(name, *params, doc) -> Entry:
    return Entry(name, "schedule", tuple(params), doc)


SCHEDULES = {e.name: e for e in (
    _sched("step", ParamSpec("step_size", INT, check=checks.positive), ParamSpec("gamma", FLOAT, 0.1),
           doc="multiply the learning rate by gamma every step_size epochs"),
    _sched("multistep", ParamSpec("milestones", ListOf(INT)), ParamSpec("gamma", FLOAT, 0.1),
           doc="multiply the learning rate by gamma at each milestone epoch"),
    _sched("exponential", ParamSpec("gamma", FLOAT, check=checks.positive_number),
           doc="multiply the learning rate by gamma every epoch"),
    _sched("cosine", ParamSpec("min_lr", FLOAT, 0.0, checks.non_negative_number),
           doc="cosine decay from lr to min_lr over the whole run (per optimizer step)"),
    _sched("one_cycle", ParamSpec("max_lr", Optional(FLOAT), None), ParamSpec("pct_start", FLOAT, 0.3,
                                                                               checks.open_probability),
           doc="one-cycle policy over the whole run (per optimizer step); max_lr defaults to the optimizer's lr"),
    _sched("warmup_cosine", ParamSpec("warmup", INT, check=checks.non_negative),
           ParamSpec("min_lr", FLOAT, 0.0, checks.non_negative_number),
           doc="linear warm-up over `warmup` optimizer steps, then cosine decay to min_lr"),
    _sched("linear_warmup", ParamSpec("warmup", INT, check=checks.non_negative),
           doc="linear warm-up over `warmup` optimizer steps, then constant"),
    _sched("reduce_on_plateau", ParamSpec("factor", FLOAT, 0.1, checks.positive_number),
           ParamSpec("patience", INT, 10, checks.non_negative), ParamSpec("mode", Str(("min", "max")), "min"),
           doc="multiply the learning rate by factor when val_loss stops improving for patience epochs"),
)}

METRICS = {"accuracy": "fraction of correct top-1 predictions",
           "top5": "fraction of targets among the 5 highest scores",
           "f1": "macro-averaged F1 score",
           "mse": "mean squared error",
           "mae": "mean absolute error"}

PRECISIONS = {"fp32": "full precision", "bf16": "bfloat16 autocast", "fp16": "float16 autocast (CUDA, with a GradScaler)"}

CALLS = {e.name: e for e in (
    Entry("early_stopping", "call", (
        ParamSpec("monitor", STR, "val_loss"), ParamSpec("patience", INT, 5, checks.non_negative),
        ParamSpec("mode", Str(("min", "max", "auto")), "auto"),
        ParamSpec("min_delta", FLOAT, 0.0, checks.non_negative_number), ParamSpec("restore_best", BOOL, True)),
        "stop when the monitored value has not improved for `patience` epochs"),
    Entry("checkpoint", "call", (
        ParamSpec("every", INT, 1, checks.positive), ParamSpec("keep", INT, 3, checks.positive),
        ParamSpec("monitor", STR, "val_loss")),
        "save a checkpoint every `every` epochs, keeping the last `keep` and the best"),
)}


@dataclass(frozen=True)
class Field:
    name: str
    kind: str          # int | float | bool | str | model | models | data | loss | optimizer | schedule | ...
    doc: str
    check: object = None


FIELDS = {f.name: f for f in (
    Field("model", "model", "the model to train: `MLP(hidden=256)`"),
    Field("models", "models", "several models by name: `{ G: Generator(), D: Discriminator() }`"),
    Field("data", "data", "the data set: `digits(val=0.15, test=0.15)`"),
    Field("loss", "loss", "the loss: an expression over `out` and `batch`"),
    Field("optimizer", "optimizer", "the optimizer: `AdamW(lr=1e-3)`"),
    Field("schedule", "schedule", "the learning-rate schedule: `warmup_cosine(warmup=100)`"),
    Field("epochs", "int", "passes over the training split", checks.positive),
    Field("batch_size", "int", "examples per step", checks.positive),
    Field("metrics", "metrics", "metrics on the validation and test splits: `[accuracy]`"),
    Field("clip_grad_norm", "float", "clip the gradient's global norm to this", checks.positive_number),
    Field("clip_grad_value", "float", "clip each gradient element to ±this", checks.positive_number),
    Field("accumulate", "int", "optimizer step every this many batches", checks.positive),
    Field("precision", "precision", "fp32, bf16 or fp16"),
    Field("seed", "int", "seed of initialization, shuffling and dropout"),
    Field("init", "str", "a checkpoint to load matching weights from (by name)"),
    Field("ema", "float", "keep an exponential moving average of the weights with this decay",
          checks.open_probability),
    Field("compile", "bool", "wrap the models in torch.compile"),
)}

STEP_FIELDS = ("loss", "optimizer")
PHASE_FIELDS = ("epochs", "optimizer", "schedule", "batch_size")

ALL_NAMES = {**DATASETS, **OPTIMIZERS, **SCHEDULES, **CALLS}


def monitors(metrics: list[str]) -> list[str]:
    """Values early stopping and checkpoints may watch."""
    return ["val_loss", "train_loss"] + [f"val_{m}" for m in metrics]


__all__ = ["ALL_NAMES", "CALLS", "DATASETS", "FIELDS", "METRICS", "OPTIMIZERS", "PHASE_FIELDS", "PRECISIONS",
           "SCHEDULES", "STEP_FIELDS", "Entry", "Field", "monitors", "OneOf"]
