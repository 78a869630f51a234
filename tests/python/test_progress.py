"""Parla(progress=...): a tqdm bar or a callback with tasks finished over spawned."""
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from parla import Parla, TaskSpace, spawn
from parla.devices import gpu
from parla.progress import Progress


def test_callback_sees_counts_and_busy_devices():
    seen = []
    gate = threading.Event()
    middle = threading.Event()

    def report(p):
        seen.append(p)
        if not p.final and p.finished >= 10 and p.busy.get("gpu(0)") == 1:
            middle.set()

    with Parla(n_workers=2, virtual_gpus=1, progress=report):
        T = TaskSpace("T")
        for i in range(10):
            @spawn(T[i])
            def quick():
                pass

        @spawn(T[10], placement=gpu)
        def held():
            assert gate.wait(30)

        assert middle.wait(30)  # the monitor saw 10 finished while the GPU task held
        gate.set()
    last = seen[-1]
    assert isinstance(last, Progress) and last.final
    assert (last.spawned, last.finished, last.failed, last.cancelled) == (11, 11, 0, 0)
    assert last.busy == {"cpu(0)": 0, "gpu(0)": 0}
    assert sum(p.final for p in seen) == 1


def test_callback_error_is_raised_at_exit():
    def bad(p):
        raise ZeroDivisionError("in the callback")

    with pytest.raises(ZeroDivisionError, match="in the callback"):
        with Parla(n_workers=1, progress=bad):
            @spawn()
            def t():
                pass


def test_progress_argument_checked():
    with pytest.raises(TypeError, match="progress=3"):
        Parla(progress=3)


@pytest.mark.timeout(60)
def test_tqdm_bar_on_stderr_from_environment():
    code = textwrap.dedent("""
        import time
        from parla import Parla, spawn
        with Parla(n_workers=2):
            for i in range(40):
                @spawn()
                def t():
                    time.sleep(0.02)
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=50,
                       env={"PATH": "/usr/bin:/bin", "PARLA_PROGRESS": "1"})
    assert r.returncode == 0, r.stderr
    assert "parla: 100%" in r.stderr and "40/40" in r.stderr and "task/s" in r.stderr


@pytest.mark.timeout(60)
def test_tqdm_bar_ends_with_its_final_line_and_a_newline():
    # The program's next output starts on a line of its own, after the bar's last state (40/40).
    code = textwrap.dedent("""
        import sys, time
        from parla import Parla, spawn
        with Parla(n_workers=2, progress=True):
            for i in range(40):
                @spawn()
                def t():
                    time.sleep(0.02)
        sys.stderr.write("after\\n")
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=50,
                       env={"PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr
    lines = r.stderr.replace("\r", "\n").split("\n")
    assert lines[-1] == "" and lines[-2] == "after", r.stderr[-300:]
    assert "40/40" in lines[-3] and lines[-3].startswith("parla: 100%"), r.stderr[-300:]


@pytest.mark.timeout(60)
def test_utilization_counts_the_bodies_busy_time():
    seen = []
    measured = {}

    def spin(key, seconds):
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            pass
        measured[key] = time.perf_counter() - t0

    with Parla(n_workers=2, virtual_gpus=1, progress=seen.append):
        @spawn(placement=gpu)
        def on_gpu():
            spin("gpu", 0.05)

        @spawn()
        def on_cpu():
            spin("cpu", 0.05)
    last = seen[-1]
    assert last.final and set(last.utilization) == {"cpu(0)", "gpu(0)"}
    # Device-seconds: a GPU task without vcus holds the whole GPU, a CPU task one worker's share (1/2).
    gpu_busy = last.utilization["gpu(0)"] * last.elapsed
    cpu_busy = last.utilization["cpu(0)"] * last.elapsed
    assert measured["gpu"] <= gpu_busy <= last.elapsed
    assert measured["cpu"] / 2 <= cpu_busy <= last.elapsed / 2
    assert all(0.0 <= u <= 1.0 for p in seen for u in p.utilization.values())
