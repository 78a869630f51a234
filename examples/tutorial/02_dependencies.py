"""Lesson 2: naming tasks in a TaskSpace and ordering them with dependencies.

A TaskSpace is a family of task names indexed like an array: T[0], T[1, 2], T["x"]. Spawning with
`@spawn(T[i], dependencies=[...])` (or the list as second positional argument) makes the task wait for the
listed tasks. A dependency list may hold single tasks or slices such as T[0:4], which stand for every task in
the range.

This lesson builds a small graph: four independent "load" tasks, then a "combine" task that needs all of
them, then a chain of three "step" tasks in which each waits for the one before.

Capturing values: a body sees the values that the variables of the *enclosing function* had when the task
was spawned (its closure is copied at spawn), so `i` below is 0, 1, 2, 3 in the four loads even though they
run after the loop has moved on. Module-level (global) variables are not captured: they are read when the
body runs. That is why Parla programs keep their code in a function such as `main()`.

    python examples/tutorial/02_dependencies.py
"""
import threading
from typing import Any, Tuple

from parla import Parla, TaskSpace, spawn


def main() -> None:
    log = []
    lock = threading.Lock()

    def record(event: Tuple[Any, ...]) -> None:
        with lock:
            log.append(event)

    with Parla(n_workers=4):
        load = TaskSpace("load")
        for i in range(4):
            @spawn(load[i])
            def _() -> int:
                record(("load", i))          # the value of i when this task was spawned
                return i * 10

        combine = TaskSpace("combine")

        @spawn(combine[0], dependencies=[load[0:4]])
        def total() -> int:
            record(("combine",))
            # All four loads have finished here, so their results can be read.
            return sum(load[i].result for i in range(4))

        step = TaskSpace("step", shape=3)
        for i in range(3):
            # With a shape, step[-1] lies outside the space and means "no task": the first step depends
            # only on combine.
            @spawn(step[i], [step[i - 1], combine[0]])
            def _() -> None:
                record(("step", i))

    print("execution order:", log)
    position = {event: n for n, event in enumerate(log)}
    assert sorted(log[:4]) == [("load", i) for i in range(4)], "each load must see its own i"
    assert all(position[("load", i)] < position[("combine",)] for i in range(4)), "combine ran before a load"
    assert position[("combine",)] < position[("step", 0)] < position[("step", 1)] < position[("step", 2)]
    assert total.result == 0 + 10 + 20 + 30
    print("combine returned", total.result, "and the steps ran in order")


if __name__ == "__main__":
    main()
    print("lesson 2 OK")
