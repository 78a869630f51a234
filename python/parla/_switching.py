"""The interpreter's thread switch interval inside a Parla context.

A worker running a Python body that calls a GIL-releasing kernel (NumPy, BLAS) needs the GIL back when the
kernel returns. While the main thread runs Python (spawning tasks, in a loop), it holds the GIL, and CPython
makes it hand the GIL over only after the waiting thread has waited one switch interval
(``sys.getswitchinterval()``, 5 ms by default): the worker then sits idle for up to 5 ms after each 100 µs
kernel, and workers hardly run while tasks are being spawned. A shorter interval bounds that wait. So a
context lowers the interval to ``switch_interval`` seconds (default :data:`DEFAULT`, 100 µs) when it starts and
puts the previous value back when it ends, unless the program changed it meanwhile. It never raises the
interval: a program that set a shorter one keeps it.

``Parla(switch_interval=None)`` or ``PARLA_SWITCH_INTERVAL=none`` leaves the interval alone;
``Parla(switch_interval=0.001)`` or ``PARLA_SWITCH_INTERVAL=0.001`` sets 1 ms. The cost of a shorter interval is
more hand-overs between threads that all run Python at once (each costs a few microseconds).
"""
from __future__ import annotations

import math
import os
import sys
from typing import Any, Optional, Tuple

__all__ = ["DEFAULT", "resolve", "lower", "restore"]

DEFAULT = 1e-4  # seconds
_UNSET: Any = object()


def _seconds(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 < value < math.inf):
        raise ValueError(f"{what}: expected a number of seconds > 0 or None")
    return float(value)


def resolve(value: Any) -> Optional[float]:
    """The interval (seconds) a context sets: the argument, else PARLA_SWITCH_INTERVAL, else DEFAULT; None:
    leave it alone. Raises ValueError naming the argument or the variable."""
    if value is _UNSET:
        text = os.environ.get("PARLA_SWITCH_INTERVAL", "").strip()
        if not text:
            return DEFAULT
        if text.lower() in ("none", "off"):
            return None
        try:
            number = float(text)
        except ValueError:
            number = math.nan
        return _seconds(number, f"PARLA_SWITCH_INTERVAL={text!r}")
    if value is None:
        return None
    return _seconds(value, f"Parla(switch_interval={value!r})")


def lower(seconds: Optional[float]) -> Optional[Tuple[float, float]]:
    """Sets the switch interval to `seconds` when that is shorter than the current one. Returns what
    :func:`restore` needs: (previous, set), or None when nothing was changed."""
    if seconds is None:
        return None
    previous = sys.getswitchinterval()
    if seconds >= previous:
        return None
    sys.setswitchinterval(seconds)
    return previous, sys.getswitchinterval()  # as the interpreter stores it (whole microseconds)


def restore(handle: Optional[Tuple[float, float]]) -> None:
    """Puts back the interval :func:`lower` replaced, unless the program has set another one since."""
    if handle is not None and sys.getswitchinterval() == handle[1]:
        sys.setswitchinterval(handle[0])
