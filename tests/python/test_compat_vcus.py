"""vcus as both releases write it: 0 (no need), fractions, parla-experimental's thousandths, Parla.py's
cpu.n_cores."""
import threading

import pytest

from parla import Parla, spawn
from parla.devices import Cores, _vcus, cpu, gpu

pytestmark = pytest.mark.timeout(30)


@pytest.mark.parametrize("given,fraction", [(0, 0.0), (0.0, 0.0), (0.25, 0.25), (1, 1.0), (1.0, 1.0),
                                            (500, 0.5), (1000, 1.0), (2, 0.002)])
def test_vcus_readings(given, fraction):
    assert _vcus(given, "t") == pytest.approx(fraction)


def test_n_cores_is_the_whole_cpu():
    n = cpu.n_cores
    assert isinstance(n, Cores) and int(n) >= 1
    assert _vcus(n, "t") == 1.0
    assert _vcus(Cores(1, 4), "t") == 0.25
    with pytest.raises(AttributeError, match="n_cores"):
        gpu.n_cores


@pytest.mark.parametrize("bad", [1001, -1, 1.5, True, "half"])
def test_bad_vcus_name_the_task(bad):
    with Parla(n_workers=1):
        with pytest.raises(ValueError, match=r"task t#\d+: vcus"):
            @spawn(vcus=bad)
            def t():
                pass


def test_vcus_zero_tasks_run_beside_whole_device_tasks():
    """A vcus=0 task needs nothing: it runs while a vcus=1 task holds the whole CPU."""
    release = threading.Event()
    with Parla(n_workers=2):
        @spawn(placement=cpu, vcus=1)
        def whole():
            return release.wait(10)

        @spawn(placement=cpu[{"vcus": 0}])
        def free():
            release.set()
            return "ran"
    assert free.result == "ran" and whole.result is True


def test_thousandths_limit_concurrency():
    """Two tasks of 600 thousandths cannot run at once on one device: the second starts after the first."""
    order = []
    with Parla(n_workers=2, virtual_gpus=1):
        for i in range(2):
            @spawn(placement=gpu(0), vcus=600)
            def t():
                order.append(("start", i))
                order.append(("end", i))
    assert order[0][0] == "start" and order[1] == ("end", order[0][1])
    assert order[2][0] == "start" and order[3][0] == "end"


def test_vcus_n_cores_spawns():
    with Parla(n_workers=2):
        @spawn(vcus=cpu.n_cores)
        def t():
            return 3
    assert t.result == 3
