"""CuPy, where it is importable, and the CUDA device and stream scopes of running tasks.

CuPy is an optional dependency: this is the one module that imports it, at call time (never at import, so
``import parla`` works without it and a program may install or fake it later). A task on a CUDA GPU runs
with CuPy's current device set to that GPU and the task's engine stream (a ``CUstream``) current there, and
with CuPy's allocator set (context-locally, ``cupy.cuda.using_allocator``) to a memory pool of the runtime's
for that task: CuPy's temporaries are limited to the task's ``memory=`` reservation, which the runtime
counts in the GPU's account, and its cached blocks are given back to the driver when the body returns, so
CuPy never holds memory on the GPU behind the runtime's accounting (see the user guide, "CuPy's memory").
"""
from __future__ import annotations

import contextlib
import types
from typing import Any, Callable, Iterator, Optional

from . import _config, _context, _core

__all__ = ["cupy_module", "cupy_or_none", "cuda_scope", "cupy_memory", "on_cuda_device"]


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


@contextlib.contextmanager
def cupy_memory(cupy: Any, memory: int) -> Iterator[Any]:
    """A scope in which CuPy allocates (on the current device) from a memory pool of its own, limited to
    ``memory`` bytes when ``memory`` > 0 (the task's reservation, counted in the device's account), else to
    PARLA_CUPY_MEMORY bytes when that is set, else unlimited. CuPy raises its OutOfMemoryError for an
    allocation past the limit. At the end the pool's unused blocks go back to the driver (blocks of arrays
    still alive go back when those arrays are freed). Yields the pool. Worker threads (the allocator is
    CuPy's context-local one); ValueError when PARLA_CUPY_MEMORY is not a byte count. Yields None, and
    changes nothing, for a CuPy module without MemoryPool or using_allocator."""
    limit = memory if memory > 0 else _config.cupy_memory_from_env()
    pool_type = getattr(cupy.cuda, "MemoryPool", None)
    using_allocator = getattr(cupy.cuda, "using_allocator", None)
    if pool_type is None or using_allocator is None:  # a CuPy without them (before 7): CuPy's own pool
        yield None
        return
    pool = pool_type()
    if limit is not None:
        pool.set_limit(size=limit)
    try:
        with using_allocator(pool.malloc):
            yield pool
    finally:
        pool.free_all_blocks()


def on_cuda_device(body: Callable[[], Any], memory: int = 0) -> Callable[[], Any]:
    """body, run with CuPy's current device set to the task's (first) CUDA GPU, the task's stream there
    current, and CuPy's allocations limited to the task's reservation of ``memory`` bytes (cupy_memory).
    The body queues its work and returns; the runtime records an event after it (runahead)."""
    def run() -> Any:
        task = _core.current_task()
        devices = task._devices if task is not None else ()
        table = _context.device_table()
        if devices and table[devices[0]]["cuda"]:
            cupy = cupy_or_none()
            if cupy is not None:
                with cuda_scope(cupy, table[devices[0]]["cuda_ordinal"], 0), \
                        cupy_memory(cupy, memory):
                    return body()
        return body()
    run.__name__ = getattr(body, "__name__", "task")
    return run
