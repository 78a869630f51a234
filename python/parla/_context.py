"""The active Parla context, for every module that needs it (devices, arrays, tasks).

``current`` is the active :class:`parla.Parla` context or None; only ``Parla.__enter__``/``__exit__`` (and the
fork handler) set it. Reading it is a plain module-attribute load, on the spawn path. One context is active
per process at a time; any thread may read it.
"""
from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Dict, List, Optional

if TYPE_CHECKING:  # the context type lives above this module (it starts the engine)
    from ._runtime import Parla

__all__ = ["current", "current_runtime", "device_table", "positions", "current_position"]

current: Optional["Parla"] = None

# Per thread, .stack: the positions (in the running task's device list) entered with ``with ctx[i]:``
# (parla.tasks.TaskContext), innermost last; arrays read it to pick the copy on that device.
positions = threading.local()


def current_position() -> int:
    """The position in the running task's devices of the innermost ``with get_current_context()[i]:`` on this
    thread, 0 outside one."""
    stack = getattr(positions, "stack", None)
    return stack[-1] if stack else 0


def current_runtime() -> "Parla":
    """The active :class:`parla.Parla` context. Raises RuntimeError outside one."""
    context = current
    if context is None:
        raise RuntimeError("no Parla runtime is active: spawn tasks inside a 'with Parla():' block")
    return context


def device_table() -> List[Dict[str, Any]]:
    """The active runtime's devices (``parla._core.Runtime.devices()`` at start: ``index``, ``kind``,
    ``kind_index``, ``cuda``, ``cuda_ordinal``, ...), the CPU first. Raises RuntimeError outside a context."""
    return current_runtime().device_table
