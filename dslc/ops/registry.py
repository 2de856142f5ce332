"""THE registry: one frozen `OpDef` per layer, function and loss.

An entry holds everything every backend needs, so nothing is restated:
the signature (typed parameters, defaults, range checks), the shape rule,
inferred constructor arguments (`in_features` from the input), weights and
buffers (parameter counts, state-dict keys and ONNX initializer names all
derive from them), MACs, a diagram label, the PyTorch emission, the ONNX
emission, purity, and examples that the conformance test runs against torch.

`register` stamps each entry with the file:line of its definition, and
`validate_registry` checks every entry at import, so a missing emitter or
example fails there, naming that place.
"""
from __future__ import annotations

import inspect
import os
import sys
from dataclasses import dataclass
from typing import Callable

from ..ir.dims import Sym, plain
from ..ir.pyliteral import literal
from ..ir.types import TensorType
from .ptypes import BOOL, PType, is_tensor_type

REQUIRED = object()  # the default of a parameter with no default


class ShapeError(Exception):
    """A shape rule's complaint; the evaluator attaches the span of `arg` or `input`."""

    def __init__(self, message: str, code: str = "E0403", arg: str | None = None,
                 input: int | None = None, help: str | None = None, label: str = ""):
        super().__init__(message)
        self.message, self.code, self.arg, self.input, self.help, self.label = message, code, arg, input, help, label


@dataclass(frozen=True)
class ParamSpec:
    name: str
    type: PType
    default: object = REQUIRED
    check: Callable | None = None  # value -> error message | None
    doc: str = ""
    rest: bool = False             # collects the positional arguments from its place on (Python's *args)

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    @property
    def is_tensor(self) -> bool:
        return is_tensor_type(self.type)


# torch's `inplace=` (nn.ReLU(inplace=True), F.dropout(x, inplace=True)), on every entry whose torch
# counterpart takes it. The generated code keeps it only where overwriting the input is provably safe
# (backends/inplace.py); elsewhere it is dropped: the same function, with one more tensor in memory.
INPLACE = ParamSpec("inplace", BOOL, False, doc="overwrite the input (kept in the generated code only where safe)")


@dataclass(frozen=True)
class TensorSpec:
    """A tensor in an example: its concrete shape and dtype, and optionally the value
    range [low, high) its random contents are drawn from (probabilities, class ids)."""
    shape: tuple
    dtype: str = "float32"
    values: tuple | None = None


def S(*shape, dtype: str = "float32", values: tuple | None = None) -> TensorSpec:
    return TensorSpec(tuple(shape), dtype, values)


@dataclass(frozen=True)
class Example:
    """Arguments (tensors as `S(...)`) and, for layers, the applied inputs."""
    args: dict
    inputs: tuple = ()


@dataclass
class Bound:
    """An op with its arguments bound, as shape rules and emitters see it.

    `args` holds every parameter by name (tensors as `TensorValue`s) plus the
    inferred constructor arguments; `inputs` are the input tensors' types in order.
    """
    op: "OpDef"
    args: dict
    inputs: list[TensorType]
    where: object = None   # the application's span, for the run-time requirements a rule records

    def __post_init__(self):
        for p in self.op.keyword_inputs:   # keyword inputs not given at the application: their defaults
            self.args.setdefault(p.name, p.default)

    def __getitem__(self, name: str):
        return self.args[name]

    @property
    def x(self) -> TensorType:
        return self.inputs[0]


@dataclass(frozen=True)
class LayerForm:
    """A layer's second signature, torch's, that takes another layer as an argument:
    `TransformerEncoder(encoder_layer, num_layers, norm=None, ...)`. A call whose first argument is a layer
    (or that names `params[0]`) binds to `params`; `flatten(values)` gives the entry's own arguments, every
    one, or raises a ShapeError naming the argument (`arg`) at fault. The front end takes each flat
    argument's place from the inner layer's call or from the argument of the same name."""
    params: tuple[ParamSpec, ...]
    flatten: Callable


# ---- PyTorch emission ----

@dataclass(frozen=True)
class TorchLayer:
    """A layer emitted as a torch.nn module.

    `cls(positional..., keyword=value...)` builds it (keywords only when they
    differ from the default); `call` writes the forward call (default
    `self.mod(x)`); `functional` writes an inline form used when the layer is
    unnamed and has no state (so `ReLU()` becomes `F.relu(x)`). A call that
    returns several tensors is destructured as `OpDef.results` says.
    """
    cls: str
    positional: tuple[str, ...] = ()
    keywords: tuple[str, ...] = ()
    fixed: tuple[tuple[str, str], ...] = ()
    explicit: tuple[str, ...] = ()     # keywords printed even at their default (`dim=-1`)
    call: Callable | None = None       # (emit, module_expr) -> str
    functional: Callable | None = None  # (emit) -> str
    helpers: tuple[str, ...] | Callable = ()   # names in HELPERS, or args -> names
    ctor: Callable | None = None       # (args, format) -> source, for a constructor the above cannot write


@dataclass(frozen=True)
class TorchFunction:
    """A function emitted as a Python expression over its inputs (`emit` -> source)."""
    expr: Callable
    helpers: tuple[str, ...] | Callable = ()   # names in HELPERS, or args -> names


@dataclass(frozen=True)
class Helper:
    """A module-level Python function that generated code may need (only torch inside)."""
    name: str
    source: str
    needs: tuple[str, ...] = ()  # other helpers
    # the helper whose function this one is, with less of it ("multi_head_attention/unmasked" is
    # `multi_head_attention` without its mask): a file that needs both writes the fuller one
    replaces: str = ""


HELPERS: dict[str, Helper] = {}


def helper(name: str, source: str, needs: tuple[str, ...] = (), replaces: str = "") -> Helper:
    h = Helper(name, inspect.cleandoc(source) + "\n", needs, replaces)
    HELPERS[name] = h
    return h


# ---- constant folding ----

def _unknown(name: str):
    return None


@dataclass(frozen=True)
class Constants:
    """A node whose tensor inputs are all uniform constants (one value each), as `OpDef.fold` sees it.

    `operand(name)` reads a number-or-tensor argument (`a + b`): the number as written or the
    value of its constant tensor, a float for a floating-point result; None where the value is
    not known at compile time (a model parameter, a run-time size such as `B`, a bool).
    """
    args: dict                    # the node's arguments by name (tensors as TensorValue)
    inputs: list                  # its input tensors' types (TensorType), in order
    values: list                  # their values, in order
    dtype: str                    # the result's dtype
    parametric: bool = False      # an argument is a model parameter, which the generated constructor can change
    operand: Callable = _unknown  # argument name -> its value, or None (above)

    @property
    def x(self):
        return self.values[0]

    @staticmethod
    def static(d) -> int | None:
        """A size's value; None for a run-time one (`B`)."""
        return None if isinstance(d, Sym) else plain(d)


@dataclass(frozen=True)
class Elementwise:
    """The fold of an op that maps each element alone: `on_value(value, args)` on the one value.
    Not folded where an argument is a parameter (a slope the generated constructor can change)."""
    on_value: Callable   # (float, args) -> float | None

    def __call__(self, c: Constants):
        if c.parametric:
            return None
        return self.on_value(float(c.x), c.args)


# ---- the definition ----

@dataclass(frozen=True)
class OpDef:
    """One layer, function or loss: its signature, shape rule, emissions and the facts passes read.

    `fold` is the op's compile-time value: given the `Constants` of a node whose tensor inputs
    are all uniform constants, the one value of its result (a uniform tensor too), or None where
    it cannot say (a run-time size, an argument not known). Constant folding rounds it to the
    result's dtype; `Elementwise(f)` is the fold of an op applied to each value alone.
    """
    name: str
    kind: str                      # layer | function | loss
    family: str                    # linear, conv, norm, activation, ... (diagram colour, docs)
    params: tuple[ParamSpec, ...]
    infer: Callable                # Bound -> list[TensorType]
    torch: TorchLayer | TorchFunction
    doc: str
    examples: tuple[Example, ...]
    inputs: tuple[str, ...] = ("input",)    # layers: names of the tensors they are applied to
    min_inputs: int | None = None           # layers that accept fewer (self-attention, a recurrent state)
    # layers: the inputs applied as a tuple of tensors, with their elements' names: LSTM's
    # (("hx", ("h_0", "c_0")),) is applied as `lstm(x, (h_0, c_0))`. Nodes hold the tensors flat.
    tuple_inputs: tuple[tuple[str, tuple[str, ...]], ...] = ()
    # layers: what is given by keyword where the layer is applied, as torch's forward takes it:
    # optional tensors (`key_padding_mask=m`, OPTIONAL_TENSOR, default None) and flags (`need_weights=false`).
    # A node holds them in its args by name; the tensors given are also its last inputs, after the
    # positional ones (so passes see the dependency). Shape rules and emitters read them from the args.
    keyword_inputs: tuple[ParamSpec, ...] = ()
    resolve: Callable | None = None         # Bound -> {inferred constructor args}
    weights: Callable | None = None         # args -> {name: shape}
    # Whether constructing it draws from torch's random number generator (its weights' default
    # initialization is random); None: it does where it has weights. A norm's ones and zeros draw
    # nothing, so the code generator may build it anywhere among the others without changing their draws.
    draws: bool | None = None
    buffers: Callable | None = None         # args -> {name: (shape, dtype)}
    macs: Callable | None = None            # (Bound, out_types) -> int-like
    label: Callable | None = None           # args -> str
    onnx: Callable | None = None
    pure: bool = True                       # False: dropout, noise (CSE/DCE leave it alone)
    results: object = None                  # nesting of several outputs, e.g. (0, (1, 2)) for LSTM
    sequence: bool = False                  # a tuple of its outputs even when there is one (chunk, split)
    stem: str = ""                          # module name stem: conv, bn, fc, ...
    internal: bool = False                  # made by syntax (`x[0]`), not callable by name
    arbitrary: Callable | None = None       # draw -> Example (hypothesis)
    source: str = ""                        # file:line of the definition
    dtypes: tuple[str, ...] | None = None   # allowed input dtypes (None: floating point only)
    # Facts the passes, the front end and the diagram read (never a list of op names there):
    symbol: str = ""                        # the operator that writes it, in a spec and in Python: `+`, `@`
    category: str = ""                      # one of CATEGORIES, or "" for none of them
    spatial: int | None = None              # conv, conv_transpose, batchnorm: spatial dims (Linear: 0)
    identity: tuple | None = None           # (neutral value, operands it is neutral as): x + 0 is x
    fold: Callable | None = None            # Constants -> value | None: its value on uniform constants (above)
    rewrites_weights: Callable | None = None  # args -> why forward changes its weights in place, or None
    # args -> whether torch's in-place form has a backward with these settings (leaky_relu_ has none
    # for a negative slope); None: it always has. Where it has not, `inplace=True` is dropped.
    inplace_backward: Callable | None = None
    layer_form: LayerForm | None = None     # torch's signature taking a layer (above), besides `params`
    # What its values mean on the scale losses and metrics care about (SCORES): an activation's output
    # (`produces`: sigmoid and softmax give probabilities, log_softmax log-probabilities) and a loss's
    # `input` (`expects`: cross_entropy takes logits, bce probabilities, nll log-probabilities). The plan
    # checker's lints and the metrics read them.
    produces: str = ""
    expects: str = ""

    def result_types(self, b: "Bound", resolve: bool = True) -> list:
        """Its shape rule's output types for `b`, the arguments it infers from its inputs put in `b` first
        (`resolve`): what the front end checks, and what the code generator asks of other values."""
        if resolve and self.resolve:
            b.args.update(self.resolve(b))
        return self.infer(b)

    @property
    def draws_at_init(self) -> bool:
        return self.weights is not None if self.draws is None else self.draws

    def param(self, name: str) -> ParamSpec | None:
        for p in self.params:
            if p.name == name:
                return p
        return None

    @property
    def is_layer(self) -> bool:
        return self.kind == "layer"

    @property
    def max_inputs(self) -> int:
        return len(self.inputs)

    def input_arity(self, i: int) -> int | None:
        """How many tensors input `i` is a tuple of; None for one tensor, not in a tuple."""
        elements = dict(self.tuple_inputs).get(self.inputs[i]) if i < len(self.inputs) else None
        return len(elements) if elements is not None else None

    def input_names(self, n: int) -> list[str]:
        """The names of the first `n` tensors a node holds, flat: `input`, `h_0`, `c_0`."""
        out = []
        for name in self.inputs:
            out += list(dict(self.tuple_inputs).get(name, (name,)))
        return out[:n]

    def input_structure(self, n: int) -> tuple:
        """How a node's `n` flat input tensors nest as the layer is applied: (0, (1, 2)) for
        `lstm(x, (h_0, c_0))`, (0,) for `lstm(x)`."""
        out, k = [], 0
        for i in range(len(self.inputs)):
            if k >= n:
                break
            arity = self.input_arity(i)
            out.append(k if arity is None else tuple(range(k, k + arity)))
            k += 1 if arity is None else arity
        return tuple(out)

    def keyword_tensors(self, args: dict) -> list:
        """The keyword input tensors a node's args hold, in the order they follow its positional inputs."""
        return [args[p.name] for p in self.keyword_inputs if p.is_tensor and args.get(p.name) is not None]

    def positional(self, args: dict, items: list) -> list:
        """A node's positional inputs (or their types, names): `items` without the keyword input tensors."""
        return list(items[:len(items) - len(self.keyword_tensors(args))])

    def without_keywords(self, args: dict) -> dict:
        """The layer's own arguments: a node's args less what was given at its application."""
        return {k: v for k, v in args.items() if self.keyword_input(k) is None}

    def keyword_input(self, name: str) -> ParamSpec | None:
        return next((p for p in self.keyword_inputs if p.name == name), None)

    @property
    def has_state(self) -> bool:
        return self.weights is not None or self.buffers is not None

    def is_module(self, named: bool) -> bool:
        """Whether generated PyTorch holds the layer as a submodule (`self.fc = nn.Linear(...)`) rather than
        calling a function (`F.relu(x)`): layers with state, named by the user, or with no functional form."""
        return self.has_state or named or self.torch.functional is None

    def weight_shapes(self, args: dict) -> dict:
        return dict(self.weights(args)) if self.weights else {}

    def buffer_shapes(self, args: dict) -> dict:
        return dict(self.buffers(args)) if self.buffers else {}

    def label_text(self, args: dict) -> str:
        return self.label(args) if self.label else self.name


# What passes know an op by: dropout (the identity in eval mode), view (the input's elements in
# order, in another shape), permute (the elements reordered), gather (elements of the input,
# maybe repeated: expand, index), identity, stop_gradient (the same values, no gradient: detach),
# constant (a value of its arguments alone), conv,
# conv_transpose, linear and batchnorm.
CATEGORIES = ("dropout", "view", "permute", "gather", "identity", "stop_gradient", "constant", "conv",
              "conv_transpose", "linear", "batchnorm")
# The categories whose result holds only the input's values (moved, repeated or reshaped): constant
# folding keeps a uniform constant's value through them, with no `fold` of their own.
SAME_VALUE = ("view", "permute", "gather", "identity", "stop_gradient")
# The scales of a classifier's scores: `produces` and `expects` name one of them.
SCORES = ("logits", "probabilities", "log_probabilities")

REGISTRY: dict[str, OpDef] = {}


def signature(name: str, params, skip_tensors: bool = False) -> str:
    """`Conv2d(out_channels, kernel_size, stride=1, ...)`: how a call reads (docs/reference.md, hovers)."""
    parts = [("*" if p.rest else "") + f"{p.name}{_default_text(p)}" for p in params   # `*operands`: Python's *args
             if not (skip_tensors and p.is_tensor)]
    return f"{name}({', '.join(parts)})"


def _default_text(p: ParamSpec) -> str:
    if p.default is REQUIRED:
        return ""
    v = p.default
    if isinstance(v, bool):
        return "=" + str(v).lower()
    if v is None:
        return "=none"
    if isinstance(v, str):
        return f'="{v}"'
    if isinstance(v, tuple):
        return "=[" + ", ".join(literal(x) for x in v) + "]"
    return "=" + literal(v)


def register(op: OpDef) -> OpDef:
    frame = sys._getframe(1)  # inspect.stack() would read every frame's source: seconds at import
    where = f"{_short_path(frame.f_code.co_filename)}:{frame.f_lineno}"
    if op.name in REGISTRY:
        raise RuntimeError(f"{where}: `{op.name}` is already defined at {REGISTRY[op.name].source}")
    op = _with_source(op, where)
    REGISTRY[op.name] = op
    return op


def _short_path(path: str) -> str:
    """`dslc/ops/conv.py` rather than an absolute path."""
    parts = path.replace(os.sep, "/").split("/")
    return "/".join(parts[parts.index("dslc"):]) if "dslc" in parts else path


def _with_source(op: OpDef, where: str) -> OpDef:
    from dataclasses import replace
    return replace(op, source=where)


def validate_registry() -> None:
    """Every entry is complete: fails with the entry's file:line otherwise."""
    problems = []
    for op in REGISTRY.values():
        problems += [f"{op.source}: `{op.name}`: {p}" for p in _entry_problems(op)]
    for h in HELPERS.values():
        for n in h.needs:
            if n not in HELPERS:
                problems.append(f"helper `{h.name}` needs unknown helper `{n}`")
    if problems:
        raise RuntimeError("invalid op registry:\n" + "\n".join(problems))


def _entry_problems(op: OpDef) -> list[str]:
    out = []
    if op.kind not in ("layer", "function", "loss"):
        out.append(f"unknown kind {op.kind!r}")
    if op.kind == "layer" and not op.name[:1].isupper():
        out.append("layer names are capitalized")
    if op.kind != "layer" and not op.name[:1].islower():
        out.append("function and loss names are lower-case")
    if op.torch is None:
        out.append("no PyTorch emission")
    if op.kind == "layer" and not isinstance(op.torch, TorchLayer):
        out.append("a layer needs a TorchLayer emission")
    if op.kind != "layer" and not isinstance(op.torch, TorchFunction):
        out.append("a function needs a TorchFunction emission")
    if not op.examples:
        out.append("no examples")
    if not op.doc:
        out.append("no doc")
    if op.kind == "layer" and not op.stem:
        out.append("no module name stem")
    if op.category and op.category not in CATEGORIES:
        out.append(f"unknown category {op.category!r}")
    for fact in ("produces", "expects"):
        if getattr(op, fact) and getattr(op, fact) not in SCORES:
            out.append(f"`{fact}` must be one of {', '.join(SCORES)}")
    if op.expects and op.kind != "loss":
        out.append("only losses say what their input `expects`")
    for p in op.keyword_inputs:
        if op.kind != "layer" or p.required or op.param(p.name) is not None:
            out.append(f"keyword input `{p.name}`: only layers take them, each with a default and not a parameter")
    for name, elements in op.tuple_inputs:
        if name not in op.inputs or not elements:
            out.append(f"tuple input `{name}` is not one of its inputs, or has no elements")
    if (op.category in ("conv", "conv_transpose", "linear", "batchnorm")) != (op.spatial is not None):
        out.append("conv, conv_transpose, linear and batchnorm entries give `spatial`, others do not")
    return out + _param_problems(op)


def _param_problems(op: OpDef) -> list[str]:
    """Problems of an entry's parameters and helpers."""
    out = []
    names = [p.name for p in op.params]
    if any(p.rest for p in op.params[:-1]) or any(p.rest and not p.is_tensor for p in op.params):
        out.append("only the last parameter, a list of tensors, collects the remaining positional arguments")
    if len(set(names)) != len(names):
        out.append("duplicate parameter names")
    seen_default = False
    for p in op.params:
        if p.required and seen_default and not p.is_tensor:
            out.append(f"required parameter `{p.name}` follows one with a default")
        seen_default |= not p.required
    helpers = getattr(op.torch, "helpers", ())
    for h in (() if callable(helpers) else helpers):   # a function of the arguments: checked where it runs
        if h not in HELPERS:
            out.append(f"unknown helper `{h}`")
    return out


def layers() -> list[OpDef]:
    return [op for op in REGISTRY.values() if op.kind == "layer"]


def functions() -> list[OpDef]:
    return [op for op in REGISTRY.values() if op.kind == "function"]


def losses() -> list[OpDef]:
    return [op for op in REGISTRY.values() if op.kind == "loss"]
