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

Indexing follows NumPy's rules (bounds, negative indices, steps, Ellipsis, newaxis, index lists that
broadcast together, masks). Views made with index lists or masks are NumPy copies: their ``.array`` is a
read-only copy, and ``V[i] = x`` or ``V += x`` writes through to the base array.

Writing to a PArray declared only as ``input`` is detected: its ``.array`` is read-only there (NumPy raises
``ValueError: assignment destination is read-only``). A task may use without declaring them the PArrays it
made itself, PArrays no task declared (their CPU copy, on the CPU), and, read-only, PArrays whose copy on its
device is valid; a stale copy raises RuntimeError naming the task and the array. ``Parla(strict_access=True)``
(or ``PARLA_STRICT_ACCESS=1``) refuses every undeclared use. Outside tasks, reading a PArray waits for the
tasks writing it and gives the latest values; writing to it (``A[i] = v``, ``A += 1``) also waits for the
tasks reading it. An unused PArray is freed, with its device copies, when its last reference goes.
"""
from __future__ import annotations

import numbers
import operator
import weakref
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, List, Literal, Optional, Tuple, Union

import numpy as np

from . import _context, _core, _cuda, _ranges
from .devices import Device, cpu, device_of, engine_index

__all__ = ["PArray", "array", "asarray", "asarray_batch", "clone_here", "copy", "get_array_module", "storage_size"]

# How many times update() has replaced the array of a PArray, any PArray (bumped after that PArray's
# _generation). A recorded graph (parla.graphs) that checked its arrays' generations when this was n knows,
# while it is still n, that none of them was replaced since: one comparison per replay instead of one per array.
_updates = 0


def _host_array(obj: Any) -> Any:
    """obj, or a CuPy array's values copied to the CPU (a PArray's CPU copy is a NumPy array)."""
    if type(obj).__module__.startswith("cupy"):
        return obj.get()
    return obj


def _read_only(arr: Any) -> Any:
    """A read-only NumPy view of arr (CuPy arrays have no read-only flag and are returned as they are; a
    _Window, over a read-only view of its memory)."""
    if type(arr) is _Window:
        return _Window(_read_only(arr.array), arr.lo, arr.hi, arr.root)
    if type(arr) is np.ndarray:
        arr = arr.view()
        arr.flags.writeable = False
    return arr


def _fetch(data: _core.Data, write: bool) -> None:
    """Outside tasks: waits for the tasks conflicting with this access in short slices, so Ctrl-C interrupts
    the wait (KeyboardInterrupt), then makes the latest values valid on the CPU."""
    while data.wait(write, 0.1) == _core.ETIMEDOUT:
        pass
    data.fetch(0, write)


class _Window:
    """The part of a base array that one allocation on a GPU holds: bytes [lo, hi) of the base, as a flat
    array (NumPy or CuPy) of the base's dtype. A view on a GPU allocates only the byte range covering it
    (see the user guide, 'GPUs'); its arrays are made over that allocation with the view's own strides."""

    __slots__ = ("array", "lo", "hi", "first", "root", "__weakref__")

    def __init__(self, array: Any, lo: int, hi: int, root: "PArray") -> None:
        self.array = array
        self.lo, self.hi = lo, hi
        self.first = lo // root._np.itemsize  # the base's flat index of array[0]
        self.root = root

    def holds(self, part: "PArray") -> bool:
        """True when this allocation holds all the bytes of part (a view of the same base, or the base)."""
        if part._np.size == 0:
            return True
        ranges = part._ranges if part._root is not None else [0, self.root._np.nbytes]
        if not ranges:
            return True
        return self.lo <= ranges[0] and ranges[-1] <= self.hi

    def select(self, part: "PArray") -> Any:
        """part's elements in this allocation: a view with part's shape and strides (a gathered copy for
        views of index lists or masks)."""
        if part._flat is not None:
            flat = part._flat - self.first
            if type(self.array) is not np.ndarray:  # CuPy
                flat = _cuda.cupy_module().asarray(flat)
            return self.array[flat]
        if not self.holds(part):
            raise RuntimeError(f"{part._describe()}: the allocation on this GPU holds only bytes "
                               f"[{self.lo}, {self.hi}) of its base array (declare it, or a view covering it)")
        return self.view_of(part._np)

    def view_of(self, target: np.ndarray) -> Any:
        """The counterpart here of target, a NumPy view of the base's CPU copy whose bytes this allocation
        holds (ValueError from NumPy when it does not)."""
        if target.size == 0:
            return self.array[:0].reshape(target.shape)
        root = self.root
        offset = target.__array_interface__["data"][0] - root._np.__array_interface__["data"][0] - self.lo
        if type(self.array) is np.ndarray:
            return np.ndarray(target.shape, target.dtype, buffer=self.array, offset=offset, strides=target.strides)
        cupy = _cuda.cupy_module()
        return cupy.ndarray(target.shape, target.dtype, self.array.data + offset, strides=target.strides)


class PArray:
    """An array managed by the runtime (a base array, or a view of one made by indexing).

    Attributes and methods: ``array`` (the copy on the running task's device; outside tasks the latest values
    on the CPU), ``name``, ``shape``, ``dtype``, ``ndim``, ``size``, ``nbytes``, ``update(new_array)``,
    indexing as NumPy indexes (views), arithmetic (gives PArrays), comparisons (give arrays), in-place
    operators, ``len``, iteration, the array's own attributes and methods (``A.T``, ``A.sum()``: forwarded to
    ``array``), ``evict(device=None, keep_one_copy=True)``, ``exists_on_device(device)``,
    ``nbytes_at(device)``, ``print_overview()``.

    Indexing with lists of indices or boolean masks gives a view whose ``.array`` is a read-only copy (NumPy
    gathers such elements into new memory); ``V[i] = x`` and ``V += x`` on such a view write through to the
    base array.
    """

    __slots__ = ("_root", "_indices", "_np", "_ranges", "_flat", "_data", "_cache", "_generation", "_name",
                 "_creator", "__weakref__")

    if TYPE_CHECKING:  # what the loops after the class define, as type checkers should see it
        def __add__(self, other: Any) -> PArray: ...
        def __radd__(self, other: Any) -> PArray: ...
        def __sub__(self, other: Any) -> PArray: ...
        def __rsub__(self, other: Any) -> PArray: ...
        def __mul__(self, other: Any) -> PArray: ...
        def __rmul__(self, other: Any) -> PArray: ...
        def __truediv__(self, other: Any) -> PArray: ...
        def __rtruediv__(self, other: Any) -> PArray: ...
        def __floordiv__(self, other: Any) -> PArray: ...
        def __rfloordiv__(self, other: Any) -> PArray: ...
        def __mod__(self, other: Any) -> PArray: ...
        def __rmod__(self, other: Any) -> PArray: ...
        def __pow__(self, other: Any) -> PArray: ...
        def __rpow__(self, other: Any) -> PArray: ...
        def __matmul__(self, other: Any) -> PArray: ...
        def __rmatmul__(self, other: Any) -> PArray: ...
        def __and__(self, other: Any) -> PArray: ...
        def __rand__(self, other: Any) -> PArray: ...
        def __or__(self, other: Any) -> PArray: ...
        def __ror__(self, other: Any) -> PArray: ...
        def __xor__(self, other: Any) -> PArray: ...
        def __rxor__(self, other: Any) -> PArray: ...
        def __lshift__(self, other: Any) -> PArray: ...
        def __rlshift__(self, other: Any) -> PArray: ...
        def __rshift__(self, other: Any) -> PArray: ...
        def __rrshift__(self, other: Any) -> PArray: ...
        def __iadd__(self, other: Any) -> PArray: ...
        def __isub__(self, other: Any) -> PArray: ...
        def __imul__(self, other: Any) -> PArray: ...
        def __itruediv__(self, other: Any) -> PArray: ...
        def __ifloordiv__(self, other: Any) -> PArray: ...
        def __imod__(self, other: Any) -> PArray: ...
        def __ipow__(self, other: Any) -> PArray: ...
        def __imatmul__(self, other: Any) -> PArray: ...
        def __iand__(self, other: Any) -> PArray: ...
        def __ior__(self, other: Any) -> PArray: ...
        def __ixor__(self, other: Any) -> PArray: ...
        def __ilshift__(self, other: Any) -> PArray: ...
        def __irshift__(self, other: Any) -> PArray: ...
        def __lt__(self, other: Any) -> Any: ...
        def __le__(self, other: Any) -> Any: ...
        def __gt__(self, other: Any) -> Any: ...
        def __ge__(self, other: Any) -> Any: ...
        def __eq__(self, other: Any) -> Any: ...
        def __ne__(self, other: Any) -> Any: ...
        def __neg__(self) -> PArray: ...
        def __pos__(self) -> PArray: ...
        def __abs__(self) -> PArray: ...
        def __invert__(self) -> PArray: ...
        def __divmod__(self, other: Any) -> Tuple[PArray, PArray]: ...
        def __rdivmod__(self, other: Any) -> Tuple[PArray, PArray]: ...
        def __hash__(self) -> int: ...

        def __getattr__(self, name: str) -> Any: ...  # the array's own attributes (A.T, A.sum())

    def __init__(self, array: Any, name: Optional[str] = None) -> None:
        if isinstance(array, PArray):
            array = array.array
        base = np.asarray(_host_array(array), order="C")  # keeps 0-d arrays 0-d
        if base.dtype.hasobject:
            raise TypeError(f"a PArray holds numbers, not Python objects (dtype {base.dtype}): its bytes are "
                            f"copied between devices")
        if not base.flags.writeable or not base.flags.c_contiguous:
            base = np.array(base, order="C", copy=True)
        # A base array has no root (None, not itself: a self-reference would leave an unused array, and its
        # device copies, to the cycle collector).
        self._root: Optional[PArray] = None
        self._generation = 0     # bumped by update(); views made before it are stale
        self._indices: Tuple[Any, ...] = ()
        self._np: np.ndarray = base  # the CPU copy (base) or the CPU view (views)
        self._ranges: Optional[List[int]] = None  # byte ranges of the base (views only)
        # For views that NumPy makes as copies: their elements' flat indices in the base.
        self._flat: Optional[np.ndarray] = None
        self._data: Optional[_core.Data] = None  # engine data of the current runtime
        self._cache: Dict[int, Tuple[Any, Any]] = {}
        self._name = name
        task = _core.current_task()
        self._creator = weakref.ref(task) if task is not None else None  # the task that made it, if any

    # ------------------------------------------------------------- views --
    @classmethod
    def _view(cls, parent: "PArray", index: Any, view_np: np.ndarray) -> "PArray":
        root = parent._root if parent._root is not None else parent
        self = object.__new__(cls)
        self._root = root
        self._generation = root._generation
        self._indices = parent._indices + (index,)
        self._np = view_np
        self._data = None
        self._cache = {}
        self._name = None
        self._creator = None
        if parent._flat is not None:
            self._flat = parent._flat[index]
        elif view_np.size == 0 or np.may_share_memory(view_np, root._np):
            self._flat = None
        else:  # NumPy copied the elements (lists of indices, masks): keep where they come from
            self._flat = parent._flat_map()[index]
        self._ranges = _ranges.byte_ranges(view_np, root._np) if self._flat is None else \
            _ranges.element_ranges(self._flat, root._np.itemsize)
        return self

    def _flat_map(self) -> np.ndarray:
        """The flat indices (in the base array) of this array's elements, in this array's shape."""
        if self._flat is not None:
            return self._flat
        root = self._root if self._root is not None else self
        out = np.arange(root._np.size, dtype=np.int64).reshape(root._np.shape)
        for index in self._indices:
            out = out[index]
        return out

    def _check_fresh(self) -> None:
        root = self._root
        if root is not None and self._generation != root._generation:
            raise RuntimeError("this PArray view was made before update() replaced its array; slice the "
                               "updated PArray again")

    def _describe(self) -> str:
        root = self._root if self._root is not None else self
        what = f"PArray {root._name!r}" if root._name is not None else "a PArray"
        view = f" (a view of shape {self.shape})" if self._root is not None else ""
        return f"{what} of shape {root.shape} and dtype {root.dtype}{view}"

    def _engine_data(self) -> _core.Data:
        """This array's engine data in the active runtime (created on first use there)."""
        context = _context.current
        data = self._data
        if context is not None and data is not None and data.runtime is context._rt:
            return data
        self._check_fresh()
        context = _context.current_runtime()
        runtime = context.runtime
        root = self._root if self._root is not None else self
        base = root._data
        if base is None or base.runtime is not runtime:
            base = root._data = _core.Data(runtime, root._np)
            root._cache = {}
            context._parrays[id(root)] = root
        if self is root:
            return base
        data = self._data
        if data is None or data.runtime is not runtime:
            data = self._data = base.view(self._ranges or [])
            self._cache = {}
        return data

    def _live_data(self) -> Optional[_core.Data]:
        """The engine data when it belongs to the active runtime, else None."""
        root = self._root if self._root is not None else self
        if root._data is None or _context.current is None or \
                root._data.runtime is not _context.current.runtime:
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
    def _device_base(self, device: int, info: Dict[str, Any], readonly: bool = False) -> Any:
        """The base array's copy on a GPU, as an array over its memory (read-only when asked, on host-memory
        devices); where the GPU holds only part of the base (views allocate only the byte range they
        cover), a _Window over that part. Inside a task it is the allocation holding what the task declared
        of the base. The array holds that memory (a Hold), so an array that leaves its task (returned, kept)
        stays readable after the copy is evicted or the context ends, with the values it had then. The cache
        keeps arrays weakly: a copy the engine evicts is freed once nobody uses an array over it."""
        root = self._root if self._root is not None else self
        data = root._engine_data()
        ptr = data.ptr(device)
        if not ptr and root is not self:  # outside what the task declared of the base: this view's allocation
            data = self._engine_data()
            ptr = data.ptr(device)
        key = -1 - device if readonly else device
        cached = root._cache.get(key)
        if cached is not None and cached[0] == ptr:
            arr = cached[1]()
            # The same address of byte 0 and the bytes wanted inside the cached memory: the same allocation
            # (two live allocations never overlap).
            if arr is not None and (type(arr) is not _Window or arr.holds(self)):
                return arr
        hold = data.hold(device)
        if hold is None:
            raise RuntimeError(f"{self._describe()} has no copy on {device_of(device)!r}")
        itemsize = root._np.itemsize
        full = hold.lo == 0 and hold.nbytes == root._np.nbytes
        shape = root._np.shape if full else (hold.nbytes // itemsize,)
        if info["cuda"]:
            try:
                cupy = _cuda.cupy_module()
            except ImportError:
                raise RuntimeError(f"PArray.array on gpu({info['kind_index']}): the copy on a CUDA GPU is a CuPy array, and "
                                   f"CuPy is not importable (install cupy for your CUDA version)") from None
            memory = cupy.cuda.UnownedMemory(hold.ptr, hold.nbytes, hold, info["cuda_ordinal"])
            arr = cupy.ndarray(shape, root._np.dtype, cupy.cuda.MemoryPointer(memory, 0))
        else:
            view = memoryview(hold)  # keeps the hold (and so the device memory) alive as long as the array
            arr = np.ndarray(shape, root._np.dtype, view.toreadonly() if readonly else view)
        if not full:
            arr = _Window(arr, hold.lo, hold.lo + hold.nbytes, root)
        try:
            root._cache[key] = (ptr, weakref.ref(arr))
        except TypeError:  # an array type without weak references: not cached
            return arr
        task = _core.current_task()
        if task is not None:
            task._keep(arr)  # alive (so cached) while the body runs; the body's end lets it go
        return arr

    def _covering(self, task: Any, root: "PArray") -> Iterator[Tuple["PArray", int]]:
        """The (view, mode) declarations of task whose view is of the same base array as this view and covers
        it: a view made inside the body (``A[0:10][2:5]``, ``A[5:]``) is covered by a declared view of the
        same array. This view itself is among them when declared."""
        for declared, m in _declared(task):
            if (getattr(declared, "_root", None) is root and declared._ranges is not None
                    and _ranges.covers(declared._ranges, self._ranges or [])):
                yield declared, m

    def _declared_mode(self, task: Any) -> int:
        """The modes task declared for this array, its base, and (for a view) declared views covering it."""
        root = self._root if self._root is not None else self
        mode = 0
        for declared, m in _declared(task):
            if declared is self or declared is root:
                mode |= m
        if root is self:
            return mode
        for _, m in self._covering(task, root):
            mode |= m
        return mode

    def _task_mode(self, task: Any) -> int:
        """The access modes task declared for this array (through itself, its base, or views covering it)."""
        modes = task._modes
        if modes is None:
            modes = {}
            for declared, m in _declared(task):
                modes[id(declared)] = modes.get(id(declared), 0) | m
            task._modes = modes
        root = self._root if self._root is not None else self
        mode: int = modes.get(id(self), 0) | modes.get(id(root), 0)
        if mode != _core.READWRITE and root is not self:
            mode |= self._declared_mode(task)  # declared views covering this one add their modes
        return mode

    def _select(self, base: Any) -> Any:
        """This array's elements out of its base array's copy `base` (a view, or a gathered copy)."""
        if type(base) is _Window:
            return base.select(self)
        if self._flat is not None:
            flat = self._flat
            if type(base) is not np.ndarray:  # CuPy
                flat = _cuda.cupy_module().asarray(flat)
            return base.reshape(-1)[flat]
        for index in self._indices:
            base = base[index]
        return base

    def _task_device(self, task: Any, root: "PArray") -> int:
        """The engine index of the device whose copy the running task uses for this array: its first device;
        for an array declared for other positions in its devices (``(array, k)``), the device of the innermost
        ``with get_current_context()[i]:`` when the array is declared for position i, else the device of the
        first position it is declared for (where its data was made valid)."""
        devices: List[int] = task._devices
        if not devices:
            return 0
        slots: Optional[Dict[int, int]] = task._slots
        if slots is None:
            return devices[0]
        mask = slots.get(id(self), 0) | slots.get(id(root), 0)
        if root is not self:
            # A view made inside the body (A[5:]) goes where the declared views covering it were declared.
            for declared, _ in self._covering(task, root):
                mask |= slots.get(id(declared), 0)
        position = _context.current_position()
        if mask >> position & 1 and position < len(devices):
            return devices[position]
        if mask:
            return devices[(mask & -mask).bit_length() - 1]
        return devices[0]

    def _base_for(self, task: Any, mode: int, write: bool) -> Any:
        """The base array's copy the running task may use for this array, for reading or (write) writing.
        Raises RuntimeError for a use that is not allowed (see the user guide, 'Inside a task')."""
        root = self._root if self._root is not None else self
        device = self._task_device(task, root)
        if mode:
            if write and not mode & _core.WRITE:
                raise ValueError(f"task {task.name}: {self._describe()} is declared only as input=: it is "
                                 f"read-only there (declare it in inout= or output= to write it)")
            if device == 0:
                return root._np
            return self._device_base(device, _context.device_table()[device])
        return self._undeclared_base(task, root, device, write)

    def _undeclared_base(self, task: Any, root: "PArray", device: int, write: bool) -> Any:
        """The copy an undeclared use gets: an array nobody declared in this runtime is plain memory (its CPU
        copy, for CPU tasks and for the task that made it); an array the runtime manages may be read where
        the task's device holds a valid copy (read-only), and nothing else."""
        data = root._data
        context = _context.current
        managed = data is not None and context is not None and data.runtime is context._rt
        creator = root._creator
        own = creator is not None and creator() is task
        where = device_of(device)
        strict = context is not None and context.strict_access
        if not managed and (own or (device == 0 and not strict)):
            return root._np
        if strict:
            raise RuntimeError(f"task {task.name} uses {self._describe()} that it did not declare in input=, "
                               f"output= or inout= (strict access checking is on: Parla(strict_access=True) "
                               f"or PARLA_STRICT_ACCESS=1)")
        parts = [d for d, _ in _declared(task) if getattr(d, "_root", None) is root]
        if parts:
            raise RuntimeError(f"task {task.name} uses {self._describe()}, which it did not declare: it declared "
                               f"only part of that array "
                               f"({'; '.join(v._describe() for v in parts[:3])}): use the declared view's .array, "
                               f"or declare the whole array")
        if data is None or not managed:
            raise RuntimeError(f"task {task.name} on {where!r} uses {self._describe()}, which it did not declare "
                               f"in input=, output= or inout=, and {where!r} has no copy of it: declare it so "
                               f"the runtime copies it there")
        if write:
            raise RuntimeError(f"task {task.name} writes {self._describe()}, which it did not declare in output= "
                               f"or inout=: the runtime would not know of the write, and other copies would "
                               f"stay stale")
        if data.wait(False, 0.0) != 0:
            raise RuntimeError(f"task {task.name} reads {self._describe()}, which it did not declare in input= or "
                               f"inout=, while a task that writes it has not finished: it could read values "
                               f"being written (declare it, and the runtime orders the two tasks)")
        if self._engine_data().valid_bytes(device) != self._valid_total():
            raise RuntimeError(f"task {task.name} reads {self._describe()}, which it did not declare in input= or "
                               f"inout=, and {where!r} holds no valid copy of it: it would read stale values "
                               f"(declare it, and the runtime brings the latest values there first)")
        base = root._np if device == 0 else \
            self._device_base(device, _context.device_table()[device])
        return _read_only(base)

    @property
    def array(self) -> Any:
        """The array on the running task's device (NumPy, or CuPy on a CUDA GPU). Outside tasks: the latest
        values, as a NumPy array on the CPU (waiting for tasks that write this array). For a view made with
        lists of indices or a mask: a read-only copy of its elements."""
        root = self._root
        if root is None:
            root = self
        elif self._generation != root._generation:
            self._check_fresh()
        task = _core.current_task()
        if task is None:
            data = self._live_data()
            if data is not None:
                _fetch(data, False)
            if self._flat is not None:
                return _read_only(root._np.reshape(-1)[self._flat])
            return self._np
        modes = task._modes
        if modes is None:
            mode = self._task_mode(task)
        else:
            mode = modes.get(id(self), 0) | modes.get(id(root), 0)
            if mode != _core.READWRITE and root is not self:
                mode |= self._declared_mode(task)  # declared views covering this one add their modes
        if not mode:
            out = self._undeclared_base(task, root, task._devices[0] if task._devices else 0, False)
            return _read_only(self._select(out)) if self._flat is not None else self._select(out)
        device = self._task_device(task, root)
        if device != 0 and self._np.size == 0:
            # No elements, so no allocation on the device: the copy there is an empty array of this shape.
            if _context.device_table()[device]["cuda"]:
                return _cuda.cupy_module().empty(self._np.shape, self._np.dtype)
            empty = np.empty_like(self._np)
            return _read_only(empty) if mode == _core.READ or self._flat is not None else empty
        if device != 0:
            out = self._device_base(device, _context.device_table()[device], mode == _core.READ)
        elif mode == _core.READ:
            # A read-only view of the CPU copy, made once per array (key -1).
            out = root._np
            cached = root._cache.get(-1)
            if cached is not None and cached[0] is out:
                out = cached[1]
            else:
                view = out.view()
                view.flags.writeable = False
                root._cache[-1] = (out, view)
                out = view
        else:
            out = root._np
        if self._flat is not None:
            return _read_only(self._select(out))
        if type(out) is _Window:
            return out.select(self)
        for index in self._indices:
            out = out[index]
        return out

    @property
    def name(self) -> str:
        """The name given to asarray(..., name=) ("NA" when none was given, as in Parla)."""
        root = self._root if self._root is not None else self
        return root._name if root._name is not None else "NA"

    def update(self, new_array: Any) -> None:
        """Replaces the contents with new_array, whose shape and dtype may differ (base arrays only; outside
        tasks this waits for every task using the array first)."""
        if self._root is not None:
            raise ValueError("update() replaces a whole PArray; it cannot be called on a slice")
        task = _core.current_task()
        if task is not None:
            target = self._select(self._base_for(task, self._task_mode(task), True))
            new = np.asarray(_host_array(new_array)) if isinstance(target, np.ndarray) else new_array
            if getattr(new, "shape", None) != target.shape or new.dtype != target.dtype:
                raise ValueError(f"task {task.name}: update() inside a task keeps shape and dtype "
                                 f"({target.shape}, {target.dtype}); call it outside tasks to change them")
            target[...] = new
            return
        data = self._live_data()
        if data is not None:
            _fetch(data, True)
        base = np.asarray(_host_array(new_array), order="C")
        if base.dtype.hasobject:
            raise TypeError(f"update(): a PArray holds numbers, not Python objects (dtype {base.dtype})")
        if not base.flags.writeable or not base.flags.c_contiguous:
            base = np.array(base, order="C", copy=True)
        self._np = base
        self._data = None
        self._cache = {}
        self._generation += 1
        global _updates
        _updates += 1  # after _generation: a graph that reads the new count sees the new generation too

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

    @property
    def storage_size(self) -> int:
        """Bytes a copy of this array takes on a device (Parla's name for ``nbytes``)."""
        return self._np.nbytes

    def __len__(self) -> int:
        return len(self._np)

    def __iter__(self) -> Iterator[Any]:
        return iter(self.array)

    def __getitem__(self, index: Any) -> Any:
        if type(index) is not int and type(index) is not slice:
            index = _ranges.normalize(index, self._np.shape)
        self._check_fresh()
        result = self._np[index]  # NumPy's rules: IndexError out of bounds, broadcasting of index lists
        if isinstance(result, np.ndarray) and result.ndim > 0:
            return PArray._view(self, index, result)
        task = _core.current_task()
        if task is None:
            return self.array[index]
        mode = self._task_mode(task)
        if mode or not self._region_mode(task, index):
            return self.array[index]
        base = self._base_for(task, _core.READ, False)  # an element within a declared view
        if type(base) is _Window and self._flat is None:
            return base.view_of(self._region_np(index))[()]
        return self._select(base)[index]

    def _region_np(self, index: Any) -> np.ndarray:
        """self[index] as a NumPy view of the base's CPU copy (0-d for one element)."""
        target: np.ndarray = self._np[index]
        if not isinstance(target, np.ndarray):
            key = index if type(index) is tuple else (index,)
            target = self._np[key + (Ellipsis,)]
        return target

    def _region_ranges(self, index: Any) -> List[int]:
        """Byte ranges (in the base array) of the elements self[index] selects."""
        root = self._root if self._root is not None else self
        if self._flat is None:
            target = self._region_np(index)  # one element: a 0-d view of it
            if np.may_share_memory(target, root._np) or target.size == 0:
                return _ranges.byte_ranges(target, root._np)
        return _ranges.element_ranges(np.asarray(self._flat_map()[index]), root._np.itemsize)

    def _region_mode(self, task: Any, index: Any) -> int:
        """The modes declared by task for views covering self[index] (a task that declared A[0] may write it
        through A: ``A[0] = v``)."""
        root = self._root if self._root is not None else self
        views = [(d, m) for d, m in _declared(task) if getattr(d, "_root", None) is root and d._ranges]
        if not views:
            return 0
        region = self._region_ranges(index)
        mode = 0
        for m in (_core.READ, _core.WRITE):
            if _ranges.covers(_ranges.merge_ranges([d._ranges for d, dm in views if dm & m]), region):
                mode |= m
        return mode

    def __setitem__(self, index: Any, value: Any) -> None:
        if isinstance(value, PArray):
            value = value.array
        if type(index) is not int and type(index) is not slice:
            index = _ranges.normalize(index, self._np.shape)
        self._check_fresh()
        task = _core.current_task()
        if task is None:
            data = self._live_data()
            if data is not None:
                _fetch(data, True)
            if self._flat is None:
                self._np[index] = value
            else:
                base = self._root._np if self._root is not None else self._np
                base.reshape(-1)[self._flat[index]] = value
            return
        mode = self._task_mode(task)
        if not mode & _core.WRITE and self._region_mode(task, index) & _core.WRITE:
            mode = _core.READWRITE  # the task declared a view covering what it writes
        base = self._base_for(task, mode, True)
        if type(base) is _Window and self._flat is None:
            base.view_of(self._region_np(index))[...] = value
        elif self._flat is None:
            self._select(base)[index] = value
        else:
            flat = self._flat[index]
            target: Any = base
            if type(base) is _Window:
                target, flat = base.array, flat - base.first
            if type(target) is not np.ndarray:
                flat = _cuda.cupy_module().asarray(flat)
            target.reshape(-1)[flat] = value

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return np.asarray(_host_array(self.array), dtype=dtype)

    def __repr__(self) -> str:
        return f"PArray({self.array!r})"

    def __str__(self) -> str:
        return str(self.array)

    def __int__(self) -> int:
        return int(self.array)

    def __float__(self) -> float:
        return float(self.array)

    def __complex__(self) -> complex:
        return complex(self.array)

    def __parla_placement__(self) -> List[Device]:
        """Where this array's latest values are: the devices holding a valid copy of all of it (the CPU outside
        a context). ``placement=[A]`` places a task there."""
        data = self._live_data()
        if data is None:
            return [cpu(0)]
        total = self._valid_total()
        return [device_of(info["index"]) for info in _context.device_table()
                if data.valid_bytes(info["index"]) == total] or [cpu(0)]

    # ---------------------------------------------------------- residency --
    def _device_index(self, device: Union[Device, int, None], what: str) -> int:
        """The engine's number of device (a Device, or already an engine number: 0 the CPU, 1... the GPUs);
        -1 for None. Raises TypeError for anything else and ValueError for a number naming no device, whether
        or not the array has copies yet (what: the method, for the message)."""
        if device is None:
            return -1
        if isinstance(device, Device):
            if _context.current is None:  # after the context only the CPU copy exists
                return 0 if device is cpu(0) else -2
            return engine_index(device)
        if not isinstance(device, numbers.Integral) or isinstance(device, (bool, np.bool_)):
            raise TypeError(f"PArray.{what}(device={device!r}): expected one device, e.g. cpu(0) or gpu(1), or None")
        index = int(device)
        count = len(_context.device_table()) if _context.current is not None else 1
        if not 0 <= index < count:
            raise ValueError(f"PArray.{what}(device={index}): no such device (device numbers run from 0, the CPU, "
                             f"to {count - 1})")
        return index

    def evict(self, device: Union[Device, int, None] = None, keep_one_copy: bool = True) -> None:
        """Drops this array's copy on device (None: every GPU). The last valid copy is always written back to
        the CPU first: this runtime never drops data, whatever keep_one_copy says. device: a Device or an engine
        device number (0 the CPU); TypeError for anything else, ValueError for a device the runtime lacks."""
        index = self._device_index(device, "evict")
        data = self._live_data()
        if data is not None:
            data.evict(index, keep_one_copy)

    def exists_on_device(self, device: Union[Device, int]) -> bool:
        """True when device holds a valid copy of every element of this array (view). device as in evict()."""
        data = self._live_data()
        index = self._device_index(device, "exists_on_device")
        if data is None:
            return index == 0
        return data.valid_bytes(index) == self._valid_total()

    def _valid_total(self) -> int:
        if self._root is None:
            return self.nbytes
        r = self._ranges or []
        return sum(r[i + 1] - r[i] for i in range(0, len(r), 2))

    def nbytes_at(self, device: Union[Device, int]) -> int:
        """Bytes allocated for this array's base on device (0 when it has no copy there). device as in evict()."""
        data = self._live_data()
        index = self._device_index(device, "nbytes_at")
        root = self._root if self._root is not None else self
        if data is None:
            return root.nbytes if index == 0 else 0
        return data.resident_bytes(index)

    def print_overview(self) -> None:
        """Prints, per device, whether it holds a valid copy and how many bytes are resident."""
        data = self._live_data()
        print(f"PArray name={self.name} shape={self.shape} dtype={self.dtype} nbytes={self.nbytes}")
        if data is None:
            print("  cpu(0): valid (no active runtime)")
            return
        for info in _context.device_table():
            i = info["index"]
            print(f"  {device_of(i)!r}: valid {data.valid_bytes(i)}/{self._valid_total()} bytes, "
                  f"resident {data.resident_bytes(i)} bytes")


# ------------------------------------------------- task declarations --
# What spawn's input=/output=/inout= declare, read by spawn (the engine accesses) and by a running task's
# .array (its modes). Duck-typed on the task: its name, and the _decl and _modes that spawn sets on it.

def _declares(x: Any) -> bool:
    """Whether an input/output/inout argument declares anything (a PArray, or a non-empty list)."""
    return x is not None and (type(x) not in (list, tuple) or len(x) > 0)


def _engine_accesses(task: Any, input: Any, output: Any, inout: Any, attrs: Dict[str, Any],
                     options: Any = None) -> List[Tuple[Any, ...]]:
    """The engine accesses of a task's input/output/inout declarations (PArrays, ``(PArray, k)`` for the
    task's k-th device, or nested lists of them): ``(Data, mode)``, or ``(Data, mode, k)`` for k > 0.
    options: the task's placement options (resolve_placement), to check each k against the devices every
    option gives the task (ValueError naming the task and the argument). The declarations go to attrs, for
    the task (they keep the arrays alive while it runs, and ``.array`` reads its access mode and device
    positions from them)."""
    out: List[Tuple[Any, ...]] = []
    modes: Dict[int, int] = {}  # id(PArray) -> its declared modes, for .array in the body
    slots: Dict[int, int] = {}  # id(PArray) -> the positions it is declared for (bit k: the k-th device)
    # _decl: per argument the declared PArrays in order, (PArray, k) for the k-th device (k > 0), as the C
    # spawn path writes it (src/python/spawn_decl.c).
    parts: Tuple[List[Any], List[Any], List[Any]] = ([], [], [])
    for arg, items, mode in (("input", input, _core.READ), ("output", output, _core.WRITE),
                             ("inout", inout, _core.READWRITE)):
        if type(items) is not list and type(items) is not tuple:
            if items is None:
                continue
            items = (items,)
        elif not items:
            continue
        for item in items:
            if type(item) is PArray:
                out.append((item._engine_data(), mode))
                parts[mode - 1].append(item)
                key = id(item)
                modes[key] = modes.get(key, 0) | mode
                slots[key] = slots.get(key, 0) | 1
            else:
                _access_slow(task, arg, item, mode, 0, out, modes, slots, parts[mode - 1])
    if any(len(a) == 3 for a in out):
        _check_positions(task, out, options)
        attrs["_slots"] = slots
    attrs["_decl"] = (tuple(parts[0]), tuple(parts[1]), tuple(parts[2]))
    attrs["_modes"] = modes
    return out



_ARGS = {_core.READ: "input", _core.WRITE: "output", _core.READWRITE: "inout"}


def _check_positions(task: Any, accesses: List[Tuple[Any, ...]], options: Any) -> None:
    """Raises ValueError naming the task and the argument when an access is for a device position beyond
    those a placement option gives the task (a task without options runs on one device)."""
    counts = [len(o[0]) for o in options] if options else [1]
    fewest = min(counts)
    for access in accesses:
        if len(access) == 3 and access[2] >= fewest:
            k, n = access[2], fewest
            raise ValueError(f"task {task.name}: {_ARGS[access[1]]}=[(array, {k})] asks for the array on the "
                             f"task's device {k} (positions count from 0), but its placement gives it {n} "
                             f"device{'s' if n != 1 else ''}{'' if len(counts) == 1 else ' in one of its options'}")


def _access_slow(task: Any, arg: str, item: Any, mode: int, slot: int, out: List[Tuple[Any, ...]],
                 modes: Dict[int, int], slots: Dict[int, int], part: List[Any]) -> None:
    if type(item) is tuple and len(item) == 2 and isinstance(item[0], PArray) \
            and not isinstance(item[1], (PArray, list, tuple)):
        # parla-experimental's (array, k): the array on the task's k-th device.
        k = item[1]
        if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 0:
            raise TypeError(f"task {task.name}: {arg}= holds ({type(item[0]).__name__}, {k!r}); the second "
                            f"element names one of the task's devices by position (0, 1, ...)")
        slot = int(k)
        item = item[0]
    if isinstance(item, (list, tuple)):
        for x in item:
            _access_slow(task, arg, x, mode, slot, out, modes, slots, part)
    elif isinstance(item, PArray):
        out.append((item._engine_data(), mode, slot) if slot else (item._engine_data(), mode))
        part.append((item, slot) if slot else item)
        modes[id(item)] = modes.get(id(item), 0) | mode
        # (a position beyond any placement's devices, 2**70 included, is refused by _check_positions)
        slots[id(item)] = slots.get(id(item), 0) | (1 << min(slot, 63))
    else:
        raise TypeError(f"task {task.name}: {arg}= holds a {type(item).__name__}; only PArrays can be "
                        f"declared (wrap NumPy arrays with parla.array.asarray)")


def _declared(task: Any) -> Iterator[Tuple[Any, int]]:
    """(PArray, mode) for each declaration of a task (read from its ``_decl``: input, output, inout)."""
    for items, mode in zip(task._decl, (_core.READ, _core.WRITE, _core.READWRITE)):
        if not items:
            continue
        stack = [items]
        while stack:
            x = stack.pop()
            if isinstance(x, (list, tuple)):
                stack.extend(x)
            else:
                yield x, mode


def _operand(x: Any) -> Any:
    return x.array if isinstance(x, PArray) else x


_Op = Callable[[Any, Any], Any]


def _binary(op: _Op) -> Callable[["PArray", Any], "PArray"]:
    def method(self: PArray, other: Any) -> PArray:
        return PArray(op(self.array, _operand(other)))
    return method


def _reflected(op: _Op) -> Callable[["PArray", Any], "PArray"]:
    def method(self: PArray, other: Any) -> PArray:
        return PArray(op(other, self.array))
    return method


def _compare(op: _Op) -> Callable[["PArray", Any], Any]:
    def method(self: PArray, other: Any) -> Any:
        return op(self.array, _operand(other))
    return method


def _unary(op: Callable[[Any], Any]) -> Callable[["PArray"], "PArray"]:
    def method(self: PArray) -> PArray:
        return PArray(op(self.array))
    return method


def _inplace(op: _Op) -> Callable[["PArray", Any], "PArray"]:
    def method(self: PArray, other: Any) -> PArray:
        other = _operand(other)
        if self._flat is not None:  # the elements are a copy: compute, then write them through
            self[...] = op(np.array(self.array) if isinstance(self.array, np.ndarray) else self.array.copy(), other)
            return self
        task = _core.current_task()
        if task is None:
            data = self._live_data()
            if data is not None:
                _fetch(data, True)
            op(self._np, other)
        else:
            mode = self._task_mode(task)
            if not mode & _core.WRITE:
                self[...] = op(self.array.copy(), other)  # checks that a declared view covers it
                return self
            op(self.array, other)
        return self
    return method


def _divmod(self: PArray, other: Any) -> Tuple[PArray, PArray]:
    q, r = divmod(self.array, _operand(other))
    return PArray(q), PArray(r)


def _rdivmod(self: PArray, other: Any) -> Tuple[PArray, PArray]:
    q, r = divmod(other, self.array)
    return PArray(q), PArray(r)


# The operators, made here from the operator module (their types are declared in the class for checkers).
for _name, _op in [("add", operator.add), ("sub", operator.sub), ("mul", operator.mul),
                   ("truediv", operator.truediv), ("floordiv", operator.floordiv), ("mod", operator.mod),
                   ("pow", operator.pow), ("matmul", operator.matmul), ("and", operator.and_),
                   ("or", operator.or_), ("xor", operator.xor), ("lshift", operator.lshift),
                   ("rshift", operator.rshift)]:
    setattr(PArray, f"__{_name}__", _binary(_op))
    setattr(PArray, f"__r{_name}__", _reflected(_op))
for _name, _op in [("iadd", operator.iadd), ("isub", operator.isub), ("imul", operator.imul),
                   ("itruediv", operator.itruediv), ("ifloordiv", operator.ifloordiv), ("imod", operator.imod),
                   ("ipow", operator.ipow), ("iand", operator.iand), ("ior", operator.ior),
                   ("ixor", operator.ixor), ("ilshift", operator.ilshift), ("irshift", operator.irshift),
                   ("imatmul", operator.imatmul)]:
    setattr(PArray, f"__{_name}__", _inplace(_op))
for _name, _op in [("lt", operator.lt), ("le", operator.le), ("eq", operator.eq), ("ne", operator.ne),
                   ("gt", operator.gt), ("ge", operator.ge)]:
    setattr(PArray, f"__{_name}__", _compare(_op))
_unary_ops: List[Tuple[str, Callable[[Any], Any]]] = [
    ("neg", operator.neg), ("pos", operator.pos), ("abs", operator.abs), ("invert", operator.invert)]
for _name, _uop in _unary_ops:
    setattr(PArray, f"__{_name}__", _unary(_uop))
setattr(PArray, "__divmod__", _divmod)
setattr(PArray, "__rdivmod__", _rdivmod)
setattr(PArray, "__hash__", object.__hash__)  # identity: == is elementwise


def _forward(name: str) -> property:
    return property(lambda self: getattr(self.array, name),
                    doc=f"``self.array.{name}`` (forwarded to the array on the running task's device, as in Parla)")


# The array's own attributes and methods (A.T, A.sum(), A.reshape(...)), forwarded as Parla forwards them.
# Properties rather than __getattr__: a class with __getattr__ makes every attribute lookup slower.
for _name in dir(np.ndarray):
    if not _name.startswith("_") and not hasattr(PArray, _name):
        setattr(PArray, _name, _forward(_name))


_Order = Literal["K", "A", "C", "F"]  # NumPy's memory orders


def asarray(a: Any, dtype: Any = None, order: Optional[_Order] = None, like: Any = None, on_gpu: bool = False,
            name: str = "NA") -> PArray:
    """A PArray over a (a NumPy array, a CuPy array, or anything np.asarray accepts). A PArray is returned as
    it is (when dtype does not change it). A C-contiguous writable NumPy array of the dtype asked is used in
    place as the CPU copy; others are converted (the CPU copy is always C-ordered: order= gives the values'
    order as np.asarray does). like= is passed to np.asarray. on_gpu= is accepted as Parla accepts it: the
    first copy is the CPU's, and the runtime moves it to the GPU that first uses it. name= names the array in
    messages and print_overview()."""
    if isinstance(a, PArray):
        if dtype is None or np.dtype(dtype) == a.dtype:
            return a
        a = a.array
    kwargs = {"like": like} if like is not None else {}
    return PArray(np.asarray(_host_array(a), dtype=dtype, order=order, **kwargs), name=name)


def array(object: Any, dtype: Any = None, copy: bool = True, order: _Order = "K", subok: bool = False,
          ndmin: int = 0, like: Any = None, on_gpu: bool = False, name: str = "NA") -> PArray:
    """A PArray holding a copy of object (with copy=False, object itself where it can, as asarray). The
    arguments are NumPy's (np.array) plus on_gpu= and name= as in asarray."""
    if isinstance(object, PArray):
        object = object.array
    kwargs = {"like": like} if like is not None else {}
    values = np.array(_host_array(object), dtype=dtype, copy=True if copy else None, order=order, subok=subok,
                      ndmin=ndmin, **kwargs)
    return PArray(values, name=name)


def storage_size(*arrays: Any) -> int:
    """Bytes the arrays (PArrays, NumPy or CuPy arrays) take in memory, summed (Parla.py's storage_size)."""
    return sum(int(a.nbytes) for a in arrays)


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
        return _cuda.cupy_module()
    return np


def clone_here(source: Any, kind: Any = None) -> Any:
    """A copy of source (PArray, NumPy or CuPy array) on the running task's device (NumPy on cpu and virtual
    GPUs, CuPy on CUDA GPUs)."""
    if isinstance(source, PArray):
        source = source.array
    task = _core.current_task()
    devices = task._devices if task is not None else ()
    if devices and devices[0] != 0:
        info = _context.device_table()[devices[0]]
        if info["cuda"]:
            cupy = _cuda.cupy_module()
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
