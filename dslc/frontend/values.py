"""What expressions evaluate to at compile time, besides numbers, strings and lists.

Numbers are ints, floats, `Size`/`Real` (parameters that remember their
names) and `Sym` (run-time sizes); tensors are `TensorValue`s.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..ir.values import Fill, TensorValue  # noqa: F401  (re-exported)


class _Poison:
    """The value of an expression that already failed: using it reports nothing more."""

    _instance = None

    def __new__(cls):
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "<poison>"


POISON = _Poison()
MISSING = object()   # what looking up an unknown name finds


@dataclass(frozen=True)
class OpRef:
    """A registry entry named but not yet called (`ReLU`, `relu`)."""
    op: object

    def describe(self) -> str:
        return f"the {self.op.kind} `{self.op.name}`"


@dataclass(frozen=True)
class DeclRef:
    """A model, block, loss or plan declared in the program."""
    decl: object

    def describe(self) -> str:
        return f"the {self.decl.kind} `{self.decl.name}`"


@dataclass
class LayerSpec:
    """`Linear(64)`: a layer with its arguments, not yet applied to a tensor."""
    op: object
    args: dict
    arg_spans: dict
    span: object
    name: str | None = None
    name_span: object = None
    inits: tuple = ()     # (weight name or None for every non-bias weight, InitSpec, span) from `init=`
    key: tuple = ()       # a name from a template: its parts (frontend/templates.py)

    def describe(self) -> str:
        return f"the layer `{self.op.name}(...)`"


@dataclass
class BlockSpec:
    """`Residual(64, stride=2)`: a block with its arguments, not yet applied."""
    decl: object
    args: dict
    arg_spans: dict
    span: object
    name: str | None = None
    name_span: object = None
    key: tuple = ()       # a name from a template: its parts (frontend/templates.py)

    def describe(self) -> str:
        return f"the block `{self.decl.name}(...)`"


@dataclass
class InstanceValue:
    """A named layer (`as wte`, `lin = Linear(8)`): one module, whose every application shares its
    weights. `instance` is None until the layer is made, at its first application (which gives its
    inferred sizes) or when its weights are read (`emb.weight`, where no size is inferred)."""
    instance: object
    spec: LayerSpec | BlockSpec
    graph: object

    @property
    def name(self) -> str:
        return self.spec.name

    def describe(self) -> str:
        return f"the layer `{self.name}`"


def layer_op(spec):
    """The registry layer that `spec` applies (a layer, or a named layer instance); None for a block."""
    if isinstance(spec, (LayerSpec, OpRef)):
        return spec.op if spec.op.is_layer else None
    if isinstance(spec, InstanceValue):   # a named layer, made or not yet
        return spec.spec.op if isinstance(spec.spec, LayerSpec) else None
    return None


@dataclass(frozen=True)
class Builtin:
    """A compile-time function such as `range` or `len`; `tensor_op` (with the fixed arguments
    `tensor_args`) is what a call with a tensor argument means: `float(x)` is `cast(x, "float32")`."""
    name: str
    fn: object
    tensor_op: str = ""
    tensor_args: tuple = ()

    def describe(self) -> str:
        return f"the built-in `{self.name}`"


@dataclass(frozen=True)
class InitSpec:
    """An initializer of a `param` tensor or a layer's weight: `zeros`, `normal(std=0.02)`."""
    init: object
    args: dict

    def describe(self) -> str:
        return f"the initializer `{self.init.name}`"


@dataclass
class Record:
    """A value with named fields: `batch` and `out` in plans."""
    kind: str
    fields: dict = field(default_factory=dict)
    span: object = None

    def describe(self) -> str:
        return f"`{self.kind}`"


@dataclass
class PlanCall:
    """A call inside a training plan to a plan-level name (optimizer, schedule, data set...)."""
    name: str
    args: dict
    arg_spans: dict
    span: object
    target: object = None  # e.g. the model an optimizer updates

    def describe(self) -> str:
        return f"`{self.name}(...)`"
