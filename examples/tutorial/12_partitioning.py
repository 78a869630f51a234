"""Lesson 12: logical devices and partitioned data (`parla.ldevice`).

A blocked algorithm is easiest to write for *logical* devices: "block i", "tile (i, j)". A mapper assigns
logical devices to the physical ones you have, so the same code runs on one GPU, four, or none:

    mapper = LDeviceSequenceBlocked(4, placement=gpu)   # 4 logical devices over the GPUs, in blocks
    mapper.device(i)                                    # the physical device of block i (for placement=)
    parts = mapper.partition_tensor(A, overlap=1)       # A split along axis 0, one part per block

`parts[i]` inside a task is a copy of block i on that task's device (NumPy on the CPU and on virtual GPUs,
CuPy on CUDA GPUs); `parts[i] = x` copies x back into block i. On the CPU the blocks are views of `A`, so
writing a block writes `A`. Grids work the same with two indices (`LDeviceGridBlocked`, `LDeviceGridRaveled`).

This lesson smooths a vector: each block averages each element with its neighbours, reading one element
of overlap from the neighbouring blocks, on four virtual GPUs.

    python examples/tutorial/12_partitioning.py
"""
from typing import Tuple

import numpy as np

from parla import Parla, TaskSpace, get_current_devices, spawn
from parla.devices import Device, cpu, gpu
from parla.ldevice import LDeviceGridBlocked, LDeviceSequenceBlocked


def smooth(x: np.ndarray, blocks: int) -> Tuple[np.ndarray, LDeviceSequenceBlocked, TaskSpace]:
    n = len(x)
    mapper = LDeviceSequenceBlocked(blocks, placement=gpu)
    halo = mapper.partition_tensor(x, overlap=1)  # each block with one neighbour element on each side
    out = np.empty_like(x)
    T = TaskSpace("Smooth")
    for i in range(blocks):
        @spawn(T[i], placement=mapper.device(i))
        def block() -> Device:
            part = halo[i]  # this block's copy, on this task's device
            padded = np.pad(part, 1, mode="edge")
            averaged = (padded[:-2] + padded[1:-1] + padded[2:]) / 3
            inner = mapper.slice(i, n)  # this block's elements, without the overlap
            start = inner.start - max(0, inner.start - 1)
            out[inner] = averaged[start:start + inner.stop - inner.start]
            return get_current_devices()[0]
    return out, mapper, T


def main() -> Tuple[np.ndarray, np.ndarray, LDeviceSequenceBlocked, TaskSpace]:
    x = np.arange(16, dtype=float) ** 2
    out, mapper, T = smooth(x, blocks=8)
    return x, out, mapper, T


if __name__ == "__main__":
    with Parla(virtual_gpus=4):
        x, out, mapper, T = main()
        # Eight blocks over four GPUs: two consecutive blocks per GPU.
        assert [mapper.device(i) for i in range(8)] == [gpu(i // 2) for i in range(8)]
        grid = LDeviceGridBlocked(4, 4, placement=gpu)
        print("grid:", [[grid.device(i, j) for j in range(4)] for i in range(4)])
        assert grid.device(0, 0) == gpu(0) and grid.device(3, 3) == gpu(3)
        # On the CPU the blocks are views: writing block 0 writes the array.
        data = np.zeros(6)
        parts = LDeviceSequenceBlocked(2, placement=cpu).partition_tensor(data)
        parts[0] = np.ones(3)
        assert data.tolist() == [1, 1, 1, 0, 0, 0]
    ran_on = [T[i].result for i in range(8)]
    print("blocks ran on", ran_on)
    assert ran_on == [gpu(i // 2) for i in range(8)]
    padded = np.pad(x, 1, mode="edge")
    expected = (padded[:-2] + padded[1:-1] + padded[2:]) / 3
    print("smoothed:", out)
    assert np.allclose(out, expected), "the blocks together give the whole smoothing"
    print("lesson 12 OK")
