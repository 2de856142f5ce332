"""Augmentations: one definition each, read by both forms a plan writes them in.

- the plan field `augment = [random_flip(), normalize(mean=[0.5], std=[0.5])]` (the catalog's
  AUGMENTS entries are made from these; the runtime applies them to each training batch), and
- `augment(batch.x, [random_resized_crop(size=[28, 28]), color_jitter(0.4, 0.4)])` inside a
  plan's step, the internal op `augment` below (generated code calls the same helpers).

Each augmentation is a module-level helper `augment_<name>(x, ..., generator=None)` written with
torch only (no torchvision); its random draws come from `generator` (a CPU torch.Generator: the
plan field's, seeded per batch) or, without one, from torch's default CPU generator, which the
trainer seeds and checkpoints (the step form, like `dropout` and `noise`). Every draw is made on
the CPU, so a run draws the same on any device. Draws are per example, as torchvision draws per
image. Random augmentations apply while training only; the deterministic ones (`normalize`,
`standardize`, `resize`, `center_crop`) on every batch, so evaluation sees the same sizes and scale.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..ir.dims import Sym, plain, plain_float
from ..ir.types import FLOAT_DTYPES, TensorType
from . import checks
from .ptypes import FLOAT, INT, TENSOR, ArgTypeError, ListOf, OneOf, Optional, PType, Str
from .registry import Example, OpDef, ParamSpec, S, ShapeError, TorchFunction, helper, register


@dataclass(frozen=True)
class Augmentation:
    name: str
    params: tuple[ParamSpec, ...]
    doc: str
    random: bool = True            # False: applied on every split, training or not
    rule: Callable | None = None   # (x TensorType, full args) -> problem str | None, beyond the common ones
    size: bool = False             # sets H and W to its `size`
    plan_only: bool = False        # only the plan field (`standardize`: figures of the training split)
    labels: bool = False           # mixes `batch.y` too (mixup, cutmix): one-hot soft targets [B, classes]

    @property
    def helper(self) -> str:
        return f"augment_{self.name}"


@dataclass(frozen=True)
class Aug:
    """One augmentation with its arguments (plain Python values), as the op `augment` holds it."""
    name: str
    args: tuple   # (name, value) pairs, in the order of its parameters; all of them

    @property
    def kwargs(self) -> dict:
        return dict(self.args)


def full_args(name: str, args: dict) -> dict:
    """Every parameter of the augmentation `name`: the given ones, defaults for the rest."""
    out = {p.name: p.default for p in AUGMENTATIONS[name].params if not p.required}
    out.update(args)
    return out


def to_plain(v):
    """A bound argument as plain Python: floats, ints, strings, None and tuples of them."""
    if isinstance(v, (list, tuple)):
        return tuple(to_plain(x) for x in v)
    if v is None or isinstance(v, (bool, str)):
        return v
    f = plain_float(v)
    return int(f) if isinstance(plain(v), int) and not isinstance(v, float) else f


def make(name: str, args: dict) -> Aug:
    full = full_args(name, args)
    return Aug(name, tuple((p.name, to_plain(full.get(p.name))) for p in AUGMENTATIONS[name].params))


# ---------------------------------------------------------------------- argument checks

def _pair(v) -> str | None:
    return None if len(v) == 2 and plain_float(v[0]) <= plain_float(v[1]) else "must be [low, high] with low <= high"


def _size(v) -> str | None:
    return None if len(v) == 2 and all(plain(s) > 0 for s in v) else "must be [H, W], two positive sizes"


def _scale_pair(v) -> str | None:
    return _pair(v) or (None if 0 < plain_float(v[0]) <= 1 and plain_float(v[1]) <= 1 else
                        "must be fractions of the image's area in (0, 1]")


def _ratio_pair(v) -> str | None:
    return _pair(v) or (None if plain_float(v[0]) > 0 else "must be positive")


def _strength(v) -> str | None:
    return checks.non_negative_number(v)


def _hue(v) -> str | None:
    return None if 0 <= plain_float(v) <= 0.5 else "must be between 0 and 0.5"


def _kernel(v) -> str | None:
    sizes = v if isinstance(v, (list, tuple)) else (v, v)
    return None if all(plain(k) > 0 and plain(k) % 2 == 1 for k in sizes) else "must be odd and positive"


def _sigma(v) -> str | None:
    lo_hi = v if isinstance(v, (list, tuple)) else (v, v)
    return _pair(lo_hi) or (None if plain_float(lo_hi[0]) > 0 else "must be positive")


def _degrees(v) -> str | None:
    if isinstance(v, (list, tuple)):
        return _pair(v)
    return checks.non_negative_number(v)


def _translate(v) -> str | None:
    if v is None:
        return None
    return None if len(v) == 2 and all(0 <= plain_float(t) <= 1 for t in v) else \
        "must be [a, b], fractions of the width and height in [0, 1]"


def _affine_scale(v) -> str | None:
    if v is None:
        return None
    return _pair(v) or (None if plain_float(v[0]) > 0 else "must be positive")


def _shear(v) -> str | None:
    if v is None or not isinstance(v, (list, tuple)):
        return None if v is None else checks.non_negative_number(v)
    if len(v) == 2:
        return _pair(v)
    if len(v) == 4:
        return _pair(v[:2]) or _pair(v[2:])
    return "must be a number, [low, high] (along x) or [x low, x high, y low, y high]"


def _value(v) -> str | None:
    return None if not isinstance(v, str) or v == "random" else 'must be a number or "random"'


def _not_empty(v) -> str | None:
    return None if v else "must not be empty"


def _positive_list(v) -> str | None:
    if not v:
        return "must not be empty"
    return "must be positive" if any(plain_float(x) <= 0 for x in v) else None


class _NumberOrWord(PType):
    """A number, or the word "random" (random_erasing's `value`)."""
    desc = 'a number or "random"'

    def convert(self, v):
        if isinstance(v, str):
            return v
        return FLOAT.convert(v)


PAIR = ListOf(FLOAT)
SIZE = ParamSpec("size", ListOf(INT), check=_size, doc="the output's [H, W]")


# ---------------------------------------------------------------------- shape rules

def _image(x: TensorType, name: str, where: str) -> str | None:
    if x.rank not in (3, 4):
        return f"`{name}` works on images [B, C, H, W] or [B, H, W], but {where} is {x}"
    return None


def _channels(x: TensorType, name: str, where: str) -> str | None:
    problem = _image(x, name, where)
    if problem or x.rank == 3:
        return problem
    c = x.shape[1]
    if isinstance(c, Sym) or plain(c) not in (1, 3):
        return f"`{name}` works on 1 (grey) or 3 (RGB) channels, but {where} is {x}"
    return None


def _flip_rule(x: TensorType, a: dict, where: str) -> str | None:
    dim = plain(a["dim"])
    if not -(x.rank - 1) <= dim < x.rank or dim in (0, -x.rank):
        return f"`dim` must name a dimension of {where} {x} other than the batch's, got {dim}"
    return None


def _four(name):
    return lambda x, a, where: None if x.rank == 4 else f"`{name}` works on images [B, C, H, W], but {where} is {x}"


def _per_channel(name, key_names):
    def rule(x: TensorType, a: dict, where: str) -> str | None:
        if x.rank < 2:
            return f"`{name}` works per channel (dim 1), but {where} is {x}"
        c = x.shape[1]
        for key in key_names:
            n = len(a[key])
            if not isinstance(c, Sym) and n not in (1, plain(c)):
                return f"`{key}` has {n} values; {where} {x} has {plain(c)} channels (dim 1): give 1 or {plain(c)}"
        return None
    return rule


def _blur_rule(x: TensorType, a: dict, where: str) -> str | None:
    problem = _image(x, "gaussian_blur", where)
    if problem:
        return problem
    k = a["kernel_size"]
    kh, kw = (k, k) if not isinstance(k, (list, tuple)) else k
    for name, kernel, d in (("height", kh, x.shape[-2]), ("width", kw, x.shape[-1])):
        if not isinstance(d, Sym) and plain(kernel) // 2 >= plain(d):
            return (f"a kernel of {plain(kernel)} pads the {name} {plain(d)} by reflection by {plain(kernel) // 2}, "
                    f"which needs fewer than {plain(d)}")
    return None


def _classes(v) -> str | None:
    return None if v is None or plain(v) >= 2 else "must be at least 2"


def _batched(x: TensorType, a: dict, where: str) -> str | None:
    return None if x.rank >= 2 else f"mixing works on a batch of examples [B, ...], but {where} is {x}"


def _mixing(name: str, doc: str, rule) -> Augmentation:
    return Augmentation(name, (ParamSpec("alpha", FLOAT, 1.0, checks.positive_number,
                                         "λ is drawn from Beta(alpha, alpha), once per batch"),
                               ParamSpec("classes", Optional(INT), None, _classes,
                                         "the number of classes (default: the data set's)")),
                        doc + " `batch.y` (class ids) becomes one-hot soft targets [B, classes] of float32 on "
                        "every split (mixed on training batches only), which `cross_entropy` takes; metrics "
                        "still compare with the class ids. In a step: `x, y = " + name + "(batch.x, batch.y)`", rule=rule, labels=True,
                        plan_only=True)


def _rank_any(x: TensorType, a: dict, where: str) -> str | None:
    return None


def _standardize_rule(x: TensorType, a: dict, where: str) -> str | None:
    return None if x.rank >= 2 else f"`standardize` works per channel (dim 1), but {where} is {x}"


AUGMENTATIONS: dict[str, Augmentation] = {a.name: a for a in (
    Augmentation("random_flip", (ParamSpec("p", FLOAT, 0.5, checks.probability),
                                 ParamSpec("dim", INT, -1)),
                 "flip each example along `dim` (of the tensor; -1: the last) with probability p", rule=_flip_rule),
    Augmentation("random_crop", (ParamSpec("padding", INT, 4, checks.non_negative),),
                 "zero-pad H and W by `padding`, then crop each example back to its size at a random place "
                 "(torchvision's RandomCrop(size, padding))", rule=_four("random_crop")),
    Augmentation("rotation", (ParamSpec("degrees", FLOAT, 15, checks.non_negative_number),),
                 "rotate each example about its centre by an angle drawn from [-degrees, degrees] (bilinear, "
                 "zeros outside)", rule=_four("rotation")),
    Augmentation("gaussian_noise", (ParamSpec("std", FLOAT, 0.1, checks.non_negative_number),),
                 "add normal noise of this standard deviation", rule=_rank_any),
    Augmentation("normalize", (ParamSpec("mean", ListOf(FLOAT), check=_not_empty),
                               ParamSpec("std", ListOf(FLOAT), check=_positive_list)),
                 "(x - mean) / std per channel (dim 1), on every split, training or not", random=False,
                 rule=_per_channel("normalize", ("mean", "std"))),
    Augmentation("standardize", (),
                 "(x - mean) / std per channel (dim 1), with the mean and standard deviation of each channel "
                 "over the training split, measured once before training and kept in the run (so `dslc eval` "
                 "and `dslc predict` apply the same figures); on every split. The plan field only",
                 random=False, rule=_standardize_rule, plan_only=True),
    Augmentation("random_resized_crop", (SIZE, ParamSpec("scale", PAIR, (0.08, 1.0), _scale_pair,
                                                         "the crop's area, a fraction of the image's"),
                                         ParamSpec("ratio", PAIR, (3 / 4, 4 / 3), _ratio_pair,
                                                   "the crop's aspect ratio w / h (drawn log-uniformly)")),
                 "torchvision's RandomResizedCrop: crop each example at a random place, its area a fraction in "
                 "`scale` of the image's and its aspect ratio in `ratio` (the first of 10 draws that fits; "
                 "else the whole image, its ratio clamped to `ratio`), and resize the crop to `size` (bilinear, "
                 "antialiased)", rule=lambda x, a, where: _image(x, "random_resized_crop", where), size=True),
    Augmentation("center_crop", (SIZE,),
                 "torchvision's CenterCrop: the central [H, W] of each example (zero-padded first where the "
                 "image is smaller); on every split", random=False,
                 rule=lambda x, a, where: _image(x, "center_crop", where), size=True),
    Augmentation("resize", (SIZE,),
                 "torchvision's Resize([H, W]) on tensors: bilinear, antialiased, on every split", random=False,
                 rule=lambda x, a, where: _image(x, "resize", where), size=True),
    Augmentation("color_jitter", (ParamSpec("brightness", FLOAT, 0.0, _strength),
                                  ParamSpec("contrast", FLOAT, 0.0, _strength),
                                  ParamSpec("saturation", FLOAT, 0.0, _strength),
                                  ParamSpec("hue", FLOAT, 0.0, _hue)),
                 "torchvision's ColorJitter on images in [0, 1]: brightness, contrast and saturation factors "
                 "drawn from [max(0, 1 - s), 1 + s] and a hue shift from [-hue, hue], applied in a random "
                 "order per example, each result clamped to [0, 1]; a strength of 0 leaves it out. Saturation "
                 "and hue change nothing on 1 channel (torchvision's rule, as PIL's); contrast blends with "
                 "the mean of the greyscale image (of the channel, on 1 channel)",
                 rule=lambda x, a, where: _channels(x, "color_jitter", where)),
    Augmentation("gaussian_blur", (ParamSpec("kernel_size", OneOf((INT, ListOf(INT))), check=_kernel,
                                             doc="odd: k, or [kh, kw]"),
                                   ParamSpec("sigma", OneOf((FLOAT, PAIR)), (0.1, 2.0), _sigma,
                                             "the standard deviation, or [low, high] to draw it from")),
                 "torchvision's GaussianBlur: blur each example with a Gaussian kernel of a standard deviation "
                 "drawn from `sigma` (reflect padding)", rule=_blur_rule),
    Augmentation("random_erasing", (ParamSpec("p", FLOAT, 0.5, checks.probability),
                                    ParamSpec("scale", PAIR, (0.02, 0.33), _scale_pair,
                                              "the erased area, a fraction of the image's"),
                                    ParamSpec("ratio", PAIR, (0.3, 3.3), _ratio_pair,
                                              "the erased rectangle's aspect ratio h / w"),
                                    ParamSpec("value", _NumberOrWord(), 0.0, _value,
                                              'what fills it: a number, or "random" (normal noise)')),
                 "torchvision's RandomErasing: with probability p, fill a random rectangle of each example (the "
                 "first of 10 draws that fits; none: unchanged)",
                 rule=lambda x, a, where: _image(x, "random_erasing", where)),
    Augmentation("random_affine", (ParamSpec("degrees", OneOf((FLOAT, PAIR)), check=_degrees,
                                             doc="rotation (clockwise): d for [-d, d], or [low, high]"),
                                   ParamSpec("translate", Optional(PAIR), None, _translate,
                                             "[a, b]: shift by up to a·W and b·H pixels (rounded)"),
                                   ParamSpec("scale", Optional(PAIR), None, _affine_scale, "zoom, drawn from [low, high]"),
                                   ParamSpec("shear", Optional(OneOf((FLOAT, PAIR))),
                                             None, _shear, "degrees: s for [-s, s] along x, [low, high] along x, "
                                             "or [x low, x high, y low, y high]"),
                                   ParamSpec("interpolation", Str(("nearest", "bilinear")), "nearest")),
                 "torchvision's RandomAffine: rotate, shift, zoom and shear each example about its centre by "
                 "drawn amounts (zeros outside)", rule=lambda x, a, where: _image(x, "random_affine", where)),
    _mixing("mixup", "torchvision's MixUp: each example blended with the one before it in the batch (the batch "
            "rolled by one), λ·x + (1 − λ)·x_rolled, and its label likewise.", _batched),
    _mixing("cutmix", "torchvision's CutMix: a box of the batch rolled by one pasted into every example (sides "
            "√(1 − λ) of the image's, centred at a uniform place, clipped to the image), and the labels mixed by "
            "the share each keeps.", lambda x, a, where: _image(x, "cutmix", where)),
)}


def problem(name: str, args: dict, x: TensorType | None, where: str = "`batch.x`") -> str | None:
    """Why the augmentation `name(args)` cannot apply to a tensor of type `x`, or None."""
    if x is None:
        return "augmentations apply to `batch.x`, and this data set has no field `x`"
    if x.dtype not in FLOAT_DTYPES:
        return f"augmentations apply to a float tensor, but {where} is {x}"
    aug = AUGMENTATIONS[name]
    return aug.rule(x, full_args(name, args), where) if aug.rule is not None else None


def output_type(x: TensorType, name: str, args: dict) -> TensorType:
    """The tensor's type after the augmentation `name` (its H and W set by those with a `size`)."""
    if not AUGMENTATIONS[name].size:
        return x
    h, w = full_args(name, args)["size"]
    return TensorType(tuple(x.shape[:-2]) + (plain(h), plain(w)), x.dtype)


def chain_type(x: TensorType, augs, train: bool) -> TensorType:
    for a in augs:
        if train or not AUGMENTATIONS[a.name].random:
            x = output_type(x, a.name, a.kwargs)
    return x


# ---------------------------------------------------------------------- the step form: the op `augment`

class _Augs(PType):
    """The augmentations the plan checker bound (a tuple of `Aug`)."""
    desc = "a list of augmentations, like `[random_flip(), color_jitter(0.4, 0.4)]`"

    def convert(self, v):
        if isinstance(v, (list, tuple)) and all(isinstance(a, Aug) for a in v):
            return tuple(v)
        raise ArgTypeError(self.desc)


AUGS = _Augs()


def _augment_infer(b):
    x, augs = b.x, b["augmentations"]
    for a in augs:
        why = problem(a.name, a.kwargs, x, "the tensor")
        if why:
            raise ShapeError(why, code="E0302", arg="augmentations")
        x = output_type(x, a.name, a.kwargs)
    train, evaluation = chain_type(b.x, augs, True), chain_type(b.x, augs, False)
    if train.shape != evaluation.shape:
        raise ShapeError(f"the augmentations make the tensor {train} while training but {evaluation} in eval mode "
                         "(random ones apply while training only)", code="E0302", arg="augmentations",
                         help="end with `resize` or `center_crop` to the same size, or crop to the input's size")
    return [train]


def _call_src(e, a: Aug, x: str) -> str:
    defaults = {p.name: p.default for p in AUGMENTATIONS[a.name].params if not p.required}
    given = [f"{k}={e.fmt(v)}" for k, v in a.args
             if k not in defaults or to_plain(defaults[k]) != v]
    return f"{AUGMENTATIONS[a.name].helper}({', '.join([x] + given)})"


def _chain_src(e, augs, x: str, train: bool) -> str:
    for a in augs:
        if train or not AUGMENTATIONS[a.name].random:
            x = _call_src(e, a, x)
    return x


def _augment_src(e) -> str:
    x, augs = e.arg("input"), e.args["augmentations"]
    train, evaluation = _chain_src(e, augs, x, True), _chain_src(e, augs, x, False)
    # random augmentations apply while training, as the plan field's: eval mode keeps the deterministic ones
    return train if train == evaluation else f"({train} if self.training else {evaluation})"


def _augment_helpers(args) -> tuple:
    return tuple(dict.fromkeys(AUGMENTATIONS[a.name].helper for a in args["augmentations"]))


def _augment_onnx(g, n):
    """Eval mode (an exported graph's): the random augmentations are the identity, `normalize` is
    (x - mean) / std; resizing and cropping are not exported."""
    x = n.inputs[0]
    for a in n["augmentations"]:
        if a.name == "normalize":
            shape = [1, -1] + [1] * (n.x.rank - 2)
            mean = g.op("Reshape", [g.const(list(a.kwargs["mean"]), n.x.dtype), g.const(shape, "int64")])
            std = g.op("Reshape", [g.const(list(a.kwargs["std"]), n.x.dtype), g.const(shape, "int64")])
            x = g.op("Div", [g.op("Sub", [x, mean]), std])
        elif not AUGMENTATIONS[a.name].random:
            raise ShapeError(f"`{a.name}` in `augment` has no ONNX form", code="E0302")
    return [g.op("Identity", [x])]


def _arbitrary(d) -> Example:
    h, w = d.int(3, 6), d.int(3, 6)
    pool = (make("random_flip", {}), make("color_jitter", {"brightness": 0.3, "hue": 0.1}),
            make("gaussian_blur", {"kernel_size": 3}), make("random_erasing", {"p": 1.0}),
            make("random_affine", {"degrees": 20.0}), make("gaussian_noise", {}),
            make("random_resized_crop", {"size": (h, w)}))
    return Example({"input": S(d.int(1, 3), d.choice([1, 3]), h, w),
                    "augmentations": tuple(d.choice(pool) for _ in range(d.int(1, 3)))})


register(OpDef(
    name="augment", kind="function", family="random", pure=False, internal=True,
    doc="Augment a batch inside a training plan's step: `augment(batch.x, [random_flip(), "
        "color_jitter(0.4, 0.4)])` (each call draws anew; random ones apply while training only).",
    params=(ParamSpec("input", TENSOR),
            ParamSpec("augmentations", AUGS)),
    infer=_augment_infer,
    macs=lambda b, out: 0,
    torch=TorchFunction(_augment_src, helpers=_augment_helpers),
    onnx=_augment_onnx,
    examples=(Example({"input": S(2, 1, 8, 8), "augmentations": (make("random_flip", {}),
                                                                 make("color_jitter", {"brightness": 0.4}))}),
              Example({"input": S(3, 2, 6, 5), "augmentations": (make("normalize", {"mean": (0.5,), "std": (0.25,)}),
                                                                 make("random_erasing", {"p": 1.0}))})),
    arbitrary=_arbitrary,
))


# ---------------------------------------------------------------------- the step form of mixup and cutmix

MIXING_TARGETS = FLOAT_DTYPES + ("int64",)   # class ids, or soft targets already


def _mix_infer(name: str):
    """`mixup(x, y)`: x as it is, and y [B] of class ids (or soft targets [B, C]) as soft targets [B, C]."""
    def infer(b):
        x, y = b.inputs
        why = problem(name, {}, x, "the tensor")
        if why:
            raise ShapeError(why, code="E0302", input=0)
        classes = None if b["classes"] is None else plain(b["classes"])
        if y.dtype == "int64" and y.rank != 1 or y.dtype != "int64" and y.rank != 2:
            raise ShapeError(f"`{name}` mixes class ids [B] of int64 or soft targets [B, C], got {y}", code="E0302",
                             input=1)
        if not _same_size(x.shape[0], y.shape[0]):
            raise ShapeError(f"`{name}` mixes a batch and its targets, but the tensor is {x} and the targets {y}",
                             code="E0302", input=1)
        if y.dtype != "int64":
            if classes is not None and not isinstance(y.shape[1], Sym) and plain(y.shape[1]) != classes:
                raise ShapeError(f"the soft targets {y} have {plain(y.shape[1])} classes, not {classes}",
                                 code="E0302", arg="classes")
            return [x, y]
        if classes is None:
            raise ShapeError(f"`{name}` makes class ids one-hot: it needs the number of classes", code="E0302",
                             arg="classes", help=f"give it: `{name}(batch.x, batch.y, classes=10)`")
        return [x, TensorType((y.shape[0], classes), "float32")]
    return infer


def _same_size(a, b) -> bool:
    return a == b or not isinstance(a, Sym) and not isinstance(b, Sym) and plain(a) == plain(b)


def _soft_src(e) -> str:
    y = e.arg("target")
    return f"F.one_hot({y}, {e.fmt(e.args['classes'])}).float()" if e.types[1].dtype == "int64" else y


def _mix_src(name: str):
    def src(e) -> str:
        x, soft = e.arg("input"), _soft_src(e)
        # mixing applies while training, as the plan field's; eval mode keeps the (one-hot) targets
        return f"({AUGMENTATIONS[name].helper}({x}, {soft}{e.kw('alpha')}) if self.training else ({x}, {soft}))"
    return src


def _mix_onnx(g, n):
    """Eval mode (an exported graph's): the images as they are, class ids one-hot."""
    x, y = n.inputs
    if n.types[1].dtype != "int64":
        return [g.op("Identity", [x]), g.op("Identity", [y])]
    depth = g.const(int(plain(n["classes"])), "int64")
    return [g.op("Identity", [x]), g.op("OneHot", [y, depth, g.const([0.0, 1.0], "float32")], axis=-1)]


def _mix_arbitrary(name: str):
    def draw(d) -> Example:
        b, classes = d.int(1, 5), d.int(2, 6)
        return Example({"input": S(b, d.choice([1, 3]), d.int(2, 6), d.int(2, 6)),
                        "target": S(b, dtype="int64", values=(0, classes)), "classes": classes,
                        "alpha": d.choice([0.2, 1.0, 2.0])})
    return draw


def _mixing_op(name: str) -> OpDef:
    aug = AUGMENTATIONS[name]
    return OpDef(
        name=name, kind="function", family="random", pure=False, internal=True, dtypes=MIXING_TARGETS,
        doc=f"`x, y = {name}(batch.x, batch.y, alpha=1.0, classes=10)` inside a training plan's step: the plan "
            f"field's `{name}` of a batch and its class ids (one-hot, soft targets [B, classes]; or soft targets "
            "[B, C] as they are), returning both; while training only (eval mode: the batch as it is, the "
            "targets one-hot).",
        params=(ParamSpec("input", TENSOR), ParamSpec("target", TENSOR)) + aug.params,
        infer=_mix_infer(name),
        macs=lambda b, out: 0,
        torch=TorchFunction(_mix_src(name), helpers=(aug.helper,)),
        onnx=_mix_onnx,
        examples=(Example({"input": S(4, 1, 6, 6), "target": S(4, dtype="int64", values=(0, 10)), "classes": 10}),
                  Example({"input": S(3, 3, 5, 4), "target": S(3, 4, values=(0, 1)), "alpha": 0.4})),
        arbitrary=_mix_arbitrary(name),
    )


register(_mixing_op("mixup"))
register(_mixing_op("cutmix"))


# ---------------------------------------------------------------------- the helpers (torch only)

helper("augment_per_example", '''
    def augment_per_example(v, x):
        """One value per example, on `x`'s device, shaped to broadcast over the rest of `x`."""
        return v.to(x.device).view((-1,) + (1,) * (x.dim() - 1))
''')

helper("augment_random_flip", '''
    def augment_random_flip(x, p=0.5, dim=-1, generator=None):
        """Each example flipped along `dim` (not 0) with probability p."""
        flip = torch.rand(x.shape[0], generator=generator) < p
        return torch.where(augment_per_example(flip, x), x.flip(dim), x)
''', needs=("augment_per_example",))

helper("augment_random_crop", '''
    def augment_random_crop(x, padding=4, generator=None):
        """Zero-pad H and W by `padding`, then crop each example back to H×W at a random offset
        in [0, 2·padding] along each (torchvision's RandomCrop(size, padding))."""
        if padding == 0:
            return x
        b, c, h, w = x.shape
        padded = F.pad(x, (padding, padding, padding, padding))
        offsets = torch.randint(0, 2 * padding + 1, (2, b), generator=generator).to(x.device)
        rows = offsets[0][:, None] + torch.arange(h, device=x.device)   # [B, H]
        cols = offsets[1][:, None] + torch.arange(w, device=x.device)   # [B, W]
        bi = torch.arange(b, device=x.device)[:, None, None, None]
        ci = torch.arange(c, device=x.device)[None, :, None, None]
        return padded[bi, ci, rows[:, None, :, None], cols[:, None, None, :]]
''')

helper("augment_rotation", '''
    def augment_rotation(x, degrees=15.0, generator=None):
        """Rotate each example about its centre by an angle a drawn from [-degrees, degrees]: the
        input pixel at offset (u, v) from the centre (u right, v down) moves to
        (u cos a - v sin a, u sin a + v cos a). Bilinear, zeros outside."""
        b, _, h, w = x.shape
        a = (torch.rand(b, generator=generator, dtype=torch.float64) * 2 - 1) * (degrees * (torch.pi / 180.0))
        cos, sin = torch.cos(a), torch.sin(a)
        # affine_grid maps each output position (in [-1, 1] per axis) to where it samples the
        # input: the inverse rotation, with the aspect ratio undone
        theta = torch.zeros(b, 2, 3, dtype=torch.float64)
        theta[:, 0, 0], theta[:, 0, 1] = cos, sin * h / w
        theta[:, 1, 0], theta[:, 1, 1] = -sin * w / h, cos
        grid = F.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
''')

helper("augment_gaussian_noise", '''
    def augment_gaussian_noise(x, std=0.1, generator=None):
        """Add normal noise of standard deviation `std`."""
        return x + std * torch.randn(x.shape, generator=generator).to(x.device, x.dtype)
''')

helper("augment_normalize", '''
    def augment_normalize(x, mean, std, generator=None):
        """(x - mean) / std along dim 1 (channels; the features of [B, F])."""
        shape = (1, -1) + (1,) * (x.dim() - 2)
        m = torch.tensor([float(v) for v in mean], dtype=x.dtype, device=x.device).view(shape)
        s = torch.tensor([float(v) for v in std], dtype=x.dtype, device=x.device).view(shape)
        return (x - m) / s
''')

helper("augment_random_resized_crop", '''
    def augment_random_resized_crop(x, size, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), generator=None):
        """torchvision's RandomResizedCrop, per example: of 10 draws of an area (a fraction in `scale`
        of the image's) and an aspect ratio w / h (log-uniform in `ratio`), the first whose crop fits;
        else the whole image with its ratio clamped to `ratio`, centred. The crop, at a random place,
        is resized to `size` (bilinear, antialiased)."""
        if x.dim() == 3:
            return augment_random_resized_crop(x.unsqueeze(1), size, scale, ratio, generator).squeeze(1)
        b, h, w = x.shape[0], x.shape[-2], x.shape[-1]
        u = torch.rand(3, b, 10, generator=generator, dtype=torch.float64)
        area = (scale[0] + (scale[1] - scale[0]) * u[0]) * (h * w)
        low, high = torch.log(torch.tensor(ratio, dtype=torch.float64))
        aspect = torch.exp(low + (high - low) * u[1])
        cw, ch = torch.round(torch.sqrt(area * aspect)), torch.round(torch.sqrt(area / aspect))
        fits = (cw > 0) & (cw <= w) & (ch > 0) & (ch <= h)
        first = fits.to(torch.int8).argmax(1, keepdim=True)
        found = fits.any(1)
        if w / h < min(ratio):
            fw, fh = w, round(w / min(ratio))
        elif w / h > max(ratio):
            fw, fh = round(h * max(ratio)), h
        else:
            fw, fh = w, h
        cw = torch.where(found, cw.gather(1, first)[:, 0], float(fw)).long()
        ch = torch.where(found, ch.gather(1, first)[:, 0], float(fh)).long()
        place = u[2, :, :2]
        top = torch.where(found, torch.floor(place[:, 0] * (h - ch + 1)).long(), (h - fh) // 2)
        left = torch.where(found, torch.floor(place[:, 1] * (w - cw + 1)).long(), (w - fw) // 2)
        out = x.new_empty((b, x.shape[1]) + tuple(size))
        channels = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
        for c_h, c_w in sorted(set(zip(ch.tolist(), cw.tolist()))):   # one resize per crop size
            idx = ((ch == c_h) & (cw == c_w)).nonzero()[:, 0]
            rows = (top[idx, None] + torch.arange(c_h)).to(x.device)
            cols = (left[idx, None] + torch.arange(c_w)).to(x.device)
            crops = x[idx.to(x.device)[:, None, None, None], channels, rows[:, None, :, None], cols[:, None, None, :]]
            out[idx.to(x.device)] = F.interpolate(crops, size=tuple(size), mode="bilinear", align_corners=False,
                                                  antialias=True)
        return out
''')

helper("augment_center_crop", '''
    def augment_center_crop(x, size, generator=None):
        """torchvision's CenterCrop: the central [H, W] of each example (top = round((h - H) / 2), as
        Python rounds), zero-padded first where the image is smaller."""
        h, w = x.shape[-2], x.shape[-1]
        out_h, out_w = size
        if out_h > h or out_w > w:
            pad_h, pad_w = max(out_h - h, 0), max(out_w - w, 0)
            x = F.pad(x, (pad_w // 2, (pad_w + 1) // 2, pad_h // 2, (pad_h + 1) // 2))
            h, w = x.shape[-2], x.shape[-1]
        top, left = int(round((h - out_h) / 2.0)), int(round((w - out_w) / 2.0))
        return x[..., top:top + out_h, left:left + out_w]
''')

helper("augment_resize", '''
    def augment_resize(x, size, generator=None):
        """torchvision's Resize([H, W]) on tensors: bilinear, antialiased."""
        if x.dim() == 3:
            return augment_resize(x.unsqueeze(1), size).squeeze(1)
        return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)
''')

helper("augment_grey", '''
    def augment_grey(x):
        """torchvision's rgb_to_grayscale of [B, 3, H, W]: [B, 1, H, W]."""
        r, g, b = x.unbind(1)
        return (0.2989 * r + 0.587 * g + 0.114 * b).unsqueeze(1)
''')

helper("augment_hue", '''
    def augment_hue(x, shift):
        """Shift the hue of [B, 3, H, W] by `shift` (per example, [B, 1, 1]; in turns) as
        torchvision's adjust_hue: to HSV, h = (h + shift) mod 1, back to RGB."""
        r, g, b = x.unbind(1)
        maxc, minc = x.max(1).values, x.min(1).values
        same = maxc == minc
        cr = maxc - minc
        ones = torch.ones_like(maxc)
        s = cr / torch.where(same, ones, maxc)
        div = torch.where(same, ones, cr)
        rc, gc, bc = (maxc - r) / div, (maxc - g) / div, (maxc - b) / div
        h = (maxc == r) * (bc - gc) + ((maxc == g) & (maxc != r)) * (2.0 + rc - bc) + \\
            ((maxc != g) & (maxc != r)) * (4.0 + gc - rc)
        h = (torch.fmod(h / 6.0 + 1.0, 1.0) + shift) % 1.0
        v = maxc
        i = torch.floor(h * 6.0)
        f = h * 6.0 - i
        i = i.to(torch.int32) % 6
        p = torch.clamp(v * (1.0 - s), 0.0, 1.0)
        q = torch.clamp(v * (1.0 - s * f), 0.0, 1.0)
        t = torch.clamp(v * (1.0 - s * (1.0 - f)), 0.0, 1.0)
        mask = (i.unsqueeze(1) == torch.arange(6, device=x.device).view(-1, 1, 1)).to(x.dtype)
        a = torch.stack((torch.stack((v, q, p, p, t, v), 1), torch.stack((t, v, v, q, p, p), 1),
                         torch.stack((p, p, t, v, v, q), 1)), 1)
        return torch.einsum("bijk,bxijk->bxjk", mask, a)
''')

helper("augment_color_jitter", '''
    def augment_color_jitter(x, brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0, generator=None):
        """torchvision's ColorJitter on images in [0, 1], per example: factors drawn from
        [max(0, 1 - s), 1 + s] (a hue shift from [-hue, hue]), applied in a random order, each result
        clamped to [0, 1]; a strength of 0 is left out. Saturation and hue leave 1 channel as it is."""
        if x.dim() == 3:
            return augment_color_jitter(x.unsqueeze(1), brightness, contrast, saturation, hue, generator).squeeze(1)
        b, c = x.shape[:2]
        u = torch.rand(4, b, generator=generator, dtype=torch.float64)
        order = torch.rand(b, 4, generator=generator).argsort(1)   # each example's order of the four
        def factor(s, k):
            return augment_per_example((max(0.0, 1 - s) + (1 + s - max(0.0, 1 - s)) * u[k]).to(x.dtype), x)
        shift = augment_per_example(((2 * u[3] - 1) * hue).to(x.dtype), x)[:, 0]
        def blend(a, other, f):
            return (f * a + (1 - f) * other).clamp(0, 1)
        def adjust(k, y):
            if k == 0:
                return blend(y, torch.zeros_like(y), factor(brightness, 0))
            if k == 1:
                grey = augment_grey(y) if c == 3 else y
                return blend(y, grey.mean((1, 2, 3), keepdim=True), factor(contrast, 1))
            if c == 1:
                return y
            if k == 2:
                return blend(y, augment_grey(y), factor(saturation, 2))
            return augment_hue(y, shift)
        active = [k for k, s in enumerate((brightness, contrast, saturation, hue)) if s > 0]
        for step in range(4):
            for k in active:
                x = torch.where(augment_per_example(order[:, step] == k, x), adjust(k, x), x)
        return x
''', needs=("augment_per_example", "augment_grey", "augment_hue"))

helper("augment_gaussian_blur", '''
    def augment_gaussian_blur(x, kernel_size, sigma=(0.1, 2.0), generator=None):
        """torchvision's GaussianBlur, per example: a Gaussian kernel of [kh, kw] (odd) whose standard
        deviation is drawn from [sigma low, sigma high], reflect padding; as two 1-d passes."""
        if x.dim() == 3:
            return augment_gaussian_blur(x.unsqueeze(1), kernel_size, sigma, generator).squeeze(1)
        kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
        low, high = (sigma, sigma) if isinstance(sigma, (int, float)) else sigma
        b, c, h, w = x.shape
        s = low + (high - low) * torch.rand(b, generator=generator, dtype=torch.float64)
        def kernels(k):   # [B·C, k]: each example's kernel, once per channel
            t = torch.linspace(-(k // 2), k // 2, k, dtype=torch.float64)
            pdf = torch.exp(-0.5 * (t[None, :] / s[:, None]) ** 2)
            return (pdf / pdf.sum(1, keepdim=True)).repeat_interleave(c, 0).to(x.device, x.dtype)
        y = F.pad(x.reshape(1, b * c, h, w), (kw // 2, kw // 2, kh // 2, kh // 2), mode="reflect")
        y = F.conv2d(y, kernels(kw)[:, None, None, :], groups=b * c)
        y = F.conv2d(y, kernels(kh)[:, None, :, None], groups=b * c)
        return y.reshape(b, c, h, w)
''')

helper("augment_random_erasing", '''
    def augment_random_erasing(x, p=0.5, scale=(0.02, 0.33), ratio=(0.3, 3.3), value=0.0, generator=None):
        """torchvision's RandomErasing, per example: with probability p, of 10 draws of an area (a
        fraction in `scale` of the image's) and an aspect ratio h / w (log-uniform in `ratio`), the first
        whose rectangle fits (h < H and w < W) is filled with `value` ("random": normal noise) at a random
        place; when none fits, the example is left as it is."""
        if x.dim() == 3:
            return augment_random_erasing(x.unsqueeze(1), p, scale, ratio, value, generator).squeeze(1)
        b, _, h, w = x.shape
        u = torch.rand(3, b, 10, generator=generator, dtype=torch.float64)
        area = (scale[0] + (scale[1] - scale[0]) * u[0]) * (h * w)
        low, high = torch.log(torch.tensor(ratio, dtype=torch.float64))
        aspect = torch.exp(low + (high - low) * u[1])
        eh, ew = torch.round(torch.sqrt(area * aspect)), torch.round(torch.sqrt(area / aspect))
        fits = (eh < h) & (ew < w)
        first = fits.to(torch.int8).argmax(1, keepdim=True)
        eh, ew = eh.gather(1, first)[:, 0], ew.gather(1, first)[:, 0]
        top = torch.floor(u[2, :, 0] * (h - eh + 1))
        left = torch.floor(u[2, :, 1] * (w - ew + 1))
        erase = (torch.rand(b, generator=generator) < p) & fits.any(1)
        rows = torch.arange(h, dtype=torch.float64)[None, :]
        cols = torch.arange(w, dtype=torch.float64)[None, :]
        inside = ((rows >= top[:, None]) & (rows < (top + eh)[:, None]))[:, :, None] & \\
            ((cols >= left[:, None]) & (cols < (left + ew)[:, None]))[:, None, :]
        mask = (inside & erase[:, None, None]).unsqueeze(1).to(x.device)   # [B, 1, H, W]
        fill = torch.randn(x.shape, generator=generator).to(x.device, x.dtype) if value == "random" else \\
            torch.full_like(x, float(value))
        return torch.where(mask, fill, x)
''')

helper("augment_random_affine", '''
    def augment_random_affine(x, degrees, translate=None, scale=None, shear=None, interpolation="nearest",
                              generator=None):
        """torchvision's RandomAffine, per example, about the image's centre: an angle (clockwise, in
        degrees) from [-degrees, degrees] (or the [low, high] given), a shift of up to translate[0]·W and
        translate[1]·H pixels (rounded), a zoom from `scale`, a shear (degrees) along x and y; its
        inverse matrix and sampling grid as torchvision's affine builds them; zeros outside."""
        if x.dim() == 3:
            return augment_random_affine(x.unsqueeze(1), degrees, translate, scale, shear, interpolation,
                                         generator).squeeze(1)
        b, _, h, w = x.shape
        u = torch.rand(6, b, generator=generator, dtype=torch.float64)
        def draw(bounds, k):
            return bounds[0] + (bounds[1] - bounds[0]) * u[k]
        zero = torch.zeros(b, dtype=torch.float64)
        pi = torch.pi / 180.0
        angle = draw((-degrees, degrees) if isinstance(degrees, (int, float)) else degrees, 0) * pi
        tx = torch.round(draw((-translate[0] * w, translate[0] * w), 1)) if translate else zero
        ty = torch.round(draw((-translate[1] * h, translate[1] * h), 2)) if translate else zero
        zoom = draw(scale, 3) if scale else torch.ones(b, dtype=torch.float64)
        if shear is None:
            shear = (0.0, 0.0)
        elif isinstance(shear, (int, float)):
            shear = (-shear, shear)
        sx = draw(shear[:2], 4) * pi
        sy = draw(shear[2:], 5) * pi if len(shear) == 4 else zero
        a = torch.cos(angle - sy) / torch.cos(sy)
        bb = -torch.cos(angle - sy) * torch.tan(sx) / torch.cos(sy) - torch.sin(angle)
        c = torch.sin(angle - sy) / torch.cos(sy)
        d = -torch.sin(angle - sy) * torch.tan(sx) / torch.cos(sy) + torch.cos(angle)
        m = torch.stack((d, -bb, zero, -c, a, zero), 1) / zoom[:, None]
        m[:, 2] = m[:, 0] * -tx + m[:, 1] * -ty
        m[:, 5] = m[:, 3] * -tx + m[:, 4] * -ty
        xs = torch.linspace(-w * 0.5 + 0.5, w * 0.5 - 0.5, w, dtype=torch.float64)
        ys = torch.linspace(-h * 0.5 + 0.5, h * 0.5 - 0.5, h, dtype=torch.float64)
        base = torch.stack((xs.expand(h, w), ys[:, None].expand(h, w), torch.ones(h, w, dtype=torch.float64)), -1)
        theta = m.view(b, 2, 3).transpose(1, 2) / torch.tensor([0.5 * w, 0.5 * h], dtype=torch.float64)
        grid = base.view(1, h * w, 3).expand(b, -1, -1).bmm(theta).view(b, h, w, 2)
        return F.grid_sample(x, grid.to(x.device, x.dtype), mode=interpolation, padding_mode="zeros",
                             align_corners=False)
''')

helper("augment_beta", '''
    def augment_beta(alpha, generator=None):
        """One draw of Beta(alpha, alpha): G1 / (G1 + G2) of two Gamma(alpha) draws (Marsaglia and
        Tsang's method, a shape below 1 boosted by u^(1/alpha)), from `generator`. Computed from their
        logarithms, as sigmoid(log G1 - log G2): a small alpha's draws underflow to 0 otherwise."""
        def uniform():
            return torch.rand((), generator=generator, dtype=torch.float64)
        def log_gamma(a):
            log_boost = torch.log(uniform()) / a if a < 1 else 0.0
            d = (a + 1 if a < 1 else a) - 1 / 3
            c = 1 / (9 * d) ** 0.5
            while True:
                z = torch.randn((), generator=generator, dtype=torch.float64)
                v = (1 + c * z) ** 3
                if v > 0 and torch.log(uniform()) < 0.5 * z * z + d - d * v + d * torch.log(v):
                    return torch.log(d * v) + log_boost
        return float(torch.sigmoid(log_gamma(alpha) - log_gamma(alpha)))
''')

helper("augment_mixup", '''
    def augment_mixup(x, y, alpha=1.0, generator=None):
        """torchvision's MixUp of a batch `x` and its soft targets `y` [B, C]: λ ~ Beta(alpha, alpha),
        once per batch; each example blended with the one before it (the batch rolled by one)."""
        lam = augment_beta(alpha, generator)
        return x * lam + x.roll(1, 0) * (1 - lam), y * lam + y.roll(1, 0) * (1 - lam)
''', needs=("augment_beta",))

helper("augment_cutmix", '''
    def augment_cutmix(x, y, alpha=1.0, generator=None):
        """torchvision's CutMix of images `x` and their soft targets `y` [B, C]: λ ~ Beta(alpha, alpha), once
        per batch; a box of half-sides √(1 - λ)/2 of the image's, centred at a uniform pixel and clipped, is
        taken from the batch rolled by one; the labels mix by the share of the image each keeps."""
        lam = augment_beta(alpha, generator)
        h, w = x.shape[-2], x.shape[-1]
        cx = int(torch.randint(w, (1,), generator=generator))
        cy = int(torch.randint(h, (1,), generator=generator))
        r = 0.5 * (1.0 - lam) ** 0.5
        half_w, half_h = int(r * w), int(r * h)
        left, right = max(cx - half_w, 0), min(cx + half_w, w)
        top, bottom = max(cy - half_h, 0), min(cy + half_h, h)
        out = x.clone()
        out[..., top:bottom, left:right] = x.roll(1, 0)[..., top:bottom, left:right]
        lam = 1.0 - (right - left) * (bottom - top) / (w * h)
        return out, y * lam + y.roll(1, 0) * (1 - lam)
''', needs=("augment_beta",))
