"""Checked by mypy in test_typing.py (not collected by pytest): the canonical Parla program type-checks."""
from parla import Parla, Task, TaskSpace, spawn
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
