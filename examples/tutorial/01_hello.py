"""Lesson 1: hello world, one task.

A Parla program is a `with Parla():` block. Inside it, `@spawn` turns a function into a task: the function is
handed to a worker thread and the decorator gives back a Task handle (the name now refers to the task, not to
the function). Leaving the block waits until every task has finished, so after it the result is there.

As in Parla's own examples, the program lives in a function (`main`): lesson 2 explains why that matters.

    python examples/tutorial/01_hello.py
"""
import threading

from parla import Parla, spawn


def main() -> None:
    main_thread = threading.get_ident()

    with Parla():
        @spawn()
        def hello() -> bool:
            print("Hello, World! (from a worker thread)")
            # The body runs on a worker, not on the thread that spawned it.
            return threading.get_ident() != main_thread

    # The context has exited: the task is done and its return value is available.
    print(f"task {hello.name} is {hello.state}; ran on another thread: {hello.result}")
    assert hello.state == "done"
    assert hello.result is True


if __name__ == "__main__":
    main()
    print("lesson 1 OK")
