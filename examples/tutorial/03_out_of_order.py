"""Lesson 3: depending on a task that has not been spawned yet.

Naming T[i] creates a placeholder, so a task may list a dependency that the program spawns only later (useful
when a graph is generated in an order that does not follow its edges). The dependent task simply waits until
the placeholder has been spawned and has finished.

If the program never spawns it, Parla would wait forever. This runtime notices at the end of the `with Parla()`
block that nothing can make progress, cancels the waiting tasks and raises UnspawnedDependencyError naming the
missing task.

    python examples/tutorial/03_out_of_order.py
"""
# pyright: reportPossiblyUnboundVariable=false
# (the tasks are bound inside the try blocks that expect the context's error; the lesson reads them after)
from parla import Parla, TaskSpace, UnspawnedDependencyError, spawn


def main() -> None:
    order = []

    with Parla(n_workers=2):
        T = TaskSpace("T")

        # Spawned first, but it needs T[1] and T[2], which do not exist yet.
        @spawn(T[3], [T[1], T[2]])
        def last() -> None:
            order.append(3)

        # T[2] needs T[1], also spawned later.
        @spawn(T[2], [T[1]])
        def middle() -> None:
            order.append(2)

        @spawn(T[1])
        def first() -> None:
            order.append(1)

    print("spawned in the order 3, 2, 1; ran in the order", order)
    assert order == [1, 2, 3]

    # A dependency that is never spawned: reported instead of hanging.
    try:
        with Parla(n_workers=2):
            U = TaskSpace("U")

            @spawn(U[0], [U[1]])           # U[1] is never spawned
            def orphan() -> None:
                print("never printed")
        raise AssertionError("expected UnspawnedDependencyError")
    except UnspawnedDependencyError as error:
        print("at exit:", error)
        assert "U[1]" in str(error)

    print("the waiting task ended as:", orphan.state)
    assert orphan.state == "cancelled"


if __name__ == "__main__":
    main()
    print("lesson 3 OK")
