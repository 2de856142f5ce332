"""Tensor logic: `a & b`, `a | b`, `a ^ b` and `~a` on bool and integer tensors (torch's bitwise
operators: logical on bools, bitwise on integers; a float is an error, as in torch), and
`logical_not`, which `not x` means on a tensor of any dtype."""
from __future__ import annotations

from ...ir.types import FLOAT_DTYPES, TensorType
from ..ptypes import TENSOR, TENSOR_OR_SIZE
from ..registry import Example, OpDef, ParamSpec, S, ShapeError, TorchFunction, register
from .arith import _broadcast_shape, _infix, _operands, _result_dtype
from .common import ANY_DTYPE, _t

LOGIC_DTYPES = ("bool", "int64", "int32", "int16", "int8", "uint8")
# name: (symbol, ONNX op on bools, ONNX op on integers)
_BITWISE = {"bitwise_and": ("&", "And", "BitwiseAnd"), "bitwise_or": ("|", "Or", "BitwiseOr"),
            "bitwise_xor": ("^", "Xor", "BitwiseXor")}
_HELP = "compare to make a mask (`x > 0`), or cast first (`long(x)`)"


def _need_logic_dtype(b, key: str) -> None:
    v = b[key]
    t = _t(v)
    if t is not None and t.dtype in FLOAT_DTYPES:
        raise ShapeError(f"`{b.op.symbol}` takes bool or integer tensors (torch's {b.op.name}), got {t.dtype}",
                         code="E0310", arg=key, help=_HELP, label=f"this is {t.dtype}")
    if t is None and isinstance(v, float):
        raise ShapeError(f"`{b.op.symbol}` takes bool or integer operands, got the float `{v!r}`", code="E0310",
                         arg=key, help=_HELP)


def _bitwise_infer(b):
    for k in ("input", "other"):
        _need_logic_dtype(b, k)
    return [TensorType(_broadcast_shape(b), _result_dtype(b["input"], b["other"], "and"))]


def _bitwise_onnx(name: str):
    """And/Or/Xor on bools, BitwiseAnd/Or/Xor on integers, both sides in torch's promoted dtype."""
    def emit(g, n):
        dt = n.outputs[0].dtype
        _, on_bool, on_int = _BITWISE[name]
        return [g.op(on_bool if dt == "bool" else on_int, _operands(g, n, dt))]
    return emit


def _bitwise_fold(name: str):
    """Integer constants only (bool results are not folded)."""
    f = {"bitwise_and": lambda a, b: a & b, "bitwise_or": lambda a, b: a | b,
         "bitwise_xor": lambda a, b: a ^ b}[name]

    def fold(c):
        a, b = (c.operand(k) for k in ("input", "other"))
        return None if a is None or b is None else f(int(a), int(b))
    return fold


for _name, (_sym, _, _) in _BITWISE.items():
    register(OpDef(
        name=_name, kind="function", family="arith", symbol=_sym, label=lambda a, s=_sym: s,
        doc=f"Elementwise `a {_sym} b` with broadcasting (torch.{_name}): logical on bool tensors (masks), bitwise "
            f"on integers; either side may be an int. A float is E0310, as torch refuses it.",
        params=(ParamSpec("input", TENSOR_OR_SIZE), ParamSpec("other", TENSOR_OR_SIZE)),
        dtypes=ANY_DTYPE, infer=_bitwise_infer, macs=lambda b, out: 0, fold=_bitwise_fold(_name),
        torch=_infix(_sym), onnx=_bitwise_onnx(_name),
        examples=(Example({"input": S(2, 3, dtype="bool"), "other": S(3, dtype="bool")}),
                  Example({"input": S(4, dtype="int64", values=(-9, 9)), "other": S(2, 1, dtype="int32", values=(0, 9))}),
                  Example({"input": S(2, 3, dtype="uint8", values=(0, 200)), "other": 6}),
                  Example({"input": S(3, dtype="bool"), "other": S(3, dtype="int8", values=(-5, 5))})),
        arbitrary=lambda d: Example({"input": S(*d.shape(1, 3, 1, 4), dtype=d.choice(["bool", "int64", "int32"]),
                                               values=(-5, 5)),
                                     "other": d.choice([S(1, dtype="bool"), S(1, dtype="int64", values=(0, 7)), 3])}),
    ))


def _bitwise_not_infer(b):
    _need_logic_dtype(b, "input")
    return [b.x]


register(OpDef(
    name="bitwise_not", kind="function", family="arith", symbol="~", label=lambda a: "~",
    doc="Elementwise `~x` (torch.bitwise_not): logical not on a bool tensor, bitwise on integers; a float is E0310.",
    params=(ParamSpec("input", TENSOR),), dtypes=ANY_DTYPE, infer=_bitwise_not_infer, macs=lambda b, out: 0,
    fold=lambda c: ~int(c.x),
    torch=TorchFunction(lambda e: f"~{e.arg('input')}"),
    onnx=lambda g, n: [g.op("Not" if n.x.dtype == "bool" else "BitwiseNot", [n.inputs[0]])],
    examples=(Example({"input": S(2, 3, dtype="bool")}), Example({"input": S(4, dtype="int64", values=(-9, 9))}),
              Example({"input": S(3, dtype="uint8", values=(0, 255))})),
    arbitrary=lambda d: (lambda dt: Example({"input": S(*d.shape(1, 3, 1, 4), dtype=dt,
                                                        values=(0, 9) if dt == "uint8" else (-5, 5))}))(
        d.choice(list(LOGIC_DTYPES))),
))


def _logical_not_onnx(g, n):
    """Not of the input as a bool (any nonzero value, NaN too, is true, as in torch)."""
    return [g.op("Not", [g.cast(n.inputs[0], "bool", have=n.x.dtype)])]


register(OpDef(
    name="logical_not", kind="function", family="arith",
    doc="True where the input is zero (torch.logical_not), for any dtype: `not x` on a tensor.",
    params=(ParamSpec("input", TENSOR),), dtypes=ANY_DTYPE, macs=lambda b, out: 0,
    infer=lambda b: [b.x.with_dtype("bool")],
    torch=TorchFunction(lambda e: f"torch.logical_not({e.arg('input')})"),
    onnx=_logical_not_onnx,
    examples=(Example({"input": S(2, 3, dtype="bool")}), Example({"input": S(4, dtype="int64", values=(-2, 2))}),
              Example({"input": S(2, 2)})),
    arbitrary=lambda d: Example({"input": S(*d.shape(1, 3, 1, 4), dtype=d.choice(["bool", "int32", "float32"]),
                                            values=(-1, 2))}),
))
