"""A view allocates on a GPU only the bytes it covers (issue 13, item 1), on virtual GPUs.

An array larger than one GPU is split across four; a slice larger than half its base fits a GPU smaller
than the base; overlapping views (and a view with the whole array) on one GPU stay coherent.
"""
import numpy as np
import pytest

from parla import Parla, spawn
from parla.array import asarray
from parla.devices import gpu

MiB = 2**20



@pytest.mark.timeout(120)
def test_four_64mib_gpus_update_quarters_of_a_192mib_array_in_place():
    n = 192 * MiB // 8
    q = n // 4
    ref = np.arange(n, dtype=np.float64)
    A = asarray(ref.copy())
    with Parla(n_workers=4, virtual_gpus=4, gpu_memory=64 * MiB) as p:
        rt = p.runtime
        for k in range(4):
            part = A[k * q:(k + 1) * q]

            @spawn(placement=gpu(k), inout=[part])
            def update(part=part, k=k):
                a = part.array
                assert a.shape == (q,) and a[0] == k * q
                a *= 2.0
                a += k

        rt.wait_all()
        table = rt.devices()
        for k in range(4):
            assert table[k + 1]["memory_resident"] == 48 * MiB, table
            assert A.nbytes_at(gpu(k)) == 48 * MiB
            assert table[k + 1]["evictions"] == 0, table
    for k in range(4):
        ref[k * q:(k + 1) * q] = ref[k * q:(k + 1) * q] * 2.0 + k
    assert np.array_equal(A.array, ref)


@pytest.mark.timeout(60)
def test_a_3mb_slice_of_a_5mb_array_fits_a_4mb_gpu():
    n = 5 * 10**6 // 8
    m = 3 * 10**6 // 8
    ref = np.linspace(0.0, 1.0, n)
    A = asarray(ref.copy())
    with Parla(virtual_gpus=1, gpu_memory=4 * 10**6) as p:
        part = A[1000:1000 + m]

        @spawn(placement=gpu(0), inout=[part])
        def scale():
            part.array[:] = part.array * 3.0

        scale.wait()
        assert scale.state == "done"
        assert A.nbytes_at(gpu(0)) == m * 8
        assert p.runtime.devices()[1]["evictions"] == 0
    ref[1000:1000 + m] *= 3.0
    assert np.array_equal(A.array, ref)


@pytest.mark.timeout(60)
def test_a_strided_view_allocates_the_range_covering_its_footprint():
    base = np.arange(100 * 10, dtype=np.float64).reshape(100, 10)
    A = asarray(base.copy())
    with Parla(virtual_gpus=1, gpu_memory=MiB):
        col = A[10:20, 3]  # every 10th element of rows 10..19: covering range from (10, 3) to (19, 3)

        @spawn(placement=gpu(0), inout=[col])
        def bump():
            c = col.array
            assert c.shape == (10,) and np.array_equal(c, base[10:20, 3])
            c += 0.5

        bump.wait()
        assert A.nbytes_at(gpu(0)) == (9 * 10 + 1) * 8
    base[10:20, 3] += 0.5
    assert np.array_equal(A.array, base)


@pytest.mark.timeout(60)
def test_overlapping_views_and_the_whole_array_on_one_gpu_stay_coherent():
    n = 4096
    ref = np.arange(n, dtype=np.float64)
    A = asarray(ref.copy())
    with Parla(n_workers=2, virtual_gpus=1, gpu_memory=MiB) as p:
        steps = [(0, 1000), (500, 1500), (0, n), (1200, 3000), (2500, 4096), (0, n), (100, 200)]
        for i, (lo, hi) in enumerate(steps):
            part = A if (lo, hi) == (0, n) else A[lo:hi]

            @spawn(placement=gpu(0), inout=[part])
            def step(part=part, i=i):
                part.array[:] = part.array * 2.0 + i

            ref[lo:hi] = ref[lo:hi] * 2.0 + i
        # Two readers of overlapping slices at once, and a write-back at the end.
        sums = {}
        for lo, hi in ((0, 2000), (1000, 3000)):
            part = A[lo:hi]

            @spawn(placement=gpu(0), input=[part])
            def read(part=part, lo=lo, hi=hi):
                sums[lo, hi] = float(part.array.sum())

        p.runtime.wait_all()
        assert sums == {(0, 2000): float(ref[0:2000].sum()), (1000, 3000): float(ref[1000:3000].sum())}
        assert A.nbytes_at(gpu(0)) <= n * 8
    assert np.array_equal(A.array, ref)


@pytest.mark.timeout(60)
def test_a_task_declaring_a_slice_writes_it_through_the_base_on_a_gpu():
    ref = np.zeros((8, 8))
    A = asarray(ref.copy())
    with Parla(virtual_gpus=1, gpu_memory=MiB):
        part = A[2:4]

        @spawn(placement=gpu(0), inout=[part])
        def write():
            A[2, 5] = 7.0          # an element of the declared rows, through the base
            A[3] = np.arange(8.0)  # a declared row
            assert A[2, 5] == 7.0

        write.wait()
        assert write.state == "done", write.exception
        assert A.nbytes_at(gpu(0)) == 2 * 8 * 8
    ref[2, 5] = 7.0
    ref[3] = np.arange(8.0)
    assert np.array_equal(A.array, ref)


@pytest.mark.timeout(60)
def test_an_undeclared_read_of_a_slice_on_its_gpu_reads_the_slices_allocation():
    A = asarray(np.arange(1000.0))
    with Parla(virtual_gpus=1, gpu_memory=MiB):
        part = A[100:300]

        @spawn(placement=gpu(0), inout=[part])
        def write():
            part.array[:] += 1.0

        got = {}

        @spawn(placement=gpu(0), dependencies=[write])
        def read():
            a = part.array  # not declared: the GPU's valid copy, read-only
            got["sum"] = float(a.sum())
            got["readonly"] = not a.flags.writeable

        read.wait()
        assert read.state == "done", read.exception
        assert A.nbytes_at(gpu(0)) == 200 * 8
    assert got == {"sum": float((np.arange(100.0, 300.0) + 1.0).sum()), "readonly": True}


@pytest.mark.timeout(60)
def test_a_list_view_on_a_gpu_allocates_the_range_covering_its_elements():
    ref = np.arange(100.0)
    A = asarray(ref.copy())
    with Parla(virtual_gpus=1, gpu_memory=MiB):
        V = A[[40, 47, 43]]
        got = {}

        @spawn(placement=gpu(0), inout=[V])
        def write():
            got["before"] = V.array.tolist()
            V[1] = -1.0
            V[...] = V.array * 2.0

        write.wait()
        assert write.state == "done", write.exception
        assert A.nbytes_at(gpu(0)) == 8 * 8  # elements 40..47
    ref[[40, 47, 43]] = [80.0, -2.0, 86.0]
    assert got["before"] == [40.0, 47.0, 43.0]
    assert np.array_equal(A.array, ref)
