"""Re-expressing a block's results in its caller's terms.

Inside a block, sizes are polynomials over the block's own parameters and
input dims. When the block returns, those atoms are replaced by the caller's
expressions for the same values, so `Residual(width)`'s output channels read
`width` in the caller.
"""
from __future__ import annotations

from .dims import FloatGuard, Guard, Param, Poly, Real, Size, Sym, expr_of, fsubst, make_dim, plain, plain_float, real
from .types import TensorType


def subst_dim(d, f):
    if isinstance(d, Sym):
        return make_dim(d.poly.subst(f), None) if d.poly.has_vars() else d
    if isinstance(d, Size):
        return make_dim(d.expr.subst(f), plain(d))
    return d


def subst_type(t: TensorType, f) -> TensorType:
    return TensorType(tuple(subst_dim(d, f) for d in t.shape), t.dtype)


def subst_value(v, f):
    if isinstance(v, (Size, Sym)):
        return subst_dim(v, f)
    if isinstance(v, Real):
        return real(plain_float(v), fsubst(v.expr, f))
    if isinstance(v, list):
        return [subst_value(x, f) for x in v]
    if isinstance(v, tuple):
        return tuple(subst_value(x, f) for x in v)
    return v


def subst_guard(g, f):
    return g.subst(f)


def poly_of_value(v) -> Poly | None:
    """The polynomial standing for a caller's argument value (None: not an int-like)."""
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, Size, Sym)):
        return expr_of(v)
    if isinstance(v, Real):
        return v.expr
    if isinstance(v, float):
        return Poly.const(0)  # a plain float: guards on it are settled (trivial)
    return None


def param_mapping(values: dict):
    """f(atom) for substituting Param atoms by the given values' polynomials."""
    def f(a):
        if isinstance(a, Param) and a.name in values:
            return poly_of_value(values[a.name])
        return None
    return f


__all__ = ["FloatGuard", "Guard", "param_mapping", "poly_of_value", "subst_dim", "subst_guard",
           "subst_type", "subst_value"]
