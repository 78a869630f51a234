"""CuPy, where it is importable, and the CUDA device and stream scopes of running tasks.

CuPy is an optional dependency: this is the one module that imports it, at call time (never at import, so
``import parla`` works without it and a program may install or fake it later). A task on a CUDA GPU runs
with CuPy's current device set to that GPU and the task's engine stream (a ``CUstream``) current there.
"""
from __future__ import annotations

import contextlib
import types
from typing import Any, Callable, Optional

from . import _context, _core

__all__ = ["cupy_module", "cupy_or_none", "cuda_scope", "on_cuda_device"]


def cupy_module() -> types.ModuleType:
    """The ``cupy`` module. Raises ImportError when it is not importable."""
    import cupy  # pyright: ignore[reportMissingImports]
    module: types.ModuleType = cupy
    return module


def cupy_or_none() -> Optional[types.ModuleType]:
    """The ``cupy`` module, or None when it is not importable."""
    try:
        return cupy_module()
    except ImportError:
        return None


def cuda_scope(cupy: Any, ordinal: int, position: int) -> contextlib.ExitStack:
    """A context manager making CUDA device ``ordinal`` and the running task's stream on its ``position``-th
    device CuPy's current device and stream. Worker threads only (the stream is the running task's)."""
    scope = contextlib.ExitStack()
    scope.enter_context(cupy.cuda.Device(ordinal))
    ptr = _core.current_stream(position)
    if ptr is not None:
        try:
            stream = cupy.cuda.ExternalStream(ptr, ordinal)
        except TypeError:  # CuPy < 10 takes the pointer only
            stream = cupy.cuda.ExternalStream(ptr)
        scope.enter_context(stream)
    return scope


def on_cuda_device(body: Callable[[], Any]) -> Callable[[], Any]:
    """body, run with CuPy's current device set to the task's (first) CUDA GPU and the task's stream there
    current. The body queues its work and returns; the runtime records an event after it (runahead)."""
    def run() -> Any:
        task = _core.current_task()
        devices = task._devices if task is not None else ()
        table = _context.device_table()
        if devices and table[devices[0]]["cuda"]:
            cupy = cupy_or_none()
            if cupy is not None:
                with cuda_scope(cupy, table[devices[0]]["cuda_ordinal"], 0):
                    return body()
        return body()
    run.__name__ = getattr(body, "__name__", "task")
    return run
