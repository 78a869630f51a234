"""Threads whose exceptions reach the joining thread (parla-experimental's ``parla.utility.threads``)."""
import threading
from typing import Any, Optional

__all__ = ["Propagate"]


class Propagate(threading.Thread):
    """A :class:`threading.Thread` whose ``join()`` re-raises what its target raised and returns what it
    returned."""

    def run(self) -> None:
        self.exc: Optional[BaseException] = None
        self.value: Any = None
        try:
            if self._target is not None:  # type: ignore[attr-defined]
                self.value = self._target(*self._args, **self._kwargs)  # type: ignore[attr-defined]
        except BaseException as e:  # handed to join()
            self.exc = e
        finally:
            del self._target, self._args, self._kwargs  # type: ignore[attr-defined]

    def join(self, timeout: Optional[float] = None) -> Any:
        super().join(timeout)
        exc: Optional[BaseException] = getattr(self, "exc", None)
        if exc is not None:
            raise exc
        return getattr(self, "value", None)
