"""Lesson 9: one function, a different body per device (`@specialize`).

Code that runs on a GPU usually needs different kernels (CuPy instead of NumPy, a different algorithm, ...).
`@specialize` makes a function that picks its body from where the *calling task* runs:

    @specialize
    def kernel(x): ...            # default body: the CPU, and any device without its own variant

    @kernel.variant(gpu)
    def kernel_gpu(x): ...        # used when the current task runs on a GPU

The call site stays the same; only the placement changes. Variants can also be registered for several
architectures at once, or for multi-device tuples like `(gpu, gpu)`. (`specialized` is Parla's older name.)

On virtual GPUs the arrays are NumPy arrays, so the "GPU" variant below also uses NumPy; on a machine with
CUDA GPUs and CuPy, `get_array_module(x)` gives `cupy` there.

    python examples/tutorial/09_variants.py
"""
from typing import Any, Tuple

import numpy as np

from parla import Parla, TaskSpace, spawn, specialize
from parla.array import asarray, get_array_module
from parla.devices import cpu, gpu


@specialize
def norm(x: Any) -> Tuple[str, float]:
    """CPU body: NumPy's norm."""
    return "cpu variant", float(np.linalg.norm(x))


@norm.variant(gpu)
def norm_gpu(x: Any) -> Tuple[str, float]:
    """GPU body: written with whatever array module the data lives in."""
    xp = get_array_module(x)
    return "gpu variant", float(xp.sqrt((x * x).sum()))


@norm.variant((gpu, gpu))
def norm_two_gpus(x: Any) -> Tuple[str, float]:
    """Body for a task that holds two GPUs at once."""
    return "two-gpu variant", float(np.sqrt(np.dot(x, x)))


def main() -> None:
    v = asarray(np.full(16, 3.0))            # norm = 3 * 4 = 12
    with Parla(n_workers=2, virtual_gpus=2):
        T = TaskSpace("T")
        placements = {"cpu": cpu, "gpu": gpu, "gpu(1)": gpu(1), "(gpu, gpu)": (gpu(0), gpu(1))}
        for i, (label, where) in enumerate(placements.items()):
            @spawn(T[i], placement=where, input=[v])
            def _() -> Any:
                return norm(v.array)
        tasks = {label: T[i] for i, label in enumerate(placements)}

    for label, task in tasks.items():
        print(f"placement={label:10s} -> {task.result}")
    assert tasks["cpu"].result == ("cpu variant", 12.0)
    assert tasks["gpu"].result == ("gpu variant", 12.0)
    assert tasks["gpu(1)"].result == ("gpu variant", 12.0)
    assert tasks["(gpu, gpu)"].result == ("two-gpu variant", 12.0)
    # Outside tasks, the caller counts as the CPU.
    assert norm(np.full(4, 1.0)) == ("cpu variant", 2.0)


if __name__ == "__main__":
    main()
    print("lesson 9 OK")
