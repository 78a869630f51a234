"""The Parla context: workers, nesting, spawning outside, exit waits for all tasks."""
import threading
import time

import pytest

from parla import Parla, spawn, TaskSpace
from parla.tasks import get_current_task

from conftest import run_python


@pytest.mark.timeout(10)
@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_n_workers(n):
    with Parla(n_workers=n) as p:
        assert p.runtime.num_workers == n


@pytest.mark.timeout(10)
def test_n_workers_from_env(monkeypatch):
    monkeypatch.setenv("PARLA_NUM_THREADS", "3")
    with Parla() as p:
        assert p.runtime.num_workers == 3
    # The argument wins over the variable.
    with Parla(n_workers=1) as p:
        assert p.runtime.num_workers == 1


@pytest.mark.timeout(10)
def test_n_workers_default_is_cores():
    import os
    cores = {os.cpu_count() or 1, len(os.sched_getaffinity(0))}
    with Parla() as p:
        assert p.runtime.num_workers in cores


@pytest.mark.timeout(10)
@pytest.mark.parametrize("bad", ["0", "-2", "many"])
def test_bad_env_workers(monkeypatch, bad):
    monkeypatch.setenv("PARLA_NUM_THREADS", bad)
    with pytest.raises(ValueError, match="PARLA_NUM_THREADS"):
        with Parla():
            pass


@pytest.mark.timeout(10)
@pytest.mark.parametrize("bad", [0, -1, 1.5, "2"])
def test_bad_n_workers(bad):
    with pytest.raises(ValueError, match="n_workers"):
        Parla(n_workers=bad)


@pytest.mark.timeout(10)
def test_unknown_option():
    with pytest.raises(TypeError, match="bogus"):
        Parla(bogus=1)


@pytest.mark.timeout(10)
def test_nested_context_error():
    with Parla(n_workers=1):
        with pytest.raises(RuntimeError, match="nested|already active"):
            with Parla(n_workers=1):
                pass
    # The outer context is still usable afterwards, and a new one can start.
    with Parla(n_workers=1):
        @spawn()
        def ok():
            return 1
    assert ok.result == 1


@pytest.mark.timeout(10)
def test_spawn_outside_context():
    with pytest.raises(RuntimeError, match="Parla"):
        @spawn()
        def body():
            pass
    T = TaskSpace("T")
    with pytest.raises(RuntimeError, match="Parla"):
        @spawn(T[0])
        def body2():
            pass


@pytest.mark.timeout(10)
def test_context_is_reusable_sequentially():
    for k in range(5):
        with Parla(n_workers=2):
            @spawn()
            def body():
                return k
        assert body.result == k


@pytest.mark.timeout(10)
def test_exit_waits_for_tasks():
    done = []
    with Parla(n_workers=2):
        @spawn()
        def slow():
            time.sleep(0.2)
            done.append(1)
    assert done == [1]
    assert slow.state == "done"


@pytest.mark.timeout(15)
def test_exit_waits_for_tasks_spawned_by_tasks():
    done = []
    lock = threading.Lock()

    def grow(depth):
        @spawn()
        def child():
            time.sleep(0.01)
            with lock:
                done.append(depth)
            if depth < 6:
                grow(depth + 1)
                grow(depth + 1)

    with Parla(n_workers=2):
        grow(0)
    assert len(done) == 2 ** 7 - 1


@pytest.mark.timeout(10)
def test_exit_waits_for_async_task_spawning_after_await():
    done = []
    with Parla(n_workers=2):
        @spawn()
        async def driver():
            @spawn()
            def first():
                time.sleep(0.05)
            await first

            @spawn()
            def second():
                time.sleep(0.1)
                done.append("second")
            done.append("driver")
    assert sorted(done) == ["driver", "second"]


@pytest.mark.timeout(10)
def test_exception_in_block_cancels_and_propagates(monkeypatch):
    ran = []
    release = threading.Event()
    wait = Parla._wait

    def exit_wait(self, rt):
        release.set()  # the exit has cancelled the tasks that had not started: T[0] may end now
        return wait(self, rt)
    monkeypatch.setattr(Parla, "_wait", exit_wait)
    with pytest.raises(ZeroDivisionError):
        with Parla(n_workers=1):
            T = TaskSpace("T")

            @spawn(T[0])
            def blocker():
                # Runs until the exit has cancelled the chain (a sleep left to timing whether the exception
                # left the block before the chain could run).
                release.wait(20)

            for i in range(1, 50):
                @spawn(T[i], [T[i - 1]])
                def later():
                    ran.append(i)
            1 / 0
    assert len(ran) < 49
    assert ran == [] and T[1].state == "cancelled"
    assert get_current_task() is None


@pytest.mark.timeout(10)
def test_idle_runtime_uses_no_cpu():
    import resource
    with Parla(n_workers=2):
        before = resource.getrusage(resource.RUSAGE_SELF)
        time.sleep(0.5)
        after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert cpu < 0.1, f"idle runtime used {cpu:.3f} s of CPU in 0.5 s"


@pytest.mark.timeout(20)
def test_env_workers_in_subprocess():
    r = run_python("from parla import Parla\nwith Parla() as p: print(p.runtime.num_workers)", timeout=15,
                   PARLA_NUM_THREADS=4)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "4"
