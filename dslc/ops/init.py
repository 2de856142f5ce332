"""Initializers: of learnable tensors declared with `param NAME: [shape] = init`, and of a
layer's weights (`Linear(64, init=normal(std=0.02))`).

Each entry has its parameters and two PyTorch emissions: `torch`, an expression that
builds the initial tensor of a `param` from a shape written as Python source (None for
the fan-based schemes: their `torch.nn.init` call on `torch.empty(shape)`), and
`in_place`, the `torch.nn.init` call that initializes an existing weight (arguments
renamed by `torch_kw` where torch's names differ). `min_rank`: the fewest dims a tensor
needs (fan-based schemes need a fan in and a fan out).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from . import checks
from .ptypes import FLOAT, Str
from .registry import ParamSpec


@dataclass(frozen=True)
class InitDef:
    name: str
    params: tuple[ParamSpec, ...]
    torch: Callable | None  # (shape_src, args: dict of formatted sources) -> str; None: in_place on empty
    doc: str
    torch_kw: tuple = ()   # (our argument name, torch.nn.init's), where they differ
    min_rank: int = 0

    def in_place(self, target: str, args: dict) -> str:
        """The torch.nn.init call that initializes the tensor `target` (Python source); `args` holds
        the formatted arguments to pass (those left at their defaults may be omitted)."""
        rename = dict(self.torch_kw)
        parts = [target] + [f"{rename.get(k, k)}={v}" for k, v in args.items()]
        return f"nn.init.{self.name}_({', '.join(parts)})"


def _scaled(base: str, shape: str, a: dict) -> str:
    out = f"{base}({shape})"
    if a.get("std", "1.0") not in ("1", "1.0"):
        out = f"{out} * {a['std']}"
    if a.get("mean", "0.0") not in ("0", "0.0"):
        out = f"{out} + {a['mean']}"
    return out


def _uniform(shape: str, a: dict) -> str:
    lo, hi = a["a"], a["b"]
    return f"torch.empty({shape}).uniform_({lo}, {hi})"


def _constant(shape: str, a: dict) -> str:
    size = "()" if shape == "()" else f"({shape},)" if "," not in shape else f"({shape})"
    # torch.full takes its dtype from the value: an int (`constant(7)`, or an int parameter)
    # would make an int64 tensor, which cannot be a Parameter
    value = a["value"]
    if value.lstrip("-").isdigit():
        value += ".0"
    elif not _float_literal(value):
        value = f"float({value})"
    return f"torch.full({size}, {value})"


def _float_literal(src: str) -> bool:
    try:
        float(src)
    except ValueError:
        return False
    return any(c in src for c in ".en")  # 2.5, 1e-3, float('nan'): a float already; 7 is not


_GAIN = ParamSpec("gain", FLOAT, 1.0, checks.positive_number)
_MODE = ParamSpec("mode", Str(("fan_in", "fan_out")), "fan_in")
_NONLINEARITY = ParamSpec("nonlinearity", Str(("relu", "leaky_relu", "linear", "tanh", "sigmoid", "selu")),
                          "leaky_relu")
_KAIMING = (ParamSpec("a", FLOAT, 0.0), _MODE, _NONLINEARITY)

INITS: dict[str, InitDef] = {i.name: i for i in (
    InitDef("constant", (ParamSpec("value", FLOAT),), _constant, "every element `value`: "
            "`param logit_scale: [] = constant(2.6593)`", torch_kw=(("value", "val"),)),
    InitDef("zeros", (), lambda shape, a: f"torch.zeros({shape})", "all zeros"),
    InitDef("ones", (), lambda shape, a: f"torch.ones({shape})", "all ones"),
    InitDef("normal", (ParamSpec("mean", FLOAT, 0.0), ParamSpec("std", FLOAT, 1.0, checks.positive_number)),
            lambda shape, a: _scaled("torch.randn", shape, a), "normal(mean, std)"),
    InitDef("uniform", (ParamSpec("a", FLOAT, 0.0), ParamSpec("b", FLOAT, 1.0)),
            _uniform, "uniform on [a, b)"),
    InitDef("trunc_normal", (ParamSpec("mean", FLOAT, 0.0), ParamSpec("std", FLOAT, 1.0, checks.positive_number),
                             ParamSpec("a", FLOAT, -2.0), ParamSpec("b", FLOAT, 2.0)),
            lambda shape, a: (f"nn.init.trunc_normal_(torch.empty({shape}), mean={a['mean']}, std={a['std']}, "
                              f"a={a['a']}, b={a['b']})"),
            "normal(mean, std) truncated to [a, b]"),
    InitDef("xavier_uniform", (_GAIN,), None,
            "Glorot: uniform with variance gain² · 2 / (fan_in + fan_out)", min_rank=2),
    InitDef("xavier_normal", (_GAIN,), None,
            "Glorot: normal with variance gain² · 2 / (fan_in + fan_out)", min_rank=2),
    InitDef("kaiming_uniform", _KAIMING, None,
            "He: uniform with variance gain(nonlinearity, a)² / fan (fan_in or fan_out: `mode`)", min_rank=2),
    InitDef("kaiming_normal", _KAIMING, None,
            "He: normal with variance gain(nonlinearity, a)² / fan", min_rank=2),
    InitDef("orthogonal", (_GAIN,), None, "a (semi-)orthogonal matrix times gain",
            min_rank=2),
)}
