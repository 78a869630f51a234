"""Compatibility package for parla-experimental's ``parla.utility`` helpers used by its tests."""
