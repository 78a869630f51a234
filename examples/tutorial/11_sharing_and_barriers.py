"""Lesson 11: sharing a device (vcus), stand-in work (sleep_nogil), and barriers inside a task.

Programs often start with one *launcher* task that spawns the rest. It does no work itself, so it asks for
no share of the CPU: `vcus=0`. Other tasks ask for a share: `vcus=0.5` lets two of them run on one device
at a time, `vcus=1` takes it whole. (Parla-experimental also writes shares as thousandths: `vcus=500` is
`0.5`; Parla.py writes `vcus=cpu.n_cores` for the whole CPU.)

`sleep_nogil(µs)` spins for that long with the GIL released: a stand-in for a kernel of known length
(NumPy, BLAS, CuPy) while you shape a task graph. `sleep_gil` spins holding the GIL, like pure-Python work.

Inside the launcher, three ways to wait for what it spawned:

    await T                 # an async task: waits for every task named in T, the worker is free meanwhile
    T.wait()                # blocks until every task named in T is done, also tasks named while it waits
    async with finish():    # waits for the tasks spawned inside the block

    python examples/tutorial/11_sharing_and_barriers.py
"""
from typing import List, Tuple

import threading

from parla import AtomicTaskSpace, Parla, TaskSpace, sleep_nogil, spawn
from parla.devices import cpu
from parla.tasks import finish

lock = threading.Lock()
running = [0, 0]  # [now, most at once]


def work(us: float) -> None:
    """A task body standing in for a kernel of `us` microseconds; records how many run at once."""
    with lock:
        running[0] += 1
        running[1] = max(running[1], running[0])
    sleep_nogil(us)
    with lock:
        running[0] -= 1


def main() -> List[Tuple[str, int]]:
    order = []

    @spawn(placement=cpu, vcus=0)
    async def launcher() -> None:
        # 1. Six tasks of half the CPU each: never more than two at once, whatever the worker count.
        T = TaskSpace("T")
        for i in range(6):
            @spawn(T[i], placement=cpu, vcus=0.5)
            def half() -> None:
                work(2000)
        await T
        order.append(("shares", running[1]))

        # 2. A chain written without a bounds check: T[k - 1] at k = 0 names no task (keys below 0 are empty).
        C = TaskSpace("C")
        for k in range(5):
            @spawn(C[k], dependencies=[C[k - 1]], vcus=500)
            def link() -> None:
                order.append(("link", k))
        await C[4]

        # 3. A tree that grows while we wait: wait() covers the tasks named meanwhile.
        R = AtomicTaskSpace("R")

        def node(i: int, depth: int) -> None:
            @spawn(R[i], vcus=0.25)
            def grow() -> None:
                if depth:
                    node(2 * i, depth - 1)
                    node(2 * i + 1, depth - 1)
        node(1, 3)
        R.wait()
        order.append(("tree", len(R)))

        # 4. finish(): leaving the block waits for the tasks spawned inside it.
        async with finish():
            for i in range(3):
                @spawn(vcus=0.1)
                def leaf() -> None:
                    work(500)
        order.append(("finished", running[0]))

    return order


if __name__ == "__main__":
    with Parla(n_workers=4):
        order = main()
    print(order)
    assert order[0][0] == "shares" and order[0][1] <= 2, "vcus=0.5: at most two tasks at once on the CPU"
    assert [x for x in order if x[0] == "link"] == [("link", k) for k in range(5)], "the chain ran in order"
    assert ("tree", 15) in order, "wait() covered all 15 tasks of the tree"
    assert order[-1] == ("finished", 0), "finish() returned after its tasks ended"
    print("lesson 11 OK")
