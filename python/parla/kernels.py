"""CPU tile kernels as native task bodies: SciPy's OpenBLAS, called by a worker without the GIL. For example::

    from parla import Parla, TaskSpace, spawn, kernels
    from parla.array import asarray

    with Parla():
        T = TaskSpace("T")
        spawn(T[0], input=[A, B], inout=[C])(kernels.gemm(A, B, C))     # C := C - A @ B.T

Each function takes float64 PArray tiles and returns a :class:`parla.native.Call` of SciPy's Fortran
BLAS/LAPACK routine (``scipy.linalg.cython_blas`` / ``cython_lapack``, the OpenBLAS SciPy bundles), which
``spawn(...)`` turns into the task's body: the worker calls the routine directly, without Python and
without the GIL, on the tiles' copies on the task's device. The task must declare the tiles (``input=`` for
those read, ``inout=`` for the one written); placement on the CPU or on virtual GPUs (host memory). The
kernels::

    potrf(a)           a := L, the lower Cholesky factor (lower triangle; the strict upper triangle is left as
                       it was, as LAPACK does). A tile that is not positive definite fails the task with
                       parla.native.NativeError (code: LAPACK's info, the order of the failing minor).
    trsm(l, b)         b := b @ inv(l).T        l (m x m) lower triangular, b (k x m)
    syrk(a, c)         c := c - a @ a.T         a (n x k), c (n x n): lower triangle of c only
    gemm(a, b, c)      c := c - a @ b.T         a (m x k), b (n x k), c (m x n)

Layout: 2-D float64 tiles in C order (row-major), as every PArray holds its array (``asarray`` makes a
C-order copy of a Fortran-order array); a view of a larger matrix, such as ``M[0:128, 128:256]``, is a tile
too: its row stride is BLAS's leading dimension. A row-major tile is handed to the column-major Fortran
routine as its transpose, with the ``uplo``/``trans`` flags flipped to match. Shapes that do not match,
another dtype or a tile whose rows are not contiguous raise ValueError/TypeError at the call, naming the
kernel.

BLAS threads: a Parla context sets OpenBLAS to one thread (``Parla(blas_threads=1)``); the parallelism
comes from the tasks. Errors in arguments are raised when the body is made (``kernels.gemm(...)``) or at
spawn (a tile the task does not declare).
"""
from __future__ import annotations

import weakref
from typing import Any, Dict, Tuple

import numpy as np

from . import _core, native
from .array import PArray

__all__ = ["potrf", "trsm", "syrk", "gemm"]

_functions: Dict[str, Any] = {}
_F64 = np.dtype(np.float64)


def _fn(name: str) -> Any:
    fn = _functions.get(name)
    if fn is None:
        fn = _functions[name] = native.lapack(name) if name == "dpotrf" else native.blas(name)
    return fn


# id(host array) -> (weak reference to it, (rows, columns, leading dimension)): a tile's layout is looked at once,
# not at every call (a Cholesky spawns each tile into O(n/b) tasks).
_layouts: Dict[int, Tuple[Any, Tuple[int, int, int]]] = {}


def _tile(a: Any, what: str) -> Tuple[int, int, int]:
    """(rows, columns, leading dimension) of a float64 row-major PArray tile; raises for anything else."""
    if type(a) is not PArray and not isinstance(a, PArray):
        raise TypeError(f"{what}: a tile must be a PArray (parla.array.asarray), not {type(a).__name__}")
    v = a._np
    hit = _layouts.get(id(v))
    if hit is not None and hit[0]() is v:
        return hit[1]
    if v.ndim != 2 or v.dtype != _F64:
        raise TypeError(f"{what}: need a 2-D float64 tile, got {v.dtype} with shape {v.shape}")
    r, c = v.shape
    s0, s1 = v.strides
    if not ((s1 == 8 or c <= 1) and s0 % 8 == 0 and s0 >= 8 * max(c, 1)):
        raise ValueError(f"{what}: the tile's rows must be contiguous, in C order (strides {v.strides})")
    layout = (r, c, s0 // 8)
    if len(_layouts) > 100000:
        _layouts.clear()
    _layouts[id(v)] = (weakref.ref(v), layout)
    return layout


# The calls are made in C (parla._core._tile_call: the same arguments, the tiles' layouts read there) for
# float64 C-order PArray tiles of matching shapes once the routine has been looked up; the functions below
# with a leading underscore make them otherwise, and raise the errors.
_POTRF, _TRSM, _SYRK, _GEMM = range(4)


def potrf(a: PArray) -> native.Call:
    """The native body of ``a := chol(a)`` (lower; square tile). See the module's documentation."""
    made: Any = _core._tile_call(_POTRF, _functions.get("dpotrf"), a)
    return made if made is not None else _potrf(a)


def trsm(l: PArray, b: PArray) -> native.Call:
    """The native body of ``b := b @ inv(l).T`` (l lower triangular, m x m; b k x m)."""
    made: Any = _core._tile_call(_TRSM, _functions.get("dtrsm"), l, b)
    return made if made is not None else _trsm(l, b)


def syrk(a: PArray, c: PArray) -> native.Call:
    """The native body of ``c := c - a @ a.T`` (lower triangle of c, n x n; a n x k)."""
    made: Any = _core._tile_call(_SYRK, _functions.get("dsyrk"), a, c)
    return made if made is not None else _syrk(a, c)


def gemm(a: PArray, b: PArray, c: PArray) -> native.Call:
    """The native body of ``c := c - a @ b.T`` (a m x k, b n x k, c m x n)."""
    made: Any = _core._tile_call(_GEMM, _functions.get("dgemm"), a, b, c)
    return made if made is not None else _gemm(a, b, c)


def _potrf(a: PArray) -> native.Call:
    n, n2, lda = _tile(a, "potrf")
    if n != n2:
        raise ValueError(f"potrf: the tile must be square, got {a.shape}")
    # Row-major lower triangle == column-major upper triangle of the same symmetric matrix.
    return native.Call(_fn("dpotrf"), ("U", n, a, lda, native.status), slots=(2, 4))


def _trsm(l: PArray, b: PArray) -> native.Call:
    m, m2, ldl = _tile(l, "trsm(l)")
    k, mb, ldb = _tile(b, "trsm(b)")
    if m != m2 or mb != m:
        raise ValueError(f"trsm: shapes {l.shape} and {b.shape} do not match")
    # Column-major views: B^T (m x k) and U = L^T (upper); B^T := inv(U^T) B^T, a solve from the left.
    return native.Call(_fn("dtrsm"), ("L", "U", "T", "N", m, k, 1.0, l, ldl, b, ldb), slots=(7, 9))


def _syrk(a: PArray, c: PArray) -> native.Call:
    n, k, lda = _tile(a, "syrk(a)")
    n1, n2, ldc = _tile(c, "syrk(c)")
    if (n1, n2) != (n, n):
        raise ValueError(f"syrk: shapes {a.shape} and {c.shape} do not match")
    # Column-major views: A^T (k x n) and C, whose row-major lower triangle is its column-major upper one.
    return native.Call(_fn("dsyrk"), ("U", "T", n, k, -1.0, a, lda, 1.0, c, ldc), slots=(5, 8))


def _gemm(a: PArray, b: PArray, c: PArray) -> native.Call:
    m, k, lda = _tile(a, "gemm(a)")
    n, kb, ldb = _tile(b, "gemm(b)")
    mc, nc, ldc = _tile(c, "gemm(c)")
    if kb != k or (mc, nc) != (m, n):
        raise ValueError(f"gemm: shapes {a.shape}, {b.shape}, {c.shape} do not match")
    # Column-major: C^T (n x m) := C^T - B A^T, B^T (k x n) and A^T (k x m) being the column-major views.
    return native.Call(_fn("dgemm"), ("T", "N", n, m, k, -1.0, b, ldb, a, lda, 1.0, c, ldc),
                       slots=(6, 8, 11))
