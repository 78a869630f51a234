"""The module paths Parla programs import, as thin re-exports of the public API."""
import importlib

import pytest

import parla

pytestmark = pytest.mark.timeout(20)


def test_module_paths_reexport_the_public_api():
    from parla.cython.device_manager import cpu, cuda, gpu
    from parla.cython.tasks import AtomicTaskList, AtomicTaskSpace, TaskSpace, wait
    from parla.common.globals import CUPY_ENABLED, DeviceType, get_current_context, get_current_devices
    from parla.common.array import clone_here, copy
    from parla.common.parray import asarray
    from parla.common.parray.coherence import Coherence
    from parla.parray.coherence import CPU_INDEX, Coherence as OldCoherence
    from parla.utility.execute import timeout, Propagate
    from parla.task_runtime import Scheduler, get_scheduler_context
    from parla.environments import TaskEnvironment
    assert gpu is cuda is parla.devices.gpu and cpu is parla.devices.cpu
    assert TaskSpace is parla.TaskSpace and AtomicTaskList is parla.TaskList and wait is parla.tasks.barrier
    assert get_current_devices is parla.get_current_devices and get_current_context is parla.get_current_context
    assert clone_here is parla.array.clone_here and copy is parla.array.copy and asarray is parla.array.asarray
    assert Coherence is OldCoherence and CPU_INDEX == -1
    assert len({Coherence.INVALID, Coherence.SHARED, Coherence.MODIFIED}) == 3
    assert DeviceType.CPU == 0 and isinstance(CUPY_ENABLED, bool)
    assert TaskEnvironment is parla.TaskEnvironment and AtomicTaskSpace is parla.AtomicTaskSpace


def test_scheduler_context_fixture():
    from parla.task_runtime import Scheduler, get_scheduler_context
    with Scheduler(2) as s:
        assert get_scheduler_context() is s and s.n_workers == 2
        t = parla.spawn()(lambda: 5)
    assert t.result == 5
    with pytest.raises(RuntimeError):
        get_scheduler_context()


def test_timeout_and_propagate():
    from parla.utility.execute import Propagate, timeout

    @timeout(5)
    def fine(x):
        return x + 1
    assert fine(1) == 2

    @timeout(0.05)
    def slow():
        import threading
        threading.Event().wait(1)
    with pytest.raises(TimeoutError, match="slow"):
        slow()

    def boom():
        raise KeyError("k")
    t = Propagate(target=boom)
    t.start()
    with pytest.raises(KeyError):
        t.join()


@pytest.mark.parametrize("name", ["parla.cython", "parla.cython.core", "parla.cython.device",
                                  "parla.cython.variants", "parla.common", "parla.common.parray.core",
                                  "parla.common.parray.from_data", "parla.utility", "parla.utility.threads",
                                  "parla.cpucores", "parla.ldevice", "parla.parray"])
def test_every_module_has_a_docstring(name):
    assert importlib.import_module(name).__doc__.strip()
