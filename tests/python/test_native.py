"""Native task bodies (parla.native) and the tile kernels built on them (parla.kernels): values against
NumPy/SciPy, the functions accepted (ctypes, cffi, Numba-style, SciPy capsules, addresses), errors at spawn
and at run time, and that a worker runs a native body without the GIL."""
import ctypes
import time

import numpy as np
import pytest
import scipy.linalg

from parla import Parla, TaskSpace, kernels, native, spawn
from parla.array import asarray

libc = ctypes.CDLL(None)


def c_function(name, restype, *argtypes):
    fn = getattr(libc, name)
    fn.restype = restype
    fn.argtypes = list(argtypes)
    return fn


c_abs = c_function("abs", ctypes.c_int, ctypes.c_int)
c_memset = c_function("memset", ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t)
c_memcpy = c_function("memcpy", ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)
c_usleep = c_function("usleep", ctypes.c_int, ctypes.c_uint)


def spd(n, rng):
    x = rng.standard_normal((n, n))
    return x @ x.T + n * np.eye(n)


# ----------------------------------------------------------------------------------- kernels -- #

@pytest.mark.timeout(60)
@pytest.mark.parametrize("m,n,k", [(64, 64, 64), (40, 30, 20), (1, 3, 5)])
def test_kernels_match_numpy_and_scipy(m, n, k):
    rng = np.random.default_rng(m + n + k)
    a, b, c = rng.standard_normal((m, k)), rng.standard_normal((n, k)), rng.standard_normal((m, n))
    s = spd(n, rng)
    low = scipy.linalg.cholesky(s, lower=True)
    rhs = rng.standard_normal((k, n))
    sa, sc = rng.standard_normal((n, k)), rng.standard_normal((n, n))
    A, B, C = asarray(a.copy()), asarray(b.copy()), asarray(c.copy())
    S, L, R = asarray(s.copy()), asarray(low.copy()), asarray(rhs.copy())
    SA, SC = asarray(sa.copy()), asarray(sc.copy())
    with Parla(n_workers=2):
        T = TaskSpace("T")
        spawn(T[0], input=[A, B], inout=[C])(kernels.gemm(A, B, C))
        spawn(T[1], inout=[S])(kernels.potrf(S))
        spawn(T[2], input=[L], inout=[R])(kernels.trsm(L, R))
        spawn(T[3], input=[SA], inout=[SC])(kernels.syrk(SA, SC))
    np.testing.assert_allclose(C.array, c - a @ b.T, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np.tril(S.array), low, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(np.triu(S.array, 1), np.triu(s, 1))  # LAPACK leaves the other triangle
    np.testing.assert_allclose(R.array, rhs @ np.linalg.inv(low).T, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(np.tril(SC.array), np.tril(sc - sa @ sa.T), rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(np.triu(SC.array, 1), np.triu(sc, 1))


@pytest.mark.timeout(60)
def test_kernels_on_views_of_a_larger_matrix():
    """A tile that is a view of a bigger C-order matrix: its row stride is the leading dimension; the
    elements around it are not touched."""
    rng = np.random.default_rng(1)
    big = rng.standard_normal((96, 80))
    a, b = rng.standard_normal((32, 16)), rng.standard_normal((24, 16))
    M, A, B = asarray(big.copy()), asarray(a), asarray(b)
    V = M[8:40, 50:74]
    with Parla(n_workers=2):
        spawn(TaskSpace("T")[0], input=[A, B], inout=[V])(kernels.gemm(A, B, V))
    expected = big.copy()
    expected[8:40, 50:74] -= a @ b.T
    np.testing.assert_allclose(M.array, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.timeout(60)
def test_cholesky_native_bodies_match_python_bodies_bit_for_bit():
    import sys
    import os
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "examples"))
    import cholesky
    a = cholesky.make_spd(512, seed=3)
    l_native, _ = cholesky.run(a, 64, workers=2, native=True)
    l_python, _ = cholesky.run(a, 64, workers=2)
    assert cholesky.residual(a, l_native) < 1e-12
    np.testing.assert_array_equal(l_native, l_python)


@pytest.mark.timeout(30)
def test_potrf_of_a_matrix_not_positive_definite_fails_the_task_with_info():
    S = asarray(-np.eye(4))
    X = asarray(np.zeros((4, 4)))
    with pytest.raises(native.NativeError, match=r"task POTRF\[0\]: native body dpotrf set its status argument "
                                                 r"\(argument 4\) to 1") as info:
        with Parla(n_workers=2):
            P = TaskSpace("POTRF")
            spawn(P[0], inout=[S])(kernels.potrf(S))
            spawn(P[1], input=[S], inout=[X])(kernels.gemm(S, S, X))
    assert info.value.code == 1
    assert P[0].state == "failed" and P[1].state == "cancelled"


@pytest.mark.timeout(30)
def test_kernel_arguments_are_checked_when_the_body_is_made():
    A = asarray(np.zeros((4, 4)))
    B = asarray(np.zeros((3, 5)))
    with pytest.raises(ValueError, match="gemm: shapes"):
        kernels.gemm(A, B, A)
    with pytest.raises(TypeError, match="float64"):
        kernels.potrf(asarray(np.zeros((4, 4), dtype=np.float32)))
    with pytest.raises(ValueError, match="square"):
        kernels.potrf(B)
    with pytest.raises(TypeError, match="PArray"):
        kernels.potrf(np.eye(3))
    with pytest.raises(ValueError, match="rows must be contiguous"):
        kernels.potrf(asarray(np.eye(8))[::2, ::2])


@pytest.mark.timeout(30)
def test_kernel_calls_made_in_c_equal_those_made_in_python():
    """parla.kernels makes its calls in C (parla._core._tile_call) for float64 C-order tiles: the same
    function, arguments and slots as the Python construction (kernels._gemm, ...), views included."""
    from parla import _core
    from parla.array import PArray
    big = asarray(np.zeros((96, 80)))
    A, B, C = asarray(np.ones((4, 3))), asarray(np.ones((5, 3))), asarray(np.ones((4, 5)))
    S, R = asarray(np.eye(5)), asarray(np.ones((2, 5)))
    V, W = big[8:13, 50:55], big[0:2, 10:15]
    pairs = [(kernels.gemm, kernels._gemm, (A, B, C)), (kernels.potrf, kernels._potrf, (S,)),
             (kernels.trsm, kernels._trsm, (S, R)), (kernels.syrk, kernels._syrk, (B, S)),
             (kernels.potrf, kernels._potrf, (V,)), (kernels.trsm, kernels._trsm, (V, W))]

    def same(x, y):
        return x is y if isinstance(x, PArray) else (type(x), x) == (type(y), y)
    for public, python, tiles in pairs:
        made, expected = public(*tiles), python(*tiles)
        assert type(made) is native.Call and made.function is expected.function
        assert made.slots == expected.slots and len(made.args) == len(expected.args)
        assert all(same(x, y) for x, y in zip(made.args, expected.args)), (made.args, expected.args)
    assert _core._tile_call(3, kernels._functions["dgemm"], A, B, C) is not None  # made in C, not by _gemm
    assert _core._tile_call(3, kernels._functions["dgemm"], A, A, C) is None  # shapes that do not match: Python
    assert _core._tile_call(0, kernels._functions["dpotrf"], asarray(np.eye(3, dtype=np.float32))) is None


# --------------------------------------------------------------------------------- functions -- #

@pytest.mark.timeout(30)
def test_ctypes_body_writes_the_copy_on_the_tasks_device():
    X = asarray(np.zeros(64, dtype=np.uint8))
    with Parla(n_workers=2, virtual_gpus=1):
        from parla.devices import gpu
        T = TaskSpace("T")
        spawn(T[0], placement=gpu, inout=[X])(native.call(c_memset, X, 7, 64))
        t = T[0]
    assert t.devices[0].architecture is gpu
    np.testing.assert_array_equal(X.array, np.full(64, 7, dtype=np.uint8))


@pytest.mark.timeout(30)
def test_views_resolve_to_their_offset_in_the_copy():
    X = asarray(np.zeros(100, dtype=np.uint8))
    V = X[10:20]
    with Parla(n_workers=2, virtual_gpus=1):
        from parla.devices import gpu
        spawn(TaskSpace("T")[0], placement=gpu, inout=[V])(native.call(c_memset, V, 5, 10))
    expected = np.zeros(100, dtype=np.uint8)
    expected[10:20] = 5
    np.testing.assert_array_equal(X.array, expected)


@pytest.mark.timeout(30)
def test_nonzero_return_fails_the_task_naming_it_and_cancels_dependents():
    with pytest.raises(native.NativeError, match=r"task T\[0\]: native body abs returned 5") as info:
        with Parla(n_workers=2):
            T = TaskSpace("T")
            spawn(T[0])(native.call(c_abs, -5))
            spawn(T[1], dependencies=[T[0]])(native.call(c_abs, 0))
    assert info.value.code == 5
    assert T[0].state == "failed" and T[1].state == "cancelled"


@pytest.mark.timeout(30)
def test_status_argument_and_ref():
    """memcpy(status, &7, 4): the status int becomes 7 after the call, which fails the task."""
    with pytest.raises(native.NativeError, match=r"status argument \(argument 0\) to 7"):
        with Parla(n_workers=2):
            spawn(TaskSpace("T")[0])(native.call(c_memcpy, native.status, native.ref(7, ctypes.c_int32), 4))
    with Parla(n_workers=2):
        T = TaskSpace("T")
        spawn(T[0])(native.call(c_memcpy, native.status, native.ref(0, ctypes.c_int32), 4))
    assert T[0].state == "done"


@pytest.mark.timeout(30)
def test_array_descriptor():
    src = np.arange(12, dtype=np.float64).reshape(3, 4)
    A = asarray(src)
    V = A[1:3, 1:4]
    out = asarray(np.zeros(ctypes.sizeof(native.ArrayDesc), dtype=np.uint8))
    with Parla(n_workers=2):
        T = TaskSpace("T")
        spawn(T[0], input=[A], output=[out])(
            native.call(c_memcpy, out, native.array(V), ctypes.sizeof(native.ArrayDesc)))
    d = native.ArrayDesc.from_buffer_copy(out.array.tobytes())
    assert d.data == src.ctypes.data + 1 * 32 + 1 * 8  # the CPU copy is the host array
    assert (d.ndim, d.itemsize, d.device, d.mode) == (2, 8, 0, 1)
    assert list(d.shape[:2]) == [2, 3] and list(d.strides[:2]) == [32, 8]


@pytest.mark.timeout(30)
def test_cffi_function():
    cffi = pytest.importorskip("cffi")
    ffi = cffi.FFI()
    ffi.cdef("int abs(int); void *memset(void *, int, size_t);")
    lib = ffi.dlopen(None)
    X = asarray(np.zeros(8, dtype=np.uint8))
    with pytest.raises(native.NativeError, match=r"task T\[0\]: native body .*returned 3"):
        with Parla(n_workers=2):
            T = TaskSpace("T")
            spawn(T[0])(native.call(lib.abs, 3))
            spawn(T[1], inout=[X])(native.call(lib.memset, X, 9, 8))
    np.testing.assert_array_equal(X.array, np.full(8, 9, dtype=np.uint8))


@pytest.mark.timeout(30)
def test_numba_style_cfunc_and_raw_address():
    class CFunc:  # what numba.cfunc gives: .address and .ctypes
        def __init__(self, fn):
            self.ctypes = fn
            self.address = ctypes.cast(fn, ctypes.c_void_p).value
            self.__name__ = "numba_abs"

    address = ctypes.cast(c_abs, ctypes.c_void_p).value
    with pytest.raises(native.NativeError) as info:
        with Parla(n_workers=2):
            T = TaskSpace("T")
            spawn(T[0])(native.call(CFunc(c_abs), 0))
            spawn(T[1])(native.call(address, -2, argtypes=[ctypes.c_int], restype=ctypes.c_int))
    assert "native body function at" in str(info.value) and info.value.code == 2
    assert T[0].state == "done" and T[1].state == "failed"


@pytest.mark.timeout(30)
def test_a_c_bool_parameter_takes_bools():
    """A ctypes.c_bool parameter (type code 'o') takes True, False, 0 and 1; other numbers are refused. The
    function here is abs called through a bool parameter: it returns the bool, and 1 fails the task."""
    address = ctypes.cast(c_abs, ctypes.c_void_p).value
    fn = native.function(address, argtypes=[ctypes.c_bool], restype=ctypes.c_int, name="abs_of_bool")
    assert fn.argtypes == "o"
    with pytest.raises(native.NativeError, match=r"task T\[1\]: native body abs_of_bool returned 1") as info:
        with Parla(n_workers=2):
            T = TaskSpace("T")
            spawn(T[0])(native.call(fn, False))
            spawn(T[2])(native.call(fn, 0))
            with pytest.raises(OverflowError, match=r"task T\[3\]: argument 0 of native body abs_of_bool: 2 does not "
                                                    r"fit its C type bool"):
                spawn(T[3])(native.call(fn, 2))
            with pytest.raises(TypeError, match=r"task T\[3\]: argument 0 of native body abs_of_bool: its C type is "
                                                r"bool, not a float"):
                spawn(T[3])(native.call(fn, 1.0))
            spawn(T[1], [T[0], T[2]])(native.call(fn, True))
    assert info.value.code == 1
    assert (T[0].state, T[1].state, T[2].state) == ("done", "failed", "done")


# ------------------------------------------------------------------------------ spawn errors -- #

@pytest.mark.timeout(30)
@pytest.mark.parametrize("args,error,match", [
    (("x",), TypeError, r"argument 0 of native body abs: its C type is int32, not a str"),
    ((2.5,), TypeError, r"argument 0 of native body abs: its C type is int32, not a float"),
    ((2 ** 40,), OverflowError, r"argument 0 of native body abs: 1099511627776 does not fit its C type int32"),
    ((1, 2), TypeError, r"native body abs takes 1 arguments, 2 given"),
    ((True,), TypeError, r"argument 0 of native body abs: True is a bool, and its C type is int32"),
    ((np.bool_(False),), TypeError, r"argument 0 of native body abs: its C type is int32, not a numpy.bool"),
    ((np.zeros(3),), TypeError, r"argument 0 of native body abs is a NumPy array"),
])
def test_wrong_arguments_are_refused_at_spawn_naming_them(args, error, match):
    with Parla(n_workers=2):
        T = TaskSpace("T")
        with pytest.raises(error, match=r"task T\[0\]: " + match):
            spawn(T[0])(native.call(c_abs, *args))
        assert T[0].state == "created"  # the refused spawn left no trace
        spawn(T[0])(native.call(c_abs, 0))  # and the task can still be spawned


@pytest.mark.timeout(30)
def test_parray_arguments_are_checked_at_spawn():
    X = asarray(np.zeros(8))
    F = asarray(np.zeros(8, dtype=np.float32))
    dgemm = native.blas("dgemm")
    with Parla(n_workers=2):
        T = TaskSpace("T")
        with pytest.raises(ValueError, match=r"task T\[0\]: argument 0 of native body memset is .*PArray.* which "
                                             r"the task does not declare"):
            spawn(T[0])(native.call(c_memset, X, 0, 8))
        with pytest.raises(TypeError, match=r"task T\[0\]: argument 6 of native body dgemm is .* float32.* takes "
                                            r"a pointer to float64"):
            spawn(T[0], inout=[F])(native.call(dgemm, "N", "N", 1, 1, 1, 1.0, F, 1, F, 1, 1.0, F, 1))
        with pytest.raises(TypeError, match=r"task T\[0\]: argument 1 of native body memset is a PArray; its C "
                                            r"type is not a pointer"):
            spawn(T[0], inout=[X])(native.call(c_memset, X, X, 8))
        with pytest.raises(TypeError, match="index lists or a mask"):
            spawn(T[0], inout=[X])(native.call(c_memset, X[[0, 1, 5]], 0, 2))
        assert T[0].state == "created"


@pytest.mark.timeout(30)
def test_functions_that_cannot_be_native_bodies():
    untyped = libc.labs  # no argtypes
    with pytest.raises(TypeError, match="set its argtypes"):
        native.call(untyped, 1)
    with pytest.raises(TypeError, match="must be a ctypes, cffi or Numba function pointer"):
        native.call(len, 1)
    with pytest.raises(TypeError, match="needs argtypes"):
        native.call(1234)
    with pytest.raises(ValueError, match="no such routine"):
        native.blas("nope")


# -------------------------------------------------------------------------------------- GIL -- #

class Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


@pytest.mark.timeout(60)
def test_native_bodies_run_while_the_main_thread_holds_the_gil():
    """The main thread waits on a semaphore through ctypes.PyDLL, which keeps the GIL for the whole wait;
    two chained native tasks (a 0.2 s sleep, then sem_post) must finish meanwhile. A body, hook or wake-up
    that took the GIL would block until the 10 s deadline and the wait would time out."""
    sem = ctypes.create_string_buffer(64)
    assert libc.sem_init(sem, 0, 0) == 0
    sem_post = c_function("sem_post", ctypes.c_int, ctypes.c_void_p)
    holding = ctypes.PyDLL(None).sem_timedwait  # PyDLL: the GIL stays held during the call
    holding.argtypes = [ctypes.c_void_p, ctypes.POINTER(Timespec)]
    holding.restype = ctypes.c_int
    with Parla(n_workers=2):
        T = TaskSpace("T")
        # Worker threads attach to the interpreter when they start (that takes the GIL): let both start first.
        warm = [spawn(TaskSpace("W")[i])(lambda: time.sleep(0.05)) for i in range(4)]
        for w in warm:
            w.wait(10)
        spawn(T[0])(native.call(c_usleep, 200000))
        spawn(T[1], dependencies=[T[0]])(native.call(sem_post, ctypes.addressof(sem)))
        deadline = time.time() + 10
        ts = Timespec(int(deadline), int((deadline % 1) * 1e9))
        rc = holding(ctypes.addressof(sem), ctypes.byref(ts))
        waited_until = time.time()
    assert rc == 0, "the native bodies did not run while the main thread held the GIL"
    assert waited_until < deadline
    libc.sem_destroy(sem)


@pytest.mark.timeout(30)
def test_a_worker_lets_the_gil_go_before_a_native_body():
    """One worker runs a Python body (it then holds the GIL) and, next, a native body calling
    PyGILState_Check, which returns 1 (a failure) if the worker still holds the GIL."""
    gil_check = native.function(ctypes.cast(ctypes.pythonapi.PyGILState_Check, ctypes.c_void_p).value,
                                argtypes=[], restype=ctypes.c_int, name="PyGILState_Check")
    with Parla(n_workers=1):
        T = TaskSpace("T")
        for i in range(0, 20, 2):
            @spawn(T[i], dependencies=[T[i - 1]] if i else [])
            def python_body():
                return sum(range(1000))
            spawn(T[i + 1], dependencies=[T[i]])(native.call(gil_check))
    assert all(T[i].state == "done" for i in range(20))


@pytest.mark.timeout(60)
def test_native_bodies_in_a_replayed_graph():
    """A captured native body is replayed like a Python one: each replay subtracts the identity again."""
    from parla import capture
    A, B = asarray(np.eye(16)), asarray(np.eye(16))
    C = asarray(np.zeros((16, 16)))
    with Parla(n_workers=2):
        T = TaskSpace("T")
        with capture("step") as step:
            spawn(T[0], input=[A, B], inout=[C])(kernels.gemm(A, B, C))
        for _ in range(3):
            step.replay()
        step.wait(30)
    np.testing.assert_array_equal(C.array, -4 * np.eye(16))


@pytest.mark.timeout(30)
def test_calling_a_native_body_outside_tasks_uses_the_cpu_copies():
    X = asarray(np.zeros(8, dtype=np.uint8))
    with Parla(n_workers=2):
        T = TaskSpace("T")
        body = native.call(c_memset, X, 1, 8)._bind(T[0], {"_modes": {id(X): 3}})
        body()  # on this thread, GIL released; X was never used by a task: its CPU copy is the host array
        failing = native.call(c_abs, -3)._bind(T[1], {})
        with pytest.raises(native.NativeError, match=r"task \(none\): native body abs returned 3"):
            failing()
    np.testing.assert_array_equal(X.array, np.ones(8, dtype=np.uint8))


@pytest.mark.timeout(30)
def test_anonymous_native_task_is_named_after_its_function():
    # It was named task#N: a Python body's anonymous task is named after the function, and so is a native one.
    with Parla(n_workers=1):
        X = asarray(np.zeros(8, dtype=np.uint8))
        t = spawn(inout=[X])(native.call(c_memset, X, 3, 8))
        u = spawn(inout=[X], dependencies=[t])(native.call(c_memset, X, 4, 8))
    assert t.name.startswith("memset#") and u.name.startswith("memset#") and t.name != u.name, (t.name, u.name)
    assert (X.array == 4).all()
