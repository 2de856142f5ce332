"""Tensor functions: arithmetic operators, indexing, shape manipulation,
reductions, and the small helpers of the language (positions, noise,
reparameterize, detach, zeros/ones). Also the Flatten and Unflatten layers.
"""
from __future__ import annotations

import re

from ..ir.dims import FloorDiv, Sym, expr_of, plain, product
from ..ir.pyliteral import py_float
from ..ir.types import DTYPES, FLOAT_DTYPES, TensorType
from ..ir.values import TensorValue
from . import checks
from .ptypes import ANY, BOOL, FLOAT, INT, SHAPE, TENSOR, TENSOR_OR_SIZE, TENSORS, ListOf, OneOf, Optional, Str, is_number
from .registry import Example, OpDef, ParamSpec, S, ShapeError, TorchFunction, TorchLayer, register
from .shapes import broadcast, need_min_rank, norm_dim, same_dim

ANY_DTYPE = DTYPES


def _t(v) -> TensorType | None:
    return v.type if isinstance(v, TensorValue) else None


# ---------------------------------------------------------------- ONNX helpers (opset 18)

_INT64_MAX = 2 ** 63 - 1
_FLOAT_BITS = {"float16": 16, "bfloat16": 16, "float32": 32, "float64": 64}
_INT_BITS = {"uint8": 8, "int8": 8, "int16": 16, "int32": 32, "int64": 64}
# dtypes onnxruntime's CPU kernels lack, per ONNX op: those compute in a wider dtype and are cast back,
# which is exact (integer results wrap modulo 2^bits as torch's do; bf16 -> f32 -> bf16 round-trips).
_ORT_MISSING = {"Neg": {"bfloat16", "uint8"}, "Pow": {"bfloat16", "int16", "int8", "uint8"},
                "MatMul": {"bfloat16", "int16", "int8", "uint8"}, "Expand": {"bfloat16"},
                "ReduceMax": {"bfloat16", "int16", "bool"}, "ReduceMin": {"bfloat16", "int16", "bool"}}
_WIDER = {"bfloat16": "float32", "int16": "int32", "int8": "int32", "uint8": "int32", "bool": "uint8"}


def _kind(dtype: str) -> int:
    """torch's dtype categories: 0 bool, 1 integer, 2 floating point."""
    return 0 if dtype == "bool" else 2 if dtype in FLOAT_DTYPES else 1


def _promote(a: str, b: str) -> str:
    """torch.promote_types for two tensors' dtypes."""
    if a == b or _kind(a) != _kind(b):
        return a if _kind(a) >= _kind(b) else b
    if _kind(a) == 2:
        return "float32" if {a, b} == {"float16", "bfloat16"} else max(a, b, key=_FLOAT_BITS.get)
    if "uint8" in (a, b):
        other = b if a == "uint8" else a
        return "int16" if other == "int8" else other
    return max(a, b, key=_INT_BITS.get)


def _widened(g, op_type: str, xs: list, dtype: str, extra: tuple = (), **attrs) -> str:
    """`op_type(*xs, *extra)` on `dtype` tensors, through a wider dtype where onnxruntime lacks a kernel (exact)."""
    wide = _WIDER[dtype] if dtype in _ORT_MISSING.get(op_type, ()) else dtype
    y = g.op(op_type, [g.cast(x, wide, have=dtype) for x in xs] + list(extra), **attrs)
    return g.cast(y, dtype, have=wide)


def _axis(d, rank: int) -> int:
    """A dim index in [0, rank) (torch's negative dims counted from the end)."""
    d = plain(d)
    return d + rank if d < 0 else d


# ---------------------------------------------------------------- arithmetic

def _result_dtype(a, b, op: str) -> str:
    """torch's result dtype: tensors promote (torch.promote_types), a Python scalar only lifts the category
    (an int to int64, a float to float32; a run-time size is an int), and true division of integers gives
    float32."""
    dtypes = [t.dtype for t in (_t(a), _t(b)) if t is not None]
    dt = dtypes[0] if len(dtypes) == 1 else _promote(*dtypes)
    for v in (a, b):
        if not isinstance(v, TensorValue):
            k = 0 if isinstance(v, bool) else 1 if isinstance(v, (int, Sym)) else 2
            if k > _kind(dt):
                dt = "int64" if k == 1 else "float32"
    return "float32" if op == "div" and _kind(dt) < 2 else dt


def _broadcast_shape(b) -> tuple:
    """The shape of `input <op> other`: both tensors broadcast, or the one tensor's beside a number."""
    ta, tc = _t(b["input"]), _t(b["other"])
    return broadcast(ta, tc) if ta is not None and tc is not None else (ta or tc).shape


def _elementwise(op: str):
    def infer(b):
        return [TensorType(_broadcast_shape(b), _result_dtype(b["input"], b["other"], op))]
    return infer


_SYMBOL = {"add": "+", "sub": "-", "mul": "*", "div": "/", "pow": "**"}
_ONNX_ARITH = {"add": "Add", "sub": "Sub", "mul": "Mul", "div": "Div", "pow": "Pow"}


def _arith_onnx(op: str):
    """The emitter of `a <op> b`: torch's promoted dtype (float16/bfloat16 in float32, as torch's kernels
    compute them), a Python scalar as a constant of that dtype, then the result type."""
    def emit(g, n):
        dt = _result_dtype(n["input"], n["other"], op)
        if dt == "bool":
            return [_bool_arith_onnx(g, n, op)]
        work = "float32" if dt in ("float16", "bfloat16") else dt
        op_type = _ONNX_ARITH[op]
        if work in _ORT_MISSING.get(op_type, ()):
            work = _WIDER[work]
        a, b = _operands(g, n, work)
        if op == "pow" and _kind(dt) == 1 and is_number(n["other"]) and n["other"] >= 1:
            y = _int_power(g, a, int(n["other"]))
        elif op == "pow" and _kind(dt) == 1:
            y = _int_pow_onnx(g, a, b, work)
        elif op == "div" and n.type_of("input") is None:  # torch's `s / x` is x.reciprocal() * s
            y = g.op("Mul", [g.cast(g.cast(g.op("Reciprocal", [b]), dt, have=work), work, have=dt), a])
        else:
            y = g.op(op_type, [a, b])
        return [g.cast(y, n.outputs[0].dtype, have=work)]
    return emit


def _operands(g, n, work: str) -> list:
    """`input` and `other` of an infix op as `work` tensors: tensors cast, numbers and sizes as constants."""
    return [g.cast(n.tensor(k), work, have=n.type_of(k).dtype) if n.type_of(k) else _scalar(g, n[k], work)
            for k in ("input", "other")]


def _scalar(g, value, dtype: str) -> str:
    """A Python scalar as a constant of `dtype`; an integer out of its range wraps around, as torch's does.
    A run-time size is read off the input's shape: a 0-d tensor, cast to `dtype`."""
    if isinstance(value, Sym):
        return g.cast(g.op("Squeeze", [g.dim(value), g.ints([0])]), dtype, have="int64")
    import numpy as np
    return g.const(np.asarray(value).astype(dtype), dtype)


def _int_pow_onnx(g, a: str, b: str, dtype: str) -> str:
    """Integer Pow with a tensor exponent; 0 ** negative is 0 in torch, not onnxruntime's double-precision
    infinity. (onnxruntime's result is exact while it fits a double's 53 bits; torch's overflow wraps.)"""
    zero = g.const(0, dtype)
    undefined = g.op("And", [g.op("Equal", [a, zero]), g.op("Less", [b, zero])])
    return g.op("Where", [undefined, zero, g.op("Pow", [a, b])])


def _int_power(g, x: str, k: int) -> str:
    """x ** k for an integer tensor and k >= 1, by repeated squaring: overflow wraps around as in torch
    (onnxruntime's integer Pow goes through double precision)."""
    result, square = None, x
    while True:
        if k & 1:
            result = square if result is None else g.op("Mul", [result, square])
        k >>= 1
        if not k:
            return result
        square = g.op("Mul", [square, square])


def _bool_arith_onnx(g, n, op: str) -> str:
    """bool + bool is logical or and bool * bool logical and, as in torch (which rejects bool - and **)."""
    if op not in ("add", "mul"):
        g.unsupported(f"torch has no `{_SYMBOL[op]}` on bool tensors")
    operands = [n.tensor(k) if n.type_of(k) else g.const(bool(n[k]), "bool") for k in ("input", "other")]
    y = g.op("Or" if op == "add" else "And", operands)
    return g.cast(y, n.outputs[0].dtype, have="bool")


_ATOMIC = re.compile(r"[A-Za-z_][\w.]*|\d[\w.]*")
_NUMBER = re.compile(r"-?\d[\w.]*")


def _operand(text: str, power: bool, right: bool = False) -> str:
    """An operand of `a <op> b` as Python source: a name or a number as it is, anything else
    (`self.n - 1`) in parentheses, so that `x / (n - 1)` keeps its meaning. A negative number needs
    them only left of `**` (`(-2.0) ** x`); `x * -0.5` reads as it means."""
    if _ATOMIC.fullmatch(text) or (_NUMBER.fullmatch(text) and (right or not power)):
        return text
    return f"({text})"


def _infix(sym: str) -> TorchFunction:
    """`a <sym> b` as Python source."""
    return TorchFunction(lambda e: f"{_operand(e.arg('input'), sym == '**')} {sym} "
                                   f"{_operand(e.arg('other'), False, right=True)}")


def _binary(name: str, doc: str, identity: tuple | None = None):
    sym = _SYMBOL[name]
    register(OpDef(
        name=name, kind="function", family="arith", doc=doc, symbol=sym, identity=identity,
        params=(ParamSpec("input", TENSOR_OR_SIZE), ParamSpec("other", TENSOR_OR_SIZE)),
        infer=_elementwise(name), dtypes=ANY_DTYPE,
        macs=lambda b, out: 0,
        torch=_infix(sym), label=lambda a, s=sym: s,
        onnx=_arith_onnx(name),
        examples=(Example({"input": S(2, 3, 4), "other": S(3, 1)}), Example({"input": S(2, 3), "other": 2.0}),
                  Example({"input": 0.5, "other": S(4)})),
        arbitrary=lambda d: Example({"input": S(*d.shape(1, 3, 1, 5)), "other": d.choice([2.0, 3])}),
    ))


# ---------------------------------------------------------------- comparisons

_COMPARE_SYMBOL = {"eq": "==", "ne": "!=", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}
_COMPARE_ONNX = {"eq": "Equal", "ne": "Equal", "lt": "Less", "le": "LessOrEqual", "gt": "Greater",
                 "ge": "GreaterOrEqual"}


def _compare_infer(b):
    return [TensorType(_broadcast_shape(b), "bool")]


def _compare_onnx(op: str):
    """Both sides in torch's promoted dtype (float32 for float16/bfloat16, exact), then the comparison."""
    def emit(g, n):
        dt = _result_dtype(n["input"], n["other"], "add")
        work = "float32" if dt in ("float16", "bfloat16") else "int32" if dt == "bool" else dt
        y = g.op(_COMPARE_ONNX[op], _operands(g, n, work))
        return [g.op("Not", [y]) if op == "ne" else y]
    return emit


def _comparison(name: str):
    sym = _COMPARE_SYMBOL[name]
    register(OpDef(
        name=name, kind="function", family="compare", symbol=sym,
        doc=f"Elementwise `a {sym} b` with broadcasting: a bool tensor (masks: `tokens == 0`).",
        params=(ParamSpec("input", TENSOR_OR_SIZE), ParamSpec("other", TENSOR_OR_SIZE)),
        infer=_compare_infer, dtypes=ANY_DTYPE,
        macs=lambda b, out: 0,
        torch=_infix(sym), label=lambda a, s=sym: s,
        onnx=_compare_onnx(name),
        examples=(Example({"input": S(2, 3, 4), "other": S(3, 1)}), Example({"input": S(2, 3), "other": 0.0}),
                  Example({"input": S(4, dtype="int64", values=(0, 3)), "other": 1})),
        arbitrary=lambda d: Example({"input": S(*d.shape(1, 3, 1, 5), dtype=d.choice(["float32", "int64"]),
                                               values=(0, 3)), "other": d.choice([1, 2.0])}),
    ))


for _name in _COMPARE_SYMBOL:
    _comparison(_name)


# identity: the operand value that makes the op return the other operand, and on which side(s)
_binary("add", "Elementwise sum with broadcasting (`a + b`).", (0, ("input", "other")))
_binary("sub", "Elementwise difference with broadcasting (`a - b`).", (0, ("other",)))
_binary("mul", "Elementwise product with broadcasting (`a * b`).", (1, ("input", "other")))
_binary("div", "Elementwise true division with broadcasting (`a / b`).", (1, ("other",)))
_binary("pow", "Elementwise power with broadcasting (`a ** b`).", (1, ("other",)))

def _neg_onnx(g, n):
    """Neg (uint8 wraps around, as in torch)."""
    return [_widened(g, "Neg", [n.inputs[0]], n.x.dtype)]


register(OpDef(
    name="neg", kind="function", family="arith", doc="Negation (`-x`).",
    params=(ParamSpec("input", TENSOR),), dtypes=ANY_DTYPE,
    infer=lambda b: [b.x],
    torch=TorchFunction(lambda e: f"-{e.arg('input')}"),
    onnx=_neg_onnx,
    examples=(Example({"input": S(2, 3)}),),
    arbitrary=lambda d: Example({"input": S(*d.shape(1, 4, 1, 5))}),
))


def _matmul_infer(b):
    a, c = b.inputs
    if a.rank == 0 or c.rank == 0:
        raise ShapeError("`@` needs tensors with at least one dimension", code="E0402")
    ka = a.shape[-1]
    kc = c.shape[-2] if c.rank >= 2 else c.shape[0]
    if not same_dim(ka, kc):
        raise ShapeError(f"cannot multiply {a.shape_str()} @ {c.shape_str()}: inner sizes "
                         f"{_s(ka)} and {_s(kc)} differ", code="E0403", label="inner dimensions must match")
    rows = a.shape[-2:-1] if a.rank >= 2 else ()
    cols = c.shape[-1:] if c.rank >= 2 else ()
    batch_a, batch_c = a.shape[:-2], c.shape[:-2]
    batch = broadcast(TensorType(batch_a), TensorType(batch_c)) if (batch_a or batch_c) else ()
    return [TensorType(tuple(batch) + tuple(rows) + tuple(cols), a.dtype)]


def _s(d):
    return str(d) if isinstance(d, Sym) else str(plain(d))


def _matmul_macs(b, out):
    a = b.inputs[0]
    return product(out[0].shape) * a.shape[-1] if out[0].shape else a.shape[-1]


def _matmul_onnx(g, n):
    """MatMul: NumPy's matmul rules are torch's, 1-d operands and batch broadcasting included."""
    out = n.outputs[0].dtype
    return [_widened(g, "MatMul", [g.cast(x, out, have=t.dtype) for x, t in zip(n.inputs, n.types)], out)]


register(OpDef(
    name="matmul", kind="function", family="arith", symbol="@", doc="Matrix product with batch broadcasting (`a @ b`).",
    params=(ParamSpec("input", TENSOR), ParamSpec("other", TENSOR)),
    infer=_matmul_infer, macs=_matmul_macs,
    torch=TorchFunction(lambda e: f"{e.arg('input')} @ {e.arg('other')}"),
    label=lambda a: "@",
    onnx=_matmul_onnx,
    examples=(Example({"input": S(2, 3, 4), "other": S(4, 5)}), Example({"input": S(3, 4), "other": S(4)}),
              Example({"input": S(2, 1, 3, 4), "other": S(5, 4, 2)})),
    arbitrary=lambda d: (lambda n, k, m: Example({"input": S(2, n, k), "other": S(k, m)}))(
        d.int(1, 5), d.int(1, 5), d.int(1, 5)),
))


# ---------------------------------------------------------------- joining and splitting

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
            if j != d and not same_dim(t.shape[j], first.shape[j]):
                raise ShapeError(f"`concat` along dim {plain(b['dim'])}: the tensors differ in dimension {j} "
                                 f"({first.shape_str()} and {t.shape_str()})", code="E0403", input=i,
                                 label="sizes must match except along `dim`")
        total = total + t.shape[d]
    return [TensorType(first.shape[:d] + (total,) + first.shape[d + 1:], _joined_dtype(ts))]


def _joined(g, n) -> list:
    """The joined tensors, each in the result's dtype (torch.cat and torch.stack promote mixed dtypes)."""
    out = n.outputs[0].dtype
    return [g.cast(x, out, have=t.dtype) for x, t in zip(n.tensors("tensors"), n.types)]


def _concat_onnx(g, n):
    """Concat along the (normalized) dim."""
    return [g.op("Concat", _joined(g, n), axis=_axis(n["dim"], n.x.rank))]


register(OpDef(
    name="concat", kind="function", family="tensor", doc="Joins tensors along an existing dimension (torch.cat).",
    params=(ParamSpec("tensors", TENSORS), ParamSpec("dim", INT, 0)), dtypes=ANY_DTYPE,
    infer=_concat_infer,
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
        if t.rank != first.rank or not all(same_dim(p, q) for p, q in zip(t.shape, first.shape)):
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
    infer=_stack_infer,
    torch=TorchFunction(lambda e: f"torch.stack({e.arg('tensors')}{e.kw('dim')})"),
    onnx=_stack_onnx,
    examples=(Example({"tensors": [S(2, 3), S(2, 3)], "dim": 1}),),
    arbitrary=lambda d: Example({"tensors": [S(2, 3)] * d.int(1, 3), "dim": d.int(-3, 2)}),
))


def _chunk_infer(b):
    t = b.x
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
    name="chunk", kind="function", family="tensor",
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
    name="split", kind="function", family="tensor",
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


# ---------------------------------------------------------------- reshaping

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
        total == known  # noqa: B015  (records the guard that the counts agree)
    elif expr_of(total) != expr_of(known):
        raise ShapeError(f"cannot reshape {t.shape_str()} into {_shape_src(target)}: the element counts "
                         f"{total} and {known} are not provably equal", code="E0407", arg="shape",
                         label="element counts differ")
    return [t.with_shape(tuple(target))]


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
    shape = list(t.shape)
    shape[a], shape[c] = shape[c], shape[a]
    return [t.with_shape(tuple(shape))]


def _transpose_onnx(g, n):
    """Transpose by the permutation that swaps dim0 and dim1."""
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
    if t.rank == 0:
        return t.with_shape((1,))
    s, e = norm_dim(start, t.rank, "start_dim"), norm_dim(end, t.rank, "end_dim")
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
    d = norm_dim(b["dim"], t.rank)
    sizes = list(b["sizes"] if "sizes" in b.args else b["unflattened_size"])
    holes = [i for i, s in enumerate(sizes) if plain(s) == -1]
    if len(holes) > 1:
        raise ShapeError("at most one size may be -1", code="E0407")
    n = t.shape[d]
    known = product([s for i, s in enumerate(sizes) if i not in holes])
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
    return [d] if not isinstance(t.shape[d], Sym) and plain(t.shape[d]) == 1 else []


def _squeeze_infer(b):
    drop = set(_squeeze_dims(b))
    if b["dim"] is not None and not drop and isinstance(b.x.shape[norm_dim(b["dim"], b.x.rank)], Sym):
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
        elif have is None or (not isinstance(have, Sym) and plain(have) == 1) or same_dim(have, s):
            out.append(s)
        else:
            raise ShapeError(f"`expand` cannot stretch size {_s(have)} to {_s(s)} (only size-1 dimensions expand)",
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


# ---------------------------------------------------------------- reductions

def _reduce_infer(b):
    t = b.x
    dim = b["dim"]
    if dim is None or dim == ():  # torch reduces every dim for dim=[] too
        dims = set(range(t.rank))
    else:
        raw = dim if isinstance(dim, tuple) else (dim,)
        dims = {norm_dim(d, t.rank) for d in raw}
        if len(dims) != len(raw):
            raise ShapeError("a dimension is listed twice", code="E0406", arg="dim")
    if b["keepdim"]:
        shape = tuple(1 if i in dims else d for i, d in enumerate(t.shape))
    else:
        shape = tuple(d for i, d in enumerate(t.shape) if i not in dims)
    dtype = t.dtype if t.is_float else "float32" if b.op.name == "mean" else "int64" if b.op.name == "sum" else t.dtype
    return [TensorType(shape, dtype)]


def _reduce_src(e, method: str) -> str:
    dim, keep = e.args["dim"], e.args["keepdim"]
    if dim is None and keep:
        dim = tuple(range(e.x.rank))  # torch wants the dims spelled out to keep them
    parts = []
    if dim is not None:
        parts.append(f"dim={e.fmt(dim)}")
    if keep:
        parts.append("keepdim=True")
    return f"{e.arg('input')}.{method}({', '.join(parts)})"


_REDUCE = {"mean": "ReduceMean", "sum": "ReduceSum", "amax": "ReduceMax", "amin": "ReduceMin"}


def _reduce_work_dtype(op: str, dtype: str) -> str:
    """What torch accumulates in: sums of integers and bools in int64, of float16/bfloat16 (and their means)
    in float32; max and min in the dtype itself (wider only where onnxruntime lacks a kernel)."""
    if op == "sum" and _kind(dtype) < 2:
        return "int64"
    if op in ("sum", "mean") and dtype in ("float16", "bfloat16"):
        return "float32"
    return _WIDER[dtype] if dtype in _ORT_MISSING.get(_REDUCE[op], ()) else dtype


def _reduce_onnx(op: str):
    """The emitter of mean/sum/amax/amin: axes as an input (opset 18), none for dim=None (every dim)."""
    def emit(g, n):
        x, t = n.inputs[0], n.x
        work = _reduce_work_dtype(op, t.dtype)
        inputs = [g.cast(x, work, have=t.dtype)]
        dim = n["dim"]
        if dim not in (None, ()) and t.rank:
            inputs.append(g.ints(sorted(_axis(d, t.rank) for d in (dim if isinstance(dim, tuple) else (dim,)))))
        y = g.op(_REDUCE[op], inputs, keepdims=int(bool(n["keepdim"])))
        return [g.cast(y, n.outputs[0].dtype, have=work)]
    return emit


for _name, _doc, _types in (("mean", "Mean over dimensions (all when dim is none).", FLOAT_DTYPES),
                            ("sum", "Sum over dimensions (all when dim is none).", ANY_DTYPE),
                            ("amax", "Maximum over dimensions (all when dim is none).", ANY_DTYPE),
                            ("amin", "Minimum over dimensions (all when dim is none).", ANY_DTYPE)):
    register(OpDef(
        name=_name, kind="function", family="reduce", doc=_doc,
        params=(ParamSpec("input", TENSOR), ParamSpec("dim", Optional(OneOf((INT, ListOf(INT)))), None),
                ParamSpec("keepdim", BOOL, False)),
        dtypes=_types,
        infer=_reduce_infer,
        torch=TorchFunction(lambda e, m=_name: _reduce_src(e, m)),
        onnx=_reduce_onnx(_name),
        examples=(Example({"input": S(2, 3, 4), "dim": 1}), Example({"input": S(2, 3, 4), "dim": [1, 2],
                                                                      "keepdim": True}),
                  Example({"input": S(2, 3)})),
        arbitrary=lambda d: Example({"input": S(2, 3, 4), "dim": d.choice([None, 0, -1, [0, 2]]),
                                     "keepdim": d.bool()}),
    ))


# ---------------------------------------------------------------- arg-reductions and gather

_ARG_DTYPES = tuple(d for d in DTYPES if d != "bool")
_ORT_ARG = {"float32", "float64", "int32", "int64", "int8", "uint8"}   # onnxruntime's ArgMax/ArgMin kernels


def _arg_infer(b):
    """torch.argmax/argmin: a reduction's shape (no dim: over every dim, keepdim keeping them as 1s) of
    int64 indices."""
    return [_reduce_infer(b)[0].with_dtype("int64")]


def _arg_src(e, method: str) -> str:
    parts = []
    if e.args["dim"] is not None:
        parts.append(f"dim={e.fmt(e.args['dim'])}")
    if e.args["keepdim"]:
        parts.append("keepdim=True")
    return f"{e.arg('input')}.{method}({', '.join(parts)})"


def _arg_onnx(op_type: str):
    """ArgMax/ArgMin keep the first of equal values, as torch does; no dim: over the flattened tensor."""
    def emit(g, n):
        t = n.x
        x = g.cast(n.inputs[0], t.dtype if t.dtype in _ORT_ARG else
                  "float32" if t.is_float else "int64", have=t.dtype)   # exact: float16/bfloat16 and small ints widen
        if n["dim"] is None:
            flat = g.op(op_type, [g.op("Reshape", [x, g.ints([-1])])], axis=0, keepdims=0)
            return [g.op("Reshape", [flat, g.shape(n.outputs[0].shape)]) if n["keepdim"] else flat]
        return [g.op(op_type, [x], axis=norm_dim(n["dim"], t.rank), keepdims=int(bool(n["keepdim"])),
                     select_last_index=0)]
    return emit


for _name, _onnx_name, _doc in (("argmax", "ArgMax", "Index of the largest value along `dim` (of the flattened "
                                                     "tensor when dim is none); the first of equal ones."),
                                ("argmin", "ArgMin", "Index of the smallest value along `dim` (of the flattened "
                                                     "tensor when dim is none); the first of equal ones.")):
    register(OpDef(
        name=_name, kind="function", family="reduce", doc=_doc,
        params=(ParamSpec("input", TENSOR), ParamSpec("dim", Optional(INT), None), ParamSpec("keepdim", BOOL, False)),
        dtypes=_ARG_DTYPES,
        infer=_arg_infer,
        torch=TorchFunction(lambda e, m=_name: _arg_src(e, m)),
        onnx=_arg_onnx(_onnx_name),
        examples=(Example({"input": S(4, 10), "dim": 1}), Example({"input": S(2, 3, 4), "dim": 0, "keepdim": True}),
                  Example({"input": S(2, 3, 4)}), Example({"input": S(2, 3), "keepdim": True}),
                  Example({"input": S(5, 3, dtype="int64", values=(0, 4)), "dim": -1})),
        arbitrary=lambda d: Example({"input": S(*d.shape(1, 3, 1, 5)), "dim": d.choice([None, 0, -1]),
                                     "keepdim": d.bool()}),
    ))


def _gather_infer(b):
    """torch.gather: the output has the index's shape; its size along every other dim fits the input's."""
    t, index = b.x, b["index"].type
    d = norm_dim(b["dim"], t.rank)
    if index.dtype != "int64":
        raise ShapeError(f"`gather`'s index must be int64, got {index.dtype}", code="E0310", arg="index")
    if index.rank != t.rank:
        raise ShapeError(f"`gather`'s index must have the input's rank {t.rank}, got {index.shape_str()}",
                         code="E0406", arg="index")
    for i, (a, n) in enumerate(zip(index.shape, t.shape)):
        if i != d and not isinstance(a, Sym) and not isinstance(n, Sym) and plain(a) > plain(n):
            raise ShapeError(f"`gather`'s index is larger than the input in dimension {i} ({plain(a)} > {plain(n)})",
                             code="E0406", arg="index")
    return [TensorType(index.shape, t.dtype)]


def _gather_onnx(g, n):
    """GatherElements, which wants the index to cover the input in every other dim: a smaller index
    (allowed by torch) reads a slice of the input of its own size first."""
    t, index = n.x, n.type_of("index")
    d = norm_dim(n["dim"], t.rank)
    x = n.inputs[0]
    cut = [i for i in range(t.rank) if i != d and expr_of(index.shape[i]) != expr_of(t.shape[i])]
    if cut:
        x = g.op("Slice", [x, g.ints([0] * len(cut)), g.shape([index.shape[i] for i in cut]), g.ints(cut)])
    return [g.op("GatherElements", [x, n.tensor("index")], axis=d)]


register(OpDef(
    name="gather", kind="function", family="tensor",
    doc="Values of `input` along `dim` at the positions `index` holds (torch.gather); the output has the index's shape.",
    params=(ParamSpec("input", TENSOR), ParamSpec("dim", INT), ParamSpec("index", TENSOR)),
    dtypes=ANY_DTYPE,
    infer=_gather_infer,
    torch=TorchFunction(lambda e: f"{e.arg('input')}.gather({e.fmt(e.args['dim'])}, {e.arg('index')})"),
    onnx=_gather_onnx,
    examples=(Example({"input": S(4, 10), "dim": 1, "index": S(4, 1, dtype="int64", values=(0, 10))}),
              Example({"input": S(3, 5, 2), "dim": 1, "index": S(3, 7, 2, dtype="int64", values=(0, 5))}),
              Example({"input": S(3, 5, 4), "dim": 0, "index": S(2, 5, 2, dtype="int64", values=(0, 3))})),
    arbitrary=lambda d: Example({"input": S(3, 4), "dim": d.choice([0, 1, -1]),
                                 "index": S(d.int(1, 3), d.int(1, 4), dtype="int64", values=(0, 3))}),
))


# ---------------------------------------------------------------- indexing

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
            out.append(_slice_len(size, item[1:], i))
        else:
            k = plain(item)
            if not isinstance(size, Sym) and not -plain(size) <= k < plain(size):
                raise ShapeError(f"index {k} is out of range for dimension {i} of size {plain(size)}",
                                 code="E0406", arg="index")
    out.extend(t.shape[len(items):])
    return [t.with_shape(tuple(out))]


def _slice_len(size, parts, dim: int):
    start, stop, step = parts
    step = 1 if step is None else plain(step)
    if not isinstance(size, Sym):
        return len(range(*slice(start, stop, step).indices(plain(size))))
    # A run-time size: assume it is long enough for the literal bounds (as a person reading it would).
    if stop is None or plain(stop) < 0:
        lo = 0 if start is None else plain(start)
        hi = 0 if stop is None else plain(stop)
        if lo < 0:
            return (-lo + hi + step - 1) // step if hi <= 0 else 0
        n = size - lo + hi
    else:
        lo = 0 if start is None else plain(start)
        if lo < 0:
            raise ShapeError(f"a negative start with a positive stop on the run-time size `{size}` has no static length",
                             code="E0406", arg="index")
        n = plain(stop) - lo
    return n if step == 1 else (n + step - 1) // step


def _index_src(e) -> str:
    parts = []
    for item in e.args["index"]:
        if isinstance(item, tuple):
            start, stop, step = (("" if x is None else str(plain(x))) for x in item[1:])
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
            if not isinstance(size, Sym):
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
        y = g.op("Slice", [y, g.ints(starts), g.ints(ends), g.ints(axes), g.ints(steps)])
    if drop:
        y = g.op("Squeeze", [y, g.ints(drop)])
    return [y if y != n.inputs[0] else g.op("Identity", [y])]


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


# ---------------------------------------------------------------- the language's helpers

def _positions_onnx(g, n):
    """Range(0, x.shape[1], 1) in int64, the length read off the input by Shape."""
    length = g.op("Squeeze", [g.op("Shape", [n.inputs[0]], start=1, end=2), g.ints([0])])
    return [g.op("Range", [g.const(0, "int64"), length, g.const(1, "int64")])]


register(OpDef(
    name="positions", kind="function", family="tensor",
    doc="The positions 0 .. x.shape[1] - 1 of a [B, T, ...] tensor, as int64 [T].",
    params=(ParamSpec("input", TENSOR),), dtypes=ANY_DTYPE,
    infer=lambda b: (need_min_rank(b.x, 2, "positions"), [TensorType((b.x.shape[1],), "int64")])[1],
    torch=TorchFunction(lambda e: f"torch.arange({e.arg('input')}.shape[1], device={e.arg('input')}.device)"),
    onnx=_positions_onnx,
    examples=(Example({"input": S(2, 7, dtype="int64")}),),
    arbitrary=lambda d: Example({"input": S(2, d.int(1, 9), dtype="int64")}),
))


def _same_shapes(b, what: str):
    a, c = b.inputs
    if a.rank != c.rank or not all(same_dim(p, q) for p, q in zip(a.shape, c.shape)):
        raise ShapeError(f"`{what}` needs equal shapes, got {a.shape_str()} and {c.shape_str()}", code="E0403",
                         input=1)
    return [a]


register(OpDef(
    name="reparameterize", kind="function", family="tensor", pure=False,
    doc="mu + exp(log_var / 2) * noise while training; mu at inference (the VAE trick).",
    params=(ParamSpec("mu", TENSOR), ParamSpec("log_var", TENSOR)),
    infer=lambda b: _same_shapes(b, "reparameterize"),
    torch=TorchFunction(lambda e: f"{e.arg('mu')} + torch.exp({e.arg('log_var')} / 2) * torch.randn_like({e.arg('mu')}) "
                                  f"if self.training else {e.arg('mu')}"),
    onnx=lambda g, n: [g.op("Identity", [n.tensor("mu")])],  # the exported graph is the model in eval: mu
    examples=(Example({"mu": S(2, 5), "log_var": S(2, 5)}),),
    arbitrary=lambda d: (lambda s: Example({"mu": S(*s), "log_var": S(*s)}))(d.shape(1, 3, 1, 5)),
))


def _sizes_infer(dtype_param: bool):
    def infer(b):
        sizes = b["size"]
        for s in sizes:
            if not isinstance(s, Sym) and plain(s) <= 0:
                raise ShapeError(f"sizes must be positive, got {plain(s)}", code="E0302", arg="size")
        return [TensorType(tuple(sizes), b.args.get("dtype", "float32") if dtype_param else "float32")]
    return infer


def _creation_src(fn: str):
    def src(e):
        extra = ""
        if e.args.get("dtype", "float32") != "float32":
            extra = f", dtype=torch.{e.args['dtype']}"
        device = f", device={e.device}" if e.device else ""
        size = e.dims(e.args["size"]) or "()"  # an empty size is a 0-d tensor: torch.zeros(())
        return f"torch.{fn}({size}{extra}{device})"
    return src



def _noise_onnx(g, n):
    """RandomNormal of a static size; RandomNormalLike of a ConstantOfShape when the size is known at run time."""
    size, dtype = n["size"], g.elem_type(n.outputs[0].dtype)
    if size and not any(isinstance(s, Sym) for s in size):
        return [g.op("RandomNormal", [], shape=[plain(s) for s in size], dtype=dtype)]
    return [g.op("RandomNormalLike", [g.op("ConstantOfShape", [g.shape(size)])], dtype=dtype)]


def _filled_onnx(value: float):
    """The emitter of zeros/ones: ConstantOfShape of the size (bfloat16, which it cannot hold, by a Cast)."""
    def emit(g, n):
        import numpy as np
        from onnx import numpy_helper
        dtype = n.outputs[0].dtype
        held = "float32" if dtype == "bfloat16" else dtype
        fill = numpy_helper.from_array(np.full([1], value, dtype=np.dtype(held)))
        y = g.op("ConstantOfShape", [g.shape(n["size"])], value=fill)
        return [g.cast(y, dtype, have=held)]
    return emit


register(OpDef(
    name="noise", kind="function", family="tensor", pure=False,
    doc="Standard normal noise of the given shape (`noise([B, 100])`).",
    params=(ParamSpec("size", SHAPE),),
    infer=_sizes_infer(False),
    torch=TorchFunction(_creation_src("randn")),
    onnx=_noise_onnx,
    examples=(Example({"size": [2, 5]}),),
    arbitrary=lambda d: Example({"size": list(d.shape(1, 3, 1, 5))}),
))

for _name, _doc in (("zeros", "A tensor of zeros. Named without a call as a loss target, it takes the "
                              "prediction's shape: `bce(D(fake), zeros)`."),
                    ("ones", "A tensor of ones. Named without a call as a loss target, it takes the "
                             "prediction's shape: `bce(D(real), ones)`.")):
    register(OpDef(
        name=_name, kind="function", family="tensor", category="constant", doc=_doc,
        params=(ParamSpec("size", SHAPE), ParamSpec("dtype", Str(DTYPES), "float32")),
        infer=_sizes_infer(True),
        torch=TorchFunction(_creation_src(_name)),
        onnx=_filled_onnx(1.0 if _name == "ones" else 0.0),
        examples=(Example({"size": [2, 3]}), Example({"size": [4], "dtype": "int64"})),
        arbitrary=lambda d: Example({"size": list(d.shape(1, 3, 1, 5))}),
    ))

def _full_value(value, dtype: str) -> str:
    """The fill value as Python source of the dtype's kind (a float literal makes float32, an int int64)."""
    if dtype == "bool":
        return "True" if value else "False"
    return py_float(value) if dtype in FLOAT_DTYPES else str(int(value))


def _full_src(e) -> str:
    dtype = e.args.get("dtype", "float32")
    extra = f", dtype=torch.{dtype}" if dtype not in ("float32", "int64", "bool") else ""
    device = f", device={e.device}" if e.device else ""
    dims = e.dims(e.args["size"])
    size = f"({dims},)" if len(e.args["size"]) == 1 else f"({dims})"
    return f"torch.full({size}, {_full_value(e.args['value'], dtype)}{extra}{device})"


def _full_onnx(g, n):
    """ConstantOfShape of the size, filled with the value (bfloat16, which it cannot hold, by a Cast)."""
    import numpy as np
    from onnx import numpy_helper
    dtype = n.outputs[0].dtype
    held = "float32" if dtype == "bfloat16" else dtype
    fill = numpy_helper.from_array(np.full([1], n["value"], dtype=np.dtype(held)))
    y = g.op("ConstantOfShape", [g.shape(n["size"])], value=fill)
    return [g.cast(y, dtype, have=held)]


# Made by constant folding (dslc/passes/constants.py), not written in specs: a uniform tensor
# whose value was computed at compile time (`ones([4]) * 3` is `full([4], 3.0)`).
register(OpDef(
    name="full", kind="function", family="tensor", category="constant", internal=True,
    doc="A tensor of the given size filled with one value (made by constant folding).",
    params=(ParamSpec("size", SHAPE), ParamSpec("value", FLOAT), ParamSpec("dtype", Str(DTYPES), "float32")),
    infer=_sizes_infer(True),
    torch=TorchFunction(_full_src),
    onnx=_full_onnx,
    examples=(Example({"size": [2, 3], "value": 2.5}), Example({"size": [4], "value": 3.0, "dtype": "int64"}),
              Example({"size": [3], "value": -1.0, "dtype": "float64"})),
    arbitrary=lambda d: Example({"size": list(d.shape(1, 3, 1, 5)), "value": d.choice([0.5, -2.0, 7.0])}),
))


register(OpDef(
    name="detach", kind="function", family="tensor", category="stop_gradient",
    doc="The same values, cut from the gradient graph.",
    params=(ParamSpec("input", TENSOR),), dtypes=ANY_DTYPE,
    infer=lambda b: [b.x],
    torch=TorchFunction(lambda e: f"{e.arg('input')}.detach()"),
    onnx=lambda g, n: [g.op("Identity", [n.inputs[0]])],
    examples=(Example({"input": S(2, 3)}),),
    arbitrary=lambda d: Example({"input": S(*d.shape(1, 4, 1, 5))}),
))
