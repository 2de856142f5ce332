"""Indexing and slicing: `x[0]`, `x[:, 1:3]`, and slices to a run-time size (`pe[:T]`)."""
from __future__ import annotations

from ...ir.dims import Sym, plain, require
from ..ptypes import ANY, TENSOR
from ..registry import Example, OpDef, ParamSpec, S, ShapeError, TorchFunction, register
from .common import _INT64_MAX, ANY_DTYPE


def _index_infer(b):
    t = b.x
    items = b["index"]
    if len(items) > t.rank:
        raise ShapeError(f"too many indices ({len(items)}) for a {t.rank}-d tensor {t.shape_str()}",
                         code="E0406", arg="index")
    out = []
    for i, item in enumerate(items):
        size = t.shape[i]
        if isinstance(item, tuple):
            out.append(_slice_len(size, item[1:], b.where))
            continue
        k = plain(item)
        if isinstance(size, Sym):   # a run-time size: the model checks it is long enough when it runs
            op, least = (">", k) if k >= 0 else (">=", -k)
            require(size, op, least, b.where)
        elif not -plain(size) <= k < plain(size):
            raise ShapeError(f"index {k} is out of range for dimension {i} of size {plain(size)}",
                             code="E0406", arg="index")
    out.extend(t.shape[len(items):])
    return [t.with_shape(tuple(out))]


def _slice_len(size, parts, where=None):
    start, stop, step = parts
    step = 1 if step is None else plain(step)
    if isinstance(start, Sym) or isinstance(stop, Sym):
        return _run_time_bounds(size, start, stop, step, where)
    if not isinstance(size, Sym):
        return len(range(*slice(start, stop, step).indices(plain(size))))
    n, least = _run_time_slice(size, start, stop)
    require(size, ">=", least, where)
    return n if step == 1 else (n + step - 1) // step


def _run_time_bounds(size, start, stop, step: int, where):
    """`pe[:T]`, `x[2:T]`, `x[T:]`: a bound that is a run-time size, from the start (not negative).
    The length is stop - start, which needs start <= stop <= size when the model runs (nanoGPT's
    `assert t <= block_size`)."""
    if step != 1 or any(not isinstance(v, Sym) and v is not None and plain(v) < 0 for v in (start, stop)):
        raise ShapeError("a slice to a run-time size counts from the start, by steps of 1 (`pe[:T]`, `x[2:T]`)",
                         code="E0406", arg="index")
    lo = 0 if start is None else start
    hi = size if stop is None else stop
    if isinstance(hi, Sym) or isinstance(size, Sym):
        require(size - hi, ">=", 0, where)
    elif plain(hi) > plain(size):
        raise ShapeError(f"the slice ends at {plain(hi)}, past the size {plain(size)}", code="E0406", arg="index")
    length = hi - lo
    if isinstance(length, Sym):
        require(length, ">=", 0, where)
    return length


def _run_time_slice(size, start, stop) -> tuple:
    """(length, the least size it relies on) of `start:stop` on a run-time size: the length the
    literal bounds give, which needs the size to reach them (0 and nothing when stop <= start)."""
    lo = 0 if start is None else plain(start)
    if stop is not None and plain(stop) >= 0:       # lo:hi
        if lo < 0:
            raise ShapeError(f"a negative start with a positive stop on the run-time size `{size}` has no static length",
                             code="E0406", arg="index")
        hi = plain(stop)
        return (hi - lo, hi) if hi > lo else (0, 0)
    hi = 0 if stop is None else plain(stop)         # to the end, or to -h from it
    if lo < 0:                                      # -a: and -a:-b
        return (hi - lo, -lo) if hi > lo else (0, 0)
    return size - lo + hi, lo - hi                  # lo: and lo:-h


def _index_src(e) -> str:
    parts = []
    for item in e.args["index"]:
        if isinstance(item, tuple):
            start, stop, step = (("" if x is None else e.fmt(x) if isinstance(x, Sym) else str(plain(x)))
                                 for x in item[1:])
            parts.append(f"{start}:{stop}" + (f":{step}" if step else ""))
        else:
            parts.append(str(plain(item)))
    return f"{e.arg('input')}[{', '.join(parts)}]"


def _index_onnx(g, n):
    """One Slice for every slice and integer index (k as k:k+1), then Squeeze of the integer-indexed dims.

    Static sizes get Python's slice bounds exactly; run-time sizes pass the bounds as written, since Slice
    counts negative bounds from the end and clamps to [0, size] as Python does."""
    shape = n.x.shape
    starts, ends, axes, steps, drop = [], [], [], [], []
    for i, item in enumerate(n["index"]):
        size = shape[i]
        if isinstance(item, tuple):
            start, stop, step = item[1:]
            step = 1 if step is None else plain(step)
            if isinstance(start, Sym) or isinstance(stop, Sym):   # `pe[:T]`: read off the inputs' shapes
                start, stop = 0 if start is None else start, _INT64_MAX if stop is None else stop
            elif not isinstance(size, Sym):
                start, stop, step = slice(start, stop, step).indices(plain(size))
            else:
                start = 0 if start is None else plain(start)
                stop = _INT64_MAX if stop is None else plain(stop)
            if (start, stop, step) == (0, _INT64_MAX, 1) or (not isinstance(size, Sym)
                                                           and (start, stop, step) == (0, plain(size), 1)):
                continue  # the whole dim
        else:
            k = plain(item)
            start = k + plain(size) if k < 0 and not isinstance(size, Sym) else k
            stop, step = (_INT64_MAX if start == -1 else start + 1), 1
            drop.append(i)
        starts.append(start)
        ends.append(stop)
        axes.append(i)
        steps.append(step)
    y = n.inputs[0]
    if axes:
        y = g.op("Slice", [y, _bounds(g, starts), _bounds(g, ends), g.ints(axes), g.ints(steps)])
    if drop:
        y = g.op("Squeeze", [y, g.ints(drop)])
    return [y if y != n.inputs[0] else g.op("Identity", [y])]


def _bounds(g, values: list) -> str:
    """Slice's starts or ends: constants, or read off the inputs' shapes where one is a run-time size."""
    return g.shape(values) if any(isinstance(v, Sym) for v in values) else g.ints(values)


def _index_label(a) -> str:
    """The index as written: `[-1]`, `[:, 1:-1:2]`."""
    parts = [":".join("" if v is None else str(v) for v in item[1:]).rstrip(":") or ":"
             if isinstance(item, tuple) else str(item) for item in a["index"]]
    return "[" + ", ".join(parts) + "]"


register(OpDef(
    name="index", kind="function", family="tensor", category="gather", internal=True, label=_index_label,
    doc="Static indexing and slicing: `x[0]`, `h[-1]`, `x[:, 1:3]`.",
    params=(ParamSpec("input", TENSOR), ParamSpec("index", ANY)), dtypes=ANY_DTYPE,
    infer=_index_infer,
    torch=TorchFunction(_index_src),
    onnx=_index_onnx,
    examples=(Example({"input": S(4, 3, 5), "index": (-1,)}),
              Example({"input": S(2, 6, 5), "index": (("slice", None, None, None), 0)}),
              Example({"input": S(2, 7), "index": (("slice", None, None, None), ("slice", 1, -1, 2))})),
    arbitrary=lambda d: Example({"input": S(3, 8), "index": (d.int(-3, 2), ("slice", d.choice([None, 1, -3]),
                                                                          d.choice([None, 6, -1]), d.choice([None, 2])))}),
))
