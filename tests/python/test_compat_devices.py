"""Devices outside a context, Architecture.id, n_cores, PARLA_CPU_ARCHITECTURE=cores, and the top-level
names get_all_devices / TaskEnvironment."""
import pytest

from conftest import run_python

pytestmark = pytest.mark.timeout(30)


def test_devices_known_outside_a_context():
    out = run_python(
        "from parla import get_all_devices, TaskEnvironment, Parla\n"
        "from parla.devices import cpu, gpu\n"
        "print(get_all_devices(), cpu.devices, gpu.devices, cpu.id, gpu.id)\n"
        "with Parla(virtual_gpus=1):\n"
        "    print(gpu.devices)\n", timeout=20, PARLA_VIRTUAL_GPUS="3")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["[cpu(0), gpu(0), gpu(1), gpu(2)] [cpu(0)] [gpu(0), gpu(1), gpu(2)] cpu gpu",
                                       "[gpu(0)]"]


def test_per_core_cpus():
    out = run_python(
        "from parla import Parla, spawn, get_current_devices\n"
        "from parla.devices import cpu, _n_cores\n"
        "n = _n_cores()\n"
        "assert cpu.devices == [cpu(i) for i in range(n)], cpu.devices\n"
        "assert cpu(0).n_cores == 1 and cpu.n_cores == n\n"
        "with Parla(n_workers=2):\n"
        "    t = spawn(placement=cpu(n - 1), vcus=1)(lambda: get_current_devices())\n"
        "print(t.result)\n", timeout=20, PARLA_CPU_ARCHITECTURE="cores")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[cpu(0)]"


def test_architecture_lookups_and_current_device():
    import parla
    from parla import Parla, spawn
    from parla.devices import cpu, get_all_architectures, get_architecture, gpu
    from parla.tasks import get_current_device
    assert get_all_architectures() == [cpu, gpu]
    assert get_architecture("CPU") is cpu and get_architecture("cuda") is gpu
    with pytest.raises(KeyError, match="fpga"):
        get_architecture("fpga")
    assert isinstance(parla.parla_num_threads, int) and parla.parla_num_threads >= 1
    with Parla(virtual_gpus=1):
        t = spawn(placement=gpu(0))(get_current_device)
    assert t.result == gpu(0) and get_current_device() == cpu(0)
