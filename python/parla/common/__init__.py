"""Compatibility package for parla-experimental's ``parla.common.*`` module paths (``globals``, ``array``,
``parray``): thin re-exports of this package's public API. See docs/parla-compatibility.md."""
