"""Data for the k-th device of a multi-device task, as parla-experimental declares it: ``input=[(A, 0), (B, 1)]``
(also in output= and inout=) makes each array valid on the task's k-th device before the body runs."""
import numpy as np
import pytest

from parla import Parla, get_current_context, get_current_devices, spawn
from parla.array import asarray
from parla.devices import gpu

pytestmark = pytest.mark.timeout(30)


def test_each_array_lands_on_its_device_with_the_right_values():
    with Parla(n_workers=2, virtual_gpus=2) as p:
        A = asarray(np.arange(8.0))
        B = asarray(np.full(8, 10.0))
        C = asarray(np.zeros(8))

        @spawn(placement=[(gpu(1), gpu(0))], input=[(A, 0), (B, 1)], output=[(C, 1)])
        def two():
            where = {name: (x.exists_on_device(gpu(1)), x.exists_on_device(gpu(0)))
                     for name, x in (("A", A), ("B", B))}
            with get_current_context()[1]:
                C.array[:] = B.array + 1
            C.array[:] += A.array  # outside ctx[1]: C's copy is still the one on its declared device
            return get_current_devices(), where, A.nbytes_at(gpu(0)), B.nbytes_at(gpu(1))
        p.runtime.wait_all()
        devices, where, a_on_second, b_on_first = two.result
        assert devices == [gpu(1), gpu(0)]
        # A is on the first device (gpu 1) only, B on the second (gpu 0) only: nothing was copied elsewhere.
        assert where == {"A": (True, False), "B": (False, True)}
        assert a_on_second == 0 and b_on_first == 0
        # C was written on the task's second device: that is its only valid copy until it is read here.
        assert C.exists_on_device(gpu(0)) and not C.exists_on_device(gpu(1))
        assert C.nbytes_at(gpu(1)) == 0
        np.testing.assert_array_equal(C.array, np.arange(8.0) + 11.0)


def test_any_gpu_pair_and_inout_by_position():
    with Parla(n_workers=2, virtual_gpus=3) as p:
        A = asarray(np.arange(6, dtype=np.int64))

        @spawn(placement=[(gpu, gpu)], inout=[(A, 1)])
        def bump():
            second = get_current_devices()[1]
            with get_current_context()[1]:
                A.array[:] *= 3
            return second, A.exists_on_device(second), A.exists_on_device(get_current_devices()[0])

        @spawn(placement=gpu(2), input=[A], dependencies=[bump])
        def after():
            return A.array.sum()
        p.runtime.wait_all()
        second, there, first = bump.result
        assert there and not first
        assert after.result == 3 * sum(range(6))
        np.testing.assert_array_equal(A.array, 3 * np.arange(6))


def test_one_array_for_both_devices():
    with Parla(n_workers=2, virtual_gpus=2) as p:
        A = asarray(np.arange(5.0))

        @spawn(placement=[(gpu(0), gpu(1))], input=[(A, 0), (A, 1)])
        def both():
            sums = []
            for k in range(2):
                with get_current_context()[k]:
                    sums.append(float(A.array.sum()))
            return sums, A.exists_on_device(gpu(0)), A.exists_on_device(gpu(1))
        p.runtime.wait_all()
    assert both.result == ([10.0, 10.0], True, True)


def test_a_position_beyond_the_tasks_devices_is_a_clear_error():
    with Parla(n_workers=2, virtual_gpus=2):
        A = asarray(np.arange(4.0))
        with pytest.raises(ValueError, match=r"task far#\d+: inout=\[\(array, 2\)\].*2 devices"):
            @spawn(placement=[(gpu(0), gpu(1))], inout=[(A, 2)])
            def far():
                pass
        with pytest.raises(ValueError, match=r"output=\[\(array, 1\)\].*1 device in one of its options"):
            spawn(placement=[(gpu(0), gpu(1)), gpu(1)], output=[(A, 1)])(lambda: None)
        with pytest.raises(ValueError, match=r"input=\[\(array, 1\)\].*1 device\b"):
            spawn(input=[(A, 1)])(lambda: None)  # a CPU task: one device
        # Nothing of the refused spawns moved the data.
        assert A.nbytes_at(gpu(0)) == 0 and A.nbytes_at(gpu(1)) == 0
        np.testing.assert_array_equal(A.array, np.arange(4.0))


def test_a_replayed_graph_keeps_each_arrays_device():
    from parla import capture
    with Parla(n_workers=2, virtual_gpus=2):
        A = asarray(np.arange(4.0))
        B = asarray(np.zeros(4))
        with capture("pair") as g:
            @spawn(placement=[(gpu(0), gpu(1))], input=[(A, 0)], inout=[(B, 1)])
            def add():
                B.array[:] += A.array
        for _ in range(3):
            g.replay()
        g.wait()
        # The replays, like the captured spawn, wrote B on the task's second device only.
        assert B.exists_on_device(gpu(1)) and not B.exists_on_device(gpu(0)) and B.nbytes_at(gpu(0)) == 0
        np.testing.assert_array_equal(B.array, 4 * np.arange(4.0))


@pytest.mark.timeout(30)
def test_writing_the_same_bytes_through_two_positions_is_refused_and_records_nothing():
    # Each position gets its own copy: one position's writes were lost without a word.
    A = asarray(np.zeros(10))
    with Parla(n_workers=2, virtual_gpus=2):
        for decl in ({"inout": [(A, 0), (A, 1)]}, {"output": [(A, 1)], "inout": [(A[2:6], 0)]}):
            with pytest.raises(ValueError, match=r"written \(output/inout\) through its devices at positions 0 "
                                                 r"and 1: .*one position's writes would be lost"):
                spawn(placement=(gpu, gpu), **decl)(lambda: None)
        # Nothing of the refused spawns was recorded: a later task on A runs (no hazard on them).
        later = spawn(placement=gpu(0), inout=[A])(lambda: A.array.__iadd__(1))
        # Disjoint views, and a read through one position of what the other writes, stay allowed.
        @spawn(placement=(gpu, gpu), inout=[(A[:5], 0), (A[5:], 1)], dependencies=[later])
        def halves():
            ctx = get_current_context()
            with ctx[0]:
                A[:5].array[:] += 100
            with ctx[1]:
                A[5:].array[:] += 1000

        @spawn(placement=(gpu, gpu), input=[(A, 0)], inout=[(A, 1)], dependencies=[halves])
        def read_and_write():
            with get_current_context()[1]:
                A.array[:] *= 2
    assert later.state == "done"
    assert A.array.tolist() == [202.0] * 5 + [2002.0] * 5


@pytest.mark.timeout(30)
def test_a_view_made_in_the_body_uses_the_copy_of_the_position_its_declared_view_is_for():
    # A[5:] made inside the body resolved to the first device's copy (stale, or not holding those bytes).
    A = asarray(np.zeros(10))
    with Parla(n_workers=2, virtual_gpus=2):
        @spawn(placement=(gpu, gpu), inout=[(A[5:], 1)])
        def body():
            with get_current_context()[1]:
                A[5:].array[:] += 1000
            A[6:8].array[:] += 1  # outside any `with ctx[i]`: the position the covering view is declared for
    assert A.array.tolist() == [0.0] * 5 + [1000.0, 1001.0, 1001.0, 1000.0, 1000.0]
