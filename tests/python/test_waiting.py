"""Futures-style waiting (parla.wait, parla.as_completed, Task.wait) and asyncio (await task, async with)."""
import asyncio
import concurrent.futures
import threading

import pytest

import parla
from parla import Parla, TaskSpace, spawn
from conftest import run_python


def _gate_task(T, i, gate, value):
    @spawn(T[i])
    def body():
        assert gate.wait(30)
        return value
    return body


def test_task_wait_timeout_then_result():
    gate = threading.Event()
    with Parla(n_workers=2):
        T = TaskSpace("T")
        t = _gate_task(T, 0, gate, 42)
        with pytest.raises(TimeoutError, match=r"T\[0\] did not finish"):
            t.wait(timeout=0.05)
        assert t.state == "running" or t.state == "ready"
        gate.set()
        t.wait(timeout=30)
        assert t.result == 42


def test_wait_return_when():
    gates = [threading.Event() for _ in range(3)]
    with Parla(n_workers=4):
        T = TaskSpace("T")
        tasks = [_gate_task(T, i, gates[i], i) for i in range(3)]
        done, not_done = parla.wait(tasks, timeout=0.05)
        assert done == set() and not_done == set(tasks)
        gates[1].set()
        done, not_done = parla.wait(tasks, timeout=30, return_when=parla.FIRST_COMPLETED)
        assert done == {tasks[1]} and not_done == {tasks[0], tasks[2]}
        for g in gates:
            g.set()
        done, not_done = parla.wait(T, return_when=concurrent.futures.ALL_COMPLETED)
        assert done == set(tasks) and not not_done
        assert [t.result for t in tasks] == [0, 1, 2]


def test_wait_first_exception():
    gate = threading.Event()
    with pytest.raises(ValueError, match="boom"):
        with Parla(n_workers=2):
            T = TaskSpace("T")
            slow = _gate_task(T, 0, gate, 0)

            @spawn(T[1])
            def bad():
                raise ValueError("boom")

            done, not_done = parla.wait([slow, bad], timeout=30, return_when=parla.FIRST_EXCEPTION)
            assert done == {bad} and not_done == {slow}
            assert isinstance(bad.exception, ValueError)
            gate.set()
    with pytest.raises(ValueError, match="return_when"):
        parla.wait([], return_when="SOMETIMES")


def test_as_completed_in_finishing_order_from_another_thread():
    gates = [threading.Event() for _ in range(3)]
    order = []
    with Parla(n_workers=4):
        T = TaskSpace("T")
        tasks = [_gate_task(T, i, gates[i], i) for i in range(3)]

        def consume():
            for t in parla.as_completed(tasks, timeout=30):
                order.append(t.result)
                if len(order) < 3:
                    gates[[2, 0][len(order) - 1]].set()

        consumer = threading.Thread(target=consume)
        consumer.start()
        gates[1].set()
        consumer.join(30)
        assert not consumer.is_alive()
    assert order == [1, 2, 0]


def test_as_completed_timeout_names_tasks():
    gate = threading.Event()
    with Parla(n_workers=2):
        T = TaskSpace("T")
        t = _gate_task(T, 0, gate, 0)
        with pytest.raises(TimeoutError, match=r"1 of 1 tasks unfinished .*T\[0\]"):
            list(parla.as_completed([t], timeout=0.05))
        gate.set()


def test_wait_inside_task_body():
    with Parla(n_workers=1):  # one worker: it runs the other task while it waits
        T = TaskSpace("T")

        @spawn(T[1])
        def outer():
            @spawn(T[0])
            def inner():
                return 5
            inner.wait(timeout=30)
            return inner.result + 1
    assert outer.result == 6


def test_wait_never_spawned():
    with pytest.raises(parla.UnspawnedDependencyError):
        with Parla(n_workers=1):
            T = TaskSpace("T")
            with pytest.raises(parla.UnspawnedDependencyError, match=r"T\[9\]: never spawned"):
                T[9].wait()

            @spawn(T[0], [T[9]])
            def never():
                pass


def test_await_task_in_asyncio_does_not_block_loop():
    gate = threading.Event()
    ticks = []

    async def ticker():
        for i in range(3):
            ticks.append(i)
            await asyncio.sleep(0)
        gate.set()  # the loop ran while the coroutine below awaited the task

    async def main():
        async with Parla(n_workers=2):
            T = TaskSpace("T")
            t = _gate_task(T, 0, gate, 7)
            value, _ = await asyncio.gather(t, ticker())
            both = T[0:1]
            await both
            return value

    assert asyncio.run(asyncio.wait_for(main(), 30)) == 7
    assert ticks == [0, 1, 2]


def test_async_with_does_not_block_loop():
    gate = threading.Event()
    loop_ran = []

    async def main():
        async def release():
            loop_ran.append(True)
            gate.set()

        async with Parla(n_workers=1):
            T = TaskSpace("T")
            t = _gate_task(T, 0, gate, 3)
            asyncio.get_running_loop().call_later(0.01, lambda: asyncio.ensure_future(release()))
        return t.result

    assert asyncio.run(asyncio.wait_for(main(), 30)) == 3
    assert loop_ran == [True]


def test_await_failed_task_in_asyncio_raises():
    async def main():
        async with Parla(n_workers=1):
            @spawn()
            def bad():
                raise KeyError("k")
            with pytest.raises(KeyError):
                await bad

    with pytest.raises(KeyError):
        asyncio.run(main())


def test_engine_await_inside_async_task_body_still_works():
    with Parla(n_workers=1):
        T = TaskSpace("T")

        @spawn(T[1])
        async def outer():
            @spawn(T[0])
            def inner():
                return 2
            return (await inner) * 10
    assert outer.result == 20


def test_await_outside_loop_and_body_explains():
    with Parla(n_workers=1):
        gate = threading.Event()
        T = TaskSpace("T")
        t = _gate_task(T, 0, gate, 0)
        coro = t.__await__()
        with pytest.raises(RuntimeError, match="running asyncio event loop"):
            next(coro)
        gate.set()


def test_wait_on_main_thread_is_interruptible():
    import _thread
    gate = threading.Event()
    with pytest.raises(KeyboardInterrupt):
        with Parla(n_workers=1):
            T = TaskSpace("T")
            t = _gate_task(T, 0, gate, 0)
            timer = threading.Timer(0.05, _thread.interrupt_main)
            timer.start()
            try:
                t.wait()  # no timeout: only Ctrl-C ends it
            finally:
                gate.set()
                timer.join()


# A wait inside a body runs the body's own ready children on its worker; a Python child leaves that worker
# holding the GIL. The wait must let go of it before it sleeps: else the child the other worker runs (which
# needs the GIL to finish) and every Python thread stop, and Ctrl-C with them. Subprocesses: a hang holds
# the GIL, which no in-process timeout can take back.
WAIT_AFTER_INLINE_CHILD = """
import time
from parla import Parla, spawn
with Parla(2):
    @spawn()
    def parent():
        a = spawn()(lambda: (time.sleep(0.2), 1)[1])   # the idle worker takes it
        time.sleep(0.05)
        b = spawn()(lambda: 2)                        # the parent's wait runs this one itself
        a.wait()
        b.wait()
        return a.result, b.result
print("done", *parent.result)
"""

RECURSIVE_WAITS = """
import sys
from parla import Parla, spawn
def fib(n):
    if n < 2:
        return n
    a = spawn()(lambda: fib(n - 1))
    b = spawn()(lambda: fib(n - 2))
    a.wait()
    b.wait()
    return a.result + b.result
with Parla(int(sys.argv[1])):
    r = spawn()(lambda: fib(15))
print("fib", r.result)
"""


@pytest.mark.timeout(120)
def test_wait_in_body_lets_go_of_the_gil_after_running_a_child():
    for _ in range(3):
        r = run_python(WAIT_AFTER_INLINE_CHILD, timeout=60)
        assert r.returncode == 0, r.stderr
        assert r.stdout.split() == ["done", "1", "2"]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("workers", [2, 4])
def test_recursive_spawn_and_wait_finishes(workers):
    r = run_python(RECURSIVE_WAITS.replace("sys.argv[1]", str(workers)), timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["fib", "610"]


@pytest.mark.timeout(60)
def test_waiting_for_a_task_with_a_never_spawned_dependency_names_it():
    # As at the context's exit: UnspawnedDependencyError (no cycle), the never-spawned task named.
    with pytest.raises(parla.UnspawnedDependencyError):
        with Parla(n_workers=2):
            T = TaskSpace("T")
            spawn(T[0], [T[5]])(lambda: None)
            for wait in (lambda: T[0].wait(), lambda: parla.wait([T[0]]), lambda: T[0].wait(timeout=0.3)):
                with pytest.raises(parla.UnspawnedDependencyError, match=r"T\[5\] \(needed by T\[0\]\)"):
                    wait()


@pytest.mark.timeout(60)
def test_waiting_for_a_replay_with_a_never_spawned_dependency():
    with pytest.raises(parla.UnspawnedDependencyError):
        with Parla(n_workers=2):
            T = TaskSpace("T")
            with parla.capture("g") as g:
                spawn(T[0], [T[5]])(lambda: None)
            join = g.replay()
            with pytest.raises(parla.UnspawnedDependencyError) as info:
                join.wait()
            # The captured task and its replay share a name: named once.
            assert r"T[5] (needed by T[0])" in str(info.value), str(info.value)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("where", ["body", "thread"])
def test_a_wait_with_a_timeout_waits_for_a_task_spawned_later(where):
    # The guide: a dependency may be a task spawned later. A wait given a timeout raised at once that the
    # task was never spawned, although the main thread (or another thread) spawned it a moment later.
    import time
    with Parla(n_workers=2):
        T = TaskSpace("T")
        if where == "body":
            @spawn(T[0])
            def parent():
                T[1].wait(timeout=20)
                return T[1].result
        else:
            box = []

            def waiter():
                T[1].wait(timeout=20)
                box.append(T[1].result)
            th = threading.Thread(target=waiter)
            th.start()
        time.sleep(0.3)
        spawn(T[1])(lambda: 42)
    if where == "body":
        assert T[0].result == 42
    else:
        th.join(20)
        assert box == [42]


@pytest.mark.timeout(30)
def test_wait_rejects_non_tasks_by_name():
    """A string used to recurse without end (RecursionError) and a number gave "'int' object is not iterable";
    both now raise TypeError naming the call and the offending item. Nested lists, TaskSpaces and None mix."""
    with Parla(n_workers=2):
        T = TaskSpace("T")

        @spawn(T[0])
        def body():
            return 7

        for bad, shown in (("abc", "str"), (["abc"], "str"), ([b"x"], "bytes"), (1, "int"), ([T[0], 2.5], "float")):
            with pytest.raises(TypeError, match=rf"wait\(\): expected Parla tasks.*got a {shown}"):
                parla.wait(bad)
            with pytest.raises(TypeError, match=rf"as_completed\(\): expected Parla tasks.*got a {shown}"):
                list(parla.as_completed(bad))
        done, not_done = parla.wait([[T[0], None], [T]], timeout=30)
        assert done == {T[0]} and not not_done
        assert [t.result for t in parla.as_completed([[[T[0]]], T[0:1]], timeout=30)] == [7]
