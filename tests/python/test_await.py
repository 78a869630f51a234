"""async tasks: await tasks, TaskSpaces, TaskLists and coroutines; values; failures."""
import threading
import time

import pytest

from parla import Parla, spawn, TaskSpace, TaskCancelledError
from parla.tasks import get_current_task

pytestmark = pytest.mark.timeout(10)


def test_await_task_value():
    out = {}
    with Parla(n_workers=2):
        @spawn()
        async def driver():
            @spawn()
            def child():
                time.sleep(0.02)
                return 41
            out["v"] = (await child) + 1
            return "driver done"
    assert out["v"] == 42
    assert driver.result == "driver done"


def test_await_finished_task():
    with Parla(n_workers=1):
        @spawn()
        def early():
            return "early"
        early.wait(10)  # finished before the await (a sleep left that to timing)
        assert early.state == "done"

        @spawn()
        async def driver():
            return await early
    assert driver.result == "early"


def test_await_taskspace_and_tasklist():
    done = []
    lock = threading.Lock()
    out = {}
    with Parla(n_workers=2):
        @spawn()
        async def driver():
            T = TaskSpace("T")
            for i in range(8):
                @spawn(T[i])
                def child():
                    time.sleep(0.01)
                    with lock:
                        done.append(i)
                    return i
            await T
            out["after_space"] = sorted(done)
            U = TaskSpace("U")
            for i in range(4):
                @spawn(U[i])
                def child2():
                    time.sleep(0.01)
                    return i * i
            r = await U[0:4]
            out["tasklist_result"] = r
            out["values"] = [t.result for t in U[0:4]]
            out["empty"] = await U[10:10]
    assert out["after_space"] == list(range(8))
    assert out["tasklist_result"] is None
    assert out["values"] == [0, 1, 4, 9]
    assert out["empty"] is None


async def helper(n):
    @spawn()
    def inner():
        return n * 2
    return await inner


def test_await_coroutine():
    with Parla(n_workers=2):
        @spawn()
        async def driver():
            a = await helper(5)
            b = await helper(a)
            return a, b
    assert driver.result == (10, 20)


def test_await_many_in_loop():
    with Parla(n_workers=2):
        @spawn()
        async def driver():
            total = 0
            for i in range(200):
                @spawn()
                def step():
                    return i
                total += await step
            return total
    assert driver.result == sum(range(200))


def test_current_task_after_await():
    with Parla(n_workers=2):
        @spawn()
        async def driver():
            me = get_current_task()

            @spawn()
            def child():
                return get_current_task()
            c = await child
            return me, c, get_current_task()
    me, c, again = driver.result
    assert me is driver and again is driver
    assert c is not driver


def test_await_frees_the_worker():
    # One worker: the driver awaits a task that can only run on that same worker.
    with Parla(n_workers=1):
        @spawn()
        async def driver():
            @spawn()
            def child():
                return "child ran"
            return await child
    assert driver.result == "child ran"


def test_many_awaiting_drivers_one_worker():
    with Parla(n_workers=1):
        gate = TaskSpace("gate")
        drivers = []
        for k in range(50):
            @spawn()
            async def driver():
                return (await gate[0]) + k
            drivers.append(driver)

        @spawn(gate[0])
        def opener():
            return 1000
    assert [d.result for d in drivers] == [1000 + k for k in range(50)]


def test_dependents_of_async_task_wait_for_its_end():
    order = []
    with Parla(n_workers=2):
        T = TaskSpace("T")

        @spawn(T[0])
        async def driver():
            @spawn()
            def child():
                time.sleep(0.05)
                order.append("child")
            await child
            order.append("driver end")

        @spawn(T[1], dependencies=[T[0]])
        def after():
            order.append("after")
    assert order == ["child", "driver end", "after"]


def test_await_failed_task_is_catchable():
    out = {}
    with pytest.raises(ValueError, match="boom"):
        with Parla(n_workers=2):
            @spawn()
            async def driver():
                @spawn()
                def bad():
                    raise ValueError("boom")
                try:
                    await bad
                except ValueError as e:
                    out["caught"] = str(e)
                return "recovered"
    assert out["caught"] == "boom"
    assert driver.state == "done"
    assert driver.result == "recovered"


def test_await_cancelled_task_is_catchable():
    out = {}
    with pytest.raises(KeyError):
        with Parla(n_workers=2):
            @spawn()
            async def driver():
                T = TaskSpace("T")

                @spawn(T[0])
                def bad():
                    raise KeyError("root")

                @spawn(T[1], [T[0]])
                def dependent():
                    pass
                try:
                    await T[1]
                except TaskCancelledError as e:
                    out["cancel"] = e
                try:
                    await T[0:2]
                except (KeyError, TaskCancelledError) as e:
                    out["list"] = e
                return "ok"
    assert isinstance(out["cancel"].__cause__, KeyError)
    assert "T[1]" in str(out["cancel"]) and "T[0]" in str(out["cancel"])
    assert isinstance(out["list"], KeyError)
    assert driver.result == "ok"


def test_await_failure_uncaught_fails_driver():
    with pytest.raises(ValueError, match="inner") as info:
        with Parla(n_workers=2):
            T = TaskSpace("T")

            @spawn(T[0])
            async def driver():
                @spawn()
                def bad():
                    raise ValueError("inner")
                await bad
                return "unreachable"

            @spawn(T[1], [T[0]])
            def after():
                pass
    assert driver.state == "failed"
    assert after.state == "cancelled"
    notes = "".join(getattr(info.value, "__notes__", []))
    assert "bad" in notes


def test_await_non_task_raises_typeerror_in_task():
    import asyncio
    with pytest.raises(TypeError, match="await"):
        with Parla(n_workers=1):
            @spawn()
            async def driver():
                await asyncio.sleep(0)


def test_async_task_exception_before_await():
    with pytest.raises(RuntimeError, match="early"):
        with Parla(n_workers=1):
            @spawn()
            async def driver():
                raise RuntimeError("early")


def test_nested_async_spawns():
    with Parla(n_workers=2):
        @spawn()
        async def level0():
            @spawn()
            async def level1():
                @spawn()
                async def level2():
                    @spawn()
                    def leaf():
                        return 1
                    return (await leaf) + 1
                return (await level2) + 1
            return (await level1) + 1
    assert level0.result == 4


@pytest.mark.timeout(30)
def test_an_asyncio_awaitable_in_a_body_says_why_it_fails():
    import asyncio
    with pytest.raises(RuntimeError, match="no running event loop") as info:
        with Parla(n_workers=1):
            @spawn()
            async def f():
                await asyncio.sleep(0.001)
    notes = getattr(info.value, "__notes__", [])
    assert any("without an asyncio event loop" in n and "time.sleep" in n for n in notes), notes
