"""Task environments (Parla.py's ``parla.environments``): per-device setup entered around task bodies.

    from parla import Parla, TaskEnvironment
    envs = [TaskEnvironment(placement=[cpu(0)], components=[MyComponent("x")])]
    with Parla(envs):
        ...

A :class:`TaskEnvironment` names devices (``placement``), optional ``tags``, and components: each
component is an :class:`EnvironmentComponentDescriptor` that, called with the environment, gives an
:class:`EnvironmentComponentInstance`. Before a task body runs, the runtime picks the environment of the
task: the first one whose tags include every tag of the task (``spawn(tags=...)``) and, among those, the
first whose placement includes the task's device; then it calls each instance's ``initialize_thread()``
once per worker thread and runs the body inside the instances (``with instance:``).

Here the environments do not decide placement: the task's placement does (a task on a device that no
environment names runs without one). Without environments (the default), nothing of this runs.
"""
from __future__ import annotations

import threading
from typing import Any, Callable, Collection, Dict, FrozenSet, List, Optional, Sequence

from .devices import Architecture, Device, PlacementRequest

__all__ = ["TaskEnvironment", "EnvironmentComponentDescriptor", "EnvironmentComponentInstance",
           "TaskEnvironmentRegistry"]


class EnvironmentComponentInstance:
    """One component of one environment: a context manager around task bodies."""

    def __init__(self, descriptor: "EnvironmentComponentDescriptor") -> None:
        self.descriptor = descriptor

    def initialize_thread(self) -> None:
        """Called once on each worker thread before the first body it runs in this environment."""

    def __enter__(self) -> "EnvironmentComponentInstance":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> Optional[bool]:
        return None  # exceptions propagate


class EnvironmentComponentDescriptor:
    """Describes a component; calling it with a TaskEnvironment makes the instance for that environment."""

    def combine(self, other: "EnvironmentComponentDescriptor") -> "EnvironmentComponentDescriptor":
        raise NotImplementedError

    def __call__(self, env: "TaskEnvironment") -> EnvironmentComponentInstance:
        raise NotImplementedError


def _devices(placement: Any) -> List[Device]:
    out: List[Device] = []
    for p in placement if isinstance(placement, (list, tuple, set, frozenset)) else [placement]:
        if isinstance(p, PlacementRequest):
            p = p.target
        if isinstance(p, Architecture):
            out.extend(p.devices)
        elif isinstance(p, Device):
            out.append(p)
        else:
            raise TypeError(f"TaskEnvironment(placement=...): {p!r} is not a device or an architecture")
    return out


class TaskEnvironment:
    """Devices, tags and components (see the module docstring). ``env_no`` is accepted for Parla.py."""

    def __init__(self, placement: Any, components: Sequence[EnvironmentComponentDescriptor] = (),
                 tags: Collection[Any] = (), env_no: Optional[int] = None) -> None:
        self.placement = tuple(_devices(placement))
        self.tags = frozenset(tags)
        self.env_no = env_no
        self.components: Dict[type, EnvironmentComponentInstance] = {}
        for descriptor in components:
            self.components[type(descriptor)] = descriptor(self)
        self._initialized = threading.local()

    def __contains__(self, device: Any) -> bool:
        return device in self.placement

    def _enter(self, body: Callable[[], Any]) -> Any:
        if not getattr(self._initialized, "done", False):
            for instance in self.components.values():
                instance.initialize_thread()
            self._initialized.done = True
        instances = list(self.components.values())
        return _nested(instances, body)

    def __repr__(self) -> str:
        return f"TaskEnvironment({list(self.placement)!r}, tags={set(self.tags) or '{}'})"


def _nested(instances: List[EnvironmentComponentInstance], body: Callable[[], Any]) -> Any:
    if not instances:
        return body()
    with instances[0]:
        return _nested(instances[1:], body)


class TaskEnvironmentRegistry:
    """The environments of a Parla context, and the choice of one for a running task."""

    def __init__(self, environments: Sequence[TaskEnvironment]) -> None:
        for env in environments:
            if not isinstance(env, TaskEnvironment):
                raise TypeError(f"Parla(environments): {env!r} is not a TaskEnvironment")
        self.environments = list(environments)

    def choose(self, device: Device, tags: FrozenSet[str]) -> Optional[TaskEnvironment]:
        tagged = [e for e in self.environments if tags <= e.tags]
        for env in tagged:
            if device in env:
                return env
        return tagged[0] if tags and tagged else None
