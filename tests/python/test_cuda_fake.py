"""The CUDA path from Python on the driver test double (tests/c/fakecuda.c), built here with the C compiler and
loaded through PARLA_CUDA_DRIVER. The driver is loaded once per process, so each check runs in a subprocess.
The double runs each stream's work after a random delay: work that is not ordered by the runtime's events
reads stale bytes."""
import ctypes  # noqa: F401  (used by the child scripts)
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def fake_driver(tmp_path_factory):
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler to build the CUDA driver double")
    out = tmp_path_factory.mktemp("fakecuda") / "libfakecuda.so"
    subprocess.run([cc, "-shared", "-fPIC", "-O1", "-pthread", "-o", str(out), str(ROOT / "tests/c/fakecuda.c")],
                   check=True)
    return str(out)


def run_child(driver: str, body: str, timeout: float = 120) -> str:
    env = dict(os.environ, PARLA_CUDA_DRIVER=driver, FAKECUDA_DEVICES="2")
    env.pop("PARLA_VIRTUAL_GPUS", None)
    script = textwrap.dedent("""
        import ctypes, os
        import numpy as np
        from parla import Parla, TaskSpace, spawn, get_current_stream, get_current_context, get_current_devices
        from parla.array import asarray
        from parla.devices import cpu, gpu, get_all_devices
        from parla.tasks import Stream
        lib = ctypes.CDLL(os.environ["PARLA_CUDA_DRIVER"])
        memset = lib.cuMemsetD8Async
        memset.argtypes = [ctypes.c_ulonglong, ctypes.c_ubyte, ctypes.c_size_t, ctypes.c_void_p]
        memset.restype = ctypes.c_int

        def device_ptr(parray):
            # The task's copy of a PArray on its first device (no CuPy here: .array needs it on CUDA GPUs).
            from parla import _core
            return parray._engine_data().ptr(_core.current_task()._devices[0])
        """) + textwrap.dedent(body)
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


@pytest.mark.timeout(150)
def test_devices_and_streams(fake_driver):
    out = run_child(fake_driver, """
        with Parla(n_workers=2) as ctx:
            gpus = [d for d in ctx.device_table if d["cuda"]]
            assert len(gpus) == 2 and [d["cuda_ordinal"] for d in gpus] == [0, 1], ctx.device_table
            assert [str(d) for d in get_all_devices()] == ["cpu(0)", "gpu(0)", "gpu(1)"]
            seen = {}

            @spawn(placement=gpu(1))
            def one():
                s = get_current_stream()
                seen["one"] = (type(s).__name__, s.ptr != 0, str(s.device), [str(d) for d in get_current_devices()])

            @spawn(placement=cpu)
            def host():
                seen["cpu"] = get_current_stream()

            @spawn(placement=[(gpu, gpu)])
            def both():
                ctx = get_current_context()
                from parla import _core
                seen["both"] = (len(ctx), _core.current_stream(0) != _core.current_stream(1),
                                _core.current_stream(2))
                first = get_current_stream()
                with ctx[1]:
                    second = get_current_stream()
                seen["both streams"] = (first.ptr == _core.current_stream(0), second.ptr == _core.current_stream(1),
                                        str(second.device), get_current_stream().ptr == first.ptr)
        assert seen["one"] == ("Stream", True, "gpu(1)", ["gpu(1)"]), seen
        assert seen["cpu"] is None
        assert seen["both"] == (2, True, None), seen
        assert seen["both streams"][:2] == (True, True) and seen["both streams"][3], seen
        print("ok")
    """)
    assert out.strip() == "ok"


@pytest.mark.timeout(150)
def test_gpu_work_is_ordered_by_events(fake_driver):
    # T0 on gpu(0) fills the array with 7 on its stream; T1 on gpu(1) (released at T0's runahead) needs the
    # array copied over after that fill, then fills the first half with 9; T2 on the CPU must see both.
    out = run_child(fake_driver, """
        n = 1 << 16
        rounds = 40
        bad = []
        with Parla(n_workers=2):
            for r in range(rounds):
                A = asarray(np.zeros(n, dtype=np.uint8))
                T = TaskSpace(f"T{r}")

                @spawn(T[0], placement=gpu(0), inout=[A])
                def fill(A=A):
                    assert memset(device_ptr(A), 7, n, get_current_stream().ptr) == 0

                @spawn(T[1], [T[0]], placement=gpu(1), inout=[A])
                def half(A=A):
                    assert memset(device_ptr(A), 9, n // 2, get_current_stream().ptr) == 0

                @spawn(T[2], [T[1]], placement=cpu, input=[A])
                def check(A=A, r=r):
                    a = A.array
                    if not ((a[: n // 2] == 9).all() and (a[n // 2:] == 7).all()):
                        bad.append((r, np.unique(a).tolist()))
        assert not bad, bad
        print("ok")
    """)
    assert out.strip() == "ok"


@pytest.mark.timeout(150)
def test_failed_gpu_body_names_the_task(fake_driver):
    out = run_child(fake_driver, """
        A = asarray(np.zeros(1024, dtype=np.uint8))
        try:
            with Parla(n_workers=2):
                @spawn(placement=gpu(0), inout=[A])
                def broken():
                    memset(device_ptr(A), 3, 1024, get_current_stream().ptr)
                    raise ValueError("bad kernel arguments")
        except ValueError as e:
            notes = " ".join(getattr(e, "__notes__", []))
            assert "broken" in notes, notes
        else:
            raise AssertionError("no error")
        # The work queued before the failure has run: the GPU copy holds it (the CPU copy was not written).
        print("ok")
    """)
    assert out.strip() == "ok"


@pytest.mark.timeout(150)
def test_array_without_cupy_is_a_clear_error(fake_driver):
    out = run_child(fake_driver, """
        import sys
        sys.modules["cupy"] = None  # as if CuPy were not installed
        A = asarray(np.zeros(16))
        try:
            with Parla(n_workers=1):
                @spawn(placement=gpu(0), inout=[A])
                def uses_array():
                    A.array[:] = 1
        except RuntimeError as e:
            assert "CuPy is not importable" in str(e) and "gpu(0)" in str(e), str(e)
        else:
            raise AssertionError("no error")
        print("ok")
    """)
    assert out.strip() == "ok"


@pytest.mark.timeout(150)
def test_cupy_sees_the_task_device_and_stream(fake_driver):
    # A stand-in for CuPy's device and stream API records what the runtime makes current for a body.
    out = run_child(fake_driver, """
        import sys, types
        class Device:
            stack = []
            def __init__(self, ordinal): self.id = ordinal
            def __enter__(self): Device.stack.append(self.id); return self
            def __exit__(self, *a): Device.stack.pop()
        class ExternalStream:
            stack = []
            def __init__(self, ptr, device_id=-1): self.ptr, self.device_id = ptr, device_id
            def __enter__(self): ExternalStream.stack.append(self); return self
            def __exit__(self, *a): ExternalStream.stack.pop()
        cuda = types.SimpleNamespace(Device=Device, ExternalStream=ExternalStream,
                                     get_current_stream=lambda: ExternalStream.stack[-1])
        sys.modules["cupy"] = types.SimpleNamespace(cuda=cuda)
        from parla import _core
        seen = {}
        with Parla(n_workers=2):
            @spawn(placement=gpu(1))
            def one():
                s = get_current_stream()
                seen["one"] = (Device.stack[-1], s.device_id, s.ptr == _core.current_stream(0))

            @spawn(placement=[(gpu(0), gpu(1))])
            def both():
                ctx = get_current_context()
                first = (Device.stack[-1], get_current_stream().ptr == _core.current_stream(0))
                with ctx[1]:
                    second = (Device.stack[-1], get_current_stream().ptr == _core.current_stream(1))
                seen["both"] = (first, second, Device.stack[-1])
        assert seen["one"] == (1, 1, True), seen
        assert seen["both"] == ((0, True), (1, True), 0), seen
        print("ok")
    """)
    assert out.strip() == "ok"


@pytest.mark.timeout(150)
def test_trace_shows_device_work_after_the_body(fake_driver, tmp_path):
    # Each task queues 20 ms of device work (a host function that sleeps) and returns: the trace has the body
    # on a worker and its device work on the GPU's track, from the body's return to its event's completion.
    path = tmp_path / "run.json"
    out = run_child(fake_driver, f"""
        import json, time
        launch = lib.cuLaunchHostFunc
        CALLBACK = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
        launch.argtypes = [ctypes.c_void_p, CALLBACK, ctypes.c_void_p]
        sleep_20ms = CALLBACK(lambda arg: time.sleep(0.02))
        with Parla(n_workers=2, trace={str(path)!r}):
            T = TaskSpace("T")
            for i in range(4):
                @spawn(T[i], [T[i - 1]] if i else [], placement=gpu(i % 2))
                def step():
                    assert launch(get_current_stream().ptr, sleep_20ms, None) == 0
        events = json.loads(open({str(path)!r}).read())["traceEvents"]
        work = [e for e in events if e.get("cat") == "device work"]
        bodies = {{e["name"]: e for e in events if e.get("cat") == "task" and e["pid"] == 1}}
        assert sorted(e["name"] for e in work) == ["T[0]", "T[1]", "T[2]", "T[3]"], work
        for e in work:
            b = bodies[e["name"]]
            assert e["pid"] == 2 and e["ts"] >= b["ts"] + b["dur"] - 1, (e, b)
            assert e["dur"] >= 15000, e   # microseconds: at least the 20 ms host function, less clock slack
        print("ok")
    """)
    assert out.strip() == "ok"


@pytest.mark.timeout(150)
def test_device_error_fails_the_task_with_the_driver_error(fake_driver):
    # fakecuda_fail makes the stream's work fail from then on, as a faulting kernel does.
    out = run_child(fake_driver, """
        lib.fakecuda_fail.argtypes = [ctypes.c_void_p]
        seen = []
        try:
            with Parla(n_workers=2):
                T = TaskSpace("T")

                @spawn(T[0], placement=gpu(0))
                def faulting():
                    assert lib.fakecuda_fail(get_current_stream().ptr) == 0

                @spawn(T[1], [T[0]], placement=cpu)
                def after():
                    seen.append("ran")
        except RuntimeError as e:
            message = str(e)
            assert "T[0]" in message and "CUDA_ERROR_LAUNCH_FAILED" in message and "gpu(0)" in message, message
        else:
            raise AssertionError("no error")
        assert seen == [], seen
        print("ok")
    """)
    assert out.strip() == "ok"
