"""Lesson 7: PArrays, data that follows the tasks between devices.

`parla.array.asarray(numpy_array)` wraps an array in a PArray. A task declares how it uses each PArray:

- `input=[A]`   reads A (its `.array` is read-only in the body);
- `output=[A]`  overwrites all of A (nothing needs to be copied in first);
- `inout=[A]`   reads and updates A.

Before the body runs, the runtime copies A to the task's device if that device has no valid copy; after a
write, the writer's device holds the only valid copy, and the others are refreshed on their next use. In the
body, `A.array` is the copy on the task's own device. The declarations also order the tasks (a reader waits
for the previous writer, a writer for the previous readers), so no dependency lists are needed for A.

The "look" tasks below only inspect where valid copies are; they name their order with dependencies, since
they do not declare A. This lesson turns on two virtual GPUs through the environment variable
PARLA_VIRTUAL_GPUS, set before parla is imported (the same as running `PARLA_VIRTUAL_GPUS=2 python ...`).

    python examples/tutorial/07_parray.py
"""
from typing import Any, Tuple

import os

os.environ["PARLA_VIRTUAL_GPUS"] = "2"

import numpy as np  # noqa: E402

from parla import Parla, TaskSpace, get_current_devices, spawn  # noqa: E402
from parla.array import asarray  # noqa: E402
from parla.devices import cpu, gpu  # noqa: E402

DEVICES = (cpu(0), gpu(0), gpu(1))


def main() -> None:
    A = asarray(np.arange(8.0))
    where = {}

    with Parla(n_workers=2):
        step = TaskSpace("step")
        look = TaskSpace("look")

        def snapshot(name: str, after: Any) -> None:
            @spawn(look[name], [after])
            def _() -> None:
                where[name] = [str(d) for d in DEVICES if A.exists_on_device(d)]

        @spawn(step[1], placement=gpu(0), inout=[A])
        def double_on_gpu0() -> Tuple[str, str]:
            A.array[:] *= 2                         # the body changes gpu(0)'s copy
            return str(get_current_devices()[0]), type(A.array).__name__
        snapshot("after gpu(0) wrote", step[1])

        @spawn(step[2], [look["after gpu(0) wrote"]], placement=gpu(1), input=[A])
        def read_on_gpu1() -> Tuple[float, bool]:
            try:
                A.array[0] = 123.0                  # declared input only: writing is refused
                refused = False
            except ValueError:
                refused = True
            return float(A.array.sum()), refused
        snapshot("after gpu(1) read", step[2])

        @spawn(step[3], [look["after gpu(1) read"]], placement=cpu, output=[A])
        def overwrite_on_cpu() -> None:
            A.array[:] = np.full(8, 10.0)           # output: every element is written, nothing copied in
        snapshot("after cpu overwrote", step[3])

        @spawn(step[4], [look["after cpu overwrote"]], placement=gpu(1), inout=[A])
        def add_on_gpu1() -> None:
            A.array[:] += np.arange(8.0)

    print("double_on_gpu0 ran on", double_on_gpu0.result[0], "with a", double_on_gpu0.result[1])
    for name, valid in where.items():
        print(f"  valid copies {name:22s}: {valid}")
    total, refused = read_on_gpu1.result
    print("gpu(1) read a sum of", total, "; writing there was refused:", refused)
    print("final values, read on the host:", np.asarray(A))

    assert double_on_gpu0.result == ("gpu(0)", "ndarray")   # virtual GPUs hold NumPy arrays
    assert where["after gpu(0) wrote"] == ["gpu(0)"]
    assert where["after gpu(1) read"] == ["gpu(0)", "gpu(1)"]
    assert where["after cpu overwrote"] == ["cpu(0)"]
    assert total == 2 * sum(range(8)) and refused
    assert np.array_equal(np.asarray(A), 10.0 + np.arange(8.0))


if __name__ == "__main__":
    main()
    print("lesson 7 OK")
