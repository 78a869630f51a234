"""Variants: one function, a body per architecture, chosen by where the calling task runs.

    @specialize
    def potrf(a):                 # the default: used on the CPU, and where no variant matches
        ...

    @potrf.variant(gpu)
    def potrf_gpu(a):             # used when the current task runs on a GPU
        ...

``variant`` takes architectures (``gpu``), tuples of architectures for multi-device contexts
(``(gpu, gpu)``), or several of those at once; also parla-experimental's keywords: ``spec_list=`` (one key
or a list of keys), ``architecture=gpu, max_amount=8`` (gpu, (gpu, gpu), ... up to 8 devices). Registering the same key twice raises ValueError unless
``override=True``. Dispatch looks at the architectures of ``get_current_devices()``: the whole tuple first,
then the first device's architecture, then the default body.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Dict, Protocol, Tuple, TypeVar, Union, cast

from . import _core
from .devices import Architecture, cpu, device_of

__all__ = ["specialize", "specialized"]

Key = Union[Architecture, Tuple[Architecture, ...]]
_F = TypeVar("_F", bound=Callable[..., Any])


class Specialized(Protocol):
    """What :func:`specialize` returns: callable as the function was, with ``variant`` to register bodies and
    ``variants`` (architecture key -> body)."""

    variants: Dict[Key, Callable[..., Any]]

    def __call__(self, *args: Any, **kwargs: Any) -> Any: ...

    def variant(self, *keys: Key, override: bool = False, spec_list: Any = None, architecture: Any = None,
                max_amount: int = 8) -> Callable[[Callable[..., Any]], "Specialized"]: ...


def specialize(func: Callable[..., Any]) -> Specialized:
    """Makes func a dispatcher with a ``variant(*architectures, override=False)`` decorator."""
    variants: Dict[Key, Callable[..., Any]] = {}
    # Engine device indices of the calling task -> the body to run (dispatch is on every kernel call).
    chosen_by_devices: Dict[Tuple[int, ...], Callable[..., Any]] = {}

    def choose(devices: Tuple[int, ...]) -> Callable[..., Any]:
        archs: Tuple[Architecture, ...] = tuple(device_of(i).architecture for i in devices)
        if not archs:
            archs = (cpu,)
        first = archs[0]
        impl = variants.get(archs if len(archs) > 1 else first) or variants.get(first) or func
        chosen_by_devices[devices] = impl
        return impl

    @functools.wraps(func)
    def dispatch(*args: Any, **kwargs: Any) -> Any:
        if not variants:
            return func(*args, **kwargs)
        task = _core.current_task()
        devices = task._devices if task is not None else ()
        impl = chosen_by_devices.get(devices)
        if impl is None:
            impl = choose(devices)
        return impl(*args, **kwargs)

    def variant(*keys: Key, override: bool = False, spec_list: Any = None, architecture: Any = None,
                max_amount: int = 8) -> Callable[[Callable[..., Any]], Specialized]:
        if spec_list is not None:  # parla-experimental: one key or a list of keys
            keys = keys + (tuple(spec_list) if isinstance(spec_list, list) else (spec_list,))
        if architecture is not None:  # parla-experimental: 1 to max_amount devices of one architecture
            if keys:
                raise TypeError(f"{func.__name__}.variant(): give either architectures or architecture=, not both")
            if isinstance(max_amount, bool) or not isinstance(max_amount, int) or max_amount < 1:
                raise ValueError(f"{func.__name__}.variant(max_amount={max_amount!r}): expected an integer >= 1")
            keys = (architecture,) + tuple((architecture,) * n for n in range(2, max_amount + 1))
        if not keys:
            raise TypeError(f"{func.__name__}.variant() needs at least one architecture, e.g. variant(gpu)")
        keys = tuple(k[0] if isinstance(k, tuple) and len(k) == 1 else k for k in keys)
        for key in keys:
            members = key if isinstance(key, tuple) else (key,)
            if not members or not all(isinstance(m, Architecture) for m in members):
                raise TypeError(f"{func.__name__}.variant({key!r}): expected architectures such as gpu or (gpu, gpu)")

        def register(impl: Callable[..., Any]) -> Specialized:
            for key in keys:
                if key in variants and not override:
                    raise ValueError(f"{func.__name__} already has a variant for {key!r}; "
                                     f"pass override=True to replace it")
            for key in keys:
                variants[key] = impl
            chosen_by_devices.clear()
            return dispatcher

        return register

    dispatcher = cast(Specialized, dispatch)
    dispatcher.variant = variant  # type: ignore[method-assign]
    dispatcher.variants = variants
    return dispatcher


specialized = specialize  # Parla's older name
