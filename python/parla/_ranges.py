"""Byte-range algebra of PArray views: which bytes of a base array a view (slice, index list, mask) covers.

Ranges are flat lists ``[lo0, hi0, lo1, hi1, ...]`` of byte offsets into the base array, sorted, merged
(no two touch) and half-open. Pure functions of NumPy arrays; any thread.
"""
from __future__ import annotations

from typing import Any, List, Optional, Tuple

import numpy as np

__all__ = ["as_slice", "is_list_index", "normalize", "byte_ranges", "covers", "merge_ranges", "element_ranges"]


def as_slice(index: Any, length: int) -> Optional[slice]:
    """The slice selecting what an int list (or 1-D int array) selects on an axis of `length` elements, when
    the positions are in bounds and evenly spaced (a view instead of a copy); else None (NumPy then indexes
    with the list itself, and raises IndexError for a position out of bounds)."""
    try:
        arr = np.asarray(index)
    except (ValueError, TypeError):
        return None
    if arr.ndim != 1 or arr.dtype.kind not in "iu" or arr.size == 0:
        return None
    arr = arr.astype(np.int64)
    arr[arr < 0] += length
    if arr.min() < 0 or arr.max() >= length:
        return None
    first = int(arr[0])
    if arr.size == 1:
        return slice(first, first + 1)
    step = int(arr[1] - arr[0])
    if step == 0 or not np.all(np.diff(arr) == step):
        return None
    last = int(arr[-1])
    return slice(first, last + 1, step) if step > 0 else slice(first, last - 1 if last > 0 else None, step)


def is_list_index(i: Any) -> bool:
    return type(i) is list or (isinstance(i, np.ndarray) and i.ndim > 0)


def normalize(index: Any, shape: Tuple[int, ...]) -> Any:
    """index, with an evenly spaced int list turned into the equivalent slice where NumPy's result is then the
    same (the list is the only advanced index, so no broadcasting or moved axis depends on it)."""
    if type(index) is not tuple:
        if is_list_index(index) and shape:
            s = as_slice(index, shape[0])
            if s is not None:
                return s
        return index
    axis = -1
    for d, i in enumerate(index):
        if is_list_index(i):
            if axis >= 0:
                return index  # several index lists broadcast together
            axis = d
        elif type(i) is not slice:
            return index  # an integer, None, Ellipsis, a bool or a 0-d array: NumPy's rules decide
    if axis < 0 or axis >= len(shape):
        return index
    s = as_slice(index[axis], shape[axis])
    if s is None:
        return index
    return index[:axis] + (s,) + index[axis + 1:]


def byte_ranges(view: np.ndarray, base: np.ndarray) -> List[int]:
    """Sorted, merged byte ranges [lo0, hi0, lo1, hi1, ...] of base covered by view (a NumPy view of base)."""
    if view.size == 0:
        return []
    itemsize = view.itemsize
    offset = view.__array_interface__["data"][0] - base.__array_interface__["data"][0]
    dims = []
    for n, stride in zip(view.shape, view.strides):
        if n == 1:
            continue
        if stride < 0:
            offset += (n - 1) * stride
            stride = -stride
        dims.append((n, stride))
    dims.sort(key=lambda d: d[1], reverse=True)
    run = itemsize
    while dims and dims[-1][1] == run:
        run *= dims.pop()[0]
    if not dims:
        return [offset, offset + run]
    if len(dims) == 1 and dims[0][1] > run:
        # One strided axis whose runs neither touch nor overlap (a tile of a matrix, a column, A[::2]): the
        # runs are the ranges, already sorted. Built from ranges: the general path below costs about 100 us
        # in NumPy calls for a 64-row tile, more than the spawn that declares it.
        n, stride = dims[0]
        out = [0] * (2 * n)
        out[0::2] = range(offset, offset + n * stride, stride)
        out[1::2] = range(offset + run, offset + run + n * stride, stride)
        return out
    shape = [n for n, _ in dims]
    strides = np.array([s for _, s in dims], dtype=np.int64)
    starts = np.indices(shape, dtype=np.int64).reshape(len(shape), -1).T @ strides + offset
    starts.sort()
    ends = starts + run
    # Merge touching runs.
    breaks = np.nonzero(starts[1:] > ends[:-1])[0]
    lo = np.concatenate(([starts[0]], starts[breaks + 1]))
    hi = np.concatenate((ends[breaks], [ends[-1]]))
    merged = np.empty(2 * len(lo), dtype=np.int64)
    merged[0::2] = lo
    merged[1::2] = hi
    result: List[int] = merged.tolist()
    return result


def covers(outer: List[int], inner: List[int]) -> bool:
    """True when every byte range of inner lies within the ranges of outer (both sorted, merged)."""
    j = 0
    for i in range(0, len(inner), 2):
        lo, hi = inner[i], inner[i + 1]
        while j < len(outer) and outer[j + 1] <= lo:
            j += 2
        if j == len(outer) or outer[j] > lo or outer[j + 1] < hi:
            return False
    return True


def merge_ranges(lists: List[List[int]]) -> List[int]:
    """The union of several sorted, merged range lists [lo0, hi0, ...], sorted and merged."""
    pairs = sorted((r[i], r[i + 1]) for r in lists for i in range(0, len(r), 2))
    out: List[int] = []
    for lo, hi in pairs:
        if out and lo <= out[-1]:
            out[-1] = max(out[-1], hi)
        else:
            out += [lo, hi]
    return out


def element_ranges(flat: np.ndarray, itemsize: int) -> List[int]:
    """Sorted, merged byte ranges of the elements with flat indices `flat` (any shape, repeats allowed)."""
    elements = np.unique(flat.ravel())
    if elements.size == 0:
        return []
    starts = elements * itemsize
    breaks = np.nonzero(np.diff(elements) != 1)[0]
    lo = np.concatenate(([starts[0]], starts[breaks + 1]))
    hi = np.concatenate((starts[breaks] + itemsize, [starts[-1] + itemsize]))
    out = np.empty(2 * len(lo), dtype=np.int64)
    out[0::2], out[1::2] = lo, hi
    return out.tolist()
