"""The sizes of a list loop's running value, followed as Python (backends/loops.py).

A hand-writer of a conv stack over a list tracks every size a later layer reads:

    layers, in_channels, size = [], 3, 32
    for width in widths:
        layers.append(ConvPool(in_channels, width))
        in_channels, size = width, size // 2
    super().__init__(*layers, nn.Flatten(), nn.Linear(in_channels * size ** 2, hidden))

Each dimension of the running value (from 1 on) is a polynomial (ir/dims.py) over atoms named by
the Python they stand for: a running variable, an expression the loop's arguments read (`width`),
or a size as the IR has it before the loop (printed only where a line reads it). An element's
effect on them is its own shape rule (`OpDef.infer`) run on sizes that keep these polynomials, or,
for a block, its graph's result sizes, which its shape rules computed over its input dims and
parameters, written in the caller's atoms. What a rule cannot follow, or decides on (a size that
would differ for other lists), is a poison atom: reading it makes the loop NotLoopable, with why.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from ..ir.dims import (
    InDim,
    Param,
    Poly,
    Size,
    Sym,
    SymbolicDecision,
    atom_values,
    plain,
    recording,
    to_python,
)
from ..ir.limits import LimitError
from ..ir.types import TensorType
from ..ops.registry import Bound, ShapeError

VAR = "\x7f"      # a running variable's placeholder, named once the class knows a line reads it (sorted last:
#                   `in_channels * size ** 2`)
FIXED = "\x03"    # a size as the IR has it before the loop
POISON = "\x02"   # a size the loop cannot follow; the rest of the name says why
SQUARE = "height and width differ"

# a running value's sizes after its channels, by how many there are (`size` where all are equal)
SPATIAL = {1: ("length",), 2: ("height", "width"), 3: ("depth", "height", "width")}
# their Python names, and shorter ones where a name is taken (a loop variable `width`)
SPELLINGS = {"size": ("size", "s"), "length": ("length", "n"), "depth": ("depth", "d"), "height": ("height", "h"),
             "width": ("width", "w")}
SIMPLE = re.compile(r"[A-Za-z_][\w.]*(\[[^\[\]]*\])*")
_FAILS = (ShapeError, SymbolicDecision, LimitError, ValueError, TypeError, ArithmeticError, KeyError, IndexError)


class NotLoopable(Exception):
    """Why a list loop is written unrolled."""


class NotSquare(NotLoopable):
    """One `size` for a height and a width that differ: written again with both."""


def atom(name: str) -> Poly:
    return Poly.atom(Param(name))


def poison(why: str) -> Poly:
    return atom(POISON + why)


def poisoned(p: Poly) -> str | None:
    """Why `p` cannot be written, or None."""
    return next((a.name[1:] for a in p.atoms() if isinstance(a, Param) and a.name.startswith(POISON)), None)


@dataclass
class Assign:
    """`in_channels, size = width, size // 2`: running variables set at once, each to a polynomial;
    written once the class knows which variables a line reads."""
    pairs: dict   # variable -> Poly, in the dimensions' order

    def merged(self, other: "Assign") -> "Assign":
        """Two passes' assignments as one; a variable they set differently cannot be read after it."""
        out = {}
        for var in list(self.pairs) + [v for v in other.pairs if v not in self.pairs]:
            a, b = self.pairs.get(var, atom(var)), other.pairs.get(var, atom(var))
            out[var] = a if a == b else poison(f"its passes change `{var.lstrip(VAR)}` differently")
        return Assign(out)


class Sizes:
    """The atoms' values in the pass being read, the IR sizes behind the FIXED ones, and the printing."""

    def __init__(self, printer):
        self.printer = printer
        self.values: dict = {}   # atom name -> its value here (None: a run-time size)
        self.fixed: dict = {}    # FIXED name -> the IR size
        self.loopy: set = set()  # atoms whose values change with the list: running variables, loop expressions

    def of_ir(self, d) -> Poly:
        """An IR size: a number as itself, else an atom printed only where read."""
        if not isinstance(d, (Size, Sym)):
            return Poly.const(plain(d))
        name = FIXED + repr(d.expr if isinstance(d, Size) else ("run-time", d.poly))   # its form: alike in every pass
        self.fixed[name], self.values[name] = d, None if isinstance(d, Sym) else plain(d)
        return atom(name)

    def given(self, text: str, value) -> Poly:
        """An argument's expression that reads the loop (`width`), its value here `value`."""
        self.values[text] = plain(value)
        self.loopy.add(text)
        return atom(text)

    def value(self, p: Poly) -> int | None:
        return p.evaluate(lambda a: self.values.get(a.name) if isinstance(a, Param) else None)

    def dim(self, p: Poly, value):
        """`p` as shape rules read a dimension: a Size keeping it, a number, or the run-time size it is."""
        if p.is_const():
            return p.const_value()
        single = p.single_atom()
        if isinstance(single, Param) and isinstance(self.fixed.get(single.name), Sym):
            return self.fixed[single.name]
        if value is None:
            raise NotLoopable(poisoned(p) or "a run-time size changes in it")
        return Size(value, p)

    def poly(self, d) -> Poly:
        """A dimension a shape rule gave, as a polynomial over the atoms."""
        if isinstance(d, Size):
            return d.expr
        return self.of_ir(d) if isinstance(d, Sym) else Poly.const(plain(d))

    def text(self, p: Poly) -> str:
        why = poisoned(p)
        if why is not None:
            raise (NotSquare if why == SQUARE else NotLoopable)(why)
        single = p.single_atom()
        return self._name(single, bare=True) if isinstance(single, Param) else to_python(p, self._name)

    def _name(self, a, bare: bool = False) -> str:
        if not isinstance(a, Param):
            raise NotLoopable("a size in it is read at run time")
        if a.name.startswith(VAR):
            return a.name
        if isinstance(self.fixed.get(a.name), Sym):
            raise NotLoopable("a size it computes is known only at run time")
        text = self.printer.value(self.fixed[a.name]) if a.name.startswith(FIXED) else a.name
        return text if bare or SIMPLE.fullmatch(text) else f"({text})"

    def env(self) -> dict:
        return {Param(k): v for k, v in self.values.items() if v is not None}

    def decides(self, guards: list) -> bool:
        """Whether a rule decided on an atom the loop changes (a requirement, an error otherwise, is no
        decision: dslc refuses those values too)."""
        return any(getattr(g, "where", None) is None and
                   any(isinstance(a, Param) and (a.name[0] in (VAR, POISON) or a.name in self.loopy) for a in g.atoms())
                   for g in guards)


def infer_layer(sizes: Sizes, inst, x: TensorType, args: dict, where, inferred=frozenset()) -> tuple[dict, list]:
    """A layer's inferred arguments and result dimensions (1 on) for the input `x` whose sizes keep
    their polynomials, its arguments `args` (those the loop reads as Sizes over their atoms), applied at
    `where` (what a rule requires there is no decision: dslc refuses those values too). Where its
    rule cannot follow them, or decides on them, its result's sizes are unknown (NotLoopable where it
    infers an argument). `inferred`: arguments it may be given but infers here (they are written too)."""
    op = inst.op
    b = Bound(op, dict(args), [x], where=where)
    with recording([]) as guards, atom_values(sizes.env()):
        try:
            outs = op.result_types(b)
            why = f"`{op.name}` decides on a size the loop changes" if sizes.decides(guards) else None
        except _FAILS:
            outs, why = None, f"`{op.name}`'s shape rule cannot follow the sizes the loop changes"
    fed = {k: v for k, v in b.args.items() if (op.param(k) is None or k in inferred) and k in inst.args}
    if why is not None:
        if fed or op.resolve:
            raise NotLoopable(why)
        return {}, [poison(why)] * (outs[0].rank - 1 if outs else len(x.shape) - 1)
    if len(outs) != 1:
        raise NotLoopable(f"`{op.name}` has more than one result")
    return fed, [sizes.poly(d) for d in outs[0].shape[1:]]


def block_result(sizes: Sizes, inst, dims: list, arg, taken: set, form: tuple | None) -> list:
    """A block's result dimensions (1 on), in the caller's atoms: its input's dimensions `dims`, its
    parameters `arg(name)`. `form`: its result's sizes in the block's terms that hold in every use of
    the block (Generator.result_form: MobileNet's residual block keeps its input's width only where it
    decided `x.shape[1] == out`, so `out` is its width in every use); None where no one form does, and
    a decision of its graph on an input size its class does not take (`taken`: nothing checks it
    there): then they are unknown."""
    g = inst.graph
    if len(g.inputs) != 1 or len(g.outputs) != 1:
        raise NotLoopable("a block in it has more than one input or output")
    name = g.inputs[0][0]

    def caller(a):
        if isinstance(a, InDim):
            return dims[a.index - 1] if a.input == name and 1 <= a.index <= len(dims) else \
                poison("a block in it reads its batch size")
        return arg(a.name) if isinstance(a, Param) else None

    out = g.type_of(g.outputs[0][1])
    decided = {a for guard in g.guards if getattr(guard, "where", None) is None for a in guard.atoms()}
    if any(isinstance(a, InDim) and a not in taken for a in decided):
        return [poison(f"`{g.name}` decides on a size of its input")] * (out.rank - 1)
    if form is None:
        return [poison(f"`{g.name}`'s result has other sizes in other uses")] * (out.rank - 1)
    return [d.subst(caller) if isinstance(d, Poly) else sizes.poly(d) for d in form]
