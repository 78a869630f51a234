"""Devices and architectures, as in Parla: ``cpu``, ``gpu``, ``gpu(1)``, ``gpu[{"vcus": 0.5}]``, ``gpu * 2``.

A placement is an architecture (any of its devices), a device, a list of alternatives, or a tuple naming
the devices of one multi-device task. Resource needs attach with indexing: ``cpu[{"vcus": 0.5}]``.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

__all__ = [
    "Architecture", "Device", "PlacementRequest", "cpu", "gpu", "get_all_devices", "resolve_placement",
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


class Device:
    """One device: ``cpu(0)``, ``gpu(1)``. ``architecture`` is the :class:`Architecture`, ``index`` its number."""

    __slots__ = ("architecture", "index")

    def __init__(self, architecture: "Architecture", index: int) -> None:
        self.architecture = architecture
        self.index = index

    @property
    def id(self) -> int:
        return self.index

    def __getitem__(self, resources: Dict[str, Any]) -> PlacementRequest:
        return PlacementRequest(self, resources)

    def __repr__(self) -> str:
        return f"{self.architecture.name}({self.index})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Device) and other.architecture is self.architecture
                and other.index == self.index)

    def __hash__(self) -> int:
        return hash((self.architecture.name, self.index))


class Architecture:
    """A kind of device (``cpu``, ``gpu``). Calling it with an index gives a :class:`Device`."""

    __slots__ = ("name", "_devices")

    def __init__(self, name: str) -> None:
        self.name = name
        self._devices: Dict[int, Device] = {}

    def __call__(self, index: int = 0) -> Device:
        if not isinstance(index, int) or index < 0:
            raise ValueError(f"{self.name}({index!r}): a device index is a non-negative integer")
        device = self._devices.get(index)
        if device is None:
            device = self._devices.setdefault(index, Device(self, index))
        return device

    def __getitem__(self, resources: Dict[str, Any]) -> PlacementRequest:
        return PlacementRequest(self, resources)

    def __mul__(self, n: int) -> Tuple["Architecture", ...]:
        if not isinstance(n, int) or n <= 0:
            raise ValueError(f"{self.name} * {n!r}: need a positive number of devices")
        return (self,) * n

    __rmul__ = __mul__

    @property
    def devices(self) -> List[Device]:
        """The devices of this architecture in the active runtime."""
        return [d for d in get_all_devices() if d.architecture is self]

    def __repr__(self) -> str:
        return self.name

    __str__ = __repr__


cpu = Architecture("cpu")
gpu = Architecture("gpu")


def get_all_devices() -> List[Device]:
    """Every device of the active runtime (``cpu(0)`` first). Raises RuntimeError outside a Parla context."""
    from ._runtime import current_runtime
    current_runtime()
    return [cpu(0)]


def resolve_placement(placement: Any, vcus: Optional[float], memory: Optional[int],
                      task_name: str) -> Tuple[float, int]:
    """Checks a placement and returns the CPU resource needs ``(vcus, memory_bytes)``.

    Raises ValueError naming the task and the argument for an invalid placement or one naming a device this
    runtime does not have.
    """
    options = placement if isinstance(placement, (list, PlacementRequest, Device, Architecture)) or \
        placement is None else placement
    if isinstance(options, list):
        if not options:
            raise ValueError(f"task {task_name}: placement=[] is empty; give at least one device or architecture")
        chosen = None
        errors = []
        for option in options:
            try:
                chosen = resolve_placement(option, vcus, memory, task_name)
                break
            except ValueError as e:
                errors.append(str(e))
        if chosen is None:
            raise ValueError(f"task {task_name}: no option of placement={placement!r} is available: "
                             + "; ".join(errors))
        return chosen
    resources: Dict[str, Any] = {}
    target = options
    if isinstance(target, PlacementRequest):
        resources = target.resources
        target = target.target
    if isinstance(target, tuple):
        raise ValueError(f"task {task_name}: placement={placement!r} asks for {len(target)} devices at once, "
                         f"but this runtime has only cpu(0)")
    if target is None or target is cpu or (isinstance(target, Device) and target.architecture is cpu):
        if isinstance(target, Device) and target.index != 0:
            raise ValueError(f"task {task_name}: placement={placement!r}: no such device (this runtime has cpu(0))")
    elif target is gpu or (isinstance(target, Device) and target.architecture is gpu):
        raise ValueError(f"task {task_name}: placement={placement!r}: no such device (this runtime has no GPUs)")
    else:
        raise TypeError(f"task {task_name}: placement={placement!r} is not a device, an architecture, "
                        f"a list of them or a tuple of them")
    v = resources.get("vcus", vcus)
    m = resources.get("memory", memory)
    if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 < v <= 1.0):
        raise ValueError(f"task {task_name}: vcus={v!r} must be a fraction of a device in (0, 1]")
    if m is not None and (isinstance(m, bool) or not isinstance(m, int) or m < 0):
        raise ValueError(f"task {task_name}: memory={m!r} must be a non-negative number of bytes")
    return (0.0 if v is None else float(v)), (0 if m is None else m)
