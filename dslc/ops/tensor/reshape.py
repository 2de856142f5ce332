"""Shape manipulation: reshape, permute, transpose, flatten, unflatten, squeeze, expand, ..."""
from __future__ import annotations

from ...ir.dims import FloorDiv, Sym, expr_of, plain, product, require, same
from ...ir.types import TensorType
from ..ptypes import INT, SHAPE, TENSOR, ListOf, Optional
from ..registry import Example, OpDef, ParamSpec, S, ShapeError, TorchFunction, TorchLayer, register
from ..shapes import dim_text, need_min_rank, norm_dim, same_dim
from .common import ANY_DTYPE, _axis, _widened


def _reshape_infer(b):
    t = b.x
    target = list(b["shape"])
    holes = [i for i, d in enumerate(target) if not isinstance(d, Sym) and plain(d) == -1]
    if len(holes) > 1:
        raise ShapeError("`reshape` allows at most one -1", code="E0407", arg="shape")
    for d in target:
        if not isinstance(d, Sym) and plain(d) <= 0 and plain(d) != -1:
            raise ShapeError(f"`reshape` sizes must be positive (or one -1), got {plain(d)}", code="E0407",
                             arg="shape")
    total = product(t.shape)
    known = product([d for i, d in enumerate(target) if i not in holes])
    static = not isinstance(total, Sym) and not isinstance(known, Sym)
    if holes:
        if static and plain(total) % plain(known):
            raise ShapeError(f"cannot reshape {t.shape_str()} ({plain(total)} elements) into {_shape_src(target)}: "
                             f"{plain(known)} does not divide {plain(total)}", code="E0407", arg="shape")
        if not static and _fd_atoms(total, known):
            raise ShapeError(f"cannot show that {_shape_src(target)} fits {t.shape_str()}", code="E0407", arg="shape")
        target[holes[0]] = total // known
    elif static:
        if plain(total) != plain(known):
            raise ShapeError(f"cannot reshape {t.shape_str()} ({plain(total)} elements) into {_shape_src(target)} "
                             f"({plain(known)} elements)", code="E0407", arg="shape", label="element counts differ")
        same(*_uncommon(t.shape, target), b.where)   # records what the counts' agreeing needs of the parameters
    elif not same(total, known, b.where):   # equal at the parameters' values: what they must satisfy is recorded
        raise ShapeError(f"cannot reshape {t.shape_str()} into {_shape_src(target)}: the element counts "
                         f"{total} and {known} are not provably equal", code="E0407", arg="shape",
                         label="element counts differ")
    return [t.with_shape(tuple(target))]


def _uncommon(shape, target) -> tuple:
    """The element counts of `shape` and `target` without the sizes both have (`[maxlen, (e + 1) // 2,
    2]` into `[maxlen, e]` needs `2 * ((e + 1) // 2) == e`): a target's sizes are positive, so a
    size both have cancels out of the counts' equality."""
    rest = list(target)
    kept = []
    for d in shape:
        match = next((i for i, r in enumerate(rest) if expr_of(r) == expr_of(d)), None)
        if match is None:
            kept.append(d)
        else:
            del rest[match]
    return product(kept), product(rest)


def _fd_atoms(total, known) -> set:
    """Floor divisions the -1 would need: a sign that the sizes do not divide."""
    q = expr_of(total).floordiv(expr_of(known))
    return {a for a in q.atoms() if isinstance(a, FloorDiv) and a.num.has_vars()}


def _shape_src(target) -> str:
    return "[" + ", ".join(str(d) if isinstance(d, Sym) else str(plain(d)) for d in target) + "]"


def _reshape_to(g, x: str, dims) -> str:
    """Reshape to `dims` (run-time sizes computed from the inputs, -1 passed through); a 0 means 0, as in torch."""
    return g.op("Reshape", [x, g.shape(dims)], allowzero=1)


def _reshape_onnx(g, n):
    """Reshape to the target as written: `B` read off the inputs at run time, -1 left to Reshape."""
    return [_reshape_to(g, n.inputs[0], n["shape"])]


register(OpDef(
    name="reshape", kind="function", family="tensor", category="view",
    doc="A new shape with the same elements; one size may be -1. Run-time sizes such as `B` are allowed.",
    params=(ParamSpec("input", TENSOR), ParamSpec("shape", SHAPE)), dtypes=ANY_DTYPE,
    infer=_reshape_infer,
    torch=TorchFunction(lambda e: f"{e.arg('input')}.reshape({e.dims(e.args['shape'])})"),
    onnx=_reshape_onnx,
    examples=(Example({"input": S(2, 12), "shape": [2, 3, 4]}), Example({"input": S(2, 3, 4), "shape": [-1, 4]})),
    arbitrary=lambda d: Example({"input": S(2, 6, 4), "shape": d.choice([[2, 24], [-1, 4], [4, -1, 2], [48]])}),
))


def _permute_infer(b):
    t = b.x
    dims = [norm_dim(d, t.rank, "dims") for d in b["dims"]]
    if sorted(dims) != list(range(t.rank)):
        raise ShapeError(f"`permute` needs each of the {t.rank} dimensions once, got {[plain(d) for d in b['dims']]}",
                         code="E0406", arg="dims")
    return [t.with_shape(tuple(t.shape[d] for d in dims))]


def _permute_onnx(g, n):
    """Transpose by the (normalized) permutation."""
    return [g.op("Transpose", [n.inputs[0]], perm=[_axis(d, n.x.rank) for d in n["dims"]])]


register(OpDef(
    name="permute", kind="function", family="tensor", category="permute", doc="Reorders dimensions.",
    params=(ParamSpec("input", TENSOR), ParamSpec("dims", ListOf(INT))), dtypes=ANY_DTYPE,
    infer=_permute_infer,
    torch=TorchFunction(lambda e: f"{e.arg('input')}.permute({e.dims(e.args['dims'])})"),
    onnx=_permute_onnx,
    examples=(Example({"input": S(2, 3, 4), "dims": [0, 2, 1]}),),
    arbitrary=lambda d: Example({"input": S(2, 3, 4), "dims": d.permutation(3)}),
))


def _transpose_infer(b):
    t = b.x
    a, c = norm_dim(b["dim0"], t.rank, "dim0"), norm_dim(b["dim1"], t.rank, "dim1")
    if t.rank == 0:
        return [t]   # torch: transpose(0, -1) of a 0-d tensor is the tensor
    shape = list(t.shape)
    shape[a], shape[c] = shape[c], shape[a]
    return [t.with_shape(tuple(shape))]


def _transpose_onnx(g, n):
    """Transpose by the permutation that swaps dim0 and dim1 (a 0-d tensor is its own transpose)."""
    if n.x.rank == 0:
        return [g.op("Identity", [n.inputs[0]])]
    perm = list(range(n.x.rank))
    a, c = _axis(n["dim0"], n.x.rank), _axis(n["dim1"], n.x.rank)
    perm[a], perm[c] = perm[c], perm[a]
    return [g.op("Transpose", [n.inputs[0]], perm=perm)]


register(OpDef(
    name="transpose", kind="function", family="tensor", category="permute", doc="Swaps two dimensions.",
    params=(ParamSpec("input", TENSOR), ParamSpec("dim0", INT), ParamSpec("dim1", INT)), dtypes=ANY_DTYPE,
    infer=_transpose_infer,
    torch=TorchFunction(lambda e: f"{e.arg('input')}.transpose({e.fmt(e.args['dim0'])}, {e.fmt(e.args['dim1'])})"),
    onnx=_transpose_onnx,
    examples=(Example({"input": S(2, 3, 4), "dim0": 1, "dim1": 2}), Example({"input": S(3, 4), "dim0": 0, "dim1": -1})),
    arbitrary=lambda d: Example({"input": S(2, 3, 4), "dim0": d.int(-3, 2), "dim1": d.int(-3, 2)}),
))


def _flatten_shape(t: TensorType, start, end) -> TensorType:
    s, e = norm_dim(start, t.rank, "start_dim"), norm_dim(end, t.rank, "end_dim")  # a 0-d tensor: 0 or -1
    if t.rank == 0:
        return t.with_shape((1,))   # torch: flattening a 0-d tensor gives a 1-d one
    if s > e:
        raise ShapeError(f"`flatten`'s start_dim ({plain(start)}) comes after its end_dim ({plain(end)})",
                         code="E0406", arg="start_dim")
    return t.with_shape(t.shape[:s] + (product(t.shape[s:e + 1]),) + t.shape[e + 1:])


def _flatten_src(e, start_default: int) -> str:
    start, end = e.args["start_dim"], e.args["end_dim"]
    args = e.fmt(start) if plain(start) != 0 or plain(end) != -1 else ""
    if plain(end) != -1:
        args += f", {e.fmt(end)}"
    return f"{e.inputs[0]}.flatten({args})"


def _flatten_onnx(g, n):
    """ONNX Flatten when its 2-d result is torch's, else Reshape to the result shape (run-time sizes included)."""
    x, rank = n.inputs[0], n.x.rank
    start, end = _axis(n["start_dim"], max(rank, 1)), _axis(n["end_dim"], max(rank, 1))
    if rank and start == end:
        return [g.op("Identity", [x])]
    if rank >= 2 and (start, end) in ((1, rank - 1), (0, rank - 2)):
        return [g.op("Flatten", [x], axis=start if start == 1 else rank - 1)]
    return [_reshape_to(g, x, n.outputs[0].shape)]


register(OpDef(
    name="flatten", kind="function", family="tensor", category="view", doc="Merges dimensions start_dim..end_dim (torch.flatten).",
    params=(ParamSpec("input", TENSOR), ParamSpec("start_dim", INT, 0), ParamSpec("end_dim", INT, -1)),
    dtypes=ANY_DTYPE,
    infer=lambda b: [_flatten_shape(b.x, b["start_dim"], b["end_dim"])],
    torch=TorchFunction(lambda e: _flatten_src(e, 0)),
    onnx=_flatten_onnx,
    examples=(Example({"input": S(2, 3, 4, 5), "start_dim": 1}), Example({"input": S(2, 3, 4), "start_dim": 0,
                                                                           "end_dim": 1})),
    arbitrary=lambda d: Example({"input": S(2, 3, 4, 5), "start_dim": d.int(0, 2), "end_dim": d.int(2, 3)}),
))


register(OpDef(
    name="Flatten", kind="layer", family="tensor", category="view", stem="flatten",
    doc="Merges dimensions start_dim..end_dim; by default all but the batch dimension.",
    params=(ParamSpec("start_dim", INT, 1), ParamSpec("end_dim", INT, -1)), dtypes=ANY_DTYPE,
    infer=lambda b: [_flatten_shape(b.x, b["start_dim"], b["end_dim"])],
    label=lambda a: "Flatten",
    torch=TorchLayer("nn.Flatten", (), ("start_dim", "end_dim"), functional=lambda e: _flatten_src(e, 1)),
    onnx=_flatten_onnx,
    examples=(Example({}, (S(2, 3, 4, 5),)), Example({"start_dim": 2}, (S(2, 3, 4, 5),))),
    arbitrary=lambda d: Example({"start_dim": d.int(0, 2)}, (S(2, 3, 4, 5),)),
))


def _unflatten_infer(b):
    t = b.x
    need_min_rank(t, 1, "unflatten")
    d = norm_dim(b["dim"], t.rank)
    sizes = list(b["sizes"] if "sizes" in b.args else b["unflattened_size"])
    holes = [i for i, s in enumerate(sizes) if plain(s) == -1]
    if len(holes) > 1:
        raise ShapeError("at most one size may be -1", code="E0407")
    n = t.shape[d]
    known = product([s for i, s in enumerate(sizes) if i not in holes])
    if isinstance(n, Sym):   # a run-time size: what the sizes assume, checked by the forward
        require(n % plain(known) if holes else n, "==", 0 if holes else plain(known), b.where)
    if holes:
        if not isinstance(n, Sym) and plain(n) % plain(known):
            raise ShapeError(f"cannot unflatten size {plain(n)} into {[plain(s) for s in sizes]}", code="E0407")
        sizes[holes[0]] = n // known
    elif not isinstance(n, Sym) and plain(known) != plain(n):
        raise ShapeError(f"cannot unflatten size {plain(n)} into {[plain(s) for s in sizes]}: "
                         f"they multiply to {plain(known)}", code="E0407")
    return [t.with_shape(t.shape[:d] + tuple(sizes) + t.shape[d + 1:])]


def _unflatten_onnx(g, n):
    """Reshape: the other dims as the result type has them, the split dim's sizes as written (-1 kept)."""
    out = n.outputs[0].shape
    d = _axis(n["dim"], n.x.rank)
    sizes = list(n["sizes"] if "sizes" in n.args else n["unflattened_size"])
    return [_reshape_to(g, n.inputs[0], list(out[:d]) + sizes + list(out[d + len(sizes):]))]


register(OpDef(
    name="unflatten", kind="function", family="tensor", category="view", doc="Splits one dimension into several (torch.unflatten).",
    params=(ParamSpec("input", TENSOR), ParamSpec("dim", INT), ParamSpec("sizes", ListOf(INT))), dtypes=ANY_DTYPE,
    infer=_unflatten_infer,
    torch=TorchFunction(lambda e: f"{e.arg('input')}.unflatten({e.fmt(e.args['dim'])}, "
                                  f"({e.dims(e.args['sizes'])},))"),
    onnx=_unflatten_onnx,
    examples=(Example({"input": S(2, 12), "dim": 1, "sizes": [3, 4]}),),
    arbitrary=lambda d: Example({"input": S(2, 12), "dim": 1, "sizes": d.choice([[3, 4], [2, -1], [12]])}),
))


register(OpDef(
    name="Unflatten", kind="layer", family="tensor", category="view", stem="unflatten",
    doc="Splits one dimension into several.",
    params=(ParamSpec("dim", INT), ParamSpec("unflattened_size", ListOf(INT))), dtypes=ANY_DTYPE,
    infer=_unflatten_infer,
    torch=TorchLayer("nn.Unflatten", ("dim", "unflattened_size"),
                     functional=lambda e: f"{e.inputs[0]}.unflatten({e.fmt(e.args['dim'])}, "
                                          f"({e.dims(e.args['unflattened_size'])},))"),
    onnx=_unflatten_onnx,
    examples=(Example({"dim": 1, "unflattened_size": [2, 3]}, (S(4, 6),)),),
    arbitrary=lambda d: Example({"dim": 1, "unflattened_size": d.choice([[2, 3], [3, 2], [6]])}, (S(4, 6),)),
))


def _squeeze_dims(b) -> list[int]:
    t = b.x
    if b["dim"] is None:
        return [i for i, d in enumerate(t.shape) if not isinstance(d, Sym) and plain(d) == 1]
    d = norm_dim(b["dim"], t.rank)
    if t.rank == 0:
        return []   # torch: dim 0 or -1 of a 0-d tensor is the tensor itself
    return [d] if not isinstance(t.shape[d], Sym) and plain(t.shape[d]) == 1 else []


def _squeeze_infer(b):
    drop = set(_squeeze_dims(b))
    if b["dim"] is not None and not drop and b.x.rank and isinstance(b.x.shape[norm_dim(b["dim"], b.x.rank)], Sym):
        raise ShapeError(f"`squeeze` of the run-time size `{b.x.shape[norm_dim(b['dim'], b.x.rank)]}` "
                         "depends on its value", code="E0403", arg="dim")
    return [b.x.with_shape(tuple(d for i, d in enumerate(b.x.shape) if i not in drop))]


def _squeeze_src(e) -> str:
    # Static dims only: a run-time size that happens to be 1 (a batch of one) is kept, as the checker promised.
    dims = _squeeze_dims(e)
    if not dims:
        return e.arg("input")
    inner = str(dims[0]) if len(dims) == 1 else "(" + ", ".join(map(str, dims)) + ")"
    return f"{e.arg('input')}.squeeze({inner})"


def _squeeze_onnx(g, n):
    """Squeeze the statically size-1 dims the shape rule removes (a run-time size of 1 stays, as in the PyTorch)."""
    dims = _squeeze_dims(n)
    return [g.op("Squeeze", [n.inputs[0], g.ints(dims)]) if dims else g.op("Identity", [n.inputs[0]])]


register(OpDef(
    name="squeeze", kind="function", family="tensor", category="view",
    doc="Removes dimensions of size 1 (all statically known ones, or `dim`).",
    params=(ParamSpec("input", TENSOR), ParamSpec("dim", Optional(INT), None)), dtypes=ANY_DTYPE,
    infer=_squeeze_infer,
    torch=TorchFunction(_squeeze_src),
    onnx=_squeeze_onnx,
    examples=(Example({"input": S(2, 1, 3, 1)}), Example({"input": S(2, 1, 3), "dim": 1})),
    arbitrary=lambda d: Example({"input": S(2, 1, 3, 1), "dim": d.choice([None, 1, 3, 0])}),
))


def _unsqueeze_infer(b):
    t = b.x
    d = norm_dim(b["dim"], t.rank + 1)
    return [t.with_shape(t.shape[:d] + (1,) + t.shape[d:])]


def _unsqueeze_onnx(g, n):
    """Unsqueeze, the axis (normalized against the result's rank) as an input."""
    return [g.op("Unsqueeze", [n.inputs[0], g.ints([_axis(n["dim"], n.x.rank + 1)])])]


register(OpDef(
    name="unsqueeze", kind="function", family="tensor", category="view", doc="Inserts a dimension of size 1.",
    params=(ParamSpec("input", TENSOR), ParamSpec("dim", INT)), dtypes=ANY_DTYPE,
    infer=_unsqueeze_infer,
    torch=TorchFunction(lambda e: f"{e.arg('input')}.unsqueeze({e.fmt(e.args['dim'])})"),
    onnx=_unsqueeze_onnx,
    examples=(Example({"input": S(2, 3), "dim": 1}), Example({"input": S(2, 3), "dim": -1})),
    arbitrary=lambda d: Example({"input": S(2, 3), "dim": d.int(-3, 2)}),
))


def _expand_infer(b):
    t = b.x
    sizes = list(b["sizes"])
    if len(sizes) < t.rank:
        raise ShapeError(f"`expand` needs at least {t.rank} sizes for {t.shape_str()}, got {len(sizes)}",
                         code="E0402", arg="sizes")
    out = []
    offset = len(sizes) - t.rank
    for i, s in enumerate(sizes):
        have = t.shape[i - offset] if i >= offset else None
        if not isinstance(s, Sym) and plain(s) == -1:
            if have is None:
                raise ShapeError("`expand` cannot use -1 for a new leading dimension", code="E0407", arg="sizes")
            out.append(have)
        elif have is None or (not isinstance(have, Sym) and plain(have) == 1) or same_dim(have, s, b.where):
            out.append(s)
        else:
            raise ShapeError(f"`expand` cannot stretch size {dim_text(have)} to {dim_text(s)} (only size-1 dimensions expand)",
                             code="E0403", arg="sizes")
    return [t.with_shape(tuple(out))]


def _expand_onnx(g, n):
    """Expand to the sizes as written; -1 becomes 1, which Expand's two-way broadcasting reads as `keep`."""
    sizes = [1 if not isinstance(s, Sym) and plain(s) == -1 else s for s in n["sizes"]]
    return [_widened(g, "Expand", [n.inputs[0]], n.x.dtype, (g.shape(sizes),))]


register(OpDef(
    name="expand", kind="function", family="tensor", category="gather",
    doc="Broadcasts size-1 dimensions to the given sizes without copying; -1 keeps a size.",
    params=(ParamSpec("input", TENSOR), ParamSpec("sizes", SHAPE)), dtypes=ANY_DTYPE,
    infer=_expand_infer,
    torch=TorchFunction(lambda e: f"{e.arg('input')}.expand({e.dims(e.args['sizes'])})"),
    onnx=_expand_onnx,
    examples=(Example({"input": S(1, 1, 4), "sizes": [3, 2, 4]}), Example({"input": S(3, 1), "sizes": [2, -1, 5]})),
    arbitrary=lambda d: Example({"input": S(1, 4), "sizes": [d.int(1, 4), d.int(1, 3), 4]}),
))
