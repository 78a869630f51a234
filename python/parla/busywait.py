"""Busy waits, as Parla's examples and benchmarks use them to stand for work of a known length.

    from parla import sleep_gil, sleep_nogil
    sleep_nogil(2000)     # spin 2000 µs with the GIL released: other task bodies run meanwhile
    sleep_gil(2000)       # spin 2000 µs holding the GIL: Python code in other threads waits

``gpu_sleep_nogil(device, ticks, stream)`` spins ``ticks`` GPU clock cycles on a stream (parla-experimental's
GPU variant). On a CUDA GPU with CuPy importable it launches a one-thread kernel on that stream and returns
at once (the stream's later work waits for it); on a virtual GPU, or without CuPy, it spins on the host for
``ticks / GPU_CLOCK_HZ`` seconds with the GIL released (virtual GPUs run their work on the host).

Errors: ValueError for a negative or non-numeric length. Any thread may call these.
"""
from __future__ import annotations

from typing import Any, Dict

from . import _context, _core, _cuda
from .devices import Device

__all__ = ["sleep_gil", "sleep_nogil", "gpu_sleep_gil", "gpu_sleep_nogil", "GPU_CLOCK_HZ"]

GPU_CLOCK_HZ = 1.9e9  # clock rate (cycles per second) assumed when GPU ticks are waited out on the host


def _microseconds(t: Any, what: str) -> float:
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not t >= 0:
        raise ValueError(f"{what}({t!r}): the length is a number of microseconds >= 0")
    return float(t)


def sleep_nogil(t: float) -> None:
    """Spins for t microseconds with the GIL released."""
    _core.busy_wait(_microseconds(t, "sleep_nogil"), True)


def sleep_gil(t: float) -> None:
    """Spins for t microseconds holding the GIL."""
    _core.busy_wait(_microseconds(t, "sleep_gil"), False)


_SPIN = r"""
extern "C" __global__ void parla_spin(long long ticks) {
    long long start = clock64();
    while (clock64() - start < ticks) { }
}
"""
_kernels: Dict[str, Any] = {}


def _spin_kernel(cupy: Any) -> Any:
    kernel = _kernels.get("spin")
    if kernel is None:
        kernel = _kernels["spin"] = cupy.RawKernel(_SPIN, "parla_spin")
    return kernel


def _ordinal(device: Any) -> int:
    if isinstance(device, Device):
        return device.index
    if isinstance(device, (list, tuple)) and device and isinstance(device[0], Device):
        return device[0].index
    if isinstance(device, bool) or not isinstance(device, int) or device < 0:
        raise ValueError(f"gpu_sleep_nogil: device={device!r} is not a GPU (an index or gpu(i))")
    return device


def _cuda_ordinal(index: int) -> Any:
    """The CUDA ordinal of gpu(index) in the active runtime, or None for a virtual GPU (or outside one)."""
    context = _context.current
    if context is None or index + 1 >= len(context.device_table):
        return None
    info = context.device_table[index + 1]
    return info["cuda_ordinal"] if info["cuda"] else None


def gpu_sleep_nogil(device: Any, ticks: int, stream: Any = None) -> None:
    """Spins ``ticks`` GPU clock cycles on ``stream`` of GPU ``device`` (an index or ``gpu(i)``); see the module
    docstring for CUDA and virtual GPUs. ``stream``: a CuPy stream, a :class:`parla.tasks.Stream`, an
    object with a ``stream`` attribute holding one of those, or None for the current stream."""
    if isinstance(ticks, bool) or not isinstance(ticks, (int, float)) or not ticks >= 0:
        raise ValueError(f"gpu_sleep_nogil: ticks={ticks!r} must be a number of clock cycles >= 0")
    ordinal = _cuda_ordinal(_ordinal(device))
    cupy = _cuda.cupy_or_none() if ordinal is not None else None
    if cupy is None:
        _core.busy_wait(ticks / GPU_CLOCK_HZ * 1e6, True)
        return
    stream = getattr(stream, "stream", stream)
    if stream is not None and not isinstance(stream, cupy.cuda.Stream) and hasattr(stream, "ptr"):
        stream = cupy.cuda.ExternalStream(stream.ptr)
    with cupy.cuda.Device(ordinal):
        with (stream if stream is not None else cupy.cuda.get_current_stream()):
            _spin_kernel(cupy)((1,), (1,), (cupy.int64(int(ticks)),))


def gpu_sleep_gil(device: Any, ticks: int, stream: Any = None) -> None:
    """:func:`gpu_sleep_nogil`, holding the GIL while a host-side wait lasts."""
    ordinal = _cuda_ordinal(_ordinal(device))
    if ordinal is None or _cuda.cupy_or_none() is None:
        if isinstance(ticks, bool) or not isinstance(ticks, (int, float)) or not ticks >= 0:
            raise ValueError(f"gpu_sleep_gil: ticks={ticks!r} must be a number of clock cycles >= 0")
        _core.busy_wait(ticks / GPU_CLOCK_HZ * 1e6, False)
        return
    gpu_sleep_nogil(device, ticks, stream)

