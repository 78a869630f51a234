"""Devices and architectures, as in Parla: ``cpu``, ``gpu``, ``gpu(1)``, ``gpu[{"vcus": 0.5}]``, ``gpu * 2``.

A placement is an architecture (any of its devices), a device, a list of alternatives, or a tuple naming
the devices of one multi-device task. Resource needs attach with indexing: ``cpu[{"vcus": 0.5}]``.
Indexing with a number or a list picks devices, as in Parla.py: ``gpu[1]`` is ``gpu(1)``, ``gpu[[0, 1]]``
is ``[gpu(0), gpu(1)]``.

vcus (the share of a device a task needs) is read as both Parla releases write it: a fraction in (0, 1];
0 for no need; an integer from 2 to 1000 as thousandths of a device (parla-experimental's integer vcus,
``vcus=500`` is half a device); ``cpu.n_cores`` or a part of it (Parla.py: ``vcus=cpu.n_cores`` is the
whole CPU, ``vcus=cpu.n_cores // 2`` half of it).

Outside a Parla context, ``get_all_devices()``, ``cpu.devices`` and ``gpu.devices`` give the devices a
context started with the environment's defaults would have (``PARLA_VIRTUAL_GPUS``, CUDA GPUs found),
as Parla.py knows its devices at import. With ``PARLA_CPU_ARCHITECTURE=cores`` the CPU is seen as
Parla.py's per-core devices ``cpu(0)`` .. ``cpu(n_cores - 1)``: each names one core of the one CPU device
(placement on ``cpu(i)`` runs on the CPU; vcus=1 there is one core's share).
"""
from __future__ import annotations

import numbers
import os
from typing import Any, Dict, List, Optional, Tuple, Union, cast

import numpy as np

from . import _config, _context, _core, _cuda

__all__ = [
    "Architecture", "Device", "Memory", "PlacementRequest", "Cores", "cpu", "gpu", "get_all_devices", "get_all_architectures",
    "get_architecture", "resolve_placement",
]

_RESOURCE_KEYS = ("vcus", "memory")


def _check_resources(resources: Dict[str, Any], where: str) -> Dict[str, Any]:
    if not isinstance(resources, dict):
        raise TypeError(f"{where}: resources must be a dict like {{'vcus': 0.5, 'memory': 2**30}}, "
                        f"not {type(resources).__name__}")
    unknown = set(resources) - set(_RESOURCE_KEYS)
    if unknown:
        raise ValueError(f"{where}: unknown resource(s) {sorted(unknown)}; known: vcus, memory")
    return dict(resources)


class PlacementRequest:
    """An architecture or device together with resource needs (``gpu[{"vcus": 0.5}]``)."""

    __slots__ = ("target", "resources")

    def __init__(self, target: Union["Architecture", "Device"], resources: Dict[str, Any]) -> None:
        self.target = target
        self.resources = _check_resources(resources, repr(target))

    def __repr__(self) -> str:
        return f"{self.target!r}[{self.resources!r}]"

    # Equal by value, so a request written inline (``placement=gpu[{"vcus": 0.5}]``, a new object at every
    # spawn) finds its resolution in the context's placement cache instead of adding an entry per spawn.
    # A resource value's type is part of the key (True == 1, but vcus=True is an error and vcus=1 is not).
    # Unhashable values raise TypeError: the cache skips such a request.
    def _key(self) -> Tuple[Any, ...]:
        return (self.target, tuple(sorted((k, type(v), v) for k, v in self.resources.items())))

    def __eq__(self, other: object) -> bool:
        if type(other) is not PlacementRequest:
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())


class Device:
    """One device: ``cpu(0)``, ``gpu(1)``. ``architecture`` is the :class:`Architecture`, ``index`` its number."""

    __slots__ = ("architecture", "index")

    def __init__(self, architecture: "Architecture", index: int) -> None:
        self.architecture = architecture
        self.index = index

    @property
    def id(self) -> int:
        return self.index

    @property
    def n_cores(self) -> "Cores":
        """For a CPU device, its cores as a vcus amount (all cores; one with PARLA_CPU_ARCHITECTURE=cores)."""
        return self.architecture._cores(self)

    def __getitem__(self, resources: Dict[str, Any]) -> PlacementRequest:
        return PlacementRequest(self, resources)

    def memory(self, kind: Any = None) -> "Memory":
        """The device's memory (Parla.py): ``gpu(1).memory()(array)`` gives array in gpu(1)'s memory. One
        memory kind per device; ``kind`` is accepted and ignored."""
        return Memory(self)

    # From the engine, in an active context (RuntimeError outside one).
    @property
    def memory_capacity(self) -> int:
        """Memory capacity in bytes."""
        return int(_device_info(self)["memory_capacity"])

    @property
    def memory_reserved(self) -> int:
        """Bytes reserved by tasks' memory needs."""
        return int(_device_info(self)["memory_reserved"])

    @property
    def memory_resident(self) -> int:
        """Bytes of PArray copies resident on the device."""
        return int(_device_info(self)["memory_resident"])

    @property
    def memory_free(self) -> int:
        """Capacity minus resident bytes."""
        info = _device_info(self)
        return int(info["memory_capacity"] - info["memory_resident"])

    @property
    def virtual(self) -> bool:
        """True for a virtual GPU."""
        return bool(_device_info(self)["virtual"])

    def __repr__(self) -> str:
        return f"{self.architecture.name}({self.index})"

    __str__ = __repr__

    # Devices are interned (gpu(1) is always the same object), so identity is equality and hashing is fast.


class Architecture:
    """A kind of device (``cpu``, ``gpu``). Calling it with an index gives a :class:`Device`."""

    __slots__ = ("name", "_devices")

    def __init__(self, name: str) -> None:
        self.name = name
        self._devices: Dict[int, Device] = {}

    def __call__(self, index: int = 0) -> Device:
        device = self._devices.get(index) if type(index) is int else None  # True == 1: not a device index
        if device is not None:
            return device
        if not _is_whole(index) or index < 0:
            raise ValueError(f"{self.name}({index!r}): a device index is a non-negative integer")
        index = int(index)  # a NumPy integer names the same device as the int
        device = self._devices.get(index)
        if device is None:
            device = self._devices.setdefault(index, Device(self, index))
        return device

    def __getitem__(self, index: Any) -> Union[PlacementRequest, Device, List[Device]]:
        """``arch[{"vcus": 0.5}]``: the architecture with resource needs; ``arch[i]``: ``arch(i)``;
        ``arch[[i, j]]``: the list ``[arch(i), arch(j)]`` (placement alternatives)."""
        if isinstance(index, dict):
            return PlacementRequest(self, index)
        if isinstance(index, (list, tuple, range)):
            return [self(_index(self, i)) for i in index]
        return self(_index(self, index))

    @property
    def id(self) -> str:
        """The architecture's identifier, ``"cpu"`` or ``"gpu"`` (Parla.py's ``Architecture.id``)."""
        return self.name

    @property
    def n_cores(self) -> "Cores":
        """The CPU's cores as a vcus amount: ``spawn(vcus=cpu.n_cores)`` asks for the whole CPU (Parla.py).
        Only the cpu architecture has it (AttributeError for gpu)."""
        return self._cores(None)

    def _cores(self, device: Optional["Device"]) -> "Cores":
        if self.name != "cpu":
            raise AttributeError(f"{self.name} has no n_cores; only cpu devices count cores")
        n = _n_cores()
        return Cores(1 if device is not None and _per_core_cpus() else n, n)

    def __mul__(self, n: int) -> Tuple["Architecture", ...]:
        if not _is_whole(n) or n <= 0:
            raise ValueError(f"{self.name} * {n!r}: need a positive number of devices")
        n = int(n)
        return (self,) * n

    __rmul__ = __mul__

    @property
    def devices(self) -> List[Device]:
        """The devices of this architecture in the active runtime, or outside a context those a context
        with the environment's defaults would have."""
        if self.name == "cpu" and _per_core_cpus():
            return [self(i) for i in range(_n_cores())]
        return [d for d in get_all_devices() if d.architecture is self]

    def __repr__(self) -> str:
        return self.name

    __str__ = __repr__


class Memory:
    """The memory of a device, as Parla.py's ``device.memory()``: calling it with an array gives the array in
    that memory (the same object where it already is: host arrays on the CPU and virtual GPUs; a CuPy array
    on a CUDA GPU). Objects that are not NumPy or CuPy arrays are returned as they are."""

    def __init__(self, device: Device) -> None:
        self.device = device

    def __call__(self, data: Any) -> Any:
        if not (isinstance(data, np.ndarray) or type(data).__module__.startswith("cupy")):
            return data
        context = _context.current
        if self.device.architecture.name == "gpu" and context is not None \
                and self.device.index + 1 < len(context.device_table):
            info = context.device_table[self.device.index + 1]
            if info["cuda"]:
                cupy = _cuda.cupy_module()  # CUDA GPUs come with CuPy for arrays
                with cupy.cuda.Device(info["cuda_ordinal"]):
                    return cupy.asarray(data)
        if type(data).__module__.startswith("cupy"):
            return cast(Any, data).get()
        return data

    def __repr__(self) -> str:
        return f"Memory({self.device!r})"


def _is_whole(i: Any) -> bool:
    """Whether i is an integer (a Python or NumPy one) and not a bool, which would name a device by accident."""
    return isinstance(i, numbers.Integral) and not isinstance(i, (bool, np.bool_))


def _index(arch: "Architecture", i: Any) -> int:
    if not _is_whole(i):
        raise TypeError(f"{arch.name}[{i!r}]: index with a device number, a list of them, or a resources dict "
                        f"like {{'vcus': 0.5}}")
    return int(i)


class Cores(int):
    """A number of CPU cores used as a vcus amount (``cpu.n_cores``, Parla.py's spelling): as vcus it means
    ``value / total`` of the CPU. Arithmetic on it gives plain ints, so ``cpu.n_cores // 2`` is read as
    thousandths; write ``vcus=0.5`` for half the CPU."""

    total: int

    def __new__(cls, value: int, total: int) -> "Cores":
        self = super().__new__(cls, value)
        self.total = total
        return self


def _n_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _per_core_cpus() -> bool:
    """PARLA_CPU_ARCHITECTURE=cores: Parla.py's one device per core."""
    return os.environ.get("PARLA_CPU_ARCHITECTURE", "").strip().lower() == "cores"


cpu = Architecture("cpu")
gpu = Architecture("gpu")


def get_all_architectures() -> List[Architecture]:
    """The architectures: ``[cpu, gpu]`` (Parla.py)."""
    return [cpu, gpu]


def get_architecture(name: str) -> Architecture:
    """The architecture named ``"cpu"`` or ``"gpu"`` (``"cuda"`` also gives gpu). Raises KeyError otherwise."""
    key = name.lower() if isinstance(name, str) else name
    if key == "cpu":
        return cpu
    if key in ("gpu", "cuda"):
        return gpu
    raise KeyError(f"no architecture named {name!r} (known: cpu, gpu)")

_default_table: List[Dict[str, Any]] = []  # the device table of a default context, read once when first asked


def _engine_devices() -> List[Dict[str, Any]]:
    return _context.device_table()


def _known_devices() -> List[Dict[str, Any]]:
    """The active runtime's device table; outside a context, that of a context with default settings."""
    context = _context.current
    if context is not None:
        return context.device_table
    if not _default_table:
        probe = _core.Runtime(1, **_config.virtual_gpus_from_env())
        try:
            _default_table.extend(probe.devices())
        finally:
            probe.close()
    return _default_table


def get_all_devices() -> List[Device]:
    """Every device of the active runtime, ``cpu(0)`` first, then ``gpu(0)``, ``gpu(1)``, ...

    Each device has ``architecture``, ``index`` and, from the engine, ``memory_capacity`` (bytes),
    ``memory_reserved``, ``memory_resident`` (bytes of data copies), ``virtual`` (the last four need an
    active context). Outside a Parla context: the devices a context with the environment's defaults
    (``PARLA_VIRTUAL_GPUS``, CUDA GPUs found) would have, found once by starting and closing an engine.
    """
    return [device_of(d["index"]) for d in _known_devices()]


def device_of(engine_index: int) -> Device:
    """The Device object for an engine device index (0 = cpu(0), 1.. = gpu(0)..)."""
    return cpu(0) if engine_index == 0 else gpu(engine_index - 1)


# Said when a program asks for a GPU that the runtime does not have: Parla programs written for GPUs run
# without one on virtual GPUs.
_NO_GPU_HINT = "; to run without a GPU, use virtual GPUs: Parla(virtual_gpus=N) or PARLA_VIRTUAL_GPUS=N"


def engine_index(device: Device) -> int:
    """The engine index of a device of the active runtime. Raises ValueError if it has no such device."""
    table = _engine_devices()
    if device.architecture is cpu:
        if device.index == 0 or (_per_core_cpus() and device.index < _n_cores()):
            return 0
    else:
        if device.index + 1 < len(table):
            return device.index + 1
    n_gpus = len(table) - 1
    hint = _NO_GPU_HINT if n_gpus == 0 else ""
    raise ValueError(f"no such device {device!r} (this runtime has cpu(0) and {n_gpus} GPU{'s' if n_gpus != 1 else ''}){hint}")


def _device_info(device: Device) -> Dict[str, Any]:
    return _context.current_runtime().runtime.devices()[engine_index(device)]




def _vcus(vcus: Any, task_name: str) -> float:
    """A vcus amount as a fraction of a device (see the module docstring for the spellings)."""
    if type(vcus) is Cores:
        return min(1.0, int(vcus) / vcus.total) if int(vcus) > 0 else 0.0
    if not isinstance(vcus, bool) and isinstance(vcus, numbers.Real):  # NumPy scalars too
        if 0.0 <= float(vcus) <= 1.0:
            return float(vcus)
        if isinstance(vcus, numbers.Integral) and 1 < int(vcus) <= 1000:
            return int(vcus) / 1000.0
    raise ValueError(f"task {task_name}: vcus={vcus!r} must be a fraction of a device in [0, 1] (0: no need), or "
                     f"an integer number of thousandths of a device up to 1000")


def _check_needs(vcus: Any, memory: Any, task_name: str) -> Tuple[Optional[float], Optional[int]]:
    if vcus is not None and (type(vcus) is not float or not 0.0 < vcus <= 1.0):
        vcus = _vcus(vcus, task_name)
    if memory is not None and type(memory) is not int:
        if isinstance(memory, bool) or not isinstance(memory, numbers.Integral):
            raise ValueError(f"task {task_name}: memory={memory!r} must be a non-negative number of bytes")
        memory = int(memory)  # a NumPy integer
    if memory is not None and not 0 <= memory < 2**64:
        raise ValueError(f"task {task_name}: memory={memory!r} must be a non-negative number of bytes below 2**64")
    return vcus, memory


def _slot(target: Any, placement: Any, task_name: str) -> int:
    if target is cpu:
        return _core.ANY_CPU
    if target is gpu:
        if len(_engine_devices()) < 2:
            raise ValueError(
                f"task {task_name}: placement={placement!r}: no such device (this runtime has no GPUs){_NO_GPU_HINT}")
        return _core.ANY_GPU
    if isinstance(target, Device):
        try:
            return engine_index(target)
        except ValueError as e:
            raise ValueError(f"task {task_name}: placement={placement!r}: {e}") from None
    hint = (" (a string: use the objects cpu, gpu, gpu(1), ... from parla.devices)" if isinstance(target, str)
            else " (cpu, gpu, gpu(1), ... from parla.devices)")
    raise TypeError(f"task {task_name}: placement={placement!r}: {target!r} is not a device or an architecture"
                    f"{hint}")


# An engine placement option: (engine device indices or ANY_CPU/ANY_GPU, vcus, memory bytes).
PlacementOption = Tuple[Tuple[int, ...], float, int]


def resolve_placement(placement: Any, vcus: Optional[float], memory: Optional[int],
                      task_name: str) -> Tuple[Optional[List[PlacementOption]], float, int]:
    """Turns a Parla placement into engine placement options.

    Returns ``(options, vcus, memory)``: options is None for a plain CPU task (the fast path; vcus and memory
    are then its needs on the CPU), else a list of ``(slots, vcus, memory)`` where slots is a tuple of engine
    device indices or ``_core.ANY_CPU`` / ``_core.ANY_GPU``. Raises ValueError/TypeError naming the task
    and the argument for an invalid placement, a device the runtime lacks, bad vcus or memory.
    """
    vcus, memory = _check_needs(vcus, memory, task_name)
    if placement is None or placement is cpu or (isinstance(placement, Device) and placement == cpu(0)):
        return None, (vcus or 0.0), (memory or 0)
    # Placements made of architectures and devices are resolved once per context.
    context = _context.current
    cache = (context if context is not None else _context.current_runtime())._placement_cache
    key: Any
    try:
        key = (tuple(placement) if isinstance(placement, list) else placement, vcus, memory,
               type(placement) is list)
        cached = cache.get(key)
    except TypeError:  # unhashable: resources given as dicts
        key = None
        cached = None
    if cached is not None:
        hit: Tuple[Optional[List[PlacementOption]], float, int] = cached
        return hit
    by_data = _placement_of_data(placement)
    if by_data is not placement:  # arrays name the devices holding them now: not cached (data moves)
        return _resolve_options(by_data, vcus, memory, task_name)
    result = _resolve_options(placement, vcus, memory, task_name)
    if key is not None:
        cache[key] = result
    return result


def _data_devices(x: Any) -> Optional[List["Device"]]:
    """For an array used as a placement (Parla's placement by data), the devices holding it: a PArray's
    devices with a valid copy of it (its ``__parla_placement__``), a NumPy array's CPU, a CuPy array's GPU.
    None for anything else."""
    if isinstance(x, (Device, Architecture, PlacementRequest)):
        return None
    where = getattr(type(x), "__parla_placement__", None)
    if where is not None:
        return list(where(x))
    module = type(x).__module__
    if module == "numpy" and hasattr(x, "__array_interface__"):
        return [cpu(0)]
    if module.startswith("cupy") and hasattr(x, "device"):
        return [gpu(int(x.device.id))]
    return None


def _placement_of_data(placement: Any) -> Any:
    """placement with each array replaced by the devices holding it (alternatives; in a tuple, the first
    one); placement itself when it names no array."""
    alternatives = placement if isinstance(placement, list) else [placement]
    out: List[Any] = []
    changed = False
    for alt in alternatives:
        devices = _data_devices(alt)
        if devices is not None:
            out.extend(devices)
            changed = True
        elif isinstance(alt, tuple):
            members = tuple((_data_devices(m) or [m])[0] for m in alt)
            changed = changed or any(a is not b for a, b in zip(members, alt))
            out.append(members)
        else:
            out.append(alt)
    return out if changed else placement


def _resolve_options(placement: Any, vcus: Optional[float], memory: Optional[int],
                     task_name: str) -> Tuple[List[PlacementOption], float, int]:
    alternatives = placement if isinstance(placement, list) else [placement]
    if not alternatives:
        raise ValueError(f"task {task_name}: placement=[] is empty; give at least one device or architecture")
    options: List[PlacementOption] = []
    missing: List[str] = []
    for alt in alternatives:
        try:
            options.append(_resolve_option(alt, placement, vcus, memory, task_name))
        except ValueError as e:
            # Among alternatives, ones naming devices this runtime lacks are skipped (so [cpu, gpu] runs
            # on a machine without GPUs); bad resource values are errors wherever they appear.
            if "no such device" not in str(e) or len(alternatives) == 1:
                raise
            missing.append(str(e))
    if not options:
        raise ValueError(f"task {task_name}: no alternative of placement={placement!r} exists here: "
                         + "; ".join(missing))
    return options, 0.0, 0


def _resolve_option(alt: Any, placement: Any, vcus: Optional[float], memory: Optional[int],
                    task_name: str) -> PlacementOption:
    members = alt if isinstance(alt, tuple) else (alt,)
    if not members:
        raise ValueError(f"task {task_name}: placement={placement!r} has an empty tuple")
    slots: List[int] = []
    v, m = vcus, memory
    for member in members:
        target = member
        if isinstance(member, PlacementRequest):
            target = member.target
            rv, rm = _check_needs(member.resources.get("vcus"), member.resources.get("memory"), task_name)
            v = rv if rv is not None else v
            m = rm if rm is not None else m
        slots.append(_slot(target, placement, task_name))
    fixed = [x for x in slots if x >= 0]
    if len(set(fixed)) != len(fixed):
        raise ValueError(f"task {task_name}: placement={placement!r} names the same device twice")
    return (tuple(slots), float(v or 0.0), int(m or 0))
