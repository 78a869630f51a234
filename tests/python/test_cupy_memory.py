"""CuPy's temporaries inside a CUDA GPU task come from a pool limited to what the runtime accounts for
(issue 13, item 6). CuPy is not needed: a small stand-in module (monkeypatched into sys.modules) records
what parla._cuda asks of it; the real CuPy, where it is installed, is checked too."""
import contextlib
import sys
import types

import pytest

from parla import Parla, _cuda


class _OutOfMemory(MemoryError):
    pass


def fake_cupy():
    """A stand-in for the parts of CuPy that parla._cuda uses for memory: MemoryPool (malloc, set_limit,
    free_all_blocks, used_bytes) and using_allocator (the current allocator, as a stack)."""
    cupy = types.ModuleType("cupy")
    cuda = types.SimpleNamespace()
    state = {"allocator": [None], "pools": []}

    class MemoryPool:
        def __init__(self):
            self.limit = 0  # CuPy: 0 is no limit
            self.used = 0
            self.freed_all = 0
            state["pools"].append(self)

        def set_limit(self, size=None, fraction=None):
            self.limit = size

        def malloc(self, size):
            if self.limit and self.used + size > self.limit:
                raise _OutOfMemory(f"out of memory allocating {size} bytes (limit {self.limit})")
            self.used += size
            return ("block", size)

        def free_all_blocks(self):
            self.freed_all += 1

        def used_bytes(self):
            return self.used

    @contextlib.contextmanager
    def using_allocator(allocator=None):
        state["allocator"].append(allocator)
        try:
            yield
        finally:
            state["allocator"].pop()

    cuda.MemoryPool = MemoryPool
    cuda.using_allocator = using_allocator
    cupy.cuda = cuda
    cupy._state = state
    return cupy


def current_allocator(cupy):
    return cupy._state["allocator"][-1]


@pytest.mark.timeout(30)
def test_a_tasks_cupy_allocations_are_limited_to_its_reservation(monkeypatch):
    monkeypatch.delenv("PARLA_CUPY_MEMORY", raising=False)
    cupy = fake_cupy()
    assert current_allocator(cupy) is None
    with _cuda.cupy_memory(cupy, 1000) as pool:
        alloc = current_allocator(cupy)
        assert alloc is not None and pool.limit == 1000
        assert alloc(600) == ("block", 600)
        with pytest.raises(_OutOfMemory):
            alloc(600)  # 1200 bytes: past the task's reservation
        assert pool.used == 600
    assert current_allocator(cupy) is None  # restored after the body
    assert pool.freed_all == 1  # cached blocks went back to the driver


@pytest.mark.timeout(30)
def test_without_a_reservation_the_headroom_setting_limits_cupy(monkeypatch):
    cupy = fake_cupy()
    monkeypatch.setenv("PARLA_CUPY_MEMORY", "2KiB")
    with _cuda.cupy_memory(cupy, 0) as pool:
        assert pool.limit == 2048
        current_allocator(cupy)(2048)
        with pytest.raises(_OutOfMemory):
            current_allocator(cupy)(1)
    monkeypatch.setenv("PARLA_CUPY_MEMORY", "")
    with _cuda.cupy_memory(cupy, 0) as pool:
        assert pool.limit == 0  # not set: no limit
        current_allocator(cupy)(1 << 40)
    monkeypatch.setenv("PARLA_CUPY_MEMORY", "lots")
    with pytest.raises(ValueError, match="PARLA_CUPY_MEMORY"):
        with _cuda.cupy_memory(cupy, 0):
            pass


@pytest.mark.timeout(30)
def test_a_body_on_a_cuda_gpu_runs_with_the_pool_and_its_stream(monkeypatch):
    """on_cuda_device, as spawn wraps a body for a CUDA GPU: the pool is set around the body only."""
    monkeypatch.delenv("PARLA_CUPY_MEMORY", raising=False)
    cupy = fake_cupy()
    seen = []
    cupy.cuda.Device = lambda ordinal: contextlib.nullcontext()
    monkeypatch.setitem(sys.modules, "cupy", cupy)
    task = types.SimpleNamespace(_devices=(1,), name="k")
    monkeypatch.setattr(_cuda._core, "current_task", lambda: task)
    monkeypatch.setattr(_cuda._core, "current_stream", lambda position: None)
    monkeypatch.setattr(_cuda._context, "device_table",
                        lambda: [{"cuda": False}, {"cuda": True, "cuda_ordinal": 0}])

    def body():
        alloc = current_allocator(cupy)
        seen.append(alloc(100))
        with pytest.raises(_OutOfMemory):
            alloc(500)
        return "ran"

    assert _cuda.on_cuda_device(body, 512)() == "ran"
    assert seen == [("block", 100)]
    assert current_allocator(cupy) is None
    assert [p.limit for p in cupy._state["pools"]] == [512]


@pytest.mark.timeout(60)
def test_with_real_cupy_the_pool_is_cupys():
    cupy = pytest.importorskip("cupy")
    try:
        cupy.cuda.runtime.getDeviceCount()
    except Exception:  # no GPU or no driver
        pytest.skip("CuPy is installed but no CUDA GPU is usable")
    with _cuda.cupy_memory(cupy, 1 << 20) as pool:
        a = cupy.zeros(1000)
        assert pool.used_bytes() >= a.nbytes
        with pytest.raises(cupy.cuda.memory.OutOfMemoryError):
            cupy.zeros(1 << 20)


@pytest.mark.timeout(30)
def test_a_cupy_without_pools_keeps_its_own_allocator():
    cupy = types.ModuleType("cupy")
    cupy.cuda = types.SimpleNamespace()
    with _cuda.cupy_memory(cupy, 1000) as pool:
        assert pool is None


@pytest.mark.timeout(30)
def test_a_bad_headroom_setting_is_an_error_when_the_context_is_entered(monkeypatch):
    # Checked at entry: without a GPU no task would ever read it, and with one the first GPU task would fail.
    monkeypatch.setenv("PARLA_CUPY_MEMORY", "abc")
    with pytest.raises(ValueError, match=r"PARLA_CUPY_MEMORY='abc' is not a size"):
        with Parla(n_workers=1):
            pass
    monkeypatch.setenv("PARLA_CUPY_MEMORY", "64MiB")
    with Parla(n_workers=1):
        pass
