"""Device indexing as in Parla.py: gpu[1], cpu[0], gpu[[0, 1]], beside gpu[{"vcus": ...}]."""
import pytest

from parla import Parla, spawn, get_current_devices
from parla.devices import PlacementRequest, cpu, gpu

pytestmark = pytest.mark.timeout(20)


def test_index_picks_devices():
    assert gpu[1] is gpu(1) and cpu[0] is cpu(0)
    assert gpu[[0, 1]] == [gpu(0), gpu(1)]
    assert isinstance(gpu[{"vcus": 0.5}], PlacementRequest)
    with pytest.raises(TypeError, match="index"):
        gpu["1"]
    with pytest.raises(ValueError):
        gpu[-1]


def test_indexed_placements_run_there():
    with Parla(virtual_gpus=2):
        @spawn(placement=gpu[1])
        def one():
            return get_current_devices()

        @spawn(placement=gpu[[0, 1]])
        def either():
            return get_current_devices()[0]
    assert one.result == [gpu(1)]
    assert either.result in (gpu(0), gpu(1))
