"""examples/cholesky.py's task graph: the priority of every task, the TaskSpaces factor() returns, and run()'s
two timings (to the end of the last task, and with the context's exit) giving the same factor."""
import os
import sys

import numpy as np
import pytest

from parla import Parla

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "examples"))
import cholesky  # noqa: E402  (examples/cholesky.py)


def spawned(nt, priorities=True):
    """[(space name, key, priority)] in spawn order, from factor() with a recording spawn (no runtime)."""
    seen = []

    def record(task, deps, placement=None, input=(), inout=(), priority=0):
        seen.append((task, priority))
        return lambda body: body

    tiles = [[np.zeros((2, 2)) if j <= i else None for j in range(nt)] for i in range(nt)]
    spaces = cholesky.factor(tiles, use_parray=False, spawn=record, priorities=priorities)
    return seen, spaces


@pytest.mark.timeout(30)
@pytest.mark.parametrize("nt", [1, 2, 5])
def test_every_task_gets_the_level_of_priorities_and_the_spaces_are_returned(nt):
    seen, spaces = spawned(nt)
    assert [s.name for s in spaces] == ["POTRF", "TRSM", "SYRK", "GEMM"]
    potrf, trsm, syrk, gemm = spaces
    expected = []
    for k in range(nt):
        expected.append((potrf[k], cholesky._priorities(k, k, k)))
        expected += [(trsm[i, k], cholesky._priorities(i, k, k)) for i in range(k + 1, nt)]
        for i in range(k + 1, nt):
            expected.append((syrk[i, k], cholesky._priorities(i, i, k)))
            expected += [(gemm[i, j, k], cholesky._priorities(i, j, k)) for j in range(k + 1, i)]
    assert len(seen) == len(expected) == cholesky.count_tasks(nt)
    for (task, prio), (want_task, want_prio) in zip(seen, expected):
        assert task is want_task
        assert prio == want_prio
    # The three levels all occur once there is a trailing matrix (k + 1 < j).
    if nt >= 5:
        assert {p for _, p in seen} == {-1, 0, 1}


@pytest.mark.timeout(30)
def test_no_priorities_spawns_every_task_at_the_default_level():
    seen, _ = spawned(5, priorities=False)
    assert len(seen) == cholesky.count_tasks(5)
    assert {p for _, p in seen} == {0}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("native", [False, True])
def test_run_times_to_the_last_task_or_with_the_exit_and_factors_the_same(native):
    a = cholesky.make_spd(256, seed=5)
    l_tasks, s_tasks = cholesky.run(a, 64, workers=2, native=native)
    l_exit, s_exit = cholesky.run(a, 64, workers=2, native=native, include_exit=True)
    np.testing.assert_array_equal(l_tasks, l_exit)
    assert cholesky.residual(a, l_tasks) < 1e-12
    assert s_tasks > 0 and s_exit > 0


@pytest.mark.timeout(60)
def test_the_last_potrf_is_waited_for_after_every_other_task():
    # run() waits for POTRF[nt - 1] only: every other task must have finished by then.
    from parla.array import asarray
    from parla.tasks import barrier
    a = cholesky.make_spd(320, seed=2)
    tiles = [[asarray(t) if t is not None else None for t in row] for row in cholesky.to_tiles(a, 64)]
    with Parla(n_workers=2):
        potrf, trsm, syrk, gemm = cholesky.factor(tiles, native=True)
        barrier(potrf[len(tiles) - 1])
        tasks = [t for space in (potrf, trsm, syrk, gemm) for t in space.tasks] if hasattr(potrf, "tasks") else None
        if tasks is None:
            tasks = [potrf[k] for k in range(len(tiles))]
        assert len(tasks) >= len(tiles)
        assert all(t.done for t in tasks)
