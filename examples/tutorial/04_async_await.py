"""Lesson 4: async tasks that await other tasks and their values.

A task body may be `async def`. Inside it:

- `value = await task` waits for that task and gives its return value;
- `await T` (a TaskSpace) or `await T[0:4]` waits for every task in it;
- `await some_coroutine()` runs an ordinary async helper as part of the task.

While an async task waits, its worker thread is free to run other tasks (the rest of the body continues
later, as a continuation). Tasks spawned inside a task belong to the same program: the `with Parla()` block
waits for them too. This lesson uses a single worker on purpose: if awaiting blocked the worker, the
children could never run.

    python examples/tutorial/04_async_await.py
"""
import time

from parla import Parla, TaskSpace, spawn


async def add_later(a: int, b: int) -> int:
    """An ordinary coroutine: awaited from a task, it runs as part of that task."""
    return a + b


def main() -> None:
    seen = {}

    with Parla(n_workers=1):
        @spawn()
        async def driver() -> int:
            @spawn()
            def forty() -> int:
                time.sleep(0.01)
                return 40

            value = await forty                  # the child's return value
            seen["value"] = value

            squares = TaskSpace("squares")
            out = {}
            for i in range(5):
                @spawn(squares[i])
                def _() -> None:
                    out[i] = i * i
            await squares                        # every task of the space has finished
            seen["squares"] = dict(out)

            return await add_later(value, sum(out.values()))

    print("the driver saw", seen)
    print("the driver returned", driver.result)
    assert seen["value"] == 40
    assert seen["squares"] == {i: i * i for i in range(5)}
    assert driver.result == 40 + 30


if __name__ == "__main__":
    main()
    print("lesson 4 OK")
