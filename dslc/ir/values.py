"""Values that flow through the evaluator and into IR node arguments."""
from __future__ import annotations

from dataclasses import dataclass

from .dims import Real, Size, plain, plain_float
from .types import TensorType


@dataclass(frozen=True)
class Ref:
    """Output `index` of IR node `node`."""
    node: str
    index: int = 0


@dataclass(frozen=True, eq=False)
class TensorValue:
    """A tensor during compile-time evaluation: where it comes from and its type."""
    ref: Ref
    type: TensorType
    span: object = None  # the Span of the expression that produced it

    def __repr__(self) -> str:
        return f"<tensor {self.ref.node}:{self.ref.index} {self.type}>"


@dataclass(frozen=True)
class Fill:
    """`ones` / `zeros` as a loss target: a constant tensor shaped like the prediction."""
    value: float

    def __repr__(self) -> str:
        return "ones" if self.value == 1.0 else "zeros"

    def describe(self) -> str:
        return f"`{self!r}` (a constant shaped like the prediction)"


def plain_args(args: dict) -> dict:
    """Arguments as plain Python values (emitters need numbers, not expressions)."""
    return {k: _plain(v) for k, v in args.items()}


def _plain(v):
    if isinstance(v, Size):
        return plain(v)
    if isinstance(v, Real):
        return plain_float(v)
    if isinstance(v, (list, tuple)) and not isinstance(v, Fill):
        return type(v)(_plain(x) for x in v)
    return v
