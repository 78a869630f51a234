"""Limits the extension checks when it converts arguments for the engine: memory sizes of 2**64 bytes or more
(or negative) are refused, never wrapped around; the engine refuses
worker counts above its cap and bad virtual-GPU settings with errors naming the argument."""
import pytest

from parla import Parla, spawn
from parla.devices import gpu


@pytest.mark.timeout(30)
@pytest.mark.parametrize("need", [2**64, 2**64 + 10, 2**70])
def test_memory_needs_outside_64_bits_are_refused(need):
    with Parla(virtual_gpus=1, gpu_memory=2**20):
        with pytest.raises(ValueError, match=r"2\*\*64"):
            @spawn(placement=gpu[{"memory": need}])
            def huge():
                pass
        with pytest.raises(ValueError, match=r"2\*\*64"):
            @spawn(placement=gpu(0), memory=need)
            def huge2():
                pass


@pytest.mark.timeout(30)
def test_runtime_sizes_outside_64_bits_are_refused():
    from parla import _core
    with pytest.raises(ValueError, match=r"2\*\*64"):
        _core.Runtime(n_workers=1, virtual_gpus=1, gpu_memory=2**64)
    with pytest.raises(ValueError, match=r"2\*\*64"):
        _core.Runtime(n_workers=1, cpu_memory=-5)


@pytest.mark.timeout(30)
def test_engine_refuses_too_many_workers_and_bad_gpu_settings():
    from parla import _core
    with pytest.raises(Exception, match=r"n_workers=1000000"):
        _core.Runtime(n_workers=10**6)
    with pytest.raises(Exception, match=r"gpu_bandwidth|virtual_gpu_bandwidth"):
        _core.Runtime(n_workers=1, virtual_gpus=1, gpu_bandwidth=float("nan"))
