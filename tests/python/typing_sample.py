"""Checked by mypy in test_typing.py (not collected by pytest): the canonical Parla program type-checks."""
import numpy as np

from parla import Parla, Task, TaskSpace, spawn
from parla.array import PArray, asarray
from parla.devices import cpu


def main() -> None:
    with Parla(n_workers=2):
        T = TaskSpace("T")
        for i in range(4):
            @spawn(T[i], [T[i - 1]] if i else [], placement=cpu)
            def step() -> int:
                return i

            first: Task = step
            first.wait(timeout=10)
        both = T[0:2]
        print(len(both), T[0].result)


def configured() -> None:
    with Parla(n_workers=2, virtual_gpus=1, gpu_memory="64MiB", progress=True, blas_threads=None):
        pass



def arrays() -> None:
    A = asarray(np.zeros(4))
    B: PArray = A + 1          # PArray operators give PArrays
    C: PArray = -A * B
    A += C
    print(A.sum(), A.T)        # the array's own attributes, forwarded
    with Parla(n_workers=2):
        T = TaskSpace("T")

        @spawn(T[0, 1], input=[A], output=[B])
        def step() -> None:
            B.array[:] = A.array

        done: Task = step
        done.wait()
