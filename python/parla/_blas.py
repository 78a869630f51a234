"""BLAS threads inside a Parla context (threadpoolctl).

Parallelism comes from tasks: a BLAS call inside a task body that starts its own threads competes with the
other workers for the cores (oversubscription). So a context sets every BLAS library loaded in the process
(OpenBLAS, MKL, BLIS: NumPy's and SciPy's copies alike) to ``blas_threads`` threads (default 1) when it starts
and puts the previous counts back when it ends. ``Parla(blas_threads=None)`` or ``PARLA_BLAS_THREADS=none``
leaves them alone; ``Parla(blas_threads=4)`` or ``PARLA_BLAS_THREADS=4`` sets 4. Only libraries loaded when the
context starts are limited: import SciPy (``scipy.linalg``) before ``with Parla():``.
"""
from __future__ import annotations

import os
import sys
from typing import Any, Optional, Tuple

__all__ = ["resolve", "limit", "restore"]

_UNSET: Any = object()
_cache: Tuple[int, Any] = (-1, None)  # (len(sys.modules) when scanned, ThreadpoolController)


def resolve(value: Any) -> Optional[int]:
    """The thread count a context sets: the argument, else PARLA_BLAS_THREADS, else 1; None: leave BLAS alone.
    Raises ValueError naming the argument or variable."""
    if value is _UNSET:
        text = os.environ.get("PARLA_BLAS_THREADS", "").strip()
        if not text:
            return 1
        if text.lower() in ("none", "off"):
            return None
        try:
            value = int(text)
        except ValueError:
            raise ValueError(f"PARLA_BLAS_THREADS={text!r}: expected a positive integer or 'none'") from None
        if value <= 0:
            raise ValueError(f"PARLA_BLAS_THREADS={text!r}: expected a positive integer or 'none'")
        return int(value)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"Parla(blas_threads={value!r}): expected a positive integer or None")
    return value


def _controller() -> Any:
    """A ThreadpoolController for the libraries loaded now. Scanning them costs milliseconds, so the scan is
    kept until a module is imported (a new BLAS library comes with a new extension module)."""
    global _cache
    from threadpoolctl import ThreadpoolController
    n = len(sys.modules)
    if _cache[0] != n:
        _cache = (n, ThreadpoolController())
    return _cache[1]


def limit(threads: Optional[int]) -> Any:
    """Sets every loaded BLAS library to `threads` threads; returns what :func:`restore` needs (None when
    threads is None)."""
    if threads is None:
        return None
    return _controller().limit(limits=threads, user_api="blas")


def restore(handle: Any) -> None:
    """Puts back the thread counts :func:`limit` changed."""
    if handle is not None:
        handle.restore_original_limits()
