"""`einsum(equation, a, b, ...)`: torch.einsum's equations (letters, `...` broadcasting, implicit or
explicit output), checked at compile time; a letter repeated within one operand (a diagonal or a
trace) is refused, as is a letter whose sizes differ between operands (torch would broadcast a 1).

MACs follow torch's evaluation, left to right: a letter found in one operand only and nowhere
later is summed out first; then each pair that shares a summed letter is a batched matrix
product costing the product of the sizes of every letter left in the pair (for two operands:
the product of all index sizes). A pair without a shared summed letter is an elementwise or
outer product: no MACs, as for `*`. Each dim under `...` counts as a letter, absent from an
operand where it is 1 (it broadcasts there).
"""
from __future__ import annotations

import string
from dataclasses import dataclass

from ...ir.dims import is_static, plain, product
from ...ir.types import TensorType
from ..ptypes import STR, TENSORS
from ..registry import Example, OpDef, ParamSpec, S, ShapeError, TorchFunction, register
from ..shapes import broadcast, dim_text, same_dim

ELLIPSIS = "..."
_LETTERS = frozenset(string.ascii_letters)
EINSUM_DTYPES = ("float32", "float64", "float16", "bfloat16", "int64", "int32")


@dataclass(frozen=True)
class Equation:
    """A parsed equation: each operand's labels (letters, and ELLIPSIS for its `...`) and the output's."""
    inputs: tuple
    output: tuple

    @property
    def text(self) -> str:
        """The explicit equation, without spaces: `ij,jk->ik`."""
        return ",".join("".join(t) for t in self.inputs) + "->" + "".join(self.output)


def _bad(message: str, help: str | None = None) -> ShapeError:
    return ShapeError(f"einsum: {message}", code="E0302", arg="equation", label="malformed equation", help=help)


def _labels(term: str, what: str) -> tuple:
    out, i = [], 0
    while i < len(term):
        if term.startswith(ELLIPSIS, i):
            if ELLIPSIS in out:
                raise _bad(f"{what} has `...` twice")
            out.append(ELLIPSIS)
            i += 3
            continue
        ch = term[i]
        if ch not in _LETTERS:
            raise _bad(f"`{ch}` in {what} is not a subscript", help="subscripts are letters a-z, A-Z and `...`")
        out.append(ch)
        i += 1
    return tuple(out)


def parse(equation: str, n: int) -> Equation:
    """The equation for `n` operands, or a ShapeError saying what is wrong with it."""
    eq = "".join(equation.split())
    lhs, arrow, rhs = eq.partition("->")
    if "->" in rhs or "-" in lhs or ">" in lhs:
        raise _bad("`->` may appear once, between the operands and the output")
    terms = lhs.split(",")
    if len(terms) != n:
        raise _bad(f"the equation names {len(terms)} operand{'s' if len(terms) != 1 else ''} but "
                   f"{n} tensor{'s are' if n != 1 else ' is'} given")
    inputs = tuple(_labels(t, f"operand {k + 1}") for k, t in enumerate(terms))
    for k, labels in enumerate(inputs):
        letters = [c for c in labels if c != ELLIPSIS]
        repeated = next((c for c in letters if letters.count(c) > 1), None)
        if repeated:
            raise _bad(f"`{repeated}` appears twice in operand {k + 1} (a diagonal or a trace): not supported",
                       help="give each dimension of an operand its own letter")
    has_ellipsis = any(ELLIPSIS in t for t in inputs)
    if arrow:
        return Equation(inputs, _output(_labels(rhs, "the output"), inputs, has_ellipsis))
    once = sorted(c for c in {c for t in inputs for c in t if c != ELLIPSIS}
                  if sum(t.count(c) for t in inputs) == 1)   # torch's implicit output: ASCII order, `...` first
    return Equation(inputs, ((ELLIPSIS,) if has_ellipsis else ()) + tuple(once))


def _output(out: tuple, inputs: tuple, has_ellipsis: bool) -> tuple:
    seen = set()
    for c in out:
        if c in seen:
            raise _bad(f"`{c}` appears twice in the output")
        seen.add(c)
        if c == ELLIPSIS and not has_ellipsis:
            raise _bad("the output has `...` but no operand does")
        if c != ELLIPSIS and not any(c in t for t in inputs):
            raise _bad(f"the output's `{c}` is in no operand")
    return out


def _split(labels: tuple, t: TensorType, k: int):
    """{letter: size} of operand k and the dims its `...` covers; a rank the labels cannot fit is E0402."""
    letters = [c for c in labels if c != ELLIPSIS]
    if ELLIPSIS not in labels and t.rank != len(letters) or t.rank < len(letters):
        raise ShapeError(f"einsum: operand {k + 1} is {t.shape_str()}, but its subscripts "
                         f"`{''.join(labels)}` name {len(letters)} dimension{'s' if len(letters) != 1 else ''}"
                         + (" and more" if ELLIPSIS in labels else ""), code="E0402", input=k)
    if ELLIPSIS not in labels:
        return dict(zip(letters, t.shape)), None
    at = labels.index(ELLIPSIS)
    covered = t.rank - len(letters)
    dims = t.shape[:at] + t.shape[at + covered:]
    return dict(zip(letters, dims)), t.shape[at:at + covered]


def _sizes(eq: Equation, types: list) -> tuple[dict, tuple]:
    """Every letter's size (equal in every operand that has it) and the broadcast shape of the `...`s."""
    sizes, where, ellipsis = {}, {}, None
    for k, (labels, t) in enumerate(zip(eq.inputs, types)):
        dims, covered = _split(labels, t, k)
        for c, d in dims.items():
            if c in sizes and not same_dim(sizes[c], d):
                raise ShapeError(f"einsum: `{c}` is {dim_text(sizes[c])} in operand {where[c] + 1} but {dim_text(d)} "
                                 f"in operand {k + 1}", code="E0403", input=k, label="sizes must match")
            sizes.setdefault(c, d)
            where.setdefault(c, k)
        if covered is not None:
            ellipsis = covered if ellipsis is None else broadcast(TensorType(ellipsis), TensorType(covered))
    return sizes, ellipsis or ()


def _einsum_infer(b):
    types = b.inputs
    eq = parse(b["equation"], len(types))
    if len({t.dtype for t in types}) > 1:
        raise ShapeError("einsum takes operands of one dtype, got " + ", ".join(t.dtype for t in types),
                         code="E0310", help="cast them first (`float(x)`)")
    sizes, ellipsis = _sizes(eq, types)
    shape = []
    for c in eq.output:
        shape += list(ellipsis) if c == ELLIPSIS else [sizes[c]]
    return [TensorType(tuple(shape), types[0].dtype)]


def _einsum_macs(b, out):
    """Left to right, as torch contracts (the module's doc says how a pair is counted)."""
    eq = parse(b["equation"], len(b.inputs))
    sizes, ellipsis = _sizes(eq, b.inputs)
    sizes.update({("...", j): d for j, d in enumerate(ellipsis)})
    operands = [_present(labels, t, len(ellipsis)) for labels, t in zip(eq.inputs, b.inputs)]
    output = {("...", j) for j in range(len(ellipsis))} if ELLIPSIS in eq.output else set()
    output |= set(eq.output) - {ELLIPSIS}
    later = [output.union(*operands[k + 1:]) for k in range(len(operands))]
    running = operands[0] & later[0]
    total = 0
    for k in range(1, len(operands)):
        right = {c for c in operands[k] if c in running or c in later[k]}
        if any(c not in later[k] for c in running & right):
            total = total + product([sizes[c] for c in sorted(running | right, key=str)])
        running = (running | right) & later[k]
    return total


def _present(labels: tuple, t: TensorType, rank: int) -> set:
    """An operand's labels for counting: its letters, and each dim of the broadcast `...` it has (numbered
    from the left of the broadcast shape) unless it is 1 there, which broadcasts as if absent."""
    out = {c for c in labels if c != ELLIPSIS}
    if ELLIPSIS in labels:
        _, covered = _split(labels, t, 0)
        out |= {("...", rank - len(covered) + j) for j, d in enumerate(covered) if not (is_static(d) and plain(d) == 1)}
    return out


def _einsum_onnx(g, n):
    """Einsum with an explicit output; `...`s of fewer dims get leading 1s (onnxruntime wants them of one
    rank), and `...` left out of the output is summed after (onnxruntime wants it there); float16 and
    bfloat16 in float32."""
    eq = parse(n["equation"], len(n.inputs))
    dt = n.outputs[0].dtype
    work = "float32" if dt in ("float16", "bfloat16") else dt
    covered = [t.rank - len(labels) + 1 for labels, t in zip(eq.inputs, n.types) if ELLIPSIS in labels]
    rank = max(covered, default=0)
    xs = []
    for x, labels, t in zip(n.inputs, eq.inputs, n.types):
        x = g.cast(x, work, have=t.dtype)
        if ELLIPSIS in labels and t.rank - len(labels) + 1 < rank:
            at = labels.index(ELLIPSIS)
            x = g.op("Unsqueeze", [x, g.ints(range(at, at + rank - (t.rank - len(labels) + 1)))])
        xs.append(x)
    summed = bool(covered) and ELLIPSIS not in eq.output
    out = Equation(eq.inputs, ((ELLIPSIS,) if summed else ()) + eq.output)
    y = g.op("Einsum", xs, equation=out.text)
    if summed and rank:
        y = g.op("ReduceSum", [y, g.ints(range(rank))], keepdims=0)
    return [g.cast(y, dt, have=work)]


def _arbitrary(d) -> Example:
    kind, i, j, k = d.int(0, 2), d.int(1, 4), d.int(1, 4), d.int(1, 4)
    if kind == 0:
        return Example({"equation": "bij,bjk->bik", "operands": [S(2, i, j), S(2, j, k)]})
    if kind == 1:   # `...` of different ranks, with 1s that broadcast
        a = d.shape(0, 2, 1, 3)
        b = tuple(1 if d.bool() else x for x in a)[d.int(0, len(a)):]
        return Example({"equation": "...i,...i->...", "operands": [S(*a, i), S(*b, i)]})
    return Example({"equation": d.choice(["ij->ji", "ij->", "ij", "ji->i"]), "operands": [S(i, j)]})


register(OpDef(
    name="einsum", kind="function", family="arith",
    doc="Einstein summation (torch.einsum): `einsum(\"bij,bjk->bik\", a, b)`; letters name dimensions, `...` "
        "the broadcast rest, and without `->` the output is the letters found once, in ASCII order. A letter "
        "repeated in one operand (a diagonal) is refused. MACs: the product of all index sizes for a "
        "two-operand contraction (0 when nothing is summed), pair by pair left to right for more.",
    params=(ParamSpec("equation", STR), ParamSpec("operands", TENSORS, rest=True)),
    dtypes=EINSUM_DTYPES, infer=_einsum_infer, macs=_einsum_macs,
    torch=TorchFunction(lambda e: f"torch.einsum({e.fmt(e['equation'])}, {e.arg('operands')[1:-1]})"),
    label=lambda a: f"einsum {a['equation']}", onnx=_einsum_onnx,
    examples=(Example({"equation": "bij,bjk->bik", "operands": [S(2, 3, 4), S(2, 4, 5)]}),
              Example({"equation": "ij,jk", "operands": [S(3, 4), S(4, 2)]}),
              Example({"equation": "bhqd,bhkd->bhqk", "operands": [S(2, 2, 3, 4), S(2, 2, 5, 4)]}),
              Example({"equation": "...ij->...ji", "operands": [S(2, 3, 4)]}),
              Example({"equation": "ij->", "operands": [S(3, 4)]}),
              Example({"equation": "i,j->ij", "operands": [S(3), S(4)]}),
              Example({"equation": "...d,d->...", "operands": [S(2, 3, 4), S(4)]}),
              Example({"equation": "ij,jk,kl->il", "operands": [S(2, 3), S(3, 4), S(4, 5)]}),
              Example({"equation": "b...i,b...i->b", "operands": [S(2, 3, 4), S(2, 1, 4)]}),
              Example({"equation": "Ba,aC", "operands": [S(2, 3, dtype="int64", values=(-3, 3)),
                                                         S(3, 4, dtype="int64", values=(-3, 3))]})),
    arbitrary=lambda d: _arbitrary(d),
))
