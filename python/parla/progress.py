"""Progress of a running Parla context: ``Parla(progress=True)`` or ``PARLA_PROGRESS=1`` shows a tqdm bar of tasks
finished over tasks spawned, with the rate and how busy each device has been (``cpu(0) 87%``);
``Parla(progress=callback)`` calls ``callback(Progress)`` instead (for notebooks' own widgets and GUIs).

    from parla import Parla, spawn

    def report(p):
        print(f"{p.finished}/{p.spawned} tasks, {p.rate:.0f}/s, CPU {p.utilization['cpu(0)']:.0%} busy")

    with Parla(progress=report):
        for i in range(100):
            @spawn()
            def work():
                pass

The bar appears only on runs longer than a tenth of a second (tqdm's ``delay``), on stderr, and its last
line ends with a newline; it uses ``tqdm.auto``, so in Jupyter it is a widget when ipywidgets is installed. Both forms are updated from a
background thread about ten times a second and once more when the context has finished waiting.

Busy time is the engine's own accounting (``parla_device_busy``, turned on while a progress display is):
the time task bodies ran on each device, weighted by the share of the device each holds (its ``vcus``; a
CPU task without one is one worker's share, a GPU task without one the whole GPU), since the context
started, over the time elapsed. A GPU task that runs ahead counts its body, not the work it queued.
"""
from __future__ import annotations

import itertools
import os
import threading
import time
from typing import Any, Callable, Dict, NamedTuple, Optional, Union

__all__ = ["Progress", "ProgressCallback"]

_INTERVAL = 0.1  # seconds between updates


class Progress(NamedTuple):
    """A snapshot: tasks ``spawned`` and ``finished`` (done, failed or cancelled) so far, of which ``failed`` and
    ``cancelled``; ``elapsed`` seconds since the context started; ``rate`` finished tasks per second; ``busy``
    maps each device (``"cpu(0)"``, ``"gpu(1)"``) to the number of tasks mapped to it and not finished;
    ``final`` is True for the last call, made once every task has finished; ``utilization`` maps each device
    to the fraction of it that task bodies kept busy since the context started, 0.0 to 1.0 (more only when
    tasks without vcus share a device with others)."""
    spawned: int
    finished: int
    failed: int
    cancelled: int
    elapsed: float
    rate: float
    busy: Dict[str, int]
    final: bool
    utilization: Dict[str, float]


ProgressCallback = Callable[[Progress], Any]


class _Monitor:
    """Samples the engine's counters on a daemon thread and hands them to a tqdm bar or a callback."""

    def __init__(self, rt: Any, target: Union[bool, ProgressCallback]) -> None:
        self._rt = rt
        rt.busy_enable()
        self._busy0 = [d["busy_seconds"] for d in rt.devices()]  # device-seconds before this context's tasks
        self._count = itertools.count(1)
        self._spawned = 0
        self._start = time.monotonic()
        self._stop = threading.Event()
        self._lock = threading.Lock()  # one sample at a time (the thread and the final one)
        self._callback: Optional[ProgressCallback] = None
        self._bar: Any = None
        self._error: Optional[BaseException] = None
        if callable(target):
            self._callback = target
        else:
            from tqdm.auto import tqdm
            self._bar = tqdm(total=0, unit="task", desc="parla", delay=_INTERVAL, dynamic_ncols=True)
        self._thread = threading.Thread(target=self._run, name="parla-progress", daemon=True)
        self._thread.start()

    def spawned(self) -> None:
        """Counts one spawn (any thread; next() on a count is atomic under the GIL)."""
        self._spawned = next(self._count)

    def _sample(self, final: bool) -> None:
        with self._lock:
            stats = self._rt.stats()
            devices = self._rt.devices()
            names = [f"{d['kind']}({d['kind_index']})" for d in devices]
            busy = {name: d["tasks_mapped"] for name, d in zip(names, devices)}
            seconds = [d["busy_seconds"] for d in devices]
            finished = stats["tasks_run"] + stats["tasks_cancelled"]
            elapsed = time.monotonic() - self._start
            utilization = {name: (s - s0) / elapsed if elapsed > 0 else 0.0
                           for name, s, s0 in zip(names, seconds, self._busy0)}
            snapshot = Progress(max(self._spawned, finished), finished, stats["tasks_failed"],
                                stats["tasks_cancelled"], elapsed, finished / elapsed if elapsed > 0 else 0.0,
                                busy, final, utilization)
            if self._callback is not None:
                self._callback(snapshot)
            else:
                bar = self._bar
                bar.total = snapshot.spawned
                bar.set_postfix_str(" ".join(f"{k} {u:.0%}" for k, u in utilization.items()), refresh=False)
                # update(), not a refresh() after setting n: tqdm keeps its delay and knows the bar was shown,
                # so close() draws the final line and ends it with a newline (a refreshed bar is left
                # unterminated, and the program's next output continues on the bar's line).
                bar.update(snapshot.finished - bar.n)

    def _run(self) -> None:
        while not self._stop.wait(_INTERVAL):
            try:
                self._sample(False)
            except BaseException as e:  # a callback that raised: re-raised by close(), no more calls
                self._error = e
                return

    def close(self) -> None:
        """Stops the thread and makes the final update (call before the runtime closes)."""
        self._stop.set()
        self._thread.join()
        try:
            if self._error is not None:
                raise self._error
            self._sample(True)
        finally:
            if self._bar is not None:
                self._bar.close()


def _from_env() -> bool:
    return os.environ.get("PARLA_PROGRESS", "").strip().lower() not in ("", "0", "false", "no", "off")
