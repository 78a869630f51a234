"""Logical devices: split data into partitions and map each partition to a physical device (Parla.py's
``parla.ldevice``).

    from parla.ldevice import LDeviceSequenceBlocked
    mapper = LDeviceSequenceBlocked(4, placement=gpu)     # 4 logical devices over the GPUs, in blocks
    parts = mapper.partition_tensor(A, overlap=1)           # A split along axis 0, one part per logical device
    for i in range(4):
        @spawn(T[i], placement=mapper.device(i))
        def step():
            block = parts[i]                                # a copy of part i on this task's device
            ...
            parts[i] = block                                # written back into part i

Collections:

- :class:`LDeviceSequenceBlocked` ``(n, placement=None)``: n logical devices in a row; consecutive logical
  devices share a physical device (blocks of ``n / n_devices``).
- :class:`LDeviceGridBlocked` ``(nx, ny, placement=None)``: an nx x ny grid; the physical devices are laid
  out as a grid of their own (``n_devices`` split into two near-equal factors) and each covers a block.
- :class:`LDeviceGridRaveled` ``(nx, ny, placement=None)``: the grid read row by row, then blocked like a
  sequence.

``placement`` is what spawn takes (an architecture, devices, a list of them); None means every device.
When there are fewer logical than physical devices, the first ones are used and a PerformanceWarning says
so. ``partition(f)`` calls ``f(i)`` (``f(i, j)`` for grids) for each logical device; ``f`` may take
``device=`` and ``memory=`` keywords. The partitions are placed in the memory of their device: NumPy arrays
stay host arrays on the CPU and on virtual GPUs (so, as in Parla, a partition of ``partition_tensor`` is a
view of the original array there), and become CuPy arrays on CUDA GPUs.

Errors: ValueError for a logical device index out of range or a collection with no devices.
"""
from __future__ import annotations

import inspect
import math
import warnings
from typing import Any, Callable, Dict, List, Mapping, Sequence, Tuple

import numpy as np

from .array import clone_here, copy
from .devices import Architecture, Device, Memory, PlacementRequest, get_all_devices

__all__ = ["PerformanceWarning", "LDeviceCollection", "LDeviceSequence", "LDeviceGrid", "LDeviceSequenceBlocked",
           "LDeviceGridBlocked", "LDeviceGridRaveled", "PartitionedTensor", "Memory"]


class PerformanceWarning(UserWarning):
    """A layout that runs correctly but leaves devices idle."""


def _devices_of(placement: Any) -> List[Device]:
    """The physical devices a placement names, in order, without repeats."""
    if placement is None:
        return get_all_devices()
    out: List[Device] = []
    stack = [placement]
    while stack:
        p = stack.pop(0)
        if isinstance(p, PlacementRequest):
            p = p.target
        if isinstance(p, Device):
            found = [p]
        elif isinstance(p, Architecture):
            found = p.devices
        elif isinstance(p, (list, tuple)):
            stack[:0] = list(p)
            continue
        else:
            raise TypeError(f"placement {placement!r}: {p!r} is not a device or an architecture")
        out.extend(d for d in found if d not in out)
    return out


def _is_array(x: Any) -> bool:
    return isinstance(x, np.ndarray) or type(x).__module__.startswith("cupy")


def _partition_slice(i: int, n: int, parts: int, step: int = 1, overlap: int = 0) -> slice:
    """Elements of part i when n elements are split into parts near-equal contiguous parts, widened by overlap
    on each side (clipped to [0, n))."""
    lo = math.ceil(i * n / parts)
    hi = math.ceil((i + 1) * n / parts)
    return slice(max(0, lo - overlap), min(n, hi + overlap), step)


def _with_placement(data: Callable[..., Any]) -> Callable[..., Any]:
    """Calls data with the keywords (device=, memory=) it accepts, and places the result in that memory."""
    params: Mapping[str, inspect.Parameter]
    try:
        params = inspect.signature(data).parameters
    except (TypeError, ValueError):
        params = {}
    anykw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    wants = [k for k in ("memory", "device") if anykw or k in params]

    def call(*index: int, memory: Memory, device: Device) -> Any:
        given = {"memory": memory, "device": device}
        return memory(data(*index, **{k: given[k] for k in wants}))
    return call


class LDeviceCollection:
    """Logical devices mapped onto physical devices (see the module docstring)."""

    def __init__(self, placement: Any = None) -> None:
        self._devices: Tuple[Device, ...] = tuple(_devices_of(placement))
        if not self._devices:
            raise ValueError(f"placement={placement!r} names no devices")

    @property
    def devices(self) -> Tuple[Device, ...]:
        """The physical devices used."""
        return self._devices

    @property
    def n_devices(self) -> int:
        return len(self._devices)

    @property
    def n_ldevices(self) -> int:
        raise NotImplementedError

    # device(i) or device(i, j), by the collection's dimensions: the physical device of a logical device.
    # Raises ValueError for an index out of range. Each kind of collection defines it.
    device: Callable[..., Device]

    def memory(self, *index: int, kind: Any = None) -> Memory:
        """The memory of a logical device's physical device (kind is accepted for Parla.py; one kind here)."""
        return Memory(self.device(*index))

    @property
    def assignments(self) -> Dict[Tuple[int, ...], Device]:
        """Every logical index and its physical device."""
        raise NotImplementedError

    def _fewer(self, n: int) -> None:
        if n < len(self._devices):
            warnings.warn(PerformanceWarning(
                f"{n} logical device(s) cannot cover {len(self._devices)} physical devices; "
                f"{list(self._devices[n:])} stay unused"), stacklevel=3)
            self._devices = self._devices[:n]


class LDeviceSequence(LDeviceCollection):
    """A row of n logical devices."""

    def __init__(self, n_ldevices: int, placement: Any = None) -> None:
        super().__init__(placement)
        if isinstance(n_ldevices, bool) or not isinstance(n_ldevices, int) or n_ldevices < 1:
            raise ValueError(f"{type(self).__name__}({n_ldevices!r}): need a positive number of logical devices")
        self._n = n_ldevices
        self._fewer(n_ldevices)

    @property
    def n_ldevices(self) -> int:
        return self._n

    def _check(self, i: int) -> None:
        if not 0 <= i < self._n:
            raise ValueError(f"logical device {i} out of range [0, {self._n})")

    def slice(self, i: int, n: int, step: int = 1, *, overlap: int = 0) -> slice:
        """The slice of a length-n sequence that belongs to logical device i (widened by overlap)."""
        self._check(i)
        return _partition_slice(i, n, self._n, step, overlap)

    def partition(self, data: Callable[..., Any], memory_kind: Any = None) -> "PartitionedTensor":
        """``data(i)`` for each logical device, placed in its device's memory."""
        call = _with_placement(data)
        return PartitionedTensor([call(i, memory=self.memory(i), device=self.device(i)) for i in range(self._n)])

    def partition_tensor(self, data: Any, overlap: int = 0, memory_kind: Any = None) -> "PartitionedTensor":
        """data split along its first axis, one part per logical device (parts overlap by overlap rows)."""
        n = data.shape[0]
        return self.partition(lambda i: data[self.slice(i, n, overlap=overlap), ...])

    @property
    def assignments(self) -> Dict[Tuple[int, ...], Device]:
        return {(i,): self.device(i) for i in range(self._n)}


class LDeviceGrid(LDeviceCollection):
    """An nx x ny grid of logical devices."""

    def __init__(self, n_ldevices_x: int, n_ldevices_y: int, placement: Any = None) -> None:
        super().__init__(placement)
        for v in (n_ldevices_x, n_ldevices_y):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{type(self).__name__}({n_ldevices_x!r}, {n_ldevices_y!r}): need positive sizes")
        self.n_ldevices_x = n_ldevices_x
        self.n_ldevices_y = n_ldevices_y
        self._fewer(n_ldevices_x * n_ldevices_y)

    @property
    def n_ldevices(self) -> int:
        return self.n_ldevices_x * self.n_ldevices_y

    def _check(self, i: int, j: int) -> None:
        if not (0 <= i < self.n_ldevices_x and 0 <= j < self.n_ldevices_y):
            raise ValueError(f"logical device ({i}, {j}) out of range ({self.n_ldevices_x}, {self.n_ldevices_y})")

    def slice_x(self, i: int, n: int, step: int = 1, *, overlap: int = 0) -> slice:
        return _partition_slice(i, n, self.n_ldevices_x, step, overlap)

    def slice_y(self, j: int, n: int, step: int = 1, *, overlap: int = 0) -> slice:
        return _partition_slice(j, n, self.n_ldevices_y, step, overlap)

    def partition(self, data: Callable[..., Any], memory_kind: Any = None) -> "PartitionedTensor":
        """``data(i, j)`` for each logical device, placed in its device's memory: a list of rows."""
        call = _with_placement(data)
        return PartitionedTensor([[call(i, j, memory=self.memory(i, j), device=self.device(i, j))
                                   for j in range(self.n_ldevices_y)] for i in range(self.n_ldevices_x)])

    def partition_tensor(self, data: Any, overlap: int = 0, memory_kind: Any = None) -> "PartitionedTensor":
        """data split along its first two axes into a grid of blocks."""
        nx, ny = data.shape[0], data.shape[1]
        return self.partition(lambda i, j: data[self.slice_x(i, nx, overlap=overlap),
                                                self.slice_y(j, ny, overlap=overlap), ...])

    @property
    def assignments(self) -> Dict[Tuple[int, ...], Device]:
        return {(i, j): self.device(i, j) for i in range(self.n_ldevices_x) for j in range(self.n_ldevices_y)}


class LDeviceSequenceBlocked(LDeviceSequence):
    """Logical device i runs on physical device ``floor(i * n_devices / n)``."""

    def device(self, i: int) -> Device:
        self._check(i)
        return self._devices[i * len(self._devices) // self._n]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._n})<{len(self._devices)}>"


def _two_factors(n: int) -> Tuple[int, int]:
    """n = a * b with a <= b as close as possible."""
    a = int(math.isqrt(n))
    while n % a:
        a -= 1
    return a, n // a


class LDeviceGridBlocked(LDeviceGrid):
    """The physical devices as an a x b grid (a * b = n_devices); each covers a block of logical devices."""

    def __init__(self, n_ldevices_x: int, n_ldevices_y: int, placement: Any = None) -> None:
        super().__init__(n_ldevices_x, n_ldevices_y, placement)
        self._a, self._b = _two_factors(len(self._devices))
        if n_ldevices_x < self._a or n_ldevices_y < self._b:
            self._a, self._b = min(self._a, n_ldevices_x), min(self._b, n_ldevices_y)
            warnings.warn(PerformanceWarning(
                f"a {n_ldevices_x} x {n_ldevices_y} grid cannot cover the physical grid; using "
                f"{self._a} x {self._b} of {len(self._devices)} devices"), stacklevel=2)

    def device(self, i: int, j: int) -> Device:
        self._check(i, j)
        x = i * self._a // self.n_ldevices_x
        y = j * self._b // self.n_ldevices_y
        return self._devices[x * self._b + y]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.n_ldevices_x}, {self.n_ldevices_y})<{self._a}, {self._b}>"


class LDeviceGridRaveled(LDeviceGrid):
    """The grid read row by row, then mapped like :class:`LDeviceSequenceBlocked`."""

    def device(self, i: int, j: int) -> Device:
        self._check(i, j)
        return self._devices[(i * self.n_ldevices_y + j) * len(self._devices) // self.n_ldevices]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.n_ldevices_x}, {self.n_ldevices_y})<{len(self._devices)}>"


class PartitionedTensor:
    """Partitions (a list, or a list of rows for grids). ``P[i]`` (``P[i, j]``) is a copy of that partition on
    the running task's device (NumPy on cpu and virtual GPUs, CuPy on CUDA GPUs); several indices give a list.
    ``P[i] = value`` copies value into the partition (in place, so a partition that is a view of the
    original array writes through to it); a value of another shape replaces the partition. ``base`` is the
    partitions themselves."""

    def __init__(self, partitions: List[Any]) -> None:
        self._parts = partitions

    @property
    def base(self) -> List[Any]:
        return self._parts

    @property
    def types(self) -> List[type]:
        return [type(x) for x in self._parts]

    def __len__(self) -> int:
        return len(self._parts)

    def _select(self, index: Any) -> List[Tuple[Tuple[int, ...], Any]]:
        """(path, partition) for every partition the index names."""
        index = index if isinstance(index, tuple) else (index,)
        found: List[Tuple[Tuple[int, ...], Any]] = [((), self._parts)]
        for i in index:
            step: List[Tuple[Tuple[int, ...], Any]] = []
            for path, node in found:
                picks: Sequence[Any]
                if isinstance(i, slice):
                    picks = range(*i.indices(len(node)))
                elif isinstance(i, (list, range)):
                    picks = list(i)
                else:
                    picks = [i]
                step.extend((path + (k,), node[k]) for k in picks)
            found = step
        return found

    def __getitem__(self, index: Any) -> Any:
        found = self._select(index)
        values = [clone_here(x) if _is_array(x) else x for _, x in found]
        return values[0] if len(values) == 1 and not isinstance(index, (slice, list, range)) else values

    def __setitem__(self, index: Any, value: Any) -> None:
        for path, x in self._select(index):
            if _is_array(x) and _is_array(value) and x.shape == value.shape:
                copy(x, value)
                continue
            node = self._parts
            for k in path[:-1]:
                node = node[k]
            node[path[-1]] = value

    def __repr__(self) -> str:
        return f"PartitionedTensor({len(self._parts)} partitions)"

