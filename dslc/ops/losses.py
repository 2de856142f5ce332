"""Losses: each is a lower-case registry entry of kind "loss", emitted as a
torch.nn.functional call (`F.mse_loss(pred, y)`) or, for the composite ones
(nt_xent, distillation), a call of a small module-level helper.

Conventions shared by every loss here:
- `reduction` is "mean" | "sum" | "none" as in torch.nn.functional (kl_div adds
  "batchmean"); mean/sum/batchmean give a 0-d tensor, "none" the elementwise
  (or per-sample) shape.
- A prediction and its target must have EQUAL shapes. torch's `F.mse_loss`
  broadcasts [B, 1] against [B] with only a warning; in a loss that is almost
  always a bug, so dslc rejects it (E0403) rather than silently averaging a
  [B, B] matrix.
- A target that is a constant (`ones` / `zeros` named without a call, or a
  number) takes the prediction's shape and dtype: `bce(D(fake), zeros)` is
  written `torch.zeros_like(...)`. Class-id targets have no such constant form.
"""
from __future__ import annotations

from ..ir.dims import Sym, plain, plain_float
from ..ir.types import FLOAT_DTYPES, TensorType
from ..ir.values import Fill, TensorValue
from . import checks
from .ptypes import BOOL, FLOAT, INT, TENSOR, TENSOR_OR_SCALAR, WEIGHTS, Str
from .registry import Example, OpDef, ParamSpec, S, ShapeError, TorchFunction, helper, register
from .shapes import same_dim

REDUCTIONS = ("mean", "sum", "none")
CLASS_ID_DTYPES = FLOAT_DTYPES + ("int64",)   # ops taking class ids: the evaluator checks inputs against this


def _reduction(default: str = "mean", choices: tuple = REDUCTIONS) -> ParamSpec:
    return ParamSpec("reduction", Str(choices), default,
                     doc="how the per-element losses are combined: " + ", ".join(choices))


def _reduced(b, shape, dtype: str) -> list[TensorType]:
    """A 0-d result, or the unreduced shape for reduction="none"."""
    return [TensorType(tuple(shape) if b["reduction"] == "none" else (), dtype)]


# ---------------------------------------------------------------- checks

def _float_tensor(b, what: str, name: str) -> TensorType:
    """A tensor argument that must be floating point (the op's `dtypes` may admit int64 for ids)."""
    t = b[name].type
    if not t.is_float:
        raise ShapeError(f"`{what}` expects a floating-point `{name}`, got {t.dtype}", code="E0310", arg=name,
                         label=f"this is {t}")
    return t


def _need_rank(what: str, t: TensorType, name: str, ranks=None, at_least: int | None = None) -> None:
    ok = t.rank in ranks if ranks is not None else t.rank >= at_least
    if not ok:
        want = " or ".join(f"{r}-d" for r in ranks) if ranks is not None else f"at least {at_least}-d"
        raise ShapeError(f"`{what}` expects a {want} `{name}`, got {t.shape_str()}", code="E0402", arg=name,
                         label=f"this is {t.rank}-d")


def _equal_shapes(shape_a, shape_b) -> bool:
    return len(shape_a) == len(shape_b) and all(same_dim(p, q) for p, q in zip(shape_a, shape_b))


def _need_same(what: str, a: TensorType, b: TensorType, name_a: str, name_b: str) -> None:
    """Equal shapes and dtypes: a loss never broadcasts (a broadcast loss is almost always a bug)."""
    if not _equal_shapes(a.shape, b.shape):
        raise ShapeError(f"`{what}` needs `{name_a}` and `{name_b}` of the same shape, got "
                         f"{a.shape_str()} and {b.shape_str()}", code="E0403", arg=name_b,
                         label="shapes differ",
                         help="dslc does not broadcast a loss; reshape or squeeze one side explicitly")
    _need_same_dtype(what, a, b, name_a, name_b)


def _need_same_dtype(what: str, a: TensorType, b: TensorType, name_a: str, name_b: str) -> None:
    if a.dtype != b.dtype:
        raise ShapeError(f"`{what}` needs `{name_a}` and `{name_b}` of the same dtype, got {a.dtype} and {b.dtype}",
                         code="E0310", arg=name_b)


def _paired_target(b, what: str, pred: str = "input", name: str = "target", bounds=None) -> TensorType:
    """The type of a target shaped like the prediction; a constant target takes the prediction's type."""
    p = b[pred].type
    v = b[name]
    if isinstance(v, TensorValue):
        _need_same(what, p, v.type, pred, name)
        return v.type
    value = _constant(v)
    if bounds is not None and not bounds[0] <= value <= bounds[1]:
        raise ShapeError(f"`{what}`'s `{name}` must lie in [{bounds[0]}, {bounds[1]}], got {value!r}",
                         code="E0302", arg=name)
    return p


def _constant(v) -> float:
    """The value of a constant target (`ones`, `zeros` or a number)."""
    return v.value if isinstance(v, Fill) else plain_float(v)


def _no_constant(b, what: str, name: str = "target") -> TensorValue:
    v = b[name]
    if not isinstance(v, TensorValue):
        shown = repr(v) if isinstance(v, Fill) else f"the number {plain_float(v)!r}"
        raise ShapeError(f"`{what}` needs a tensor of int64 class ids as its `{name}`, got {shown}",
                         code="E0301", arg=name, help="pass the labels tensor (int64 class indices)")
    return v


def _class_ids(what: str, logits: TensorType, target: TensorType, pred: str, name: str) -> tuple:
    """Class ids for [N, C, d1...] logits: int64 of shape [N, d1...]; returns that shape."""
    want = logits.shape[:1] + logits.shape[2:]
    if target.dtype != "int64":
        raise ShapeError(f"`{what}` needs int64 class ids as `{name}`, got {target.dtype}", code="E0310", arg=name,
                         help="cast them: `long(...)`")
    if not _equal_shapes(want, target.shape):
        raise ShapeError(f"`{what}`: class ids for `{pred}` {logits.shape_str()} must have shape "
                         f"{TensorType(want).shape_str()} (the class dimension 1 removed), got "
                         f"{target.shape_str()}", code="E0403", arg=name, label="shapes differ")
    return want


def _non_negative_weights(v) -> str | None:
    if isinstance(v, tuple) and any(plain_float(x) < 0 for x in v):
        return "must not be negative"
    return None


def _weight_param(doc: str) -> ParamSpec:
    return ParamSpec("weight", WEIGHTS, None, _non_negative_weights, doc)


_CLASS_WEIGHT = "a weight per class (torch's `weight`): C numbers, or a [C] tensor of the input's dtype"
_ELEMENT_WEIGHT = ("weights of the elements' losses (torch's `weight`): numbers along the last dimension (one "
                   "per output, or one), or a tensor shaped like the input")


def _class_weight(b, what: str, logits: TensorType) -> None:
    """`weight` of a loss over classes: one number per class (dimension 1 of the input)."""
    w, c = b["weight"], logits.shape[1]
    if w is None:
        return
    if isinstance(w, TensorValue):
        _weight_tensor(what, w.type, logits, TensorType((c,), logits.dtype))
    elif not isinstance(c, Sym) and len(w) != plain(c):
        raise ShapeError(f"`{what}`'s `weight` has {len(w)} numbers, but the input has {plain(c)} classes "
                         f"(dimension 1 of {logits.shape_str()})", code="E0403", arg="weight",
                         help="give one weight per class")


def _element_weight(b, what: str, pred: TensorType) -> None:
    """`weight` of an elementwise loss: numbers broadcast along the last dimension, or the input's shape."""
    w = b["weight"]
    if w is None:
        return
    if isinstance(w, TensorValue):
        _weight_tensor(what, w.type, pred, pred)
        return
    last = pred.shape[-1] if pred.rank else 1
    if len(w) != 1 and (isinstance(last, Sym) or len(w) != plain(last)):
        raise ShapeError(f"`{what}`'s `weight` has {len(w)} numbers: give one, or one per element of the "
                         f"input's last dimension ({last} in {pred.shape_str()})", code="E0403", arg="weight")


def _weight_tensor(what: str, w: TensorType, pred: TensorType, want: TensorType) -> None:
    if w.dtype != pred.dtype:
        raise ShapeError(f"`{what}`'s `weight` must have the input's dtype {pred.dtype}, got {w.dtype}",
                         code="E0310", arg="weight", help=f"cast it: `cast(weight, \"{pred.dtype}\")`")
    if not _equal_shapes(w.shape, want.shape):
        raise ShapeError(f"`{what}`'s `weight` must have shape {want.shape_str()}, got {w.shape_str()}",
                         code="E0403", arg="weight", label="shapes differ")


# ---------------------------------------------------------------- emission

def _target_src(e, name: str = "target", like: str = "input") -> str:
    """A tensor target's variable; a constant target filled like the prediction."""
    v = e.args[name]
    if isinstance(v, TensorValue):
        return e.arg(name)
    if isinstance(v, Fill):
        return f"torch.{'ones' if v.value == 1.0 else 'zeros'}_like({e.arg(like)})"
    return f"torch.full_like({e.arg(like)}, {e.fmt(v)})"


def _kws(e, names) -> str:
    return "".join(e.kw(n) for n in names)


def _weight_src(e, per_class: bool = False) -> str:
    """`, weight=...`: the tensor, or the numbers as a tensor of the prediction's dtype and device (one
    number as a 0-d tensor, which fits any shape, unless they are class weights, always a list)."""
    w = e.args.get("weight")
    if w is None:
        return ""
    if isinstance(w, TensorValue):
        return f", weight={e.arg('weight')}"
    values = e.fmt(w[0]) if len(w) == 1 and not per_class else f"[{', '.join(e.fmt(x) for x in w)}]"
    return f", weight={e.arg('input')}.new_tensor({values})"


# ---------------------------------------------------------------- ONNX forms (opset 18)
#
# Each emitter writes the loss out from the same maths as the torch kernel or helper it mirrors, in the
# prediction's dtype. Sizes that divide (batchmean's N, the class count) are constants when static and are
# read off the tensor (Shape, Gather) when they are run-time sizes.

_CONST_DTYPES = ("float32", "float64", "float16")   # bfloat16 constants are a float32 Constant and a Cast


def _k(g, value: float, dtype: str) -> str:
    """A 0-d constant `value` of a floating-point `dtype`."""
    return g.const(float(value), dtype) if dtype in _CONST_DTYPES else g.cast(g.const(float(value)), dtype)


def _fill(g, value: float, shape: str, dtype: str) -> str:
    """ConstantOfShape(shape) holding `value`: torch's ones_like / zeros_like / full_like."""
    import numpy as np
    from onnx import numpy_helper
    native = dtype in _CONST_DTYPES
    held = np.array([float(value)], dtype=dtype if native else "float32")
    out = g.op("ConstantOfShape", [shape], value=numpy_helper.from_array(held))
    return out if native else g.cast(out, dtype)


def _target_onnx(g, n, name: str = "target", like: str = "input") -> str:
    """A tensor target's value, or a constant target filled to the prediction's shape and dtype."""
    t = n.tensor(name)
    if t is not None:
        return t
    return _fill(g, _constant(n[name]), g.op("Shape", [n.tensor(like)]), n.type_of(like).dtype)


def _weight_onnx(g, n, per_class: bool = False) -> str | None:
    """The `weight` argument's value (numbers as a constant of the prediction's dtype; one number 0-d
    unless they are class weights), or None."""
    w = n["weight"]
    if w is None:
        return None
    if isinstance(w, TensorValue):
        return n.tensor("weight")
    dtype = n.type_of("input").dtype
    values = [float(plain_float(x)) for x in w]
    values = values[0] if len(values) == 1 and not per_class else values
    return g.const(values, dtype) if dtype in _CONST_DTYPES else g.cast(g.const(values, "float32"), dtype)


def _size_onnx(g, value: str, t: TensorType, axis: int) -> str:
    """Dimension `axis` of `value` as a 0-d number of its dtype (a constant unless it is a run-time size)."""
    d = t.shape[axis]
    if not isinstance(d, Sym):
        return _k(g, float(plain(d)), t.dtype)
    return g.cast(g.op("Gather", [g.op("Shape", [value]), g.const(axis, "int64")]), t.dtype)


def _per_class_onnx(g, eps: float, logits: str, t: TensorType) -> str:
    """eps / C for the class count C = dimension 1 of `logits`."""
    c = t.shape[1]
    if not isinstance(c, Sym):
        return _k(g, eps / plain(c), t.dtype)
    return g.op("Div", [_k(g, eps, t.dtype), _size_onnx(g, logits, t, 1)])


def _reduce_onnx(g, x: str, reduction: str) -> str:
    """mean or sum of every element (a 0-d result), or x itself for "none"."""
    if reduction == "none":
        return x
    return g.op("ReduceMean" if reduction == "mean" else "ReduceSum", [x], keepdims=0)


def _sum_last(g, x: str, op: str = "ReduceSum") -> str:
    """A reduction over the last dimension, which it drops."""
    return g.op(op, [x, g.ints([-1])], keepdims=0)


def _log1p(g, x: str, dtype: str) -> str:
    """log(1 + x) to full precision (ONNX has no Log1p): Goldberg's log(u) x / (u - 1) with u = 1 + x,
    and x itself where u rounds to 1."""
    one = _k(g, 1.0, dtype)
    u = g.op("Add", [one, x])
    exact = g.op("Mul", [g.op("Log", [u]), g.op("Div", [x, g.op("Sub", [u, one])])])
    return g.op("Where", [g.op("Equal", [u, one]), x, exact])


def _xlogy_self(g, t: str, dtype: str) -> str:
    """torch.xlogy(t, t): t log t, and 0 where t = 0."""
    zero = _k(g, 0.0, dtype)
    return g.op("Where", [g.op("Equal", [t, zero]), zero, g.op("Mul", [t, g.op("Log", [t])])])


def _nll_onnx(g, logp: str, target: str, reduction: str, ignore: int, dtype: str, weight: str | None = None) -> str:
    """NegativeLogLikelihoodLoss (class weights optional); for bfloat16 (not among the op's types) on a
    float32 copy, cast back."""
    if dtype != "bfloat16":
        return g.op("NegativeLogLikelihoodLoss", [logp, target, weight], reduction=reduction, ignore_index=ignore)
    weight = g.cast(weight, "float32") if weight is not None else None
    loss = g.op("NegativeLogLikelihoodLoss", [g.cast(logp, "float32"), target, weight], reduction=reduction,
                ignore_index=ignore)
    return g.cast(loss, "bfloat16")


def _elementwise_onnx(elem):
    """An elementwise loss: elem(g, x, t, n, dtype) per element, times its `weight` if it takes one,
    then the reduction."""
    def emit(g, n):
        dtype = n.type_of("input").dtype
        loss = elem(g, n.tensor("input"), _target_onnx(g, n), n, dtype)
        weight = _weight_onnx(g, n) if "weight" in n.args else None
        if weight is not None:
            loss = g.op("Mul", [loss, weight])
        return [_reduce_onnx(g, loss, n["reduction"])]
    return emit


def _mse_elem(g, x, t, n, dtype):
    """(x - t)²."""
    d = g.op("Sub", [x, t])
    return g.op("Mul", [d, d])


def _l1_elem(g, x, t, n, dtype):
    """|x - t|."""
    return g.op("Abs", [g.op("Sub", [x, t])])


def _smooth_l1_elem(g, x, t, n, dtype):
    """z = |x - t|: 0.5 z² / beta where z < beta, else z - 0.5 beta; plain z for beta = 0 (as torch)."""
    z, beta = g.op("Abs", [g.op("Sub", [x, t])]), float(n["beta"])
    if beta == 0.0:
        return z
    quad = g.op("Div", [g.op("Mul", [g.op("Mul", [_k(g, 0.5, dtype), z]), z]), _k(g, beta, dtype)])
    lin = g.op("Sub", [z, _k(g, 0.5 * beta, dtype)])
    return g.op("Where", [g.op("Less", [z, _k(g, beta, dtype)]), quad, lin])


def _huber_elem(g, x, t, n, dtype):
    """z = |x - t|: 0.5 z² where z < delta, else delta (z - 0.5 delta)."""
    z, delta = g.op("Abs", [g.op("Sub", [x, t])]), float(n["delta"])
    quad = g.op("Mul", [g.op("Mul", [_k(g, 0.5, dtype), z]), z])
    lin = g.op("Mul", [_k(g, delta, dtype), g.op("Sub", [z, _k(g, 0.5 * delta, dtype)])])
    return g.op("Where", [g.op("Less", [z, _k(g, delta, dtype)]), quad, lin])


def _bce_elem(g, x, t, n, dtype):
    """(t - 1) max(log1p(-p), -100) - t max(log p, -100): torch's -(t log p + (1 - t) log(1 - p)), each log
    clamped at -100 (log(1 - p) as log1p(-p), as torch computes it)."""
    floor = _k(g, -100.0, dtype)
    log_p = g.op("Max", [g.op("Log", [x]), floor])
    log_q = g.op("Max", [_log1p(g, g.op("Neg", [x]), dtype), floor])
    return g.op("Sub", [g.op("Mul", [g.op("Sub", [t, _k(g, 1.0, dtype)]), log_q]), g.op("Mul", [t, log_p])])


def _bce_logits_elem(g, x, t, n, dtype):
    """max(x, 0) - x t + log(1 + exp(-|x|)): the numerically stable form of bce(sigmoid(x), t)."""
    relu = g.op("Max", [x, _k(g, 0.0, dtype)])
    # log1p, not Softplus: onnxruntime's float64 Softplus loses precision for very negative inputs
    tail = _log1p(g, g.op("Exp", [g.op("Neg", [g.op("Abs", [x])])]), dtype)
    return g.op("Add", [g.op("Sub", [relu, g.op("Mul", [x, t])]), tail])


# ---------------------------------------------------------------- drawing arguments

def _draw_target(d, shape, dtype: str, values=None, constants=(Fill(1.0), Fill(0.0))):
    """Mostly a tensor target, sometimes a constant one (`ones`, `zeros`, a number)."""
    if constants and d.int(0, 3) == 0:
        return d.choice(constants)
    return S(*shape, dtype=dtype, values=values)


# ---------------------------------------------------------------- prediction vs target, elementwise

def _elementwise_loss(name: str, torch_fn: str, doc: str, elem, settings: tuple = (), draw_settings=None,
                      pred_values=None, target_values=None, target_bounds=None, constants=(Fill(1.0), Fill(0.0)),
                      weighted: bool = False, expects: str = ""):
    """mse, l1, smooth_l1, huber, bce, bce_with_logits: equal shapes, "none" keeps that shape.
    `weighted`: it takes torch's `weight=` (bce, bce_with_logits)."""
    kw_names = tuple(p.name for p in settings) + ("reduction",)

    def infer(b):
        p = _float_tensor(b, name, "input")
        _paired_target(b, name, bounds=target_bounds)
        if weighted:
            _element_weight(b, name, p)
        return _reduced(b, p.shape, p.dtype)

    def draw(d):
        shape, dtype = d.shape(0, 3, 1, 4), d.choice(["float32", "float64"])
        args = {"input": S(*shape, dtype=dtype, values=pred_values),
                "target": _draw_target(d, shape, dtype, target_values, constants),
                "reduction": d.choice(REDUCTIONS)}
        if weighted:
            args["weight"] = d.choice([None, (2.0,), S(*shape, dtype=dtype, values=(0, 3))] +
                                      ([tuple(float(i + 1) for i in range(shape[-1]))] if shape else []))
        return Example({**args, **(draw_settings(d) if draw_settings else {})})

    register(OpDef(
        name=name, kind="loss", family="loss", doc=doc, expects=expects,
        params=(ParamSpec("input", TENSOR), ParamSpec("target", TENSOR_OR_SCALAR)) + settings + (_reduction(),) +
        ((_weight_param(_ELEMENT_WEIGHT),) if weighted else ()),
        infer=infer,
        torch=TorchFunction(lambda e: f"{torch_fn}({e.arg('input')}, {_target_src(e)}{_weight_src(e)}"
                                      f"{_kws(e, kw_names)})"),
        onnx=_elementwise_onnx(elem),
        examples=_elementwise_examples(pred_values, target_values, weighted),
        arbitrary=draw,
    ))


def _elementwise_examples(pred_values, target_values, weighted: bool) -> tuple:
    out = (Example({"input": S(2, 3, values=pred_values), "target": S(2, 3, values=target_values)}),
           Example({"input": S(4, 5, 2, values=pred_values), "target": S(4, 5, 2, values=target_values),
                    "reduction": "none"}),
           Example({"input": S(3, 1, values=pred_values), "target": Fill(1.0), "reduction": "sum"}),
           Example({"input": S(2, 3, values=pred_values), "target": Fill(0.0)}))
    if not weighted:
        return out
    return out + (Example({"input": S(4, 3, values=pred_values), "target": S(4, 3, values=target_values),
                           "weight": (1.0, 2.0, 0.5)}),
                  Example({"input": S(5, values=pred_values), "target": S(5, values=target_values),
                           "weight": S(5, values=(0, 3)), "reduction": "sum"}))


_BROADCAST_NOTE = " Shapes must be equal (torch would broadcast; dslc rejects that as a likely bug)."

_elementwise_loss("mse", "F.mse_loss", "mean((input - target)²)." + _BROADCAST_NOTE, _mse_elem)
_elementwise_loss("l1", "F.l1_loss", "mean(|input - target|)." + _BROADCAST_NOTE, _l1_elem)
_elementwise_loss(
    "smooth_l1", "F.smooth_l1_loss",
    "mean(0.5 d² / beta if |d| < beta else |d| - 0.5 beta), d = input - target." + _BROADCAST_NOTE,
    _smooth_l1_elem,
    settings=(ParamSpec("beta", FLOAT, 1.0, checks.non_negative_number),),
    draw_settings=lambda d: {"beta": d.choice([1.0, 0.5, 0.0])})
_elementwise_loss(
    "huber", "F.huber_loss",
    "mean(0.5 d² if |d| < delta else delta (|d| - 0.5 delta)), d = input - target." + _BROADCAST_NOTE,
    _huber_elem,
    settings=(ParamSpec("delta", FLOAT, 1.0, checks.positive_number),),
    draw_settings=lambda d: {"delta": d.choice([1.0, 0.5, 2.0])})
# bce takes probabilities (after a sigmoid); its targets lie in [0, 1]. Prefer bce_with_logits.
_elementwise_loss(
    "bce", "F.binary_cross_entropy",
    "mean(-(t log p + (1 - t) log(1 - p))) for probabilities p = input." + _BROADCAST_NOTE,
    _bce_elem,
    pred_values=(0.01, 0.99), target_values=(0, 1), target_bounds=(0.0, 1.0),
    constants=(Fill(1.0), Fill(0.0), 0.9), weighted=True, expects="probabilities")
_elementwise_loss(
    "bce_with_logits", "F.binary_cross_entropy_with_logits",
    "mean(-(t log σ(x) + (1 - t) log(1 - σ(x)))) for logits x = input (numerically stable)." + _BROADCAST_NOTE,
    _bce_logits_elem,
    target_values=(0, 1), target_bounds=(0.0, 1.0), constants=(Fill(1.0), Fill(0.0), 0.9), weighted=True,
    expects="logits")


# ---------------------------------------------------------------- classification

def _ce_infer(b):
    logits = _float_tensor(b, "cross_entropy", "input")
    _need_rank("cross_entropy", logits, "input", at_least=2)
    target = _no_constant(b, "cross_entropy").type
    if target.is_float and _equal_shapes(target.shape, logits.shape[:1] + logits.shape[2:]):
        raise ShapeError(f"`cross_entropy` takes class ids (int64, {TensorType(target.shape).shape_str()}) or "
                         f"probabilities (float, {logits.shape_str()}), and this target is {target.dtype} "
                         f"{target.shape_str()}", code="E0310", arg="target", label=f"this is {target}",
                         help="class ids are int64: cast them with `long(...)`")
    if target.is_float:
        # Class probabilities (soft labels): the logits' shape, one loss per [N, d1...] position.
        _need_same("cross_entropy", logits, target, "input", "target")
        if plain(b["ignore_index"]) != -100:
            raise ShapeError("`cross_entropy`'s `ignore_index` applies to class ids, not to probability targets",
                             code="E0302", arg="ignore_index")
        shape = logits.shape[:1] + logits.shape[2:]
    else:
        shape = _class_ids("cross_entropy", logits, target, "input", "target")
    _class_weight(b, "cross_entropy", logits)
    return _reduced(b, shape, logits.dtype)


def _draw_ce(d):
    n, c, extra = d.int(1, 4), d.int(1, 5), d.shape(0, 2, 1, 3)
    dtype = d.choice(["float32", "float64"])
    probs = d.bool()
    target = S(n, c, *extra, dtype=dtype, values=(0, 1)) if probs else S(n, *extra, dtype="int64", values=(0, c))
    return Example({"input": S(n, c, *extra, dtype=dtype), "target": target,
                    "label_smoothing": d.choice([0.0, 0.1, 1.0]),
                    "ignore_index": -100 if probs else d.choice([-100, 0]),
                    "weight": d.choice([None, tuple(float(i % 3 + 1) for i in range(c)),
                                        S(c, dtype=dtype, values=(0.5, 2))]),
                    "reduction": d.choice(REDUCTIONS)})


def _ce_onnx(g, n):
    """cross_entropy over class dim 1: class ids or probability targets, with label smoothing."""
    if n.type_of("target").is_float:
        return [_ce_probs_onnx(g, n)]
    if float(n["label_smoothing"]) == 0.0:
        weight = _weight_onnx(g, n, per_class=True)
        return [g.op("SoftmaxCrossEntropyLoss", [n.tensor("input"), n.tensor("target"), weight],
                     reduction=n["reduction"], ignore_index=int(n["ignore_index"]))]
    return [_ce_smoothed_ids_onnx(g, n)]


def _along_classes(g, weight: str, rank: int) -> str:
    """Class weights [C] as [1, C, 1...], to multiply [N, C, d1...] log-probabilities."""
    return g.op("Reshape", [weight, g.ints([1, -1] + [1] * (rank - 2))])


def _ce_probs_onnx(g, n) -> str:
    """-Σ_c t' log_softmax(x) over dim 1, t' = t (1 - ε) + ε / C; mean over the [N, d1...] positions."""
    x, t, xt = n.tensor("input"), n.tensor("target"), n.type_of("input")
    eps = float(n["label_smoothing"])
    if eps > 0.0:
        t = g.op("Add", [g.op("Mul", [t, _k(g, 1.0 - eps, xt.dtype)]), _per_class_onnx(g, eps, x, xt)])
    logp = g.op("LogSoftmax", [x], axis=1)
    weight = _weight_onnx(g, n, per_class=True)
    if weight is not None:   # torch: -Σ_c w_c t_c log p_c, and "mean" still over the positions
        logp = g.op("Mul", [logp, _along_classes(g, weight, xt.rank)])
    loss = g.op("Neg", [g.op("ReduceSum", [g.op("Mul", [logp, t]), g.ints([1])], keepdims=0)])
    return _reduce_onnx(g, loss, n["reduction"])


def _ce_smoothed_ids_onnx(g, n) -> str:
    """(1 - ε) nll(log_softmax(x), t) + ε / C · (-Σ_c w_c log_softmax(x)_c) with ignored targets' terms 0,
    each reduced like torch: "mean" is the sum over the non-ignored targets divided by their count, or by
    the sum of their classes' weights w[t] when there are weights."""
    x, t, xt = n.tensor("input"), n.tensor("target"), n.type_of("input")
    eps, reduction, ignore = float(n["label_smoothing"]), n["reduction"], int(n["ignore_index"])
    logp = g.op("LogSoftmax", [x], axis=1)
    weight = _weight_onnx(g, n, per_class=True)
    nll = _nll_onnx(g, logp, t, reduction, ignore, xt.dtype, weight)
    ignored = g.op("Equal", [t, g.const(ignore, "int64")])
    weighted = g.op("Mul", [logp, _along_classes(g, weight, xt.rank)]) if weight is not None else logp
    smooth = g.op("Neg", [g.op("ReduceSum", [weighted, g.ints([1])], keepdims=0)])
    smooth = g.op("Where", [ignored, _k(g, 0.0, xt.dtype), smooth])
    if reduction != "none":
        smooth = g.op("ReduceSum", [smooth], keepdims=0)
    if reduction == "mean":
        kept = g.cast(g.op("Not", [ignored]), xt.dtype)
        if weight is not None:   # w[t] of the kept targets (an ignored id may lie outside the classes)
            kept = g.op("Mul", [kept, g.op("Gather", [weight, g.op("Where", [ignored, g.const(0, "int64"), t])])])
        smooth = g.op("Div", [smooth, g.op("ReduceSum", [kept], keepdims=0)])
    return g.op("Add", [g.op("Mul", [_k(g, 1.0 - eps, xt.dtype), nll]),
                        g.op("Mul", [smooth, _per_class_onnx(g, eps, x, xt)])])


register(OpDef(
    name="cross_entropy", kind="loss", family="loss",
    doc="mean(-log softmax(input)[target]) over class dim 1 of [N, C, d1...] logits; the target is int64 "
        "class ids [N, d1...] or probabilities shaped like the input (label_smoothing mixes in uniform).",
    params=(ParamSpec("input", TENSOR), ParamSpec("target", TENSOR_OR_SCALAR),
            ParamSpec("label_smoothing", FLOAT, 0.0, checks.probability), ParamSpec("ignore_index", INT, -100),
            _reduction(), _weight_param(_CLASS_WEIGHT)),
    infer=_ce_infer, dtypes=CLASS_ID_DTYPES, expects="logits",
    torch=TorchFunction(lambda e: f"F.cross_entropy({e.arg('input')}, {e.arg('target')}{_weight_src(e, per_class=True)}"
                                  f"{_kws(e, ('label_smoothing', 'ignore_index', 'reduction'))})"),
    onnx=_ce_onnx,
    examples=(Example({"input": S(4, 10), "target": S(4, dtype="int64", values=(0, 10))}),
              Example({"input": S(2, 5, 3, 3), "target": S(2, 3, 3, dtype="int64", values=(0, 5)),
                       "reduction": "none"}),
              Example({"input": S(3, 4), "target": S(3, 4, values=(0, 1)), "label_smoothing": 0.1}),
              Example({"input": S(4, 3), "target": S(4, dtype="int64", values=(0, 3)), "ignore_index": 0,
                       "reduction": "sum"}),
              Example({"input": S(6, 3), "target": S(6, dtype="int64", values=(0, 3)), "weight": (1.0, 3.0, 0.5)}),
              Example({"input": S(5, 4, 2), "target": S(5, 2, dtype="int64", values=(0, 4)), "weight": S(4, values=(0.5, 2)),
                       "label_smoothing": 0.2, "ignore_index": 1}),
              Example({"input": S(3, 4), "target": S(3, 4, values=(0, 1)), "weight": (1.0, 2.0, 3.0, 4.0),
                       "label_smoothing": 0.1, "reduction": "sum"})),
    arbitrary=_draw_ce,
))


def _nll_infer(b):
    logp = _float_tensor(b, "nll", "input")
    _need_rank("nll", logp, "input", at_least=2)
    shape = _class_ids("nll", logp, _no_constant(b, "nll").type, "input", "target")
    _class_weight(b, "nll", logp)
    return _reduced(b, shape, logp.dtype)


def _nll_loss_onnx(g, n):
    """-input[n, target[n], d1...], 0 where target = ignore_index; "mean" over the non-ignored targets."""
    return [_nll_onnx(g, n.tensor("input"), n.tensor("target"), n["reduction"], int(n["ignore_index"]),
                      n.type_of("input").dtype, _weight_onnx(g, n, per_class=True))]


register(OpDef(
    name="nll", kind="loss", family="loss",
    doc="mean(-input[n, target[n]]) for log-probabilities [N, C, d1...] (after log_softmax) and int64 "
        "class ids [N, d1...].",
    params=(ParamSpec("input", TENSOR), ParamSpec("target", TENSOR_OR_SCALAR), ParamSpec("ignore_index", INT, -100),
            _reduction(), _weight_param(_CLASS_WEIGHT)),
    infer=_nll_infer, dtypes=CLASS_ID_DTYPES, expects="log_probabilities",
    torch=TorchFunction(lambda e: f"F.nll_loss({e.arg('input')}, {e.arg('target')}{_weight_src(e, per_class=True)}"
                                  f"{_kws(e, ('ignore_index', 'reduction'))})"),
    onnx=_nll_loss_onnx,
    examples=(Example({"input": S(4, 10), "target": S(4, dtype="int64", values=(0, 10))}),
              Example({"input": S(2, 3, 5), "target": S(2, 5, dtype="int64", values=(0, 3)), "reduction": "none"}),
              Example({"input": S(6, 3), "target": S(6, dtype="int64", values=(0, 3)), "weight": (2.0, 1.0, 0.25),
                       "ignore_index": 2})),
    arbitrary=lambda d: (lambda n, c, extra: Example({
        "input": S(n, c, *extra), "target": S(n, *extra, dtype="int64", values=(0, c)),
        "weight": d.choice([None, tuple(float(i % 3 + 1) for i in range(c))]),
        "ignore_index": d.choice([-100, 0]), "reduction": d.choice(REDUCTIONS)}))(
        d.int(1, 4), d.int(1, 5), d.shape(0, 2, 1, 3)),
))


# ---------------------------------------------------------------- divergences

def _kl_div_infer(b):
    p = _float_tensor(b, "kl_div", "input")
    _paired_target(b, "kl_div")
    return _reduced(b, p.shape, p.dtype)


def _kl_div_src(e) -> str:
    # Our default, "batchmean", is not torch's, so the reduction is always printed. torch deprecates "mean"
    # for KL (it warns, and will make it mean "batchmean"), so the elementwise mean is written out.
    red = e.args["reduction"]
    call = f"F.kl_div({e.arg('input')}, {_target_src(e)}, reduction={e.fmt('none' if red == 'mean' else red)}" \
           f"{e.kw('log_target')})"
    return f"{call}.mean()" if red == "mean" else call


def _kl_div_onnx(g, n):
    """t (log t - input) as xlogy(t, t) - t input (0 where t = 0), or exp(t) (t - input) with log_target;
    then batchmean (sum / N), mean, sum or none."""
    x, xt = n.tensor("input"), n.type_of("input")
    t = _target_onnx(g, n)
    if n["log_target"]:
        loss = g.op("Mul", [g.op("Exp", [t]), g.op("Sub", [t, x])])
    else:
        loss = g.op("Sub", [_xlogy_self(g, t, xt.dtype), g.op("Mul", [t, x])])
    if n["reduction"] != "batchmean":
        return [_reduce_onnx(g, loss, n["reduction"])]
    total = _reduce_onnx(g, loss, "sum")
    return [total if xt.rank == 0 else g.op("Div", [total, _size_onnx(g, x, xt, 0)])]


register(OpDef(
    name="kl_div", kind="loss", family="loss",
    doc="sum(target (log target - input)) / N: KL(target || exp(input)) for log-probabilities `input` and "
        "probabilities `target` (log-probabilities with log_target); default reduction \"batchmean\" is the "
        "true KL per sample (torch's own default, \"mean\", also divides by the class count)." + _BROADCAST_NOTE,
    params=(ParamSpec("input", TENSOR), ParamSpec("target", TENSOR_OR_SCALAR), ParamSpec("log_target", BOOL, False),
            _reduction("batchmean", REDUCTIONS + ("batchmean",))),
    infer=_kl_div_infer,
    torch=TorchFunction(_kl_div_src),
    onnx=_kl_div_onnx,
    examples=(Example({"input": S(4, 5), "target": S(4, 5, values=(0, 1))}),
              Example({"input": S(2, 3, 4), "target": S(2, 3, 4), "log_target": True, "reduction": "none"}),
              Example({"input": S(3, 4), "target": S(3, 4, values=(0, 1)), "reduction": "mean"}),
              Example({"input": S(3, 4), "target": S(3, 4, values=(0, 1)), "reduction": "sum"})),
    arbitrary=lambda d: (lambda s, log: Example({
        "input": S(*s), "target": S(*s, values=None if log else (0, 1)), "log_target": log,
        "reduction": d.choice(REDUCTIONS + ("batchmean",))}))(d.shape(1, 3, 1, 4), d.bool()),
))


def _kl_normal_infer(b):
    mu, log_var = _float_tensor(b, "kl_normal", "mu"), _float_tensor(b, "kl_normal", "log_var")
    _need_rank("kl_normal", mu, "mu", at_least=1)
    _need_same("kl_normal", mu, log_var, "mu", "log_var")
    return _reduced(b, mu.shape, mu.dtype)


def _kl_normal_src(e) -> str:
    # Written out as in the PyTorch VAE example: -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp()).
    mu, lv = e.arg("mu"), e.arg("log_var")
    terms = f"1 + {lv} - {mu}.pow(2) - {lv}.exp()"
    red = e.args["reduction"]
    if red == "none":
        return f"-0.5 * ({terms})"
    total = f"-0.5 * torch.sum({terms})"
    return total if red == "sum" else f"{total} / {mu}.shape[0]"


def _kl_normal_onnx(g, n):
    """-0.5 (1 + log_var - mu² - exp(log_var)): elementwise, summed, or summed and divided by mu.shape[0]."""
    mu, lv, t = n.tensor("mu"), n.tensor("log_var"), n.type_of("mu")
    terms = g.op("Sub", [g.op("Sub", [g.op("Add", [_k(g, 1.0, t.dtype), lv]), g.op("Mul", [mu, mu])]),
                         g.op("Exp", [lv])])
    red = n["reduction"]
    if red == "none":
        return [g.op("Mul", [_k(g, -0.5, t.dtype), terms])]
    total = g.op("Mul", [_k(g, -0.5, t.dtype), _reduce_onnx(g, terms, "sum")])
    return [total if red == "sum" else g.op("Div", [total, _size_onnx(g, mu, t, 0)])]


register(OpDef(
    name="kl_normal", kind="loss", family="loss",
    doc="-0.5 * sum(1 + log_var - mu² - exp(log_var)): KL(N(mu, exp(log_var)) || N(0, 1)) of a VAE's "
        "posterior. The default reduction is \"sum\" because the standard VAE loss adds it to "
        "`bce(recon, x, reduction=\"sum\")` (both summed over the batch, as in the PyTorch example); \"mean\" "
        "is the batch mean of per-sample sums, \"none\" the elementwise terms.",
    params=(ParamSpec("mu", TENSOR), ParamSpec("log_var", TENSOR), _reduction("sum")),
    infer=_kl_normal_infer,
    torch=TorchFunction(_kl_normal_src),
    onnx=_kl_normal_onnx,
    examples=(Example({"mu": S(4, 8), "log_var": S(4, 8)}),
              Example({"mu": S(2, 3, 4), "log_var": S(2, 3, 4), "reduction": "mean"}),
              Example({"mu": S(3, 5), "log_var": S(3, 5), "reduction": "none"})),
    arbitrary=lambda d: (lambda s, dt: Example({"mu": S(*s, dtype=dt), "log_var": S(*s, dtype=dt),
                                                "reduction": d.choice(REDUCTIONS)}))(
        d.shape(1, 3, 1, 4), d.choice(["float32", "float64"])),
))


# ---------------------------------------------------------------- contrastive and metric losses

helper("nt_xent_loss", '''
    def nt_xent_loss(z1, z2, temperature: float = 0.5):
        """SimCLR's NT-Xent: each of the 2N embeddings must pick its other view among the rest."""
        z = F.normalize(torch.cat([z1, z2]), dim=1)
        sim = z @ z.t() / temperature
        self_pairs = torch.eye(sim.shape[0], dtype=torch.bool, device=sim.device)
        sim = sim.masked_fill(self_pairs, float("-inf"))
        n = z1.shape[0]
        positives = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(sim.device)
        return F.cross_entropy(sim, positives)
''')


def _nt_xent_infer(b):
    z1, z2 = _float_tensor(b, "nt_xent", "z1"), _float_tensor(b, "nt_xent", "z2")
    _need_rank("nt_xent", z1, "z1", ranks=(2,))
    _need_rank("nt_xent", z2, "z2", ranks=(2,))
    _need_same("nt_xent", z1, z2, "z1", "z2")
    return [TensorType((), z1.dtype)]


def _nt_xent_onnx(g, n):
    """z = normalize(cat(z1, z2)); sim = z zᵀ / T with -inf on the diagonal; cross_entropy(sim, i ± N)."""
    z1, z2, dtype = n.tensor("z1"), n.tensor("z2"), n.type_of("z1").dtype
    z = g.op("Concat", [z1, z2], axis=0)
    norm = g.op("Max", [g.op("ReduceL2", [z, g.ints([1])], keepdims=1), _k(g, 1e-12, dtype)])  # F.normalize
    z = g.op("Div", [z, norm])
    sim = g.op("Div", [g.op("MatMul", [z, g.op("Transpose", [z], perm=[1, 0])]),
                       _k(g, float(n["temperature"]), dtype)])
    first, one = g.const(0, "int64"), g.const(1, "int64")
    half = g.op("Gather", [g.op("Shape", [z1]), first])
    rows = g.op("Gather", [g.op("Shape", [sim]), first])
    index = g.op("Range", [first, rows, one])
    self_pairs = g.op("Equal", [g.op("Unsqueeze", [index, g.ints([1])]), g.op("Unsqueeze", [index, g.ints([0])])])
    sim = g.op("Where", [self_pairs, _k(g, float("-inf"), dtype), sim])
    positives = g.op("Concat", [g.op("Range", [half, rows, one]), g.op("Range", [first, half, one])], axis=0)
    return [g.op("SoftmaxCrossEntropyLoss", [sim, positives], reduction="mean")]


register(OpDef(
    name="nt_xent", kind="loss", family="loss",
    doc="mean over the 2N rows i of -log(exp(s(i, j)/T) / sum_{k≠i} exp(s(i, k)/T)), s = cosine similarity, "
        "j = i's other view (i ± N): SimCLR's loss for two views z1, z2 of [N, D] embeddings.",
    params=(ParamSpec("z1", TENSOR), ParamSpec("z2", TENSOR),
            ParamSpec("temperature", FLOAT, 0.5, checks.positive_number)),
    infer=_nt_xent_infer,
    torch=TorchFunction(lambda e: f"nt_xent_loss({e.arg('z1')}, {e.arg('z2')}{e.kw('temperature')})",
                        helpers=("nt_xent_loss",)),
    onnx=_nt_xent_onnx,
    examples=(Example({"z1": S(4, 8), "z2": S(4, 8)}), Example({"z1": S(2, 3), "z2": S(2, 3), "temperature": 0.1})),
    arbitrary=lambda d: (lambda n, k: Example({"z1": S(n, k), "z2": S(n, k),
                                               "temperature": d.choice([0.5, 0.1, 1.0])}))(d.int(1, 4), d.int(1, 5)),
))


def _cosine_infer(b):
    x1, x2 = _float_tensor(b, "cosine_embedding", "x1"), _float_tensor(b, "cosine_embedding", "x2")
    _need_rank("cosine_embedding", x1, "x1", ranks=(1, 2))
    _need_same("cosine_embedding", x1, x2, "x1", "x2")
    per_pair = TensorType(x1.shape[:-1], x1.dtype)
    v = b["target"]
    if isinstance(v, TensorValue):
        if not _equal_shapes(per_pair.shape, v.type.shape):
            raise ShapeError(f"`cosine_embedding` needs one target per pair: {per_pair.shape_str()} for `x1` "
                             f"{x1.shape_str()}, got {v.type.shape_str()}", code="E0403", arg="target",
                             label="shapes differ")
        _need_same_dtype("cosine_embedding", x1, v.type, "x1", "target")
    elif _constant(v) not in (1.0, -1.0):
        raise ShapeError(f"`cosine_embedding`'s `target` is 1 (similar) or -1 (dissimilar), got {_constant(v)!r}",
                         code="E0302", arg="target")
    return _reduced(b, per_pair.shape, x1.dtype)


def _cosine_target_src(e) -> str:
    # One target per pair: x1's shape without the embedding dimension.
    v = e.args["target"]
    if isinstance(v, TensorValue):
        return e.arg("target")
    x1 = e.arg("x1")
    return f"{x1}.new_ones({x1}.shape[:-1])" if _constant(v) == 1.0 else f"{x1}.new_full({x1}.shape[:-1], -1.0)"


_COSINE_EPS = 9.999999960041972e-13   # torch's EPSILON is the float 1e-12f, also in float64 arithmetic


def _cosine_onnx(g, n):
    """cos = Σ x1 x2 / sqrt((Σ x1² + 1e-12)(Σ x2² + 1e-12)) over the last dim; 1 - cos where target = 1,
    max(0, cos - margin) where target = -1, 0 elsewhere (torch's kernel)."""
    x1, x2, dtype = n.tensor("x1"), n.tensor("x2"), n.type_of("x1").dtype
    target = n.tensor("target")
    if target is None:  # one constant ±1 per pair: x1's shape without its last dimension
        target = _fill(g, _constant(n["target"]), g.op("Shape", [x1], end=-1), dtype)
    eps, zero = _k(g, _COSINE_EPS, dtype), _k(g, 0.0, dtype)
    prod = _sum_last(g, g.op("Mul", [x1, x2]))
    mag1 = g.op("Add", [_sum_last(g, g.op("Mul", [x1, x1])), eps])
    mag2 = g.op("Add", [_sum_last(g, g.op("Mul", [x2, x2])), eps])
    cos = g.op("Div", [prod, g.op("Sqrt", [g.op("Mul", [mag1, mag2])])])
    pos = g.op("Sub", [_k(g, 1.0, dtype), cos])
    neg = g.op("Max", [g.op("Sub", [cos, _k(g, float(n["margin"]), dtype)]), zero])
    out_pos = g.op("Where", [g.op("Equal", [target, _k(g, 1.0, dtype)]), pos, zero])
    out_neg = g.op("Where", [g.op("Equal", [target, _k(g, -1.0, dtype)]), neg, zero])
    return [_reduce_onnx(g, g.op("Add", [out_pos, out_neg]), n["reduction"])]


register(OpDef(
    name="cosine_embedding", kind="loss", family="loss",
    doc="mean(1 - cos(x1, x2) where target = 1, max(0, cos(x1, x2) - margin) where target = -1) over "
        "[N, D] pairs; target is ±1 floats [N] (or `ones`).",
    params=(ParamSpec("x1", TENSOR), ParamSpec("x2", TENSOR), ParamSpec("target", TENSOR_OR_SCALAR),
            ParamSpec("margin", FLOAT, 0.0, lambda v: None if -1 <= plain_float(v) <= 1 else "must lie in [-1, 1]"),
            _reduction()),
    infer=_cosine_infer,
    torch=TorchFunction(lambda e: f"F.cosine_embedding_loss({e.arg('x1')}, {e.arg('x2')}, {_cosine_target_src(e)}"
                                  f"{_kws(e, ('margin', 'reduction'))})"),
    onnx=_cosine_onnx,
    examples=(Example({"x1": S(4, 8), "x2": S(4, 8), "target": S(4, values=(-1, 1))}),
              Example({"x1": S(3, 5), "x2": S(3, 5), "target": Fill(1.0), "margin": 0.5, "reduction": "none"}),
              Example({"x1": S(6), "x2": S(6), "target": -1, "reduction": "sum"})),
    arbitrary=lambda d: (lambda s: Example({
        "x1": S(*s), "x2": S(*s), "target": d.choice([S(*s[:-1], values=(-1, 1)), Fill(1.0), -1]),
        "margin": d.choice([0.0, 0.5, -0.2]), "reduction": d.choice(REDUCTIONS)}))(d.shape(1, 2, 1, 4)),
))


def _triplet_infer(b):
    names = ("anchor", "positive", "negative")
    a, p, n = (_float_tensor(b, "triplet_margin", k) for k in names)
    _need_rank("triplet_margin", a, "anchor", ranks=(1, 2))
    _need_same("triplet_margin", a, p, "anchor", "positive")
    _need_same("triplet_margin", a, n, "anchor", "negative")
    return _reduced(b, a.shape[:-1], a.dtype)


def _pairwise_distance_onnx(g, a: str, b: str, p: float, dtype: str) -> str:
    """torch's pairwise_distance: ‖a - b + 1e-6‖_p over the last dimension."""
    d = g.op("Add", [g.op("Sub", [a, b]), _k(g, 1e-6, dtype)])
    if p == 2.0:
        return _sum_last(g, d, "ReduceL2")
    if p == 1.0:
        return _sum_last(g, d, "ReduceL1")
    if p == float("inf"):
        return _sum_last(g, g.op("Abs", [d]), "ReduceMax")
    powered = g.op("Pow", [g.op("Abs", [d]), _k(g, p, dtype)])
    return g.op("Pow", [_sum_last(g, powered), _k(g, 1.0 / p, dtype)])


def _triplet_onnx(g, n):
    """max(0, margin + ‖a - p + eps‖_p - ‖a - n + eps‖_p), then the reduction."""
    a, dtype, p = n.tensor("anchor"), n.type_of("anchor").dtype, float(n["p"])
    d_pos = _pairwise_distance_onnx(g, a, n.tensor("positive"), p, dtype)
    d_neg = _pairwise_distance_onnx(g, a, n.tensor("negative"), p, dtype)
    gap = g.op("Sub", [g.op("Add", [_k(g, float(n["margin"]), dtype), d_pos]), d_neg])
    return [_reduce_onnx(g, g.op("Max", [gap, _k(g, 0.0, dtype)]), n["reduction"])]


register(OpDef(
    name="triplet_margin", kind="loss", family="loss",
    doc="mean(max(0, ‖anchor - positive‖_p - ‖anchor - negative‖_p + margin)) over [N, D] embeddings.",
    params=(ParamSpec("anchor", TENSOR), ParamSpec("positive", TENSOR), ParamSpec("negative", TENSOR),
            ParamSpec("margin", FLOAT, 1.0, checks.positive_number), ParamSpec("p", FLOAT, 2.0, checks.positive_number),
            _reduction()),
    infer=_triplet_infer,
    torch=TorchFunction(lambda e: f"F.triplet_margin_loss({e.arg('anchor')}, {e.arg('positive')}, "
                                  f"{e.arg('negative')}{_kws(e, ('margin', 'p', 'reduction'))})"),
    onnx=_triplet_onnx,
    examples=(Example({"anchor": S(4, 8), "positive": S(4, 8), "negative": S(4, 8)}),
              Example({"anchor": S(3, 5), "positive": S(3, 5), "negative": S(3, 5), "margin": 0.5, "p": 1.0,
                       "reduction": "none"})),
    arbitrary=lambda d: (lambda s: Example({
        "anchor": S(*s), "positive": S(*s), "negative": S(*s), "margin": d.choice([1.0, 0.2]),
        "p": d.choice([2.0, 1.0, 3.0]), "reduction": d.choice(REDUCTIONS)}))(d.shape(1, 2, 1, 4)),
))


# ---------------------------------------------------------------- knowledge distillation

helper("distillation_loss", '''
    def distillation_loss(student, teacher, target, temperature: float = 4.0, alpha: float = 0.5):
        """Hinton et al.: the teacher's softened outputs (scaled by T² to keep gradients comparable)
        mixed with the usual cross-entropy on the labels."""
        soft = F.kl_div(F.log_softmax(student / temperature, dim=1), F.softmax(teacher / temperature, dim=1),
                        reduction="batchmean")
        hard = F.cross_entropy(student, target)
        return alpha * temperature ** 2 * soft + (1 - alpha) * hard
''')


def _distillation_infer(b):
    s, t = _float_tensor(b, "distillation", "student"), _float_tensor(b, "distillation", "teacher")
    _need_rank("distillation", s, "student", ranks=(2,))
    _need_same("distillation", s, t, "student", "teacher")
    _class_ids("distillation", s, _no_constant(b, "distillation").type, "student", "target")
    return [TensorType((), s.dtype)]


def _distillation_onnx(g, n):
    """alpha T² Σ(xlogy(q, q) - q log_softmax(s / T)) / N + (1 - alpha) cross_entropy(s, target),
    q = softmax(t / T): the helper's kl_div (batchmean) and cross_entropy written out."""
    s, t, st = n.tensor("student"), n.tensor("teacher"), n.type_of("student")
    temp, alpha = float(n["temperature"]), float(n["alpha"])
    log_p = g.op("LogSoftmax", [g.op("Div", [s, _k(g, temp, st.dtype)])], axis=1)
    q = g.op("Softmax", [g.op("Div", [t, _k(g, temp, st.dtype)])], axis=1)
    kl = g.op("Sub", [_xlogy_self(g, q, st.dtype), g.op("Mul", [q, log_p])])
    soft = g.op("Div", [_reduce_onnx(g, kl, "sum"), _size_onnx(g, s, st, 0)])
    hard = g.op("SoftmaxCrossEntropyLoss", [s, n.tensor("target")], reduction="mean", ignore_index=-100)
    return [g.op("Add", [g.op("Mul", [_k(g, alpha * temp ** 2, st.dtype), soft]),
                         g.op("Mul", [_k(g, 1 - alpha, st.dtype), hard])])]


register(OpDef(
    name="distillation", kind="loss", family="loss",
    doc="alpha T² KL(softmax(teacher/T) || softmax(student/T)) (batchmean) + (1 - alpha) cross_entropy(student, "
        "target) for [N, C] logits (Hinton et al.). The teacher is not detached: pass `detach(teacher(x))` "
        "or freeze it.",
    params=(ParamSpec("student", TENSOR), ParamSpec("teacher", TENSOR), ParamSpec("target", TENSOR_OR_SCALAR),
            ParamSpec("temperature", FLOAT, 4.0, checks.positive_number),
            ParamSpec("alpha", FLOAT, 0.5, checks.probability)),
    infer=_distillation_infer, dtypes=CLASS_ID_DTYPES,
    torch=TorchFunction(lambda e: f"distillation_loss({e.arg('student')}, {e.arg('teacher')}, {e.arg('target')}"
                                  f"{_kws(e, ('temperature', 'alpha'))})", helpers=("distillation_loss",)),
    onnx=_distillation_onnx,
    examples=(Example({"student": S(4, 10), "teacher": S(4, 10), "target": S(4, dtype="int64", values=(0, 10))}),
              Example({"student": S(2, 3), "teacher": S(2, 3), "target": S(2, dtype="int64", values=(0, 3)),
                       "temperature": 2.0, "alpha": 0.9})),
    arbitrary=lambda d: (lambda n, c: Example({
        "student": S(n, c), "teacher": S(n, c), "target": S(n, dtype="int64", values=(0, c)),
        "temperature": d.choice([4.0, 1.0, 2.5]), "alpha": d.choice([0.5, 0.0, 1.0])}))(d.int(1, 4), d.int(1, 5)),
))

