"""Compatibility module for ``parla.utility.execute``: the helpers parla-experimental's tests import
(``timeout``, ``Propagate``). Its synthetic-graph benchmark harness (graph configs, ``run``, log parsing)
is not part of this package."""
import functools
from typing import Any, Callable

from .threads import Propagate

__all__ = ["timeout", "Propagate"]


def timeout(seconds: float) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: runs the function on a thread and raises TimeoutError if it has not returned after
    ``seconds`` (the thread is left running, as a daemon); re-raises what the function raised."""
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds <= 0:
        raise ValueError(f"timeout({seconds!r}): expected a positive number of seconds")

    def decorator(func: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(func)
        def run(*args: Any, **kwargs: Any) -> Any:
            thread = Propagate(target=func, args=args, kwargs=kwargs, daemon=True)
            thread.start()
            thread.join(seconds)
            if thread.is_alive():
                raise TimeoutError(f"{func.__name__} did not finish within {seconds} s")
            return thread.join()
        return run
    return decorator
