"""Layouts of parla.mpi (pure Python: no MPI needed) and the benchmark's communication model."""
import importlib.util
import os

import pytest

from parla.mpi.layout import Block, BlockCyclic, Cyclic, process_grid

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.timeout(10)
def test_process_grid_is_the_most_square():
    assert [process_grid(n) for n in (1, 2, 4, 6, 7, 12, 64)] == [(1, 1), (1, 2), (2, 2), (2, 3), (1, 7), (3, 4),
                                                                    (8, 8)]
    with pytest.raises(ValueError, match="size"):
        process_grid(0)


@pytest.mark.timeout(10)
def test_block_cyclic_numbers_ranks_row_major_like_blacs():
    owner = BlockCyclic(2, 3)
    assert [[owner(i, j) for j in range(4)] for i in range(3)] == [[0, 1, 2, 0], [3, 4, 5, 3], [0, 1, 2, 0]]
    assert owner.coords(5) == (1, 2)
    assert BlockCyclic(2, 2, block=(2, 1))(2, 1) == 3
    assert BlockCyclic(1, 2, first=3)(0, 1) == 4
    with pytest.raises(ValueError, match="not in this 2 x 3 grid"):
        owner.coords(6)
    with pytest.raises(ValueError, match="P=0"):
        BlockCyclic(0, 2)


@pytest.mark.timeout(10)
def test_block_and_cyclic():
    assert [Block(10, 4)(i) for i in range(10)] == [0, 0, 0, 1, 1, 2, 2, 2, 3, 3]
    assert [Cyclic(3)(i) for i in range(5)] == [0, 1, 2, 0, 1]
    with pytest.raises(IndexError, match="item 10"):
        Block(10, 4)(10)


@pytest.mark.timeout(10)
def test_minimum_messages_model():
    spec = importlib.util.spec_from_file_location("bench_mpi", os.path.join(REPO, "benchmarks", "mpi",
                                                                            "bench_cholesky_mpi.py"))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    # One rank: nothing to send. 2 x 2 tiles on 1 x 2 ranks: A[0,0] -> rank 0 owns A[1,0]: nothing; A[1,0]
    # (rank 0) is read by the SYRK on A[1,1] (rank 1): one tile.
    assert bench.minimum_messages(128, 64, 1, 1) == {0: {"messages": 0, "bytes": 0}}
    assert bench.minimum_messages(128, 64, 1, 2) == {0: {"messages": 1, "bytes": 64 * 64 * 8},
                                                     1: {"messages": 0, "bytes": 0}}
    m = bench.minimum_messages(8192, 512, 2, 2)
    assert sum(v["bytes"] for v in m.values()) == 480 * 2 ** 20
