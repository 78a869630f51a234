"""Native task bodies: a C function and its arguments, called by a worker without the GIL. For example::

    import ctypes
    from parla import Parla, TaskSpace, spawn, native
    from parla.array import asarray

    scale = ctypes.CDLL("./libscale.so").scale          # int scale(double *x, long n, double factor)
    scale.argtypes = [ctypes.POINTER(ctypes.c_double), ctypes.c_long, ctypes.c_double]
    scale.restype = ctypes.c_int

    with Parla():
        T = TaskSpace("T")
        A = asarray(np.ones(1000))
        spawn(T[0], inout=[A])(native.call(scale, A, A.shape[0], 2.0))

Instead of decorating a Python function, ``spawn(...)`` is applied to :func:`call`'s result: the task's body is
then the C function, called with the arguments given, on a worker thread that does not take the GIL (nor
runs any Python) to run it. Dependencies, placement, priorities and data declarations are those of any task.

Functions (:func:`function` turns each into a :class:`parla._core.NativeFunction`, cached):

- a ctypes function pointer (``CDLL(...).f`` or ``CFUNCTYPE(...)(address)``) with ``argtypes`` set
  (``restype`` is ctypes' own: ``c_int`` unless set);
- a cffi function pointer (``lib.f`` of ``ffi.dlopen``, or ``ffi.cast("int(*)(double *)", address)``);
- a Numba ``@cfunc`` (through its ``.ctypes`` pointer);
- a PyCapsule of ``scipy.linalg.cython_blas.__pyx_capi__`` or ``cython_lapack.__pyx_capi__``, whose name
  gives the signature: :func:`blas` and :func:`lapack` take them by name (``native.blas("dgemm")``);
- an integer address, with ``argtypes=`` (ctypes types) and ``restype=`` (a ctypes type or None).

Arguments, one per C parameter (at most 32), converted and checked at spawn (a wrong one raises TypeError or
OverflowError naming the task and the argument's position, and the spawn changes nothing):

- a :class:`~parla.array.PArray` (declared by the task in ``input=``, ``output=`` or ``inout=``; a view of one
  counts if the task declared the whole array or a view covering it) for a pointer parameter: the address
  of the array's first element *in the copy on the task's device*, found when the task runs (a copy that
  the runtime moved is found where it is). The copy has the host array's layout: its shape and strides
  (bytes) are ``A.shape`` and ``A.array.strides`` outside tasks, fixed at spawn; pass them as numbers. A
  view made with index lists or masks (a NumPy copy) is refused;
- :func:`array` ``(A)``: the address of an :class:`ArrayDesc` (data pointer, ndim, itemsize, device, mode,
  shape, strides), for C code that wants the whole description;
- a number (int, float, NumPy scalar) for a scalar parameter, range-checked for its C type (no float is
  truncated to an int, and a bool is refused: ``True`` is not taken for ``1``); a bool (or 0, 1) for a C
  ``bool`` parameter (``ctypes.c_bool``, ``_Bool``); for a parameter that points to a scalar (``int *``, ``double *``: Fortran's
  convention), the number is passed by reference (a copy the body holds); :func:`ref` passes one explicitly
  for an untyped pointer;
- a one-character ``bytes`` or ``str`` for a ``char *`` parameter (BLAS's flags ``b"N"``, ``"T"``), by reference;
- None for a NULL pointer; an int for an untyped pointer (``void *``): that address;
- :data:`status` for an ``int *`` parameter: an int32 set to 0 before the call; nonzero after it fails the
  task (LAPACK's ``info``);
- :data:`stream`: the task's CUDA stream (``CUstream``) on its first device, NULL off CUDA GPUs.

Failure. An integer return value that is nonzero, or a nonzero :data:`status`, fails the task with
:class:`NativeError` (a RuntimeError whose message names the task, the function and the value; ``code`` is the
value), reported at the context's exit like a Python body's exception, and its dependents are cancelled.
Floating-point and pointer return values are ignored. A crash in the function (a bad pointer) is a crash:
the runtime cannot catch it.

Threads and devices. The function runs on a worker thread, without the GIL, on the task's first device:
on the CPU and virtual GPUs its PArray arguments are host memory. A function declared
``device_pointers=True`` may run on a CUDA GPU, where PArray arguments are device pointers and the
device's primary context is current (queue work on :data:`stream`); without it a task mapped to a CUDA GPU
fails with NativeError instead of handing host code device memory. The function must not call Python.
Tasks whose body is native ignore task environments (``Parla(environments=)``, ``tags=``).
"""
from __future__ import annotations

import ctypes
from typing import Any, Dict, Iterable, Optional, Sequence, Tuple

import numpy as np

from . import _core, _ranges
from .array import PArray, _declared

__all__ = ["call", "function", "blas", "lapack", "array", "ref", "status", "stream", "Call", "ArrayDesc",
           "NativeError"]

NativeError = _core.NativeError

MAX_DIMS = _core.NATIVE_MAX_DIMS
_CFuncPtr: Any = ctypes.CFUNCTYPE(None).__mro__[1]  # the base of every ctypes function pointer type


class ArrayDesc(ctypes.Structure):
    """What :func:`array` passes a pointer to (C: ``struct { void *data; int64_t ndim, itemsize, device, mode;
    int64_t shape[8], strides[8]; }``): ``data`` the first element of the copy on ``device`` (engine index, 0 =
    cpu), ``shape`` in elements and ``strides`` in bytes (the first ``ndim`` of each), ``mode`` 1 input, 2
    output, 3 inout."""

    _fields_ = [("data", ctypes.c_void_p), ("ndim", ctypes.c_int64), ("itemsize", ctypes.c_int64),
                ("device", ctypes.c_int64), ("mode", ctypes.c_int64), ("shape", ctypes.c_int64 * MAX_DIMS),
                ("strides", ctypes.c_int64 * MAX_DIMS)]


class _Marker:
    __slots__ = ("name", "item")

    def __init__(self, name: str, item: Tuple[int, ...]) -> None:
        self.name = name
        self.item = item

    def __repr__(self) -> str:
        return f"parla.native.{self.name}"


status = _Marker("status", (_core.NATIVE_STATUS,))
"""An ``int *`` argument: an int32, 0 before the call; nonzero after it fails the task with NativeError."""

stream = _Marker("stream", (_core.NATIVE_STREAM,))
"""The task's CUDA stream on its first device (a ``CUstream``), NULL off CUDA GPUs."""


class _Desc:
    __slots__ = ("parray",)

    def __init__(self, parray: PArray) -> None:
        self.parray = parray


def array(a: PArray) -> Any:
    """An argument passing a pointer to an :class:`ArrayDesc` of PArray ``a``'s copy on the task's device."""
    if not isinstance(a, PArray):
        raise TypeError(f"native.array() takes a PArray, not {type(a).__name__}")
    return _Desc(a)


_CODES = {"b": "b", "B": "B", "h": "h", "H": "H", "i": "i", "I": "I", "l": "l", "L": "L", "q": "l", "Q": "L",
          "f": "f", "d": "d", "?": "o", "c": "b"}


def _ctype_code(t: Any) -> Tuple[str, str]:
    """(type code, pointee code) of a ctypes type; raises TypeError for one a native body cannot pass."""
    if t is None:
        return "v", "?"
    letter = getattr(t, "_type_", None)
    if isinstance(t, type) and issubclass(t, ctypes._Pointer):
        target = letter  # a pointer type's _type_ is the type it points to
        inner = getattr(target, "_type_", None)
        return "p", _sized(target, inner) if isinstance(inner, str) and inner in _CODES else "?"
    if isinstance(letter, str):
        if letter in ("P", "Z", "O"):
            return "p", "?"
        if letter == "z":
            return "p", "b"
        if letter in _CODES:
            return _sized(t, letter), "?"
    if isinstance(t, type) and issubclass(t, _CFuncPtr):
        return "p", "?"
    raise TypeError(f"the C type {getattr(t, '__name__', t)!r} cannot be passed to a native body (numbers, "
                    f"pointers and function pointers can; structures by value and long double cannot)")


def _sized(t: Any, letter: str) -> str:
    if letter in ("f", "d"):
        return letter
    if letter == "?" and ctypes.sizeof(t) == 1:
        return "o"  # C's bool
    size = ctypes.sizeof(t)
    signed = letter.islower() and letter not in ("?",)
    codes = {1: "b", 2: "h", 4: "i", 8: "l"} if signed else {1: "B", 2: "H", 4: "I", 8: "L"}
    if size not in codes:
        raise TypeError(f"the C type {t.__name__} ({size} bytes) cannot be passed to a native body")
    return codes[size]


def _cffi_code(ct: Any) -> Tuple[str, str]:
    import _cffi_backend as backend  # pyright: ignore[reportMissingImports]
    kind = ct.kind
    if kind == "void":
        return "v", "?"
    if kind == "pointer" or kind == "function":
        if kind == "function":
            return "p", "?"
        item = ct.item
        if item.kind == "primitive":
            return "p", _cffi_code(item)[0]
        return "p", "?"
    if kind == "primitive":
        name = ct.cname
        if name in ("float", "double"):
            return ("f" if name == "float" else "d"), "?"
        if name in ("long double",):
            raise TypeError("long double cannot be passed to a native body")
        size = backend.sizeof(ct)
        if name in ("_Bool", "bool") and size == 1:
            return "o", "?"
        if name == "char":
            signed = True
        else:
            signed = int(backend.cast(ct, -1)) < 0  # pyright: ignore[reportArgumentType]
        codes = {1: "b", 2: "h", 4: "i", 8: "l"} if signed else {1: "B", 2: "H", 4: "I", 8: "L"}
        if size in codes:
            return codes[size], "?"
    if kind == "enum":
        return "i", "?"
    raise TypeError(f"the C type {ct.cname!r} cannot be passed to a native body")


def _capsule_type(text: str) -> Tuple[str, str]:
    """(code, pointee) of one C type in a Cython capsule signature ('int *', '..._blas_d *', 'char *')."""
    text = text.strip()
    pointer = text.endswith("*")
    base = text.rstrip("*").strip()
    if base == "void":
        code = "v"
    elif base == "char":
        code = "b"
    elif base == "int":
        code = "i"
    elif base in ("double",) or base.endswith("_d"):
        code = "d"
    elif base in ("float",) or base.endswith("_s"):
        code = "f"
    else:
        code = "?"  # complex numbers, callbacks: only through a pointer
    if pointer:
        return "p", code if code != "v" else "?"
    if code == "?":
        raise TypeError(f"the C type {text!r} cannot be passed to a native body by value")
    return code, "?"


_PyCapsule_GetName = ctypes.pythonapi.PyCapsule_GetName
_PyCapsule_GetName.restype = ctypes.c_char_p
_PyCapsule_GetName.argtypes = [ctypes.py_object]
_PyCapsule_GetPointer = ctypes.pythonapi.PyCapsule_GetPointer
_PyCapsule_GetPointer.restype = ctypes.c_void_p
_PyCapsule_GetPointer.argtypes = [ctypes.py_object, ctypes.c_char_p]


def _from_capsule(capsule: Any, name: str) -> Any:
    signature = (_PyCapsule_GetName(capsule) or b"").decode()
    head, _, rest = signature.partition("(")
    if not rest.endswith(")"):
        raise TypeError(f"native function {name}: the capsule's name {signature!r} is not a C signature")
    restype = _capsule_type(head)[0]
    params = [p for p in rest[:-1].split(",") if p.strip()]
    codes = [_capsule_type(p) for p in params]
    address = _PyCapsule_GetPointer(capsule, _PyCapsule_GetName(capsule))
    return _core.NativeFunction(address, restype, "".join(c for c, _ in codes), "".join(p for _, p in codes),
                                name, capsule)


_cache: Dict[Any, Tuple[Any, Any]] = {}  # key -> (the object, so its id is not reused; its NativeFunction)


def function(fn: Any, argtypes: Optional[Sequence[Any]] = None, restype: Any = None,
             name: Optional[str] = None) -> Any:
    """The :class:`parla._core.NativeFunction` (address and signature, prepared for libffi once) of ``fn``: a
    ctypes, cffi or Numba function pointer, a SciPy Cython capsule, an integer address (with ``argtypes``: a
    list of ctypes types, and ``restype``: a ctypes type or None for void), or a NativeFunction (returned as
    is). ``argtypes``/``restype`` override a ctypes pointer's own. Cached per object. Raises TypeError for an
    object that is none of these or a signature a native body cannot call."""
    if type(fn) is _core.NativeFunction:
        return fn
    key = (id(fn), tuple(argtypes) if argtypes is not None else None, restype, name)
    hit = _cache.get(key)
    if hit is not None and hit[0] is fn:
        return hit[1]
    made = _make_function(fn, argtypes, restype, name)
    if len(_cache) > 4096:
        _cache.clear()
    _cache[key] = (fn, made)
    return made


def _make_function(fn: Any, argtypes: Optional[Sequence[Any]], restype: Any, name: Optional[str]) -> Any:
    if type(fn).__name__ == "PyCapsule":
        return _from_capsule(fn, name or (_PyCapsule_GetName(fn) or b"capsule").decode())
    if not isinstance(fn, _CFuncPtr) and hasattr(fn, "ctypes") and hasattr(fn, "address"):
        fn_name = name or getattr(fn, "__name__", None) or "cfunc"
        fn = fn.ctypes  # a Numba @cfunc: its ctypes pointer carries the signature
        name = fn_name
    if isinstance(fn, _CFuncPtr):
        types = argtypes if argtypes is not None else fn.argtypes
        fn_name = name or getattr(fn, "__name__", None) or "ctypes function"
        if types is None:
            raise TypeError(f"native function {fn_name}: set its argtypes (a list of ctypes types), so that each "
                            f"argument can be converted and checked at spawn")
        res = restype if restype is not None or argtypes is not None else fn.restype
        codes = [_ctype_code(t) for t in types]
        if res is not None and not isinstance(res, type):
            raise TypeError(f"native function {fn_name}: restype {res!r} must be a ctypes type or None")
        address = ctypes.cast(fn, ctypes.c_void_p).value
        return _core.NativeFunction(address, _ctype_code(res)[0], "".join(c for c, _ in codes),
                                    "".join(p for _, p in codes), fn_name, fn)
    if type(fn).__module__ == "_cffi_backend":
        import _cffi_backend as backend  # pyright: ignore[reportMissingImports]
        ct = backend.typeof(fn)
        if ct.kind == "pointer" and ct.item.kind == "function":
            ct = ct.item
        if ct.kind != "function":
            raise TypeError(f"native.function: the cffi object {fn!r} is not a function pointer")
        if ct.ellipsis:
            raise TypeError(f"native function {name or ct.cname}: variadic functions cannot be native bodies")
        codes = [_cffi_code(a) for a in ct.args]
        address = int(backend.cast(backend.new_primitive_type("uintptr_t"), fn))
        return _core.NativeFunction(address, _cffi_code(ct.result)[0], "".join(c for c, _ in codes),
                                    "".join(p for _, p in codes), name or ct.cname, fn)
    if isinstance(fn, int) and not isinstance(fn, bool):
        if argtypes is None:
            raise TypeError(f"native.function({fn:#x}): an address needs argtypes= (ctypes types) and restype=")
        codes = [_ctype_code(t) for t in argtypes]
        return _core.NativeFunction(fn, _ctype_code(restype)[0], "".join(c for c, _ in codes),
                                    "".join(p for _, p in codes), name or f"function at {fn:#x}", None)
    raise TypeError(f"a native body's function must be a ctypes, cffi or Numba function pointer, a SciPy Cython "
                    f"capsule or an address, not {type(fn).__name__}")


def blas(name: str) -> Any:
    """SciPy's BLAS routine ``name`` (``"dgemm"``, ...: ``scipy.linalg.cython_blas``) as a NativeFunction: the
    Fortran interface (every argument a pointer: numbers and one-character flags are passed by reference)."""
    import scipy.linalg.cython_blas as cython_blas
    try:
        capsule = cython_blas.__pyx_capi__[name]
    except KeyError:
        raise ValueError(f"native.blas({name!r}): scipy.linalg.cython_blas has no such routine") from None
    return function(capsule, name=name)


def lapack(name: str) -> Any:
    """SciPy's LAPACK routine ``name`` (``"dpotrf"``, ...: ``scipy.linalg.cython_lapack``) as a NativeFunction."""
    import scipy.linalg.cython_lapack as cython_lapack
    try:
        capsule = cython_lapack.__pyx_capi__[name]
    except KeyError:
        raise ValueError(f"native.lapack({name!r}): scipy.linalg.cython_lapack has no such routine") from None
    return function(capsule, name=name)


_REF_CODES = {ctypes.c_int8: "b", ctypes.c_uint8: "B", ctypes.c_int16: "h", ctypes.c_uint16: "H",
              ctypes.c_int32: "i", ctypes.c_uint32: "I", ctypes.c_int64: "l", ctypes.c_uint64: "L",
              ctypes.c_float: "f", ctypes.c_double: "d", ctypes.c_char: "b", ctypes.c_bool: "o"}


def ref(value: Any, ctype: Any = ctypes.c_int) -> Tuple[Any, ...]:
    """An argument passing ``value`` by reference as a ``ctype`` (a ctypes scalar type: c_int, c_double, ...):
    the function gets a pointer to a copy the body holds (for a ``void *`` parameter; a typed one such as
    ``int *`` takes the number itself)."""
    code = _REF_CODES.get(ctype) or _ctype_code(ctype)[0]
    if code in ("p", "v"):
        raise TypeError(f"native.ref: {ctype!r} is not a scalar ctypes type")
    return (_core.NATIVE_REF, code, value)


class Call(_core.NativeCall):
    """``Call(function, args, device_pointers=False, slots=None)``: a native call made by :func:`call`, spawned
    with ``spawn(...)(call)``; ``function`` a NativeFunction, ``args`` a tuple (TypeError otherwise). At spawn
    it becomes a :class:`parla._core.NativeBody` (its arguments converted and checked against the task's
    declarations): in C for numbers, characters, None, declared PArrays (not views) of the parameter's dtype,
    :data:`status` and :data:`stream`, here (:meth:`_bind`) for the other forms and every error. ``slots``, when
    given, lists the positions of the arguments that are PArrays, markers or :func:`array` descriptions (the
    others being plain values), which saves looking at every argument at spawn. Immutable."""

    __slots__ = ()

    @property
    def __name__(self) -> str:
        """The function's name: an anonymous task of this body is named after it (``memset#3``)."""
        return str(self.function.name)

    def __repr__(self) -> str:
        return f"native.call({self.function.name}, {len(self.args)} arguments)"

    def _bind(self, task: Any, attrs: Dict[str, Any]) -> Any:
        """The NativeBody of this call for task (whose declarations spawn put in attrs). Raises TypeError,
        OverflowError or ValueError naming the task and the argument."""
        args = self.args
        items = list(args)
        modes = attrs.get("_modes") or _NO_MODES
        fn = self.function
        dtypes = None
        for i in (self.slots if self.slots is not None else range(len(args))):
            x = args[i]
            t = type(x)
            if t is PArray:
                data = x._data
                if x._root is None and data is not None and modes.get(id(x), 0):
                    # A declared base array (the common case): spawn's declarations made its engine data in
                    # this runtime just now.
                    if dtypes is None:
                        dtypes = _expected_dtypes(fn)
                    dtype = dtypes[i]
                    if dtype is None or x._np.dtype != dtype:
                        _check_dtype(task, fn, i, x, dtype)
                    items[i] = (_core.NATIVE_ARRAY, data, 0)
                else:
                    items[i] = _array_item(task, fn, i, x, modes, attrs, False)
            elif t is _Marker:
                items[i] = x.item
            elif t is _Desc:
                items[i] = _array_item(task, fn, i, x.parray, modes, attrs, True)
        try:
            return _core.NativeBody(fn, tuple(items), self.device_pointers)
        except (TypeError, OverflowError, ValueError) as e:
            for i, x in enumerate(args):
                if isinstance(x, (np.ndarray, PArray)) and not isinstance(items[i], tuple):
                    raise TypeError(_arg_error(task, fn, i, x)) from None
            raise type(e)(f"task {task.name}: {e}") from None


_NO_MODES: Dict[int, int] = {}


def _arg_error(task: Any, fn: Any, i: int, x: Any) -> str:
    if isinstance(x, np.ndarray):
        return (f"task {task.name}: argument {i} of native body {fn.name} is a NumPy array: wrap it with "
                f"parla.array.asarray and declare it in input=, output= or inout= (the runtime then brings "
                f"its copy to the task's device)")
    return f"task {task.name}: argument {i} of native body {fn.name}: a {type(x).__name__} cannot be passed"


_dtypes: Dict[int, Tuple[Any, Tuple[Any, ...]]] = {}  # id(fn) -> (fn, per argument: dtype, _ANY or None)
_ANY = np.dtype(np.void)  # a pointer of unknown type: any array


def _expected_dtypes(fn: Any) -> Tuple[Any, ...]:
    """Per argument of fn, the dtype a PArray passed there must have: _ANY for an untyped pointer, None for an
    argument that is not a pointer."""
    hit = _dtypes.get(id(fn))
    if hit is not None and hit[0] is fn:
        return hit[1]
    out = tuple((np.dtype(_POINTEE_DTYPES[p]) if p in _POINTEE_DTYPES else _ANY) if t == "p" else None
                for t, p in zip(fn.argtypes, fn.pointees))
    if len(_dtypes) > 4096:
        _dtypes.clear()
    _dtypes[id(fn)] = (fn, out)
    return out


def _check_dtype(task: Any, fn: Any, i: int, a: PArray, dtype: Any) -> None:
    """Raises TypeError unless a PArray may be argument i of fn (expected: from _expected_dtypes)."""
    if dtype is None:
        raise TypeError(f"task {task.name}: argument {i} of native body {fn.name} is a PArray; its C type is not "
                        f"a pointer")
    if dtype is not _ANY and a._np.dtype != dtype:
        raise TypeError(f"task {task.name}: argument {i} of native body {fn.name} is {a._describe()}, the "
                        f"function takes a pointer to {dtype}")


def _array_item(task: Any, fn: Any, i: int, a: PArray, modes: Dict[int, int], attrs: Dict[str, Any],
                desc: bool) -> Tuple[Any, ...]:
    root = a._root if a._root is not None else a
    mode = _mode(a, root, modes, attrs)
    if not mode:
        raise ValueError(f"task {task.name}: argument {i} of native body {fn.name} is {a._describe()}, which the "
                         f"task does not declare in input=, output= or inout= (a native body reads the copy the "
                         f"runtime makes valid on the task's device)")
    if a._flat is not None:
        raise TypeError(f"task {task.name}: argument {i} of native body {fn.name} is a view made with index lists "
                        f"or a mask, whose elements are not where its base holds them; pass the base array")
    data = root._engine_data()
    view = a._np
    offset = 0 if a is root else view.__array_interface__["data"][0] - root._np.__array_interface__["data"][0]
    if not desc:
        _check_dtype(task, fn, i, a, _expected_dtypes(fn)[i])
        return (_core.NATIVE_ARRAY, data, offset)
    if fn.argtypes[i] != "p":
        raise TypeError(f"task {task.name}: argument {i} of native body {fn.name} is native.array(...); its C type "
                        f"is not a pointer")
    if view.ndim > MAX_DIMS:
        raise ValueError(f"task {task.name}: argument {i} of native body {fn.name}: {view.ndim} dimensions, at "
                         f"most {MAX_DIMS}")
    return (_core.NATIVE_DESC, data, offset, view.itemsize, mode, tuple(view.shape), tuple(view.strides))


_POINTEE_DTYPES = {"b": np.int8, "B": np.uint8, "h": np.int16, "H": np.uint16, "i": np.int32, "I": np.uint32,
                   "l": np.int64, "L": np.uint64, "f": np.float32, "d": np.float64, "o": np.bool_}


def _mode(a: PArray, root: PArray, modes: Dict[int, int], attrs: Dict[str, Any]) -> int:
    """The modes the task declares for a (itself, its base, or a declared view of the same base covering it)."""
    mode = modes.get(id(a), 0) | modes.get(id(root), 0)
    if mode or a is root or not modes:
        return mode
    for declared, m in _declared(_Declarations(attrs.get("_decl", ((), (), ())))):
        if getattr(declared, "_root", None) is root and declared._ranges is not None \
                and _ranges.covers(declared._ranges, a._ranges or []):
            mode |= m
    return mode


class _Declarations:
    """What parla.array's _declared reads of a task (its _decl), before spawn sets it on the task."""

    __slots__ = ("_decl",)

    def __init__(self, decl: Any) -> None:
        self._decl = decl


def call(fn: Any, *args: Any, argtypes: Optional[Iterable[Any]] = None, restype: Any = None,
         device_pointers: bool = False) -> Call:
    """A native task body: ``fn`` (see :func:`function`) called with ``args`` (see the module's documentation),
    spawned with ``spawn(taskid, ..., input=[...], inout=[...])(native.call(fn, ...))``. ``device_pointers``:
    the function takes device pointers and may run on a CUDA GPU. Raises TypeError for a function that cannot
    be a native body; the arguments are checked at spawn."""
    return Call(function(fn, list(argtypes) if argtypes is not None else None, restype), args, device_pointers)


_core._native_setup(status, stream, {code: np.dtype(t) for code, t in _POINTEE_DTYPES.items()})
