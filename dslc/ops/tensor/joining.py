"""Joining and splitting tensors: concat, stack, chunk, split."""
from __future__ import annotations

from ...ir.dims import Sym, plain
from ...ir.types import TensorType
from .. import checks
from ..ptypes import INT, TENSOR, TENSORS, ListOf, OneOf
from ..registry import Constants, Example, OpDef, ParamSpec, S, ShapeError, TorchFunction, register
from ..shapes import need_min_rank, norm_dim, same_dim
from .common import ANY_DTYPE, _axis, _promote


def _joined_dtype(ts) -> str:
    """torch.cat and torch.stack promote mixed dtypes as arithmetic does."""
    dtype = ts[0].dtype
    for t in ts[1:]:
        dtype = _promote(dtype, t.dtype)
    return dtype


def _concat_infer(b):
    ts = b.inputs
    first = ts[0]
    d = norm_dim(b["dim"], first.rank)
    total = 0
    for i, t in enumerate(ts):
        if t.rank != first.rank:
            raise ShapeError(f"`concat` needs tensors of equal rank, got {first.shape_str()} and {t.shape_str()}",
                             code="E0402", input=i)
        for j in range(t.rank):
            if j != d and not same_dim(t.shape[j], first.shape[j], b.where):
                raise ShapeError(f"`concat` along dim {plain(b['dim'])}: the tensors differ in dimension {j} "
                                 f"({first.shape_str()} and {t.shape_str()})", code="E0403", input=i,
                                 label="sizes must match except along `dim`")
        total = total + t.shape[d]
    return [TensorType(first.shape[:d] + (total,) + first.shape[d + 1:], _joined_dtype(ts))]


def _joined(g, n) -> list:
    """The joined tensors, each in the result's dtype (torch.cat and torch.stack promote mixed dtypes)."""
    out = n.outputs[0].dtype
    return [g.cast(x, out, have=t.dtype) for x, t in zip(n.tensors("tensors"), n.types)]


def _joined_fold(c: Constants):
    """Joined equal constants are that constant; different ones are not uniform."""
    return c.x if all(v == c.x for v in c.values) else None


def _concat_onnx(g, n):
    """Concat along the (normalized) dim."""
    return [g.op("Concat", _joined(g, n), axis=_axis(n["dim"], n.x.rank))]


register(OpDef(
    name="concat", kind="function", family="tensor", doc="Joins tensors along an existing dimension (torch.cat).",
    params=(ParamSpec("tensors", TENSORS), ParamSpec("dim", INT, 0)), dtypes=ANY_DTYPE,
    infer=_concat_infer, fold=_joined_fold,
    torch=TorchFunction(lambda e: f"torch.cat({e.arg('tensors')}{e.kw('dim')})"),
    onnx=_concat_onnx,
    examples=(Example({"tensors": [S(2, 3), S(2, 4)], "dim": 1}), Example({"tensors": [S(1, 3), S(2, 3)]})),
    arbitrary=lambda d: Example({"tensors": [S(2, d.int(1, 4), 3), S(2, d.int(1, 4), 3)], "dim": 1}),
))


def _stack_infer(b):
    ts = b.inputs
    first = ts[0]
    d = norm_dim(b["dim"], first.rank + 1)
    for i, t in enumerate(ts):
        if t.rank != first.rank or not all(same_dim(p, q, b.where) for p, q in zip(t.shape, first.shape)):
            raise ShapeError(f"`stack` needs tensors of equal shape, got {first.shape_str()} and {t.shape_str()}",
                             code="E0403", input=i)
    return [TensorType(first.shape[:d] + (len(ts),) + first.shape[d:], _joined_dtype(ts))]


def _stack_onnx(g, n):
    """Each tensor unsqueezed at the new dim, then concatenated along it."""
    d = _axis(n["dim"], n.x.rank + 1)
    axes = g.ints([d])
    return [g.op("Concat", [g.op("Unsqueeze", [x, axes]) for x in _joined(g, n)], axis=d)]


register(OpDef(
    name="stack", kind="function", family="tensor", doc="Stacks equal-shaped tensors along a new dimension.",
    params=(ParamSpec("tensors", TENSORS), ParamSpec("dim", INT, 0)), dtypes=ANY_DTYPE,
    infer=_stack_infer, fold=_joined_fold,
    torch=TorchFunction(lambda e: f"torch.stack({e.arg('tensors')}{e.kw('dim')})"),
    onnx=_stack_onnx,
    examples=(Example({"tensors": [S(2, 3), S(2, 3)], "dim": 1}),),
    arbitrary=lambda d: Example({"tensors": [S(2, 3)] * d.int(1, 3), "dim": d.int(-3, 2)}),
))


def _chunk_infer(b):
    t = b.x
    need_min_rank(t, 1, "chunk")
    d = norm_dim(b["dim"], t.rank)
    n = t.shape[d]
    if isinstance(n, Sym):
        raise ShapeError(f"`chunk` needs a size known at compile time along dim {plain(b['dim'])}, got `{n}`",
                         code="E0403", arg="dim")
    chunks = plain(b["chunks"])
    size = -(-plain(n) // chunks)
    sizes = [min(size, plain(n) - i) for i in range(0, plain(n), size)]
    if chunks > 1 and size * chunks == plain(n) or chunks == 1:
        sizes = [n // chunks] * chunks  # keeps `dim` rather than `768` when it divides evenly
    return [t.with_shape(t.shape[:d] + (s,) + t.shape[d + 1:]) for s in sizes]


def _split_onnx(g, n):
    """Split with the pieces' sizes along dim as its `split` input (opset 18 takes no `num_outputs` then)."""
    d = _axis(n["dim"], n.x.rank)
    if len(n.outputs) == 1:
        return [g.op("Identity", [n.inputs[0]])]
    sizes = g.shape([t.shape[d] for t in n.outputs])
    return list(g.op("Split", [n.inputs[0], sizes], n_out=len(n.outputs), axis=d))


register(OpDef(
    name="chunk", kind="function", family="tensor", sequence=True,
    doc="Splits into `chunks` pieces along `dim` (the last may be smaller, as torch.chunk).",
    params=(ParamSpec("input", TENSOR), ParamSpec("chunks", INT, check=checks.positive),
            ParamSpec("dim", INT, 0)), dtypes=ANY_DTYPE,
    infer=_chunk_infer,
    torch=TorchFunction(lambda e: f"{e.arg('input')}.chunk({e.fmt(e.args['chunks'])}{e.kw('dim')})"),
    onnx=_split_onnx,
    examples=(Example({"input": S(2, 12), "chunks": 3, "dim": -1}), Example({"input": S(7, 2), "chunks": 3})),
    arbitrary=lambda d: Example({"input": S(d.int(1, 9), 3), "chunks": d.int(1, 4)}),
))


def _split_infer(b):
    t = b.x
    need_min_rank(t, 1, "split")
    d = norm_dim(b["dim"], t.rank)
    n = t.shape[d]
    spec = b["split_size_or_sections"]
    if isinstance(spec, tuple):
        total = sum(plain(s) for s in spec)
        if not isinstance(n, Sym) and total != plain(n):
            raise ShapeError(f"`split` sections add up to {total} but dimension {plain(b['dim'])} has size {plain(n)}",
                             code="E0403", arg="split_size_or_sections")
        sizes = list(spec)
    else:
        if isinstance(n, Sym):
            raise ShapeError(f"`split` by size needs a known size along dim {plain(b['dim'])}, got `{n}`",
                             code="E0403", arg="dim")
        step = plain(spec)
        sizes = [min(step, plain(n) - i) for i in range(0, plain(n), step)]
    return [t.with_shape(t.shape[:d] + (s,) + t.shape[d + 1:]) for s in sizes]


register(OpDef(
    name="split", kind="function", family="tensor", sequence=True,
    doc="Splits along `dim` into pieces of a size, or into listed section sizes (torch.split).",
    params=(ParamSpec("input", TENSOR), ParamSpec("split_size_or_sections", OneOf((INT, ListOf(INT))),
                                                  check=checks.positive),
            ParamSpec("dim", INT, 0)), dtypes=ANY_DTYPE,
    infer=_split_infer,
    torch=TorchFunction(lambda e: f"{e.arg('input')}.split({e.fmt(e.args['split_size_or_sections'])}"
                                  f"{e.kw('dim')})"),
    onnx=_split_onnx,
    examples=(Example({"input": S(2, 10), "split_size_or_sections": [3, 7], "dim": 1}),
              Example({"input": S(5, 2), "split_size_or_sections": 2})),
    arbitrary=lambda d: Example({"input": S(d.int(1, 9), 2), "split_size_or_sections": d.int(1, 4)}),
))
