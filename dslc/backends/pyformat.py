"""Python source for compile-time values and size expressions.

Strings reach generated code only through `py_str` (ir/pyliteral.py: a quoted literal, never
raw text) and names only through `Namespace` (validated identifiers), so a
spec cannot inject code.
"""
from __future__ import annotations

import re

from ..ir.dims import FloorDiv, InDim, Param, Real, Size, Sym, Var
from ..ir.naming import MODULE_ATTRIBUTES, PY_KEYWORDS
from ..ir.values import TensorValue

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# The builtins generated code may read (tests/test_names.py checks that it reads no other): a
# name of the spec's that is one of them is renamed (`float` -> `float_`), so `float(...)` or
# `super()` in any template keeps its meaning. Other builtins stay free, as in torch's own code
# (`def forward(self, input)`), so the names a user sees are not changed without need.
GENERATED_BUILTINS = frozenset({
    "int", "float", "str", "bool", "list", "tuple", "dict", "set", "len", "range", "max", "min", "sum", "abs",
    "round", "pow", "divmod", "isinstance", "type", "super", "object", "getattr", "setattr", "hasattr", "zip",
    "enumerate", "map", "any", "all", "sorted", "reversed", "iter", "next", "slice", "repr", "print",
    "Exception", "ValueError", "RuntimeError", "TypeError", "NotImplementedError", "NotImplemented",
    "Ellipsis"})
# Names a class, argument or local of ours never takes: keywords, those builtins, what the file
# imports or defines, and `_`, the target for unused results.
RESERVED = PY_KEYWORDS | GENERATED_BUILTINS | {"self", "torch", "nn", "F", "math", "build", "MODELS", "_"}


def doc_text(s: str) -> str:
    """Text safe inside a generated docstring: a file name cannot end the docstring or escape."""
    return "".join(ch if (ch.isalnum() or ch in "._-/ +:,()") and ch.isprintable() else "?" for ch in s)


def safe_ident(name: str) -> str:
    """A legal, non-reserved Python identifier for a name from the spec: `float` -> `float_`,
    `__class__` -> `class_` (inside a class Python mangles `__x` and owns `__x__`)."""
    if not _IDENT.match(name):
        raise ValueError(f"not an identifier: {name!r}")
    if name.startswith("__") or name == "_":
        name = name.strip("_") + "_" if name.strip("_") else "unnamed"
    return name + "_" if name in RESERVED else name


def safe_attr(name: str) -> str:
    """An attribute of a generated module for a name of ours: no `_` first (torch.nn.Module's
    private attributes) and none of its public ones (`type`, `train`)."""
    name = safe_ident(name).lstrip("_") or "unnamed"
    return name + "_" if name in MODULE_ATTRIBUTES else name


class Namespace:
    """Unique identifiers: the wanted name, else wanted2, wanted3... With `attributes`, names for
    `self.<name>`, which avoid torch.nn.Module's own attributes too (`bfloat16` is never a number)."""

    def __init__(self, taken=(), attributes: bool = False):
        self.spell = safe_attr if attributes else safe_ident
        self.taken = set(taken) | RESERVED | (MODULE_ATTRIBUTES if attributes else frozenset())

    def claim(self, want: str) -> str:
        want = self.spell(want)
        if want not in self.taken:
            self.taken.add(want)
            return want
        n = 2
        while f"{want}{n}" in self.taken:
            n += 1
        self.taken.add(f"{want}{n}")
        return f"{want}{n}"

    def release(self, name: str) -> None:
        self.taken.discard(name)


def is_default(v, default) -> bool:
    """Whether an argument may be left out: it equals the default and depends on no parameter."""
    if isinstance(v, (Size, Real)) or isinstance(v, Sym):
        return False
    if isinstance(v, TensorValue):
        return False
    if isinstance(v, (list, tuple)) and isinstance(default, (list, tuple)):
        return len(v) == len(default) and all(is_default(a, b) for a, b in zip(v, default))
    if isinstance(v, bool) or isinstance(default, bool):
        return v is default or (isinstance(v, bool) and isinstance(default, bool) and v == default)
    if isinstance(v, (int, float)) and isinstance(default, (int, float)) and not isinstance(default, bool):
        # kernel_size=3 vs (3, 3) are different spellings; plain numbers compare by value
        return float(v) == float(default)
    return v == default and type(v) is type(default)


__all__ = ["FloorDiv", "InDim", "Namespace", "Param", "Var", "is_default", "safe_attr", "safe_ident"]
