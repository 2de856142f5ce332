"""Initializers of learnable tensors declared with `param NAME: [shape] = init`.

Each entry has its parameters and its PyTorch emission: a expression that
builds the initial tensor from a shape written as Python source.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from . import checks
from .ptypes import FLOAT
from .registry import ParamSpec


@dataclass(frozen=True)
class InitDef:
    name: str
    params: tuple[ParamSpec, ...]
    torch: Callable  # (shape_src, args: dict of formatted sources) -> str
    doc: str


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
    return f"torch.full({size}, {a['value']})"


INITS: dict[str, InitDef] = {i.name: i for i in (
    InitDef("constant", (ParamSpec("value", FLOAT),), _constant, "every element `value`: "
            "`param logit_scale: [] = constant(2.6593)`"),
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
)}
