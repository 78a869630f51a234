"""Lesson 8: slices of a PArray written on different devices, then the whole array read.

Slicing a PArray (`A[0:4]`, `M[:, 1]`) gives a view: a PArray that shares its parent's memory. Views can be
declared in `input=`/`output=`/`inout=` like any PArray. The runtime tracks validity per byte range, so

- tasks writing *disjoint* views do not wait for each other and may run at the same time on different
  devices;
- a later task that reads the whole array, or a view overlapping several of them, waits for all those
  writers and gets every piece, each copied from the device that wrote it.

No write-back step is needed (in Parla, a whole-array read after slice writes on other devices could see stale
data). Use the same view object in the declaration and in the body.

The two writers below wait for each other at a barrier: that only works because they really run at once.

    python examples/tutorial/08_subarrays.py
"""
import threading
from typing import Any

import numpy as np

from parla import Parla, spawn
from parla.array import asarray
from parla.devices import cpu, gpu


def main() -> None:
    A = asarray(np.zeros(8))
    left, right = A[0:4], A[4:8]
    M = asarray(np.zeros((4, 4)))
    top, bottom, column = M[0:2], M[2:4], M[:, 1]
    meet = threading.Barrier(2, timeout=10)

    with Parla(n_workers=2, virtual_gpus=2):
        @spawn(placement=gpu(0), output=[left])
        def write_left() -> None:
            meet.wait()                       # both halves are being written at the same moment
            left.array[:] = 1.0

        @spawn(placement=gpu(1), output=[right])
        def write_right() -> None:
            meet.wait()
            right.array[:] = 2.0

        @spawn(placement=cpu, input=[A])       # the whole array: waits for both writers
        def read_all() -> Any:
            return A.array.copy()

        @spawn(placement=gpu(0), output=[top])
        def write_top() -> None:
            top.array[:] = np.arange(8.0).reshape(2, 4)

        @spawn(placement=gpu(1), output=[bottom])
        def write_bottom() -> None:
            bottom.array[:] = 10 + np.arange(8.0).reshape(2, 4)

        @spawn(placement=cpu, input=[column])  # a column crosses both row blocks
        def read_column() -> Any:
            return column.array.copy()

        @spawn(placement=gpu(0), inout=[A])    # update everything on gpu(0): the right half comes from gpu(1)
        def scale_all() -> None:
            A.array[:] *= 10

    print("whole A read on the cpu after the slice writes:", read_all.result)
    print("column 1 of M, written as two row blocks on two GPUs:", read_column.result)
    print("A after scaling on gpu(0), read on the host:", np.asarray(A))
    assert np.array_equal(read_all.result, [1, 1, 1, 1, 2, 2, 2, 2])
    assert np.array_equal(read_column.result, [1, 5, 11, 15])
    assert np.array_equal(np.asarray(A), [10, 10, 10, 10, 20, 20, 20, 20])
    assert np.array_equal(np.asarray(M), np.concatenate([np.arange(8.0), 10 + np.arange(8.0)]).reshape(4, 4))


if __name__ == "__main__":
    main()
    print("lesson 8 OK")
