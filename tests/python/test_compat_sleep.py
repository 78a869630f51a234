"""Busy waits: parla.sleep_gil / sleep_nogil (both releases) and the GPU variant."""
import threading

import pytest

import parla
from parla import Parla, spawn, sleep_gil, sleep_nogil
from parla.devices import gpu

pytestmark = pytest.mark.timeout(20)


def test_sleep_nogil_lets_other_threads_run():
    ready, go, ran = threading.Event(), threading.Event(), threading.Event()

    def other():
        ready.set()
        go.wait(5)  # wakes when go is set, then needs the GIL to go on
        ran.set()

    t = threading.Thread(target=other)
    t.start()
    ready.wait(5)
    go.set()
    sleep_nogil(300_000)  # 0.3 s with the GIL released: the other thread finishes meanwhile
    finished_during_sleep = ran.is_set()
    t.join(5)
    assert finished_during_sleep


def test_sleep_gil_returns_and_both_spellings_exist():
    assert sleep_gil(100) is None and sleep_nogil(0) is None
    from parla.cython.core import cpu_bsleep_gil, cpu_bsleep_nogil
    assert cpu_bsleep_gil is sleep_gil and cpu_bsleep_nogil is sleep_nogil


@pytest.mark.parametrize("bad", [-1, "10", None, True])
def test_sleep_rejects_bad_lengths(bad):
    with pytest.raises(ValueError, match="microseconds"):
        sleep_nogil(bad)
    with pytest.raises(ValueError, match="microseconds"):
        sleep_gil(bad)


def test_sleep_nogil_in_tasks():
    with Parla(n_workers=2):
        @spawn(vcus=0)
        def a():
            sleep_nogil(1000)
            return "a"
    assert a.result == "a"


def test_gpu_sleep_on_a_virtual_gpu():
    with Parla(virtual_gpus=1):
        @spawn(placement=gpu(0))
        def t():
            parla.gpu_sleep_nogil(gpu(0), 1000, parla.get_current_stream())
            parla.gpu_sleep_gil(0, 1000)
            return "slept"
        with pytest.raises(ValueError, match="ticks"):
            parla.gpu_sleep_nogil(0, -5)
    assert t.result == "slept"
