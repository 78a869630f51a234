"""Lesson 5: what happens when a task fails.

An exception raised by a body marks that task "failed". Every task that depends on it, directly or through
other tasks, is "cancelled": it never runs, and its `exception` is a TaskCancelledError whose `__cause__` is
the original error. Unrelated tasks keep running. At the end of the `with Parla()` block the first failure is
raised again in the main thread, with a note naming the task that raised it. (Parla aborts the runtime here;
this runtime finishes the independent work and reports.)

    python examples/tutorial/05_errors.py
"""
# pyright: reportPossiblyUnboundVariable=false
# (the tasks are bound inside the try blocks that expect the context's error; the lesson reads them after)
from parla import Parla, TaskCancelledError, TaskSpace, spawn


def main() -> None:
    ran = []

    try:
        with Parla(n_workers=2):
            T = TaskSpace("T")

            @spawn(T[0])
            def broken() -> None:
                raise ValueError("bad input in T[0]")

            @spawn(T[1], [T[0]])
            def child() -> None:
                ran.append("child")

            @spawn(T[2], [T[1]])
            def grandchild() -> None:
                ran.append("grandchild")

            @spawn(T[3])
            def independent() -> str:
                ran.append("independent")
                return "fine"
        raise AssertionError("the failure was not reported")
    except ValueError as error:
        print("raised at the end of the block:", repr(error))
        print("notes:", getattr(error, "__notes__", []))
        assert "T[0]" in " ".join(getattr(error, "__notes__", []))

    for task in (broken, child, grandchild, independent):
        print(f"  {task.name}: {task.state:9s} exception={task.exception!r}")

    assert broken.state == "failed" and isinstance(broken.exception, ValueError)
    assert child.state == "cancelled" and grandchild.state == "cancelled"
    assert isinstance(grandchild.exception, TaskCancelledError)
    assert isinstance(grandchild.exception.__cause__, ValueError)   # traced back to the root cause
    assert independent.result == "fine"
    assert ran == ["independent"]


if __name__ == "__main__":
    main()
    print("lesson 5 OK")
