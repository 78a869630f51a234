"""Parla.py's tasks(*deps) and finish()."""
import time

import pytest

from parla import Parla, TaskSpace, spawn
from parla.tasks import TaskList, finish, tasks

pytestmark = pytest.mark.timeout(20)


def test_tasks_collects_and_awaits():
    with Parla(n_workers=2):
        T = TaskSpace("T")
        for i in range(3):
            spawn(T[i])(lambda i=i: i)

        @spawn()
        async def waiter():
            await tasks()  # nothing to wait for
            await tasks(T[0], T[1:3])
            return [T[i].result for i in range(3)]
        collected = tasks(T[0], [T[1], T[2]])
    assert isinstance(collected, TaskList) and list(collected) == [T[0], T[1], T[2]]
    assert waiter.result == [0, 1, 2]


def test_async_finish_waits_for_the_tasks_spawned_inside():
    log = []
    with Parla(n_workers=2):
        @spawn()
        async def main():
            log.append("start")
            async with finish():
                for i in range(4):
                    @spawn()
                    async def child():
                        @spawn()
                        def grandchild():
                            time.sleep(0.02)
                            log.append("work")
                        await grandchild
            log.append("after")
    assert log == ["start"] + ["work"] * 4 + ["after"]


def test_plain_finish_blocks():
    with Parla(n_workers=2):
        spawned = []
        with finish():
            for i in range(3):
                spawned.append(spawn()(lambda: time.sleep(0.01)))
        assert all(t.done for t in spawned)
