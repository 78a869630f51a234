"""The package's loggers: ``parla`` and its children ``parla.spawn``, ``parla.mapping``, ``parla.data`` and
``parla.trace`` (standard :mod:`logging`).

Levels: DEBUG for every task spawned (``parla.spawn``), its placement options and where it ran
(``parla.mapping``), PArrays and data movement counters (``parla.data``), a context's start and end
(``parla``); INFO for where a trace, graph or summary file was written (``parla.trace``); WARNING for tasks
cancelled by Ctrl-C or an exception in the block, and files that could not be written.

The ``parla`` logger's level comes from ``PARLA_LOG_LEVEL`` (``DEBUG``, ``INFO``, ``WARNING``, ``ERROR``, or
a number; default INFO). Its records go to the root logger like any library's; when the application has
not set up logging to a terminal or a file, a handler of the package writes them to ``sys.stderr`` as
``parla: message``. The package writes nothing else to stderr.
"""
from __future__ import annotations

import logging
import os
import sys

__all__ = ["logger", "spawn_logger", "mapping_logger", "data_logger", "trace_logger", "configure"]

logger = logging.getLogger("parla")
spawn_logger = logging.getLogger("parla.spawn")
mapping_logger = logging.getLogger("parla.mapping")
data_logger = logging.getLogger("parla.data")
trace_logger = logging.getLogger("parla.trace")


def _root_writes_somewhere() -> bool:
    """Whether the root logger has a handler writing to a terminal stream or a file (logging.basicConfig and
    similar): then the records reach the user through it, and the package's own handler stays quiet."""
    streams = {id(s) for s in (sys.stderr, sys.stdout, sys.__stderr__, sys.__stdout__) if s is not None}
    for h in logging.getLogger().handlers:
        if isinstance(h, logging.FileHandler):
            if getattr(h, "baseFilename", None) != os.devnull:
                return True
            continue
        if isinstance(h, logging.StreamHandler) and id(getattr(h, "stream", None)) in streams:
            return True
    return False


class _StderrHandler(logging.Handler):
    """Writes ``parla: message`` to the current ``sys.stderr`` unless the application logs elsewhere."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter("parla: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        if _root_writes_somewhere():
            return
        try:
            stream = sys.stderr
            if stream is not None:
                stream.write(self.format(record) + "\n")
                stream.flush()
        except Exception:  # a closed stream: logging's own policy
            self.handleError(record)


_handler = _StderrHandler()


def _level(text: str) -> int:
    text = text.strip()
    if text.isdigit():
        return int(text)
    level = logging.getLevelName(text.upper())
    if not isinstance(level, int):
        raise ValueError(f"PARLA_LOG_LEVEL={text!r}: expected DEBUG, INFO, WARNING, ERROR, CRITICAL or a number")
    return level


def configure(default: bool = False) -> None:
    """Sets the ``parla`` logger's level from ``PARLA_LOG_LEVEL`` (with default: INFO when it is unset) and
    installs the stderr handler once. Called on import (default) and when a context starts, so the variable
    may be set in between; a level set in the program stays unless the variable is set."""
    text = os.environ.get("PARLA_LOG_LEVEL", "")
    if text.strip():
        logger.setLevel(_level(text))
    elif default:
        logger.setLevel(logging.INFO)
    if _handler not in logger.handlers:
        logger.addHandler(_handler)


configure(default=True)
