"""A zoo model and its independent twin: what tests/test_specs.py checks for every spec model."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from torch import nn

IMAGE = ("B", 3, 224, 224)


@dataclass(frozen=True)
class Case:
    file: str
    model: str
    twin: Callable[..., nn.Module]
    inputs: tuple                           # shapes (with "B", "T") or (shape, dtype) pairs
    params: dict = field(default_factory=dict)  # parameters for the default build (models that need them)
    published: int | None = None            # the published parameter count
    names: tuple = ()                       # state-dict keys that `as` names must produce
    small: dict | None = None               # parameters for a real CPU forward (None: meta only)
    rename: Callable | None = None          # dslc key -> twin key, where registration orders differ
    twin_small: dict = field(default_factory=dict)  # extra twin arguments for the CPU run

    @property
    def id(self) -> str:
        return f"{self.file[:-3]}-{self.model}"
