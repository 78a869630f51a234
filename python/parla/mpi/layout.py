"""Where distributed data lives: owner maps for tiles, as ScaLAPACK users lay out matrices.

    from parla.mpi.layout import BlockCyclic, Block, process_grid

    P, Q = process_grid(4)              # (2, 2): the most square P x Q grid with P <= Q
    owner = BlockCyclic(P, Q)           # tile (i, j) lives on rank (i % P) * Q + (j % Q)
    owner(3, 1)                         # 3
    rows = Block(n_items=10, n_ranks=4) # item i lives on rank i * 4 // 10 (contiguous blocks)

A layout is a callable from tile indices to an MPI rank (an int in [0, size)). Ranks of a P x Q grid are
numbered row-major, as ``Cblacs_gridinit(..., "Row", P, Q)`` numbers them, so the same matrix laid out here
and handed to ScaLAPACK has each tile on the same rank.
"""
from __future__ import annotations

import math
from typing import Tuple

__all__ = ["BlockCyclic", "Block", "Cyclic", "process_grid"]


def _positive(value: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what}={value!r} must be a positive integer")
    return value


def process_grid(size: int) -> Tuple[int, int]:
    """The P x Q grid for ``size`` ranks that is closest to square, with P <= Q and P * Q == size
    (ScaLAPACK's usual choice: 4 -> (2, 2), 6 -> (2, 3), 2 -> (1, 2), a prime p -> (1, p))."""
    _positive(size, "size")
    p = int(math.isqrt(size))
    while size % p:
        p -= 1
    return p, size // p


class BlockCyclic:
    """The 2-D block-cyclic layout of tiles over a P x Q process grid: tile (i, j) lives on rank
    ``((i // r) % P) * Q + ((j // c) % Q)``, with r x c tiles per block (1 x 1 by default, the usual
    ScaLAPACK layout when a tile is ScaLAPACK's block). ``first`` shifts every rank (a grid on ranks
    first .. first + P*Q - 1). Raises ValueError for non-positive sizes."""

    def __init__(self, P: int, Q: int, block: Tuple[int, int] = (1, 1), first: int = 0) -> None:
        self.P = _positive(P, "P")
        self.Q = _positive(Q, "Q")
        self.block = (_positive(block[0], "block[0]"), _positive(block[1], "block[1]"))
        if isinstance(first, bool) or not isinstance(first, int) or first < 0:
            raise ValueError(f"first={first!r} must be a rank (an integer >= 0)")
        self.first = first

    @property
    def size(self) -> int:
        """Number of ranks the layout uses (P * Q)."""
        return self.P * self.Q

    def __call__(self, i: int, j: int) -> int:
        return self.first + ((i // self.block[0]) % self.P) * self.Q + ((j // self.block[1]) % self.Q)

    def coords(self, rank: int) -> Tuple[int, int]:
        """(p, q): where ``rank`` sits in the grid."""
        r = rank - self.first
        if not 0 <= r < self.size:
            raise ValueError(f"rank {rank} is not in this {self.P} x {self.Q} grid (ranks {self.first} to "
                             f"{self.first + self.size - 1})")
        return r // self.Q, r % self.Q

    def __repr__(self) -> str:
        return f"BlockCyclic(P={self.P}, Q={self.Q}, block={self.block}, first={self.first})"


class Block:
    """The 1-D block layout: items 0 .. n_items-1 in contiguous runs, item i on rank
    ``i * n_ranks // n_items`` (run lengths differ by at most one)."""

    def __init__(self, n_items: int, n_ranks: int) -> None:
        self.n_items = _positive(n_items, "n_items")
        self.n_ranks = _positive(n_ranks, "n_ranks")

    def __call__(self, i: int) -> int:
        if not 0 <= i < self.n_items:
            raise IndexError(f"item {i} is outside 0 .. {self.n_items - 1}")
        return i * self.n_ranks // self.n_items

    def __repr__(self) -> str:
        return f"Block(n_items={self.n_items}, n_ranks={self.n_ranks})"


class Cyclic:
    """The 1-D cyclic layout: item i on rank ``i % n_ranks``."""

    def __init__(self, n_ranks: int) -> None:
        self.n_ranks = _positive(n_ranks, "n_ranks")

    def __call__(self, i: int) -> int:
        return i % self.n_ranks

    def __repr__(self) -> str:
        return f"Cyclic(n_ranks={self.n_ranks})"
