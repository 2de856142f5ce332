"""What evaluating one model, block or plan body carries (`Ctx`), and a block's view of its input:
shared by the evaluator's parts (evaluator.py, statements.py, expressions.py, calls.py) and layer
application (apply.py)."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..ir.dims import InDim, Poly, Size, Sym, plain
from ..ir.graph import Graph
from ..ir.types import TensorType


@dataclass
class Ctx:
    """The state of one model or block specialization being evaluated."""
    graph: Graph
    decl: object
    kind: str                       # model | block | plan
    scope: dict = field(default_factory=dict)
    current: object = None          # the running value of sequential statements
    inputs_left: list | None = None  # caller tensors for the block's `input` statements
    n_inputs_declared: int = 0
    outputs: list | None = None
    stack: tuple = ()               # names of the blocks being specialized (recursion check)
    loop_depth: int = 0
    failed: bool = False            # some statement failed (here or in a block it used)
    layer_names: dict = field(default_factory=dict)  # a named layer's name -> (Instance, where it was named)
    buffer_sources: set = field(default_factory=set)  # ids of nodes a buffer's value was copied from
    loops: list = field(default_factory=list)  # loops that may be module lists (frontend/containers.py)


def block_input_type(name: str, t: TensorType, env: dict) -> TensorType:
    """A block's view of its input: static dims become `InDim`s (its `in_channels`...)."""
    dims = []
    for i, d in enumerate(t.shape):
        if isinstance(d, Sym):
            dims.append(d)
        else:
            env[InDim(name, i)] = plain(d)
            dims.append(Size(plain(d), Poly.atom(InDim(name, i))))
    return TensorType(tuple(dims), t.dtype)
