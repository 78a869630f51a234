"""The byte ranges a PArray view declares are exactly the bytes of its base that it covers.

The reference marks the view's bytes in a copy of the base (all bits set through the view) and reads the
ranges back from the marks, so it shares no code with parla._ranges. The views include the one-strided-axis
case that has its own fast path (a tile of a matrix, a column, every other element) and views with several
strided axes, reversed axes, single rows and columns, and empty views.
"""
import random

import numpy as np
import pytest

from parla import _ranges
from parla.array import asarray


def marked_ranges(base, index):
    """Byte ranges [lo0, hi0, ...] of base covered by base[index], found by writing through the view."""
    order = "C" if base.flags.c_contiguous else "F"
    marks = np.zeros(base.shape, dtype=f"i{base.itemsize}", order=order)
    marks[index] = -1  # every bit of every byte the view covers
    flat = marks.ravel(order=order).view(np.uint8) != 0
    edges = np.flatnonzero(np.diff(np.concatenate(([False], flat, [False])).astype(np.int8)))
    return edges.tolist()


def random_index(rng, shape):
    index = []
    for n in shape:
        kind = rng.random()
        if kind < 0.15:
            index.append(rng.randrange(n))
            continue
        a, b = sorted(rng.randrange(0, n + 1) for _ in range(2))
        step = rng.choice([1, 1, 1, 2, 3, 5, -1, -2])
        index.append(slice(a, b, step) if step > 0 else slice(b - 1 if b > 0 else None, a - 1 if a > 0 else None,
                                                               step))
    return tuple(index)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("shape,dtype,order", [((64, 48), np.float64, "C"), ((7, 5, 6), np.int32, "C"),
                                               ((200,), np.uint8, "C"), ((12, 10), np.float64, "F")])
def test_view_ranges_are_the_bytes_the_view_covers(shape, dtype, order):
    rng = random.Random(20261202)
    base = np.zeros(shape, dtype=dtype, order=order)
    checked = 0
    for _ in range(400):
        index = random_index(rng, shape)
        view = base[index]
        if not isinstance(view, np.ndarray):
            continue
        assert _ranges.byte_ranges(view, base) == marked_ranges(base, index), (shape, order, index)
        checked += 1
    assert checked > 300


@pytest.mark.timeout(60)
def test_matrix_tile_declares_one_range_per_row():
    A = asarray(np.zeros((1024, 1024)))
    tile = A[128:192, 64:128]
    expected = []
    for r in range(128, 192):
        expected += [(r * 1024 + 64) * 8, (r * 1024 + 128) * 8]
    assert tile._ranges == expected
    column = A[:, 3]
    assert column._ranges[:4] == [24, 32, 8192 + 24, 8192 + 32] and len(column._ranges) == 2 * 1024
    assert A[::-2]._ranges[:2] == [8192, 16384] and A[::-2]._ranges[-2:] == [1023 * 8192, 1024 * 8192]
    assert A[5:9]._ranges == [5 * 8192, 9 * 8192]  # contiguous rows: one range
