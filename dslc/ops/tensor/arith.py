"""Arithmetic and comparison operators: `a + b`, `a @ b`, `a == b`, with torch's dtype promotion."""
from __future__ import annotations

import ast as pyast
import operator
import re

from ...ir.dims import Sym, product
from ...ir.types import FLOAT_DTYPES, TensorType, rounded
from ...ir.values import TensorValue
from ..ptypes import TENSOR, TENSOR_OR_SIZE, is_number
from ..registry import Constants, Example, OpDef, ParamSpec, S, ShapeError, TorchFunction, register
from ..shapes import broadcast, dim_text, same_dim
from .common import _ORT_MISSING, _WIDER, ANY_DTYPE, _kind, _promote, _t, _widened


def _result_dtype(a, b, op: str) -> str:
    """torch's result dtype: tensors with dimensions promote (torch.promote_types); a 0-d tensor beside one
    counts only where its category is higher (int64 0-d & int32 is int32, float64 0-d + int64 is float64);
    a Python scalar only lifts the category (an int to int64, a float to float32; a run-time size is an
    int), and true division of integers gives float32."""
    tensors = [t for t in (_t(a), _t(b)) if t is not None]
    ranked = [t.dtype for t in tensors if t.rank]
    zero_d = [t.dtype for t in tensors if not t.rank]
    dt = _promote(*ranked) if len(ranked) == 2 else ranked[0] if ranked else \
        _promote(*zero_d) if len(zero_d) == 2 else zero_d[0]
    if ranked and zero_d and _kind(zero_d[0]) > _kind(dt):
        dt = zero_d[0]
    for v in (a, b):
        if not isinstance(v, TensorValue):
            k = 0 if isinstance(v, bool) else 1 if isinstance(v, (int, Sym)) else 2
            if k > _kind(dt):
                dt = "int64" if k == 1 else "float32"
    return "float32" if op == "div" and _kind(dt) < 2 else dt


def _broadcast_shape(b) -> tuple:
    """The shape of `input <op> other`: both tensors broadcast, or the one tensor's beside a number."""
    ta, tc = _t(b["input"]), _t(b["other"])
    return broadcast(ta, tc, where=b.where) if ta is not None and tc is not None else (ta or tc).shape


def _elementwise(op: str):
    def infer(b):
        _refuse_bool(b, op)
        return [TensorType(_broadcast_shape(b), _result_dtype(b["input"], b["other"], op))]
    return infer


_BOOL_HELP = "a mask's complement is `~m`; as numbers, `float(m)` (or `where(m, 1.0, 0.0)`)"


def _refuse_bool(b, op: str) -> None:
    """torch refuses `-` with a bool tensor on either side, and `**` of two bools (`1 - mask`)."""
    bools = [k for k in ("input", "other") if _t(b[k]) is not None and _t(b[k]).dtype == "bool"]
    if op == "sub" and bools or op == "pow" and len(bools) == 2:
        what = "subtract with" if op == "sub" else "raise a bool tensor to"
        raise ShapeError(f"torch cannot {what} a bool tensor", code="E0310", arg=bools[0], help=_BOOL_HELP)


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


def _operand(text: str, sym: str, right: bool = False) -> str:
    """An operand of `a <sym> b` as Python source: a name or a number as it is, anything else
    (`self.n - 1`) in parentheses, so that `x / (n - 1)` keeps its meaning. A negative number needs
    them only left of `**` (`(-2.0) ** x`); `x * -0.5` reads as it means. Around `*`, `/`, `+`
    and `-`, an operand that binds tighter keeps none: `x * self.d ** 0.5`, as a person writes it."""
    power = sym == "**"
    if _ATOMIC.fullmatch(text) or _is_call(text) or (_NUMBER.fullmatch(text) and (right or not power)):
        return text
    outer = _PRECEDENCE.get(sym)
    if outer is not None:
        inner = _precedence(text)
        if inner > outer or (inner == outer and not right):
            return text
    return f"({text})"


_PRECEDENCE = {"+": 4, "-": 4, "*": 5, "/": 5}
_BINARY = {pyast.Add: 4, pyast.Sub: 4, pyast.Mult: 5, pyast.Div: 5, pyast.FloorDiv: 5, pyast.Mod: 5,
           pyast.MatMult: 5, pyast.Pow: 7}


def _precedence(text: str) -> int:
    """How tightly Python binds the expression's outermost operator (0: not one of the arithmetic ones)."""
    try:
        node = pyast.parse(text, mode="eval").body
    except SyntaxError:
        return 0
    if isinstance(node, pyast.BinOp):
        return _BINARY.get(type(node.op), 0)
    if isinstance(node, pyast.UnaryOp) and isinstance(node.op, (pyast.USub, pyast.UAdd)):
        return 6
    return 9 if isinstance(node, (pyast.Name, pyast.Attribute, pyast.Call, pyast.Subscript, pyast.Constant)) else 0


def _is_call(text: str) -> bool:
    """`math.sqrt(self.d)`, `self.pe[:S]`, `f(x)[0]`: a name followed by calls and subscripts, which bind
    tightest (brackets inside strings do not occur in these operands)."""
    m = _CALLEE.match(text)
    if not m:
        return False
    i = m.end() - 1
    while i < len(text):
        if text[i] not in "([":
            return False
        depth = 0
        for j in range(i, len(text)):
            depth += 1 if text[j] in "([" else -1 if text[j] in ")]" else 0
            if depth == 0:
                break
        else:
            return False
        i = j + 1
        while i < len(text) and (text[i].isalnum() or text[i] in "._"):   # `.transpose` after a call
            i += 1
    return True


_CALLEE = re.compile(r"[A-Za-z_][\w.]*[(\[]")


def _infix(sym: str) -> TorchFunction:
    """`a <sym> b` as Python source."""
    return TorchFunction(lambda e: f"{_operand(e.arg('input'), sym)} {sym} "
                                   f"{_operand(e.arg('other'), sym, right=True)}")


_APPLY = {"add": operator.add, "sub": operator.sub, "mul": operator.mul, "div": operator.truediv, "pow": operator.pow}


def _arith_fold(op: str):
    """`a <op> b` of numbers or constants, each first rounded to the result's dtype; integer division and
    negative integer powers are not folded (torch's integer semantics)."""
    def fold(c: Constants):
        operands = [c.operand(k) for k in ("input", "other")]
        if any(v is None for v in operands):
            return None
        a, b = (rounded(v, c.dtype) for v in operands)
        if c.dtype not in FLOAT_DTYPES:
            if op == "pow" and b < 0 or op == "div":
                return None
            a, b = int(a), int(b)
        return _APPLY[op](a, b)
    return fold


def _binary(name: str, doc: str, identity: tuple | None = None):
    sym = _SYMBOL[name]
    register(OpDef(
        name=name, kind="function", family="arith", doc=doc, symbol=sym, identity=identity, fold=_arith_fold(name),
        params=(ParamSpec("input", TENSOR_OR_SIZE), ParamSpec("other", TENSOR_OR_SIZE)),
        infer=_elementwise(name), dtypes=ANY_DTYPE,
        macs=lambda b, out: 0,
        torch=_infix(sym), label=lambda a, s=sym: s,
        onnx=_arith_onnx(name),
        examples=(Example({"input": S(2, 3, 4), "other": S(3, 1)}), Example({"input": S(2, 3), "other": 2.0}),
                  Example({"input": 0.5, "other": S(4)})),
        arbitrary=lambda d: Example({"input": S(*d.shape(1, 3, 1, 5)), "other": d.choice([2.0, 3])}),
    ))


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


def _neg_infer(b):
    if b.x.dtype == "bool":
        raise ShapeError("torch cannot negate a bool tensor", code="E0310", arg="input", help=_BOOL_HELP)
    return [b.x]


def _neg_onnx(g, n):
    """Neg (uint8 wraps around, as in torch)."""
    return [_widened(g, "Neg", [n.inputs[0]], n.x.dtype)]


register(OpDef(
    name="neg", kind="function", family="arith", doc="Negation (`-x`).", fold=lambda c: -c.x,
    params=(ParamSpec("input", TENSOR),), dtypes=ANY_DTYPE,
    infer=_neg_infer,
    torch=TorchFunction(lambda e: f"-{e.arg('input')}"),
    onnx=_neg_onnx,
    examples=(Example({"input": S(2, 3)}),),
    arbitrary=lambda d: Example({"input": S(*d.shape(1, 4, 1, 5))}),
))


def _matmul_infer(b):
    a, c = b.inputs
    if a.rank == 0 or c.rank == 0:
        raise ShapeError("`@` needs tensors with at least one dimension", code="E0402")
    if a.dtype != c.dtype:   # torch's matmul promotes nothing
        raise ShapeError(f"`@` needs operands of one dtype, got {a.dtype} and {c.dtype}", code="E0310",
                         arg="other", help="cast one of them first: `float(x)`")
    ka = a.shape[-1]
    kc = c.shape[-2] if c.rank >= 2 else c.shape[0]
    if not same_dim(ka, kc, b.where):
        raise ShapeError(f"cannot multiply {a.shape_str()} @ {c.shape_str()}: inner sizes "
                         f"{dim_text(ka)} and {dim_text(kc)} differ", code="E0403", label="inner dimensions must match")
    rows = a.shape[-2:-1] if a.rank >= 2 else ()
    cols = c.shape[-1:] if c.rank >= 2 else ()
    batch_a, batch_c = a.shape[:-2], c.shape[:-2]
    batch = broadcast(TensorType(batch_a), TensorType(batch_c)) if (batch_a or batch_c) else ()
    return [TensorType(tuple(batch) + tuple(rows) + tuple(cols), a.dtype)]


def _matmul_macs(b, out):
    a = b.inputs[0]
    return product(out[0].shape) * a.shape[-1] if out[0].shape else a.shape[-1]


def _matmul_fold(c: Constants):
    """Uniform a @ b: each element sums k = the inner size products."""
    k = c.static(c.inputs[0].shape[-1])
    return None if k is None else c.values[0] * c.values[1] * k


def _matmul_onnx(g, n):
    """MatMul: NumPy's matmul rules are torch's, 1-d operands and batch broadcasting included."""
    out = n.outputs[0].dtype
    return [_widened(g, "MatMul", [g.cast(x, out, have=t.dtype) for x, t in zip(n.inputs, n.types)], out)]


register(OpDef(
    name="matmul", kind="function", family="arith", symbol="@", doc="Matrix product with batch broadcasting (`a @ b`).",
    params=(ParamSpec("input", TENSOR), ParamSpec("other", TENSOR)),
    infer=_matmul_infer, macs=_matmul_macs, fold=_matmul_fold,
    torch=TorchFunction(lambda e: f"{e.arg('input')} @ {e.arg('other')}"),
    label=lambda a: "@",
    onnx=_matmul_onnx,
    examples=(Example({"input": S(2, 3, 4), "other": S(4, 5)}), Example({"input": S(3, 4), "other": S(4)}),
              Example({"input": S(2, 1, 3, 4), "other": S(5, 4, 2)})),
    arbitrary=lambda d: (lambda n, k, m: Example({"input": S(2, n, k), "other": S(k, m)}))(
        d.int(1, 5), d.int(1, 5), d.int(1, 5)),
))
