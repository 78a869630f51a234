"""Older Parla module layout: ``from parla.cpu import cpu``."""
from .devices import cpu

__all__ = ["cpu"]
