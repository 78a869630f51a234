"""PArray: arrays whose copies the runtime moves between devices and keeps coherent.

    from parla.array import asarray
    A = asarray(numpy_array)

    @spawn(placement=gpu, inout=[A])
    def step():
        A.array[:] += 1          # .array is this task's device copy (NumPy on cpu and virtual GPUs, CuPy on CUDA)

Declare what a task reads (``input=``), writes entirely (``output=``) or updates (``inout=``). The runtime then

- orders tasks by those declarations, in spawn order (read-after-write, write-after-read, write-after-write),
  even without explicit dependencies; where a task spawned earlier explicitly depends on one spawned later,
  that explicit order wins and no cycle is formed;
- copies what is missing to the task's device before the body runs, from the cheapest valid copy; after a
  write the task's device holds the only valid copy (MSI coherence, per byte range);
- keeps slices coherent: ``A[0:5]`` is a PArray view; disjoint views may be written on different devices at
  once, and a later access to the whole array or an overlapping view sees every write, with no write-back
  task to write;
- evicts least-recently-used copies when a device is full, writing the last valid copy back to the CPU first.

Writing to a PArray declared only as ``input`` is detected: its ``.array`` is read-only there (NumPy raises
``ValueError: assignment destination is read-only``). Using a PArray a task did not declare raises
RuntimeError. Outside tasks, reading a PArray waits for the tasks writing it and gives the latest values;
writing to it (``A[i] = v``, ``A += 1``) also waits for the tasks reading it.

Views made with lists of indices that are not evenly spaced are copies: read-only.
"""
from __future__ import annotations

import operator
from typing import Any, Dict, Iterator, List, Optional, Tuple, Union

import numpy as np

from . import _core, _runtime
from .devices import Device, cpu, device_of, engine_index

__all__ = ["PArray", "array", "asarray", "asarray_batch", "clone_here", "copy", "get_array_module"]


def _as_progression(index: Any) -> Any:
    """An evenly spaced int list becomes a slice (a view); other lists stay (a copy)."""
    if isinstance(index, (list, np.ndarray)) and len(index) > 0:
        arr = np.asarray(index)
        if arr.dtype.kind in "iu" and arr.ndim == 1:
            if len(arr) == 1:
                return slice(int(arr[0]), int(arr[0]) + 1) if arr[0] >= 0 else index
            step = int(arr[1] - arr[0])
            if step > 0 and arr[0] >= 0 and np.all(np.diff(arr) == step):
                return slice(int(arr[0]), int(arr[-1]) + 1, step)
    return index


def _normalize(index: Any) -> Any:
    if isinstance(index, tuple):
        return tuple(_as_progression(i) for i in index)
    return _as_progression(index)


def _byte_ranges(view: np.ndarray, base: np.ndarray) -> List[int]:
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
    shape = [n for n, _ in dims]
    strides = np.array([s for _, s in dims], dtype=np.int64)
    starts = np.indices(shape, dtype=np.int64).reshape(len(shape), -1).T @ strides + offset
    starts.sort()
    ends = starts + run
    # Merge touching runs.
    breaks = np.nonzero(starts[1:] > ends[:-1])[0]
    lo = np.concatenate(([starts[0]], starts[breaks + 1]))
    hi = np.concatenate((ends[breaks], [ends[-1]]))
    out = np.empty(2 * len(lo), dtype=np.int64)
    out[0::2] = lo
    out[1::2] = hi
    return out.tolist()


class PArray:
    """An array managed by the runtime (a base array, or a view of one made by slicing).

    Attributes and methods: ``array`` (the copy on the running task's device; outside tasks the latest values
    on the CPU), ``shape``, ``dtype``, ``ndim``, ``size``, ``nbytes``, ``update(new_array)``, indexing and
    slicing (views), arithmetic/comparison/in-place operators (forwarded to ``array``), ``len``, iteration,
    ``evict(device=None, keep_one_copy=True)``, ``exists_on_device(device)``, ``nbytes_at(device)``,
    ``print_overview()``.
    """

    __slots__ = ("_root", "_indices", "_np", "_ranges", "_data", "_cache", "_readonly", "_generation",
                 "__weakref__")

    def __init__(self, array: Any) -> None:
        if isinstance(array, PArray):
            array = array.array
        base = np.asarray(array, order="C")  # keeps 0-d arrays 0-d
        if base.dtype.hasobject:
            raise TypeError(f"a PArray holds numbers, not Python objects (dtype {base.dtype}): its bytes are "
                            f"copied between devices")
        if not base.flags.writeable or not base.flags.c_contiguous:
            base = np.array(base, order="C", copy=True)
        self._root = self
        self._generation = 0     # bumped by update(); views made before it are stale
        self._indices: Tuple = ()
        self._np = base          # the CPU copy (root) or the CPU view (views)
        self._ranges = None      # byte ranges of the root (views only)
        self._data = None        # engine data of the current runtime
        self._cache: Dict[int, Tuple[int, Any]] = {}
        self._readonly = False

    # ------------------------------------------------------------- views --
    @classmethod
    def _view(cls, parent: "PArray", index: Any) -> "PArray":
        root = parent._root
        view_np = parent._np[index]
        parent._check_fresh()
        self = object.__new__(cls)
        self._root = root
        self._generation = root._generation
        self._indices = parent._indices + (index,)
        self._np = view_np
        self._data = None
        self._cache = {}
        self._readonly = parent._readonly or not np.shares_memory(view_np, root._np)
        self._ranges = _byte_ranges(view_np, root._np) if not self._readonly else \
            _byte_ranges_fancy(root._np, self._indices)
        return self

    def _check_fresh(self) -> None:
        if self._generation != self._root._generation:
            raise RuntimeError(f"this PArray view was made before update() replaced its array; slice the "
                               f"updated PArray again")

    def _engine_data(self) -> _core.Data:
        """This array's engine data in the active runtime (created on first use there)."""
        context = _runtime._current
        data = self._data
        if context is not None and data is not None and data.runtime is context._rt:
            return data
        self._check_fresh()
        context = _runtime.current_runtime()
        runtime = context.runtime
        root = self._root
        if root._data is None or root._data.runtime is not runtime:
            root._data = _core.Data(runtime, root._np)
            root._cache = {}
            context._parrays[id(root)] = root
        if self is root:
            return root._data
        if self._data is None or self._data.runtime is not runtime:
            self._data = root._data.view(self._ranges)
        return self._data

    def _live_data(self) -> Optional[_core.Data]:
        """The engine data when it belongs to the active runtime, else None."""
        root = self._root
        if root._data is None or _runtime._current is None or \
                root._data.runtime is not _runtime._current.runtime:
            return None
        return self._engine_data()

    def _detach(self) -> None:
        """At the end of a Parla context: bring the latest values to the CPU and drop device copies."""
        data = self._data
        if data is not None and not data.runtime.closed:
            data.fetch(0, False)
            data.evict(-1, True)
        self._data = None
        self._cache = {}

    # ------------------------------------------------------------ arrays --
    def _device_base(self, device: int, info: Dict[str, Any]) -> Any:
        root = self._root
        if device == 0:
            return root._np
        data = root._engine_data()
        ptr = data.ptr(device)
        cached = root._cache.get(device)
        if cached is not None and cached[0] == ptr:
            return cached[1]
        if info["cuda"]:
            try:
                import cupy
            except ImportError:
                raise RuntimeError(f"PArray.array on gpu({info['kind_index']}): the copy on a CUDA GPU is a CuPy array, and "
                                   f"CuPy is not importable (install cupy for your CUDA version)") from None
            memory = cupy.cuda.UnownedMemory(ptr, root._np.nbytes, data, info["cuda_ordinal"])
            arr = cupy.ndarray(root._np.shape, root._np.dtype, cupy.cuda.MemoryPointer(memory, 0))
        else:
            arr = np.frombuffer(data.host_view(device), dtype=root._np.dtype).reshape(root._np.shape)
        root._cache[device] = (ptr, arr)
        return arr

    def _declared_mode(self, task: Any) -> int:
        from .tasks import _declared
        root = self._root
        mode = 0
        views = []
        for declared, m in _declared(task):
            if declared is self or declared is root:
                mode |= m
            elif getattr(declared, "_root", None) is root:
                views.append((declared, m))
        if root is self:
            return mode
        # A view made inside the body (A[0:10][2:5]) is covered by a declared view of the same array.
        for declared, m in views:
            if declared._ranges is not None and _covers(declared._ranges, self._ranges):
                mode |= m
        return mode

    @property
    def array(self) -> Any:
        """The array on the running task's device (NumPy, or CuPy on a CUDA GPU). Outside tasks: the latest
        values, as a NumPy array on the CPU (waiting for tasks that write this array)."""
        self._check_fresh()
        task = _core.current_task()
        if task is None:
            data = self._live_data()
            if data is not None:
                data.fetch(0, False)
            return self._np
        modes = task._modes
        if modes is None:
            from .tasks import _declared
            modes = {}
            for declared, m in _declared(task):
                modes[id(declared)] = modes.get(id(declared), 0) | m
            task._modes = modes
        root = self._root
        mode = modes.get(id(self), 0) | modes.get(id(root), 0)
        if mode != _core.READWRITE and root is not self:
            mode |= self._declared_mode(task)  # declared views covering this one add their modes
        if not mode:
            raise RuntimeError(f"task {task.name} uses a PArray of shape {self.shape} that it did not declare in "
                               f"input=, output= or inout=")
        devices = task._devices
        device = devices[0] if devices else 0
        if device == 0:
            out = root._np
        else:
            out = self._device_base(device, _runtime.current_runtime().device_table[device])
        if mode == _core.READ and type(out) is np.ndarray:
            # A read-only view of the device's array, made once per array and device (negative keys).
            cached = root._cache.get(-1 - device)
            if cached is not None and cached[0] is out:
                out = cached[1]
            else:
                view = out.view()
                view.flags.writeable = False
                root._cache[-1 - device] = (out, view)
                out = view
        for index in self._indices:
            out = out[index]
        return out

    def update(self, new_array: Any) -> None:
        """Replaces the contents with new_array, whose shape and dtype may differ (base arrays only; outside
        tasks this waits for every task using the array first)."""
        if self._root is not self:
            raise ValueError("update() replaces a whole PArray; it cannot be called on a slice")
        task = _core.current_task()
        if task is not None:
            target = self.array
            new = np.asarray(new_array) if isinstance(target, np.ndarray) else new_array
            if getattr(new, "shape", None) != target.shape or new.dtype != target.dtype:
                raise ValueError(f"task {task.name}: update() inside a task keeps shape and dtype "
                                 f"({target.shape}, {target.dtype}); call it outside tasks to change them")
            target[...] = new
            return
        data = self._live_data()
        if data is not None:
            data.fetch(0, True)
        base = np.asarray(new_array, order="C")
        if base.dtype.hasobject:
            raise TypeError(f"update(): a PArray holds numbers, not Python objects (dtype {base.dtype})")
        if not base.flags.writeable or not base.flags.c_contiguous:
            base = np.array(base, order="C", copy=True)
        self._np = base
        self._data = None
        self._cache = {}
        self._generation += 1

    # --------------------------------------------------------- attributes --
    @property
    def shape(self) -> Tuple[int, ...]:
        return self._np.shape

    @property
    def dtype(self) -> np.dtype:
        return self._np.dtype

    @property
    def ndim(self) -> int:
        return self._np.ndim

    @property
    def size(self) -> int:
        return self._np.size

    @property
    def nbytes(self) -> int:
        return self._np.nbytes

    def __len__(self) -> int:
        return len(self._np)

    def __iter__(self) -> Iterator[Any]:
        return iter(self.array)

    def __getitem__(self, index: Any) -> Any:
        index = _normalize(index)
        result = self._np[index]
        if isinstance(result, np.ndarray) and result.ndim > 0:
            return PArray._view(self, index)
        return self.array[index]

    def __setitem__(self, index: Any, value: Any) -> None:
        if isinstance(value, PArray):
            value = value.array
        if _core.current_task() is None:
            data = self._live_data()
            if data is not None:
                data.fetch(0, True)
            self._np[index] = value
        else:
            self.array[index] = value

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        arr = self.array
        if not isinstance(arr, np.ndarray):
            arr = arr.get()
        return np.asarray(arr, dtype=dtype)

    def __repr__(self) -> str:
        return f"PArray({self.array!r})"

    def __str__(self) -> str:
        return str(self.array)

    # ---------------------------------------------------------- residency --
    def _device_index(self, device: Union[Device, int, None]) -> int:
        if device is None:
            return -1
        if isinstance(device, Device):
            if _runtime._current is None:  # after the context only the CPU copy exists
                return 0 if device is cpu(0) else -2
            return engine_index(device)
        return int(device)

    def evict(self, device: Union[Device, int, None] = None, keep_one_copy: bool = True) -> None:
        """Drops this array's copy on device (None: every GPU). The last valid copy is always written back to
        the CPU first: this runtime never drops data, whatever keep_one_copy says."""
        data = self._live_data()
        if data is not None:
            data.evict(self._device_index(device), keep_one_copy)

    def exists_on_device(self, device: Union[Device, int]) -> bool:
        """True when device holds a valid copy of every element of this array (view)."""
        data = self._live_data()
        index = self._device_index(device)
        if data is None:
            return index == 0
        return data.valid_bytes(index) == self._valid_total()

    def _valid_total(self) -> int:
        if self._root is self:
            return self.nbytes
        r = self._ranges
        return sum(r[i + 1] - r[i] for i in range(0, len(r), 2))

    def nbytes_at(self, device: Union[Device, int]) -> int:
        """Bytes allocated for this array's base on device (0 when it has no copy there)."""
        data = self._live_data()
        index = self._device_index(device)
        if data is None:
            return self._root.nbytes if index == 0 else 0
        return data.resident_bytes(index)

    def print_overview(self) -> None:
        """Prints, per device, whether it holds a valid copy and how many bytes are resident."""
        data = self._live_data()
        print(f"PArray shape={self.shape} dtype={self.dtype} nbytes={self.nbytes}")
        if data is None:
            print("  cpu(0): valid (no active runtime)")
            return
        for info in _runtime.current_runtime().device_table:
            i = info["index"]
            print(f"  {device_of(i)!r}: valid {data.valid_bytes(i)}/{self._valid_total()} bytes, "
                  f"resident {data.resident_bytes(i)} bytes")


def _covers(outer: List[int], inner: List[int]) -> bool:
    """True when every byte range of inner lies within the ranges of outer (both sorted, merged)."""
    j = 0
    for i in range(0, len(inner), 2):
        lo, hi = inner[i], inner[i + 1]
        while j < len(outer) and outer[j + 1] <= lo:
            j += 2
        if j == len(outer) or outer[j] > lo or outer[j + 1] < hi:
            return False
    return True


def _byte_ranges_fancy(base: np.ndarray, indices: Tuple) -> List[int]:
    """Byte ranges touched by indices that include irregular int lists (their views are copies)."""
    flat = np.arange(base.size, dtype=np.int64).reshape(base.shape)
    for index in indices:
        flat = flat[index]
    elements = np.unique(flat.ravel())
    if elements.size == 0:
        return []
    starts = elements * base.itemsize
    breaks = np.nonzero(np.diff(elements) != 1)[0]
    lo = np.concatenate(([starts[0]], starts[breaks + 1]))
    hi = np.concatenate((starts[breaks] + base.itemsize, [starts[-1] + base.itemsize]))
    out = np.empty(2 * len(lo), dtype=np.int64)
    out[0::2], out[1::2] = lo, hi
    return out.tolist()


def _binary(op):
    def method(self, other):
        if isinstance(other, PArray):
            other = other.array
        return op(self.array, other)
    return method


def _reflected(op):
    def method(self, other):
        return op(other, self.array)
    return method


def _inplace(op):
    def method(self, other):
        if isinstance(other, PArray):
            other = other.array
        if _core.current_task() is None:
            data = self._live_data()
            if data is not None:
                data.fetch(0, True)
            op(self._np, other)
        else:
            op(self.array, other)
        return self
    return method


for _name, _op in [("add", operator.add), ("sub", operator.sub), ("mul", operator.mul),
                   ("truediv", operator.truediv), ("floordiv", operator.floordiv), ("mod", operator.mod),
                   ("pow", operator.pow), ("matmul", operator.matmul), ("and", operator.and_),
                   ("or", operator.or_), ("xor", operator.xor)]:
    setattr(PArray, f"__{_name}__", _binary(_op))
    setattr(PArray, f"__r{_name}__", _reflected(_op))
for _name, _op in [("iadd", operator.iadd), ("isub", operator.isub), ("imul", operator.imul),
                   ("itruediv", operator.itruediv), ("ifloordiv", operator.ifloordiv), ("imod", operator.imod),
                   ("ipow", operator.ipow), ("iand", operator.iand), ("ior", operator.ior),
                   ("ixor", operator.ixor)]:
    setattr(PArray, f"__{_name}__", _inplace(_op))
for _name, _op in [("lt", operator.lt), ("le", operator.le), ("eq", operator.eq), ("ne", operator.ne),
                   ("gt", operator.gt), ("ge", operator.ge)]:
    setattr(PArray, f"__{_name}__", _binary(_op))
PArray.__neg__ = lambda self: -self.array
PArray.__pos__ = lambda self: +self.array
PArray.__abs__ = lambda self: abs(self.array)
PArray.__hash__ = object.__hash__


def asarray(obj: Any) -> PArray:
    """A PArray over obj (a NumPy array or anything np.asarray accepts; a PArray is returned as is). A
    C-contiguous writable NumPy array is used in place as the CPU copy; others are copied."""
    if isinstance(obj, PArray):
        return obj
    return PArray(obj)


def array(obj: Any, copy: bool = True) -> PArray:
    """A PArray holding a copy of obj (or obj itself with copy=False, as asarray)."""
    if isinstance(obj, PArray):
        obj = obj.array
    return PArray(np.array(obj, copy=True) if copy else obj)


def asarray_batch(*objs: Any) -> Any:
    """PArrays for every array in a (nested) list, tuple or dict, keeping its structure. With several
    arguments, returns a list of their conversions."""
    if len(objs) != 1:
        return [asarray_batch(o) for o in objs]
    obj = objs[0]
    if isinstance(obj, (list, tuple)):
        return type(obj)(asarray_batch(o) for o in obj)
    if isinstance(obj, dict):
        return {k: asarray_batch(v) for k, v in obj.items()}
    return asarray(obj)


def get_array_module(a: Any) -> Any:
    """``numpy`` or ``cupy``, whichever the array belongs to (as ``cupy.get_array_module``)."""
    if isinstance(a, PArray):
        a = a.array
    if type(a).__module__.startswith("cupy"):
        import cupy
        return cupy
    return np


def clone_here(source: Any, kind: Any = None) -> Any:
    """A copy of source (PArray, NumPy or CuPy array) on the running task's device (NumPy on cpu and virtual
    GPUs, CuPy on CUDA GPUs)."""
    if isinstance(source, PArray):
        source = source.array
    task = _core.current_task()
    devices = task._devices if task is not None else ()
    if devices and devices[0] != 0:
        info = _runtime.current_runtime().device_table[devices[0]]
        if info["cuda"]:
            import cupy
            with cupy.cuda.Device(info["cuda_ordinal"]):
                return cupy.array(source, copy=True)
    if type(source).__module__.startswith("cupy"):
        return source.get()
    return np.array(source, copy=True)


def copy(destination: Any, source: Any) -> None:
    """Copies source's values into destination (PArrays or arrays of the same shape), across devices."""
    if isinstance(source, PArray):
        source = source.array
    if isinstance(destination, PArray):
        destination[...] = source
        return
    xp = get_array_module(destination)
    if xp is np and type(source).__module__.startswith("cupy"):
        source = source.get()
    destination[...] = xp.asarray(source)
