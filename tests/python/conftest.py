"""Shared fixtures for the Python tests of Parla in C.

Every test runs with a clean environment: PARLA_VIRTUAL_GPUS, PARLA_NUM_THREADS, PARLA_TRACE (and friends) are unset, so
tests that expect "no GPUs" or a given worker count do not depend on the caller's shell.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable

_ENV_VARS = ("PARLA_VIRTUAL_GPUS", "PARLA_NUM_THREADS", "PARLA_DEV_CONFIG", "PARLA_GPU_MEMORY", "PARLA_TRACE")


@pytest.fixture(autouse=True)
def clean_parla_env(monkeypatch):
    for name in _ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    yield


def clean_env(**extra):
    """os.environ without the PARLA_* device variables, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in _ENV_VARS}
    env.update({k: str(v) for k, v in extra.items()})
    return env


def run_python(code, timeout, **env):
    """Runs ``code`` with this interpreter in a subprocess; returns the CompletedProcess."""
    return subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, timeout=timeout,
                          env=clean_env(**env), cwd=str(REPO))


# Never-spawned tasks that other tasks depend on are cancelled at context exit; the runtime currently
# drops one reference too many on them (see test_errors.py::test_never_spawned_dependency_keeps_refcount).
# Tests that exercise that path take one extra, never released reference here, so that bug fails one
# test instead of crashing the whole pytest process with a use-after-free. Once the bug is fixed this
# leaks a few small objects, which is harmless.
def keep_alive(*objects):
    import ctypes
    for obj in objects:
        ctypes.pythonapi.Py_IncRef(ctypes.py_object(obj))
    return objects[0] if len(objects) == 1 else objects


def thread_count():
    """Threads of this process (Python's and the engine's), from /proc/self/task."""
    return len(os.listdir("/proc/self/task"))


def thread_count_steady(window=0.3, timeout=5.0):
    """The thread count once it has not changed for window seconds (or the lowest seen in timeout seconds):
    a baseline taken right after a context may still list its joined workers, which would let a later leak of
    as many threads pass, or fail a later count that has settled below it."""
    import time
    end = time.monotonic() + timeout
    n = low = thread_count()
    since = time.monotonic()
    while time.monotonic() < end and time.monotonic() - since < window:
        time.sleep(0.01)
        m = thread_count()
        low = min(low, m)
        if m != n:
            n, since = m, time.monotonic()
    return n if time.monotonic() - since >= window else low


def thread_count_settled(expected, timeout=10.0):
    """The thread count once joined threads have left the kernel's list, or the count that stays above
    expected for timeout seconds. A thread whose join has returned may still be listed for a moment (the
    kernel wakes the joiner before it removes the thread), most visibly on a loaded machine; a thread that
    was never joined stays listed, so a leak still fails."""
    import time
    end = time.monotonic() + timeout
    n = thread_count()
    while n > expected and time.monotonic() < end:
        time.sleep(0.01)
        n = thread_count()
    return n
