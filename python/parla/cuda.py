"""Older Parla module layout: ``from parla.cuda import gpu``."""
from .devices import gpu

__all__ = ["gpu"]
