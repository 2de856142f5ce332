"""The op registry: importing this package registers every op family once."""
from . import (activation, attention, conv, dropout, embedding, linear, losses, norm, pooling,  # noqa: F401
               recurrent, tensor)
from .registry import HELPERS, REGISTRY, OpDef, validate_registry

validate_registry()

__all__ = ["HELPERS", "REGISTRY", "OpDef"]
