"""GIL-free CPU tile kernels for the tiled Cholesky factorisation (float64).

SciPy's ``scipy.linalg.blas`` / ``scipy.linalg.lapack`` wrappers (f2py) hold the GIL while BLAS runs, so two
Python threads calling them get no speed-up. SciPy also exports the raw Fortran BLAS/LAPACK entry points of
the OpenBLAS it bundles, as PyCapsules in ``scipy.linalg.cython_blas.__pyx_capi__`` and
``scipy.linalg.cython_lapack.__pyx_capi__``. We take the function pointer out of each capsule and call it
through a ``ctypes.CFUNCTYPE`` prototype: ctypes releases the GIL for the duration of a foreign call made
through a CFUNCTYPE pointer, so the kernels below run in parallel on several threads.

The kernels work in place on 2-D C-contiguous (row-major, NumPy's default) or Fortran-contiguous
(column-major) float64 tiles; a row-major tile is handed to the Fortran routine as its transpose, and the
routine's ``uplo``/``trans`` flags are flipped to match. Tiles may be rectangular (edge tiles).

    potrf(a)           a := L, the lower Cholesky factor (in place, lower triangle; the strict upper triangle
                       is left as it was, as LAPACK does)
    trsm(l, b)         b := b @ inv(l).T        (l lower triangular)
    syrk(a, c)         c := c - a @ a.T         (lower triangle of c only)
    gemm(a, b, c)      c := c - a @ b.T

BLAS threads. For tiled runs every kernel must use one BLAS thread (parallelism comes from the tasks); a
Parla context sets that by default (``Parla(blas_threads=1)``, through threadpoolctl). ``set_blas_threads(n)``
sets the thread count of every BLAS loaded, SciPy's OpenBLAS (the library these kernels call) and NumPy's (a
separate copy: NumPy links ``libscipy_openblas64_``, ILP64, SciPy ``libscipy_openblas``, LP64), with
threadpoolctl, at any time.

Run ``python examples/kernels.py`` for a self-test against NumPy/SciPy and a measurement of the speed-up two
threads get over one.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import scipy.linalg.cython_blas as _cython_blas
import scipy.linalg.cython_lapack as _cython_lapack

from parla import native

__all__ = ["potrf", "trsm", "syrk", "gemm", "set_blas_threads", "get_blas_threads", "blas_library_path",
           "KernelError"]


class KernelError(RuntimeError):
    """A LAPACK routine reported failure (e.g. POTRF on a tile that is not positive definite)."""


# --- function pointers from SciPy's capsules ---------------------------------------------------------------

def _capsule_address(module: Any, name: str) -> int:
    # parla.native reads the capsule (its name is the C signature, its pointer the function).
    return int(native.function(module.__pyx_capi__[name], name=name).address)


_P = ctypes.c_void_p  # every Fortran argument is a pointer; passing raw addresses keeps the calls cheap

# CFUNCTYPE (not PYFUNCTYPE): calls through these pointers release the GIL.
_dgemm = ctypes.CFUNCTYPE(None, *([_P] * 13))(_capsule_address(_cython_blas, "dgemm"))
_dtrsm = ctypes.CFUNCTYPE(None, *([_P] * 11))(_capsule_address(_cython_blas, "dtrsm"))
_dsyrk = ctypes.CFUNCTYPE(None, *([_P] * 10))(_capsule_address(_cython_blas, "dsyrk"))
_dpotrf = ctypes.CFUNCTYPE(None, *([_P] * 5))(_capsule_address(_cython_lapack, "dpotrf"))


# --- constant arguments ---------------------------------------------------------------------------------------
# BLAS never writes its scalar/flag arguments, so one shared object per value serves every thread.

def _const(ctype: Any, value: Any) -> Tuple[Any, int]:
    obj = ctype(value)
    return obj, ctypes.addressof(obj)


_keep: List[Any] = []  # the constant objects, alive as long as the module


def _addr(ctype: Any, value: Any) -> int:
    obj, address = _const(ctype, value)
    _keep.append(obj)
    return address


_CH = {c: _addr(ctypes.c_char, c.encode()) for c in "LRUNT"}
_ONE = _addr(ctypes.c_double, 1.0)
_MINUS_ONE = _addr(ctypes.c_double, -1.0)
_ints: Dict[int, int] = {}


def _int(value: int) -> int:
    address = _ints.get(value)
    if address is None:
        # Concurrent first use may create two objects for one value; both stay alive and both are correct.
        address = _ints.setdefault(value, _addr(ctypes.c_int, value))
    return address


def _layout(a: np.ndarray, what: str) -> bool:
    """True for row-major (C) tiles, False for column-major (F); raises for anything else."""
    if a.dtype != np.float64 or a.ndim != 2:
        raise TypeError(f"{what}: need a 2-D float64 array, got {a.dtype} with shape {a.shape}")
    flags = a.flags
    if flags.c_contiguous:
        return True
    if flags.f_contiguous:
        return False
    raise ValueError(f"{what}: the tile must be C- or Fortran-contiguous")


_from_buffer: Callable[[Any], Any] = ctypes.c_char.from_buffer
_addressof: Callable[[Any], int] = ctypes.addressof


def _ptr(a: np.ndarray) -> int:
    """Address of the first element. ctypes' from_buffer is ~3x cheaper than __array_interface__ but needs
    a writable C-contiguous buffer; read-only tiles (PArray inputs) and Fortran-ordered ones take the slower
    path, read-only ones without paying for an exception."""
    if a.flags.writeable:
        try:
            return int(_addressof(_from_buffer(a)))
        except (TypeError, ValueError, BufferError):
            pass
    return int(a.__array_interface__["data"][0])


# --- kernels -------------------------------------------------------------------------------------------------

def potrf(a: np.ndarray) -> np.ndarray:
    """In place: the lower triangle of the square tile ``a`` becomes L with a = L L^T. Returns ``a``.

    Raises KernelError when the tile is not positive definite (LAPACK info > 0)."""
    c = _layout(a, "potrf")
    n = a.shape[0]
    if a.shape[1] != n:
        raise ValueError(f"potrf: tile must be square, got {a.shape}")
    if not a.flags.writeable:
        raise ValueError("potrf: tile is read-only")
    info = ctypes.c_int(0)
    # Row-major lower triangle == column-major upper triangle of the same (symmetric) matrix.
    _dpotrf(_CH["U" if c else "L"], _int(n), _ptr(a), _int(max(n, 1)), ctypes.addressof(info))
    if info.value != 0:
        raise KernelError(f"dpotrf failed: info={info.value} (leading minor {info.value} not positive definite)"
                          if info.value > 0 else f"dpotrf: illegal argument {-info.value}")
    return a


def trsm(l: np.ndarray, b: np.ndarray) -> np.ndarray:
    """In place: ``b := b @ inv(l).T`` with ``l`` lower triangular (m x m) and ``b`` (k x m). Returns ``b``."""
    cl = _layout(l, "trsm(l)")
    cb = _layout(b, "trsm(b)")
    m = l.shape[0]
    if l.shape[1] != m or b.shape[1] != m:
        raise ValueError(f"trsm: shapes {l.shape} and {b.shape} do not match")
    k = b.shape[0]
    if cl != cb:
        l = np.ascontiguousarray(l) if cb else np.asfortranarray(l)
    if cb:
        # Column-major view: B^T (m x k); solve (L^T)^T Y = B^T where L^T is the column-major view of l: upper.
        _dtrsm(_CH["L"], _CH["U"], _CH["T"], _CH["N"], _int(m), _int(k), _ONE, _ptr(l), _int(max(m, 1)),
               _ptr(b), _int(max(m, 1)))
    else:
        _dtrsm(_CH["R"], _CH["L"], _CH["T"], _CH["N"], _int(k), _int(m), _ONE, _ptr(l), _int(max(m, 1)),
               _ptr(b), _int(max(k, 1)))
    return b


def syrk(a: np.ndarray, c: np.ndarray) -> np.ndarray:
    """In place: lower triangle of ``c`` (n x n) := ``c - a @ a.T`` with ``a`` (n x k). Returns ``c``."""
    ca = _layout(a, "syrk(a)")
    cc = _layout(c, "syrk(c)")
    n, k = a.shape
    if c.shape != (n, n):
        raise ValueError(f"syrk: shapes {a.shape} and {c.shape} do not match")
    if ca != cc:
        a = np.ascontiguousarray(a) if cc else np.asfortranarray(a)
    if cc:
        # Column-major views: A^T (k x n, ld k) and C (symmetric; row-major lower == column-major upper).
        _dsyrk(_CH["U"], _CH["T"], _int(n), _int(k), _MINUS_ONE, _ptr(a), _int(max(k, 1)), _ONE, _ptr(c),
               _int(max(n, 1)))
    else:
        _dsyrk(_CH["L"], _CH["N"], _int(n), _int(k), _MINUS_ONE, _ptr(a), _int(max(n, 1)), _ONE, _ptr(c),
               _int(max(n, 1)))
    return c


def gemm(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """In place: ``c := c - a @ b.T`` with ``a`` (m x k), ``b`` (n x k), ``c`` (m x n). Returns ``c``."""
    ca = _layout(a, "gemm(a)")
    cb = _layout(b, "gemm(b)")
    cc = _layout(c, "gemm(c)")
    m, k = a.shape
    n = b.shape[0]
    if b.shape[1] != k or c.shape != (m, n):
        raise ValueError(f"gemm: shapes {a.shape}, {b.shape}, {c.shape} do not match")
    if ca != cc:
        a = np.ascontiguousarray(a) if cc else np.asfortranarray(a)
    if cb != cc:
        b = np.ascontiguousarray(b) if cc else np.asfortranarray(b)
    if cc:
        # Column-major: C^T (n x m) := C^T - B A^T, with B^T (k x n) and A^T (k x m) the column-major views.
        _dgemm(_CH["T"], _CH["N"], _int(n), _int(m), _int(k), _MINUS_ONE, _ptr(b), _int(max(k, 1)),
               _ptr(a), _int(max(k, 1)), _ONE, _ptr(c), _int(max(n, 1)))
    else:
        _dgemm(_CH["N"], _CH["T"], _int(m), _int(n), _int(k), _MINUS_ONE, _ptr(a), _int(max(m, 1)),
               _ptr(b), _int(max(n, 1)), _ONE, _ptr(c), _int(max(m, 1)))
    return c


# --- BLAS thread control --------------------------------------------------------------------------------------

class _DlInfo(ctypes.Structure):
    _fields_ = [("dli_fname", ctypes.c_char_p), ("dli_fbase", ctypes.c_void_p),
                ("dli_sname", ctypes.c_char_p), ("dli_saddr", ctypes.c_void_p)]


def _library_of(address: int) -> Optional[str]:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    try:
        dladdr = libc.dladdr
    except AttributeError:
        dladdr = ctypes.CDLL(ctypes.util.find_library("dl") or "libdl.so.2").dladdr
    dladdr.argtypes = [ctypes.c_void_p, ctypes.POINTER(_DlInfo)]
    dladdr.restype = ctypes.c_int
    info = _DlInfo()
    if dladdr(address, ctypes.byref(info)) == 0 or not info.dli_fname:
        return None
    return str(os.path.realpath(info.dli_fname.decode()))


def blas_library_path() -> Optional[str]:
    """Path of the OpenBLAS the kernels call: SciPy's bundled ``libscipy_openblas`` (LP64, symbols prefixed
    ``scipy_``), which the capsule functions of ``scipy.linalg.cython_blas`` forward to."""
    wrapper = ctypes.CDLL(_cython_blas.__file__)
    for symbol in ("scipy_dgemm_", "dgemm_"):
        # dlsym on the wrapper's handle searches its dependencies, i.e. finds the BLAS it is linked to.
        address = ctypes.cast(getattr(wrapper, symbol), ctypes.c_void_p).value \
            if hasattr(wrapper, symbol) else None
        if address:
            return _library_of(address)
    return None


def set_blas_threads(n: int) -> None:
    """Sets the number of threads of every BLAS library loaded in the process (NumPy's and SciPy's OpenBLAS;
    threadpoolctl finds them). Inside ``with Parla():`` the context already sets 1 (its ``blas_threads``)."""
    from threadpoolctl import threadpool_limits
    threadpool_limits(limits=int(n), user_api="blas")


def get_blas_threads() -> int:
    """Thread count of the OpenBLAS the kernels call (SciPy's), or -1 when threadpoolctl does not see it."""
    from threadpoolctl import threadpool_info
    path = blas_library_path()
    for lib in threadpool_info():
        if lib.get("user_api") == "blas" and path and os.path.realpath(lib["filepath"]) == path:
            return int(lib["num_threads"])
    return -1


# --- self-test and GIL measurement ----------------------------------------------------------------------------

def _self_test(rng: np.random.Generator) -> None:
    import scipy.linalg
    for order in ("C", "F"):
        for n, k in ((64, 64), (48, 80), (1, 3)):
            x = rng.standard_normal((n, n))
            spd = x @ x.T + n * np.eye(n)
            a = np.array(spd, order=order)
            potrf(a)
            expected = scipy.linalg.cholesky(spd, lower=True)
            assert np.allclose(np.tril(a), expected, rtol=1e-12, atol=1e-12), ("potrf", order, n)
            lo = np.array(np.tril(a), order=order)
            b0 = rng.standard_normal((k, n))
            b = np.array(b0, order=order)
            trsm(lo, b)
            assert np.allclose(b, b0 @ np.linalg.inv(lo).T, rtol=1e-10, atol=1e-10), ("trsm", order, n, k)
            a0 = rng.standard_normal((n, k))
            c0 = rng.standard_normal((n, n))
            c = np.array(c0, order=order)
            syrk(np.array(a0, order=order), c)
            assert np.allclose(np.tril(c), np.tril(c0 - a0 @ a0.T), rtol=1e-12, atol=1e-10), ("syrk", order, n, k)
            assert np.array_equal(np.triu(c, 1), np.triu(c0, 1)), ("syrk touched the upper triangle", order)
            m = n + 5
            ga, gb, gc0 = rng.standard_normal((m, k)), rng.standard_normal((n, k)), rng.standard_normal((m, n))
            gc = np.array(gc0, order=order)
            gemm(np.array(ga, order=order), np.array(gb, order=order), gc)
            assert np.allclose(gc, gc0 - ga @ gb.T, rtol=1e-12, atol=1e-10), ("gemm", order, m, n, k)
    # Mixed layouts are accepted (converted).
    c0 = rng.standard_normal((8, 8))
    c = c0.copy()
    gemm(np.asfortranarray(np.eye(8)), np.eye(8), c)
    assert np.allclose(c, c0 - np.eye(8))
    try:
        potrf(-np.eye(4))
    except KernelError:
        pass
    else:
        raise AssertionError("potrf accepted a matrix that is not positive definite")


def measure_speedup(size: int = 512, calls: int = 20, threads: int = 2, kernel: str = "gemm",
                    repeat: int = 3) -> Tuple[float, float]:
    """Seconds for ``threads`` threads each making ``calls`` kernel calls, run serially vs concurrently
    (best of ``repeat``).

    Returns (serial_seconds, parallel_seconds); the speed-up is their ratio (ideal: ``threads``)."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((size, size))
    spd = x @ x.T + size * np.eye(size)
    # A well-conditioned unit-diagonal triangle, so repeated solves neither overflow nor underflow.
    tri = np.eye(size) + 1e-3 * np.tril(rng.standard_normal((size, size)), -1)
    work = []
    for _ in range(threads):
        a, b, c = rng.standard_normal((size, size)), rng.standard_normal((size, size)), rng.standard_normal((size, size))
        work.append((a, b, c, spd.copy()))

    def run(item: Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]) -> None:
        a, b, c, s = item
        for _ in range(calls):
            if kernel == "gemm":
                gemm(a, b, c)
            elif kernel == "syrk":
                syrk(a, c)
            elif kernel == "trsm":
                trsm(tri, c)
            else:
                s[...] = spd
                potrf(s)

    return serial_vs_threads(run, work, repeat)


def serial_vs_threads(run: Callable[[Any], None], work: List[Any], repeat: int = 3) -> Tuple[float, float]:
    """(seconds to call run on every item in turn, seconds with one thread per item), best of repeat."""
    import threading
    import time
    run(work[0])  # warm up
    serial = parallel = float("inf")
    for _ in range(repeat):  # best of `repeat`: the machine may be shared
        t0 = time.perf_counter()
        for item in work:
            run(item)
        serial = min(serial, time.perf_counter() - t0)
        pool = [threading.Thread(target=run, args=(item,)) for item in work]
        t0 = time.perf_counter()
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        parallel = min(parallel, time.perf_counter() - t0)
    return serial, parallel


def main() -> None:
    import argparse
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    set_blas_threads(1)
    print(f"BLAS library: {blas_library_path()} (threads now {get_blas_threads()})")
    _self_test(np.random.default_rng(0))
    print("self-test: potrf, trsm, syrk, gemm match NumPy/SciPy (row- and column-major tiles)")
    for kernel in ("gemm", "syrk", "trsm", "potrf"):
        serial, parallel = measure_speedup(args.size, args.calls, args.threads, kernel)
        print(f"{kernel:5s} {args.threads} threads x {args.calls} calls of {args.size}x{args.size}: "
              f"serial {serial:.3f} s, concurrent {parallel:.3f} s, speed-up {serial / parallel:.2f}x")
    # The f2py wrapper, for comparison: it holds the GIL during the call.
    import scipy.linalg.blas as fblas
    rng = np.random.default_rng(2)
    # Fortran-ordered inputs, so the wrapper copies nothing and the comparison is about the GIL only.
    mats = [(np.asfortranarray(rng.standard_normal((args.size, args.size))),
             np.asfortranarray(rng.standard_normal((args.size, args.size)))) for _ in range(args.threads)]

    def f2py_run(pair: Tuple[np.ndarray, np.ndarray]) -> None:
        for _ in range(args.calls):
            fblas.dgemm(1.0, pair[0], pair[1])  # pyright: ignore[reportAttributeAccessIssue]
    serial, parallel = serial_vs_threads(f2py_run, mats)
    print(f"(scipy.linalg.blas.dgemm, f2py, for comparison: serial {serial:.3f} s, concurrent {parallel:.3f} s, "
          f"speed-up {serial / parallel:.2f}x)")


if __name__ == "__main__":
    main()
