"""Helpers for shape rules. All raise `ShapeError`; none runs torch."""
from __future__ import annotations

from ..ir.dims import Size, Sym, SymbolicDecision, expr_of, plain, product, require, same
from ..ir.types import TensorType, format_shape
from .registry import ShapeError


def need_rank(t: TensorType, ranks, what: str, layout: str = "", input: int = 0) -> None:
    """The input must have one of `ranks` dimensions."""
    ranks = (ranks,) if isinstance(ranks, int) else tuple(ranks)
    if t.rank in ranks:
        return
    want = " or ".join(f"{r}-d" for r in ranks)
    where = f" {layout}" if layout else ""
    raise ShapeError(f"`{what}` expects a {want} input{where}, got {t.shape_str()}", code="E0402",
                     input=input, label=f"this is {t.rank}-d")


def need_min_rank(t: TensorType, rank: int, what: str, input: int = 0) -> None:
    if t.rank < rank:
        plural = "s" if rank != 1 else ""
        raise ShapeError(f"`{what}` expects an input with at least {rank} dimension{plural}, got {t.shape_str()}",
                         code="E0402", input=input)


def static(d, what: str, input: int | None = 0):
    """A dim that must be known at compile time (a layer's in_features, say)."""
    if isinstance(d, Sym):
        raise ShapeError(f"{what} must be known at compile time, but it is the run-time size `{d}`",
                         code="E0403", input=input,
                         help="give that dimension a fixed size in the model's input shape")
    return d


def norm_dim(dim: int, rank: int, arg: str = "dim") -> int:
    """A dim index in [0, rank), accepting negative indices as torch does."""
    d = plain(dim)
    if not -rank <= d < rank if rank else d not in (0, -1):
        raise ShapeError(f"dimension {d} is out of range for a {rank}-d tensor "
                         f"(valid: {-rank} to {rank - 1})", code="E0406", arg=arg)
    return d % rank if rank else 0


def ntuple(v, n: int) -> tuple:
    return tuple(v) if isinstance(v, (list, tuple)) else (v,) * n


def broadcast(a: TensorType, b: TensorType, what: str = "the operands", where=None) -> tuple:
    """NumPy broadcasting of two shapes; `where`: the op's spec position, for what equal sizes need."""
    out = []
    for i in range(1, max(a.rank, b.rank) + 1):
        da = a.shape[-i] if i <= a.rank else 1
        db = b.shape[-i] if i <= b.rank else 1
        if _alike(da, db) or _is_one(db):
            out.append(da)
        elif _is_one(da):
            out.append(db)
        elif same(da, db, where):
            out.append(da)
        else:
            raise ShapeError(f"cannot broadcast {a.shape_str()} with {b.shape_str()}: "
                             f"size {dim_text(da)} does not match {dim_text(db)} in dimension {-i}", code="E0401",
                             label="shapes do not broadcast")
    return tuple(reversed(out))


def _alike(a, b) -> bool:
    """Two sizes of one form (`out` and `out`): which one the result has decides nothing."""
    if isinstance(a, Sym) or isinstance(b, Sym):
        return isinstance(a, Sym) and isinstance(b, Sym) and a.poly == b.poly
    return expr_of(a) == expr_of(b)


def _is_one(d) -> bool:
    """Whether a size is 1, so that broadcasting takes the other's: a size computed from parameters
    records that it was (`d == 1` on a Size records the guard), since at another value the result
    would take this one; the number 1 records nothing (`[B, out]` with `[B, 1]` is `out` for any
    `out`), nor does a size that is not 1, as the equality checked next fails where it would be."""
    return not isinstance(d, Sym) and plain(d) == 1 and d == 1


def dim_text(d) -> str:
    """A size as messages print it: `T` for a run-time size, else its number."""
    return str(d) if isinstance(d, Sym) else str(plain(d))


def conv_out(size, kernel, stride, padding, dilation, what: str, input: int = 0, where=None):
    """Output length of a convolution/pool along one dimension (floor mode). On a run-time size, the
    kernel's span is a run-time requirement (the forward checks it; `where` is the spec position)."""
    span = dilation * (kernel - 1) + 1
    if isinstance(size, Sym):
        require(size, ">=", plain(span) - 2 * plain(padding), where)
    else:
        if plain(size) + 2 * plain(padding) < plain(span):
            raise ShapeError(
                f"`{what}`'s kernel spans {plain(span)} but the input is only "
                f"{plain(size)}{' + 2×' + str(plain(padding)) + ' padding' if plain(padding) else ''} wide",
                code="E0404", label="kernel larger than its input", input=input,
                help="use a smaller kernel, more padding, or a larger input")
    return (size + 2 * padding - span) // stride + 1


def divides(a, b, where=None) -> bool:
    """Whether b divides a, when both are known; when `a` is a run-time size, True, with `a % b == 0`
    recorded as a run-time requirement (`where`: the spec position that relies on it)."""
    if isinstance(b, Sym):
        return True
    if isinstance(a, Sym):
        require(a % plain(b), "==", 0, where)
        return True
    return plain(b) != 0 and plain(a) % plain(b) == 0


def numel(shape):
    return product(shape)


def same_dim(a, b, where=None) -> bool:
    """Equality of two dims for a check; True when it cannot be decided (B vs B*1). With `where`
    (the op's spec position), what parameters it relies on is recorded as a requirement there."""
    try:
        return same(a, b, where)
    except SymbolicDecision:
        return True


def shape_str(shape) -> str:
    return format_shape(shape)


def positive_int(v) -> bool:
    return plain(v) > 0


__all__ = ["broadcast", "conv_out", "divides", "need_min_rank", "need_rank", "norm_dim", "ntuple",
           "numel", "same_dim", "shape_str", "static", "Size", "Sym", "plain"]
