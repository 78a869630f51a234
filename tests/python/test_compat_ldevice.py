"""parla.ldevice: logical devices and partitions (Parla.py's tutorial 4 and examples)."""
import warnings

import numpy as np
import pytest

from parla import Parla, TaskSpace, spawn
from parla.devices import cpu, gpu
from parla.ldevice import (LDeviceGridBlocked, LDeviceGridRaveled, LDeviceSequenceBlocked, PartitionedTensor,
                           PerformanceWarning)

pytestmark = pytest.mark.timeout(20)


def test_sequence_blocked_mapping_and_slices():
    with Parla(virtual_gpus=2):
        m = LDeviceSequenceBlocked(4, placement=gpu)
        assert m.devices == (gpu(0), gpu(1)) and m.n_ldevices == 4
        assert [m.device(i) for i in range(4)] == [gpu(0), gpu(0), gpu(1), gpu(1)]
        assert [m.slice(i, 10) for i in range(4)] == [slice(0, 3, 1), slice(3, 5, 1), slice(5, 8, 1), slice(8, 10, 1)]
        assert m.slice(1, 10, overlap=1) == slice(2, 6, 1)
        assert m.assignments == {(0,): gpu(0), (1,): gpu(0), (2,): gpu(1), (3,): gpu(1)}
        with pytest.raises(ValueError, match="out of range"):
            m.device(4)


def test_grids():
    with Parla(virtual_gpus=4):
        g = LDeviceGridBlocked(4, 4, placement=gpu)
        assert {g.device(i, j) for i in range(4) for j in range(4)} == set(gpu.devices)
        assert g.device(0, 0) == g.device(1, 1) == gpu(0) and g.device(3, 3) == gpu(3)
        r = LDeviceGridRaveled(2, 4, placement=gpu)
        assert [r.device(i, j) for i in range(2) for j in range(4)] == \
            [gpu(0), gpu(0), gpu(1), gpu(1), gpu(2), gpu(2), gpu(3), gpu(3)]
        with pytest.warns(PerformanceWarning):
            small = LDeviceSequenceBlocked(2, placement=gpu)
        assert small.devices == (gpu(0), gpu(1))


def test_partition_tensor_views_write_through():
    """Tutorial 4: on the CPU the partitions are views of the data, so writing a partition writes the data."""
    data = np.array([0, 0, 0, 1, 2, 3])
    with Parla(virtual_gpus=1):
        parts = LDeviceSequenceBlocked(2, placement=cpu).partition_tensor(data)
        T = TaskSpace("T")

        @spawn(T[0], placement=gpu)
        def t1():
            assert isinstance(parts[0], np.ndarray)
            parts[0] = parts[1]

        @spawn(T[1], dependencies=[T[0]], placement=cpu)
        def t2():
            return data.copy()
    assert t2.result.tolist() == [1, 2, 3, 1, 2, 3]
    assert isinstance(parts, PartitionedTensor) and len(parts) == 2


def test_partition_functions_and_grid_tensor():
    with Parla(virtual_gpus=2):
        m = LDeviceSequenceBlocked(2, placement=gpu)
        seen = []
        p = m.partition(lambda i, device: seen.append(device) or np.full(2, i))
        assert seen == [gpu(0), gpu(1)] and [x.tolist() for x in p.base] == [[0, 0], [1, 1]]
        grid = LDeviceGridRaveled(2, 2, placement=gpu).partition_tensor(np.arange(16).reshape(4, 4))
        assert grid[1, 0].tolist() == [[8, 9], [12, 13]]
        assert [b.tolist() for b in grid[0, 0:2]] == [[[0, 1], [4, 5]], [[2, 3], [6, 7]]]
        grid[0, 1] = np.zeros((3, 3))  # another shape replaces the partition
        assert grid.base[0][1].shape == (3, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        LDeviceSequenceBlocked(1, placement=cpu)


def test_device_memory():
    from parla.devices import Memory
    a = np.arange(3)
    with Parla(virtual_gpus=1):
        assert isinstance(gpu(0).memory(), Memory)
        assert gpu(0).memory()(a) is a and cpu(0).memory(kind="any")(a) is a  # host memory on virtual GPUs
        assert gpu(0).memory()("not an array") == "not an array"
