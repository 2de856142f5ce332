"""The op registry: importing this package registers every op family once."""
from . import (  # noqa: F401
               activation,
               attention,
               augment,
               cells,
               conv,
               dropout,
               elementwise,
               embedding,
               linear,
               losses,
               norm,
               padding,
               pooling,
               queue,
               recurrent,
               tensor,
               transformer,
)
from .registry import HELPERS, REGISTRY, OpDef, validate_registry

validate_registry()

__all__ = ["HELPERS", "REGISTRY", "OpDef"]
