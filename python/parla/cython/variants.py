"""Compatibility module for ``parla.cython.variants``: :func:`specialize` (see
:mod:`parla.function_decorators`)."""
from ..function_decorators import specialize

VariantDefinitionError = ValueError  # what registering a variant twice raises (without override=True)

__all__ = ["specialize", "VariantDefinitionError"]
