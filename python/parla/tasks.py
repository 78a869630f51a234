"""Tasks: ``spawn``, ``TaskSpace`` and what a running task can ask about itself.

    from parla import Parla, spawn, TaskSpace

    with Parla():
        T = TaskSpace("T")
        for i in range(4):
            @spawn(T[i], dependencies=[T[i - 1]] if i else [])
            def step(i=i):
                print("step", i)        # the default argument binds i's value at spawn

Inside a function, a body's closure variables are captured by value at spawn (``def step():`` would do
there). At module level or in a notebook cell the loop variable is a global, read when the body runs:
without ``i=i`` every task could print the last value; the runtime then warns (RuntimeWarning).

Task bodies run on worker threads. A body may be ``async def``: ``await`` on a task (gives its return
value), a TaskSpace or a collection of tasks (waits for all) or another coroutine frees the worker until
the awaited tasks finish.
"""
from __future__ import annotations

import dis
import functools
import inspect
import itertools
import numbers
import threading
import warnings
from typing import (TYPE_CHECKING, Any, Callable, Dict, FrozenSet, Generator, Hashable, Iterable, Iterator, List,
                    Literal, Optional, Sequence, Set, Tuple, Union,
                    overload)

from . import _blocking, _context, _core, _cuda
from . import native as _native
from ._errors import TaskCancelledError, UnspawnedDependencyError, unexpected_keywords
from ._logging import mapping_logger, spawn_logger
from .array import PArray as _PArray, _declares, _engine_accesses, storage_size as _storage_size
from .devices import Device, cpu, device_of, resolve_placement
from .environments import TaskEnvironmentRegistry
from .function_decorators import specialize

__all__ = [
    "spawn", "Task", "TaskSpace", "TaskList", "TaskID", "TaskHandle", "AtomicTaskSpace", "BackendTaskSpace",
    "AtomicTaskList", "CompletedTaskSpace", "Tasks", "barrier", "tasks", "finish", "get_current_device", "specialize", "get_current_task", "get_current_devices",
    "get_current_context", "get_current_stream", "TaskCancelledError", "UnspawnedDependencyError",
]


class Task(_core.Task):
    """A task: spawned with :func:`spawn`, or named in a :class:`TaskSpace` before it is spawned.

    Attributes: ``name`` (e.g. ``"T[1, 2]"``), ``state`` (``"created"``, ``"submitted"``, ``"ready"``,
    ``"running"``, ``"suspended"``, ``"runahead"``, ``"done"``, ``"failed"`` or ``"cancelled"``), ``done``, ``result``,
    ``exception``, ``dependencies``. ``await task`` inside an async task gives its result.
    """

    def drop_result(self) -> None:
        """Releases the body's return value, so the task no longer keeps it alive (a Task, or a TaskSpace
        naming it, lives as long as the program keeps it). Afterwards ``result`` raises RuntimeError. Only on
        a finished task (RuntimeError otherwise); any thread."""
        if not self.done:
            raise RuntimeError(f"task {self.name} has not finished (state {self.state}): its result cannot be "
                               f"dropped yet")
        self._drop_result()  # sets _dropped (a flag in the object: no __dict__ made for it)

    # Set at spawn (class defaults keep task creation in C).
    _decl: Tuple[Any, Any, Any] = ((), (), ())
    _modes: Optional[Dict[int, int]] = None  # id(PArray) -> declared modes, built at spawn from the declarations
    _slots: Optional[Dict[int, int]] = None  # id(PArray) -> positions declared with (array, k), when any k > 0

    @property
    def placement_reason(self) -> Optional[Dict[str, Any]]:
        """Why the task runs where it runs: the devices chosen among its placement options and their unitless
        scores (``locality``, ``transfer``, ``load``, ``score`` = locality - transfer - load, ``candidates``).
        None for tasks without placement options (plain CPU tasks) or not yet mapped."""
        mapping = self._mapping
        if mapping is None:
            return None
        mapping["devices"] = self.devices
        return mapping

    @property
    def devices(self) -> List[Device]:
        """The devices the task was mapped to (``[gpu(1)]``, ``[cpu(0)]``, two for a multi-device task);
        empty before it is mapped."""
        return [device_of(i) for i in self._devices]

    @property
    def result(self) -> Any:
        """The body's return value. Raises the body's exception if it failed, TaskCancelledError if it
        was cancelled, and RuntimeError if it has not finished or its result was dropped."""
        state = self.state
        if state == "done":
            if self._dropped:
                raise RuntimeError(f"the result of task {self.name} was dropped (drop_result())")
            return self._result
        if state == "failed":
            raise self._exception if self._exception is not None else \
                RuntimeError(f"task {self.name} failed in the runtime")
        if state == "cancelled":
            raise self._cancelled_error()
        raise RuntimeError(f"task {self.name} has not finished (state {state})")

    @property
    def exception(self) -> Optional[BaseException]:
        """The exception the body raised (failed), a TaskCancelledError (cancelled), else None."""
        state = self.state
        if state == "failed":
            return self._exception
        if state == "cancelled":
            return self._cancelled_error()
        return None

    def _cancelled_error(self) -> TaskCancelledError:
        cause = self._cause
        if isinstance(cause, Task):
            what = {"failed": "failed", "cancelled": "was cancelled"}.get(cause.state, "was never spawned")
            error = TaskCancelledError(f"task {self.name} was cancelled because task {cause.name} {what}")
            if cause.state == "failed":
                error.__cause__ = cause._exception
            return error
        if cause is not None:
            return TaskCancelledError(f"task {self.name} was cancelled because task {cause} did not run")
        return TaskCancelledError(f"task {self.name} was cancelled")

    @property
    def dependencies(self) -> List["Task"]:
        """The tasks given as dependencies when this task was spawned (flattened, in order).

        A task references its dependencies weakly, so that a finished task does not keep its predecessors,
        and their results, alive: holding the last task of a chain holds that task only. Until a dependency
        has finished the engine keeps it (and a TaskSpace keeps the tasks it names); a finished dependency
        that nothing else references any more (no TaskSpace, no variable) is freed with its result and is
        left out of this list."""
        return self._dependencies  # the engine handles of the dependencies whose Task objects are alive

    def __await__(self) -> Generator[Any, None, Any]:
        if not self.done:
            if _core.current_task() is None:  # an asyncio coroutine, not a task body
                yield from _blocking.until_done_in_asyncio((self,)).__await__()
            else:
                yield self
        return self.result

    def wait(self, timeout: Optional[float] = None) -> None:
        """Blocks until the task has finished (done, failed or cancelled); then ``result`` gives its value or
        raises its error. ``timeout`` in seconds (None: no limit) raises :class:`TimeoutError` when it runs out
        (the task keeps running). GIL released while waiting; any thread (see :mod:`parla.waiting`)."""
        _blocking.wait_task(self, timeout)

    def __repr__(self) -> str:
        return f"<Task {self.name} {self.state}>"

    def __hash__(self) -> int:
        return id(self)

    def __eq__(self, other: object) -> bool:
        return self is other


def _dims(value: Any, what: str, name: str) -> Tuple[Any, ...]:
    """A TaskSpace's shape or start as a tuple (its items are checked by the caller)."""
    if isinstance(value, (int, numbers.Integral)):
        return (value,)
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise TypeError(f"TaskSpace {name!r}: {what}={value!r} must be an integer or a sequence of integers")
    return tuple(value)


def _flatten(deps: Any) -> Iterator[Task]:
    if isinstance(deps, Task):
        yield deps
    elif deps is None:
        return
    elif isinstance(deps, (str, bytes)):  # iterates to strings for ever, never to a task
        raise TypeError(f"expected tasks, TaskSpace slices or iterables of them, not the string {deps!r}")
    else:
        for d in deps:
            yield from _flatten(d)


class TaskList(Tuple[Task, ...]):
    """An immutable collection of tasks (what slicing a TaskSpace gives). Usable as dependencies;
    ``await`` waits for all of them."""

    def __await__(self) -> Generator[Any, None, None]:
        tasks = tuple(self)
        if any(not t.done for t in tasks):
            if _core.current_task() is None:  # an asyncio coroutine, not a task body
                yield from _blocking.until_done_in_asyncio(tasks).__await__()
            else:
                yield tasks
        for t in tasks:
            if t.state == "failed" or t.state == "cancelled":
                t.result  # raises the task's error
        return None

    def __add__(self, other: Any) -> "TaskList":
        return TaskList(tuple(self) + tuple(other))

    def __repr__(self) -> str:
        return f"TaskList({list(self)!r})"


class TaskSpace(_core.TaskSpaceBase):
    """A named space of tasks indexed by any hashable keys, in any number of dimensions.

    ``T[i]``, ``T[i, j]``, ``T[0, "a"]`` name one task (created as a placeholder the first time, so a task
    may be named as a dependency before it is spawned). Slices, ranges and lists in an index expand to a
    :class:`TaskList` of every combination; an open slice start is ``start`` (``T[:n]`` is ``T[0:n]``).
    Integer indices below ``start`` (0 by default, with or without a shape) and, with ``shape``, at or past
    ``start + shape`` give an empty TaskList, so ``T[i - 1]`` at ``i = 0`` means "no dependency".
    ``len(T)``, iteration and ``in`` cover the tasks named so far; ``await T`` (in an async task) or
    ``T.wait()`` waits for all of them.

    Outside a Parla context, ``T[i]`` names a task for a later context (a :class:`TaskHandle`, usable as
    taskid or dependency there). ``T.view`` indexes the same tasks without creating any
    (``create=False`` gives a space that never creates tasks).
    """

    def __init__(self, name: str = "", shape: Union[int, Sequence[int], None] = None,
                 start: Union[int, Sequence[int], None] = None, create: bool = True) -> None:
        self.name = name
        self._create = create
        self._view: Optional["TaskSpace"] = None
        shape_: Optional[Tuple[Any, ...]] = None
        start_: Optional[Tuple[Any, ...]] = None
        if shape is not None:
            shape_ = _dims(shape, "shape", name)
        if start is not None:
            start_ = _dims(start, "start", name)
        if shape_ is not None and start_ is None:
            start_ = (0,) * len(shape_)
        if start_ is not None and shape_ is not None and len(start_) != len(shape_):
            raise ValueError(f"TaskSpace {name!r}: start {start_} and shape {shape_} differ in length")
        if shape_ is not None:
            for n in shape_:
                if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0:
                    raise ValueError(f"TaskSpace {name!r}: shape={shape_!r} must be non-negative integers")
            shape_ = tuple(int(n) for n in shape_)
        self.shape: Optional[Tuple[int, ...]] = shape_
        self.start: Optional[Tuple[int, ...]] = start_
        # key -> its Task (a TaskHandle for a key named outside a context), in the order the keys came: a
        # dict's get, setdefault, [key], [key] = task, values(), len and in, with T[i]'s keys stored as
        # 64-bit integers (a dict of 1-tuples took about 120 bytes a key)
        self._tasks = _core.TaskTable()
        # Serialises the creation of tasks: threads naming the same new id get the same task (one task runs
        # once; a dependency named on one thread is the task spawned on another).
        self._lock = threading.Lock()

    def _task(self, key: Tuple[Any, ...], plain: bool = False) -> Any:
        """The task named by key (created if new; None for a new key when the space does not create);
        plain: every key is an int. Thread-safe."""
        context = _context.current
        task = self._tasks.get(key)
        if context is None:
            if task is not None or not self._create:
                return task  # after the context: the tasks it named
            # A handle for a later context (setdefault: one handle even when threads race).
            return self._tasks.setdefault(key, TaskHandle(self, key, self._key_name(key, plain)))
        runtime = context._rt
        if task is not None and task.runtime is runtime:
            return task
        with self._lock:
            return self._new_task(key, plain, runtime)

    def _new_task(self, key: Tuple[Any, ...], plain: bool, runtime: Any) -> Optional[Task]:
        task: Optional[Task] = self._tasks.get(key)  # another thread may have created it meanwhile
        if task is None or task.runtime is not runtime:
            if not self._create:
                return None
            new = Task(runtime, self._key_name(key, plain))
            # T[i] in C records a new key without this lock: the first task recorded for a key is its task.
            found: Task = self._tasks.setdefault(key, new)
            if found is not new and found.runtime is not runtime:
                found = self._tasks[key] = new
            return found
        return task

    def _key_name(self, key: Tuple[Any, ...], plain: bool) -> str:
        if len(key) == 1 and type(key[0]) is int:
            return f"{self.name}[{key[0]}]"
        if plain:
            return f"{self.name}[{', '.join(map(str, key))}]"
        return f"{self.name}[{', '.join(map(_key_str, key))}]"

    def _in_bounds(self, key: Tuple[Any, ...]) -> bool:
        if self.shape is None:
            start = self.start
            for d, k in enumerate(key):
                if type(k) is int and k < (start[d] if start is not None and d < len(start) else 0):
                    return False
            return True
        if len(key) != len(self.shape):
            raise IndexError(f"TaskSpace {self.name!r} has {len(self.shape)} dimensions, index {key!r} has {len(key)}")
        for k, lo, n in zip(key, self.start or (0,) * len(key), self.shape):
            if not isinstance(k, int) or not lo <= k < lo + n:
                return False
        return True

    def _expand(self, dim: int, index: Any) -> List[Hashable]:
        if isinstance(index, slice):
            if index.step == 0:
                raise ValueError(f"TaskSpace {self.name!r}: slice step cannot be zero")
            if index.stop is not None and index.start is None and (index.step or 1) > 0:
                lo = self.start[dim] if self.start is not None and dim < len(self.start) else 0
                return list(range(lo, index.stop, index.step or 1))  # T[:n] is T[start:n]
            if index.start is None or index.stop is None:
                if self.shape is None or dim >= len(self.shape):
                    raise ValueError(f"TaskSpace {self.name!r}: the slice {index!r} needs explicit bounds "
                                     f"(or give the TaskSpace a shape)")
                lo, n = (self.start[dim] if self.start is not None else 0), self.shape[dim]
                # Open bounds mean the shape's bounds; a negative step walks them backwards.
                step = index.step or 1
                start = index.start if index.start is not None else (lo if step > 0 else lo + n - 1)
                stop = index.stop if index.stop is not None else (lo + n if step > 0 else lo - 1)
                return list(range(start, stop, step))
            return list(range(index.start, index.stop, index.step or 1))
        if isinstance(index, (range, list)):
            return [_key(k) for k in index]
        return [_key(index)]

    # For type checkers: T[i] and T[i, j] are Tasks (so that @spawn(T[i]) checks), T[a:b] and T[[...]] a
    # TaskList; a tuple with a slice or a list in it is either, known only at run time. At run time T[...]
    # is parla._core.TaskSpaceBase's: ints in C (a named task, or a new one in a space without shape or
    # start), everything else in _getitem.
    if TYPE_CHECKING:
        @overload
        def __getitem__(self, index: Union[int, str]) -> Task: ...
        @overload
        def __getitem__(self, index: Union[slice, range, List[Any]]) -> TaskList: ...
        @overload
        def __getitem__(self, index: Tuple[Union[int, str], ...]) -> Task: ...
        @overload
        def __getitem__(self, index: Tuple[Any, ...]) -> Any: ...

        def __getitem__(self, index: Any) -> Any: ...

    def _getitem(self, index: Any) -> Any:
        key = index if type(index) is tuple else (index,)
        try:
            task = self._tasks.get(key)
        except TypeError:  # unhashable: a list or (before Python 3.12) a slice in the index
            task = None
        if task is not None and (_context.current is None or task.runtime is _context.current._rt):
            return task  # after the context, a TaskSpace still gives the tasks it named
        if not key:
            raise IndexError(f"TaskSpace {self.name!r}: an index needs at least one key, e.g. T[0]")
        for k in key:
            if type(k) is not int:
                break
        else:  # plain integers: one task (the common case of a new task)
            if (self.shape is not None or min(key) < 0 or self.start is not None) and not self._in_bounds(key):
                return TaskList()
            task = self._task(key, True)
            return task if task is not None else TaskList()
        key = tuple(_key(k) for k in key)  # a new task or a slice: normalise integer types
        for k in key:
            if type(k) in _EXPANDING or isinstance(k, (slice, range, list)):
                break
        else:
            if not self._in_bounds(key):
                return TaskList()
            task = self._task(key)
            return task if task is not None else TaskList()
        axes = [self._expand(d, k) for d, k in enumerate(key)]
        keys = [k for k in itertools.product(*axes) if self._in_bounds(k)]
        if not self._create:
            return TaskList(t for t in map(self._task, keys) if t is not None)
        return TaskList(self._task(k) for k in keys)

    @property
    def tasks(self) -> TaskList:
        """Every task named in this space so far."""
        return TaskList(self._tasks.values())

    def drop_results(self) -> int:
        """Releases the return values of this space's finished tasks (see :meth:`Task.drop_result`); returns
        how many tasks it dropped. Unfinished tasks keep theirs. Any thread."""
        n = 0
        for task in list(self._tasks.values()):
            if task.done and not task._dropped:
                task.drop_result()
                n += 1
        return n

    def __len__(self) -> int:
        return len(self._tasks)

    def __iter__(self) -> Iterator[Task]:
        return iter(list(self._tasks.values()))

    def __contains__(self, item: Any) -> bool:
        if isinstance(item, Task):
            return any(t is item for t in self._tasks.values())
        key = item if isinstance(item, tuple) else (item,)
        return key in self._tasks

    def __await__(self) -> Generator[Any, None, None]:
        return self.tasks.__await__()

    # copy.copy / pickle: the attributes the C indexing reads are slots of TaskSpaceBase, not in __dict__.
    _SLOTS = ("name", "shape", "start", "_create", "_tasks")

    def __getstate__(self) -> Dict[str, Any]:
        state = dict(self.__dict__)
        state.update((k, getattr(self, k)) for k in self._SLOTS)
        return state

    def __setstate__(self, state: Dict[str, Any]) -> None:
        for k, v in state.items():
            setattr(self, k, v)

    @property
    def view(self) -> "TaskSpace":
        """The same tasks, indexed without creating any: a key not named yet gives an empty TaskList."""
        if self._view is None:
            view = TaskSpace.__new__(type(self))
            view.__setstate__(self.__getstate__())
            view._create = False
            view._view = view
            self._view = view
        return self._view

    def wait(self) -> None:
        """Blocks until every task named in this space has finished, including tasks named while it waits
        (tasks spawning more tasks into the space). Called from a task body, the worker runs other tasks
        meanwhile. Raises UnspawnedDependencyError if, once every spawned task has finished, some named
        tasks were never spawned (Parla would wait forever), and RuntimeError outside a Parla context or
        from one of the space's own tasks."""
        barrier(self)

    def __repr__(self) -> str:
        return f"TaskSpace({self.name!r}, {len(self)} tasks)"


class AtomicTaskSpace(TaskSpace):
    """parla-experimental's TaskSpace with a fast ``wait()``: here every TaskSpace can be used from several
    threads and waited on, so this is a TaskSpace under that name."""


BackendTaskSpace = AtomicTaskSpace  # parla-experimental's other name for it


class CompletedTaskSpace(TaskSpace):
    """A space whose every index names no task (an empty TaskList): a dependency on it is already met
    (Parla's ``CompletedTaskSpace``, e.g. the previous step of the first step)."""

    def __getitem__(self, index: Any) -> Any:
        return TaskList()
AtomicTaskList = TaskList  # what indexing an AtomicTaskSpace gives in parla-experimental


class TaskHandle:
    """A task named in a TaskSpace outside a Parla context (``T[0]`` before ``with Parla():``).

    Usable in a later context wherever a task is: as the ``taskid`` of spawn, in dependencies, awaited.
    There it stands for the space's task of that key in the active context. ``name`` is the task's name;
    ``state`` is ``"created"`` (nothing runs outside a context)."""

    __slots__ = ("space", "key", "name")
    runtime = None
    state = "created"
    done = False

    def __init__(self, space: TaskSpace, key: Tuple[Any, ...], name: str) -> None:
        self.space = space
        self.key = key
        self.name = name

    def task(self) -> Task:
        """The task this handle names in the active context. Raises RuntimeError outside one."""
        _context.current_runtime()
        task = self.space._task(self.key, all(type(k) is int for k in self.key))
        if task is None or isinstance(task, TaskHandle):
            raise RuntimeError(f"task {self.name}: its TaskSpace does not create tasks")
        found: Task = task
        return found

    def __iter__(self) -> Iterator[Task]:  # as a dependency: the task of the active context
        yield self.task()

    def __await__(self) -> Generator[Any, None, Any]:
        return self.task().__await__()

    def __repr__(self) -> str:
        return f"<Task {self.name} (named outside a Parla context)>"


def barrier(what: Any) -> None:
    """Blocks until every task in what has finished: a TaskSpace (tasks named while waiting included), a
    task, or (nested) collections of tasks. This is parla-experimental's ``parla.cython.tasks.wait``; see
    :meth:`TaskSpace.wait` for the errors (for waiting with a timeout or for the first task, see
    :func:`parla.wait`)."""
    _context.current_runtime()
    current = _core.current_task()
    seen: Dict[int, Any] = {}
    while True:
        if isinstance(what, TaskSpace):
            found = [t.task() if isinstance(t, TaskHandle) else t for t in list(what._tasks.values())]
        else:
            found = list(_flatten(what))
        fresh = [t for t in found if id(t) not in seen]
        if not fresh:
            break
        for t in fresh:
            seen[id(t)] = t
        for t in fresh:
            if current is not None and t is current:
                raise RuntimeError(f"task {t.name} waits for itself (wait() on a space it belongs to)")
            if t.state != "created":
                t._wait()
    unspawned = [t.name for t in seen.values() if t.state == "created"]
    if unspawned:
        raise UnspawnedDependencyError(f"waiting for all: {len(unspawned)} task(s) named but never spawned: "
                                       f"{', '.join(sorted(unspawned)[:8])}")


def tasks(*dependencies: Any) -> TaskList:
    """Parla.py's ``tasks(*deps)``: every task in the arguments (tasks, TaskSpaces, slices, nested
    collections) as one :class:`TaskList`; ``await tasks(A, B[0:3])`` waits for all of them."""
    return TaskList(_flatten(dependencies))


_finish_scopes: Dict[int, List[List[Task]]] = {}  # id(spawning task), 0 outside tasks -> open finish() blocks
_finish_lock = threading.Lock()


class finish:
    """``async with finish():`` (Parla.py): leaving the block waits for every task spawned inside it by the
    running task (tasks those tasks spawn are waited for only through them, e.g. when they await their own
    children). Use it in an async task body; ``with finish():`` in plain code waits by blocking."""

    def __init__(self) -> None:
        self._key = 0
        self._spawned: List[Task] = []

    def _open(self) -> None:
        task = _core.current_task()
        self._key = id(task) if task is not None else 0
        with _finish_lock:
            _finish_scopes.setdefault(self._key, []).append(self._spawned)

    def _close(self) -> TaskList:
        with _finish_lock:
            scopes = _finish_scopes[self._key]
            scopes.remove(self._spawned)
            if not scopes:
                del _finish_scopes[self._key]
        return TaskList(self._spawned)

    async def __aenter__(self) -> "finish":
        self._open()
        return self

    async def __aexit__(self, *exc: Any) -> Literal[False]:
        spawned = self._close()
        if exc[0] is None:
            await spawned
        return False

    def __enter__(self) -> "finish":
        self._open()
        return self

    def __exit__(self, *exc: Any) -> Literal[False]:
        spawned = self._close()
        if exc[0] is None:
            barrier(spawned)
        return False


def _record_in_finish(task: Task) -> None:
    current = _core.current_task()
    scopes = _finish_scopes.get(id(current) if current is not None else 0)
    if scopes:
        scopes[-1].append(task)


_EXPANDING = (slice, range, list)


def _key(k: Any) -> Any:
    """NumPy and other integer types index like int (T[np.int64(3)] is T[3])."""
    if type(k) is int or type(k) is str:
        return k
    if isinstance(k, numbers.Integral) and not isinstance(k, bool):
        return int(k)
    return k


def _key_str(k: Any) -> str:
    return str(k) if isinstance(k, int) else repr(k)


TaskID = Task  # Parla's older name for a task handle
Tasks = TaskList  # parla-experimental's name for a collection of tasks

Body = Callable[[], Any]  # a task body: called with no arguments (a plain or an async function)


@overload
def spawn(taskid: Body, /) -> Task: ...


@overload
def spawn(taskid: Union[Task, "TaskHandle", TaskSpace, None] = None, dependencies: Any = (), *,
          placement: Any = None, vcus: Optional[float] = None, memory: Optional[int] = None, input: Any = (),
          output: Any = (), inout: Any = (), priority: Optional[int] = None, tags: Iterable[str] = (),
          ndevices: int = 1, data: Optional[Iterable[Any]] = None) -> Callable[[Union[Body, _native.Call]], Task]: ...


def spawn(taskid: Any = None, dependencies: Any = (), *, placement: Any = None,
          vcus: Optional[float] = None, memory: Optional[int] = None, input: Any = (),
          output: Any = (), inout: Any = (), priority: Optional[int] = None,
          tags: Iterable[str] = (), ndevices: int = 1,
          data: Optional[Iterable[Any]] = None,
          **unknown: Any) -> Union[Task, Callable[[Union[Body, _native.Call]], Task]]:
    """Decorator that spawns the decorated function as a task and returns the :class:`Task`.

    - ``taskid``: a task named in a TaskSpace (``T[i]``), or None for an anonymous task.
    - ``dependencies``: tasks, TaskSpace slices, or (nested) iterables of them; the task runs after all.
    - ``placement``: ``cpu``, ``cpu(0)``, a list of alternatives, or with resources ``cpu[{"vcus": 0.5}]``.
    - ``vcus``: fraction of the device in (0, 1]; ``memory``: bytes. The task runs only while they fit.
    - ``priority``: larger runs first when workers are busy (levels: > 0, 0, < 0).
    - ``input``/``output``/``inout``: PArrays the task reads/writes.
    - ``tags``: Parla.py's tags choosing a task environment (see :mod:`parla.environments`).
    - ``ndevices``: Parla.py's number of devices of one architecture: ``placement=gpu, ndevices=2`` is
      ``placement=(gpu, gpu)``.
    - ``data``: arrays (PArrays, NumPy, CuPy) the task works on, as in Parla.py: the task is placed where they
      are (``placement=data``) and needs their size in memory (``memory=storage_size(*data)``); it cannot be
      combined with placement= or memory=.

    ``@spawn`` without parentheses is ``@spawn()``: an anonymous task with no dependencies.

    ``spawn(...)(parla.native.call(fn, *args))`` spawns a native body instead: the C function ``fn``, called
    with ``args`` on a worker without the GIL (PArray arguments become the addresses of their copies on the
    task's device; see :mod:`parla.native`).

    The body's closure variables (locals of the enclosing function) are captured by value at spawn. Globals
    (a loop at module level or in a notebook cell) are read when the body runs, as in Parla: a body that
    reads a global rebound between its spawn and its run warns (RuntimeWarning, once per body and name);
    bind such a value as a default argument (``def body(i=i):``). Raises RuntimeError outside a Parla
    context or when ``taskid`` was already spawned; ValueError/TypeError for invalid arguments (naming
    the task and the argument); TypeError for a keyword spawn does not take, naming it and the nearest one.
    """
    if unknown:  # a misspelt keyword: named, with the one meant
        raise unexpected_keywords(f"spawn({'...' if taskid is None else _describe_id(taskid)})", unknown,
                                  _SPAWN_KEYWORDS)
    return _spawn(taskid, dependencies, placement, vcus, memory, input, output, inout, priority, tags, ndevices,
                  data)


_SPAWN_KEYWORDS = ("taskid", "dependencies", "placement", "vcus", "memory", "input", "output", "inout", "priority",
                   "tags", "ndevices", "data")


def _describe_id(taskid: Any) -> str:
    """A task id as a spawn call's first argument shows it in an error (``T[0]``)."""
    if isinstance(taskid, Task):
        return taskid.name
    return getattr(taskid, "__name__", None) or type(taskid).__name__


if not TYPE_CHECKING:
    # The same spawn, with its common case in C: spawn(taskid, dependencies) with taskid a Task or None and
    # the keywords placement, vcus, memory, input, output, inout and priority (an int) make their decorator
    # in parla._core, which spawns in one call (placements cached in the context, and declarations of
    # PArrays, views, (PArray, k) pairs and lists of them, read in C; other forms, and every error, by
    # resolve_placement and _engine_accesses, as here); every other call, and what the decorator does not
    # take (other task ids, tags, ndevices, data, task environments, progress, debug logging, native
    # bodies), comes here.
    spawn = functools.update_wrapper(_core.SpawnFunction(spawn), spawn)


def _spawn(taskid: Any = None, dependencies: Any = (), placement: Any = None, vcus: Optional[float] = None,
           memory: Optional[int] = None, input: Any = (), output: Any = (), inout: Any = (),
           priority: Optional[int] = None, tags: Iterable[str] = (), ndevices: int = 1,
           data: Optional[Iterable[Any]] = None) -> Union[Task, Callable[[Union[Body, _native.Call]], Task]]:
    """spawn() for every case (see spawn)."""
    if callable(taskid) and not isinstance(taskid, Task):
        if dependencies != () or placement is not None or vcus is not None or memory is not None \
                or input != () or output != () or inout != () or priority is not None or data is not None:
            raise TypeError(f"spawn({getattr(taskid, '__name__', taskid)!r}, ...): the first argument is the "
                            f"task id (T[i]) or None, not the body; decorate with @spawn(...) instead")
        return spawn()(taskid)  # bare @spawn: the body is the argument
    context = _context.current_runtime()
    if data is not None:
        if placement is not None or memory is not None:
            raise ValueError("spawn(data=...): data gives the placement and the memory; it cannot be combined "
                             "with placement= or memory=")
        arrays = list(data)
        placement, memory = arrays, _storage_size(*arrays)

    if priority is not None and (type(priority) is not int or not -1000000 <= priority <= 1000000):
        if isinstance(priority, bool) or not isinstance(priority, numbers.Integral) \
                or not -1000000 <= priority <= 1000000:
            raise ValueError(f"spawn(priority={priority!r}): priority must be an integer in [-10^6, 10^6]")
        priority = int(priority)  # a NumPy integer
    environments = context.environments
    if ndevices != 1:
        if isinstance(ndevices, bool) or not isinstance(ndevices, int) or ndevices < 1:
            raise ValueError(f"spawn(ndevices={ndevices!r}): ndevices must be a positive integer")
        placement = tuple(placement or cpu for _ in range(ndevices)) if not isinstance(placement, list) \
            else [tuple(p for _ in range(ndevices)) for p in placement]
    if isinstance(dependencies, (str, bytes)):
        raise TypeError(f"spawn(dependencies={dependencies!r}): dependencies must be tasks, TaskSpace slices or "
                        f"lists of them, not a string")

    def decorator(body: Any) -> Task:  # a Body, or a parla.native.Call
        if taskid is None:
            task = Task(context.runtime, f"{getattr(body, '__name__', 'task')}#{_core.next_anonymous()}")
        elif isinstance(taskid, Task):
            task = taskid
        elif isinstance(taskid, TaskHandle):
            task = taskid.task()
        elif isinstance(taskid, TaskSpace):  # Parla.py: a new task of that space
            task = taskid[_next_key(taskid)]
        else:
            raise TypeError(f"spawn(taskid={taskid!r}): taskid must be a task from a TaskSpace, e.g. T[0]")
        options, v, m = resolve_placement(placement, vcus, memory, task.name)
        attrs: Dict[str, Any] = {}  # set on the task by _submit once nothing can refuse the spawn
        accesses = _engine_accesses(task, input, output, inout, attrs, options) \
            if _declares(input) or _declares(output) or _declares(inout) else ()
        # _submit reads the dependencies (nested iterables, each read once) and records them; the engine
        # orders the task after them and keeps each one until it has finished; the task references them
        # weakly (see Task.dependencies).
        deps = dependencies
        native = type(body) is _native.Call  # a C function: runs on a worker without Python (parla.native)
        if native:
            body = body._bind(task, attrs)
        if type(body) is _FunctionType and body.__code__.co_flags & _GENERATOR_FLAGS:
            raise TypeError(f"task {task.name}: {_core.GENERATOR_BODY_MESSAGE}")
        if type(body) is _FunctionType and not _is_async(body):
            body = _watch_body(body, task)
        if options is not None and context.has_cuda and not native and not _is_async(body):
            body = _cuda.on_cuda_device(_core.capture(body), m or 0)
        if (environments or tags) and not native:
            body = _in_environment(context, _core.capture(body), frozenset(tags), task.name)
        if options is not None and mapping_logger.isEnabledFor(10):
            mapping_logger.debug("task %s: placement options %s (vcus %s, memory %s)", task.name, options, v, m)
        # A refused spawn leaves no trace (the task stays never spawned, without dependencies); of threads
        # spawning the same task at once, one spawns it and the others get RuntimeError.
        task._submit(body, deps, priority or 0, v, m, options, accesses, attrs)
        if spawn_logger.isEnabledFor(10):
            spawn_logger.debug("spawn %s: body %s, dependencies [%s], priority %d", task.name,
                               getattr(body, "__qualname__", body), ", ".join(t.name for t in task.dependencies),
                               priority or 0)
        if context._progress is not None:
            context._progress.spawned()
        if _finish_scopes:
            _record_in_finish(task)
        return task

    return decorator


_FunctionType = type(lambda: None)
_UNWATCHED = (type(itertools), _FunctionType, type, type(len))  # modules, functions, classes, builtins


@functools.lru_cache(maxsize=4096)
def _global_reads(code: Any) -> Tuple[str, ...]:
    """Names a code object (and the code nested in it) loads as globals."""
    names = set()
    for ins in dis.get_instructions(code):
        if ins.opname in ("LOAD_GLOBAL", "LOAD_NAME") and isinstance(ins.argval, str):
            names.add(ins.argval)
    for const in code.co_consts:
        if isinstance(const, type(code)):
            names.update(_global_reads(const))
    return tuple(sorted(names))


def _watched_globals(body: Callable[..., Any]) -> Tuple[Tuple[str, Any], ...]:
    """(name, value at spawn) of the globals body reads that look like data (not modules, functions,
    classes or builtins): the values a module-level loop rebinds."""
    g = body.__globals__
    out = []
    for name in _global_reads(body.__code__):
        value = g.get(name, _UNWATCHED)
        if value is not _UNWATCHED and not isinstance(value, _UNWATCHED):
            out.append((name, value))
    return tuple(out)


_warned_rebound: Set[Tuple[Any, str]] = set()  # (code, name) already warned about


def _watch_body(body: Any, task: Task) -> Body:
    """body (a plain function), wrapped to warn when a global it reads that holds data is rebound between the
    spawn of task and its run; body itself when it reads none."""
    watched = _watched_globals(body)
    return _warn_rebound_globals(_core.capture(body), watched, task.name) if watched else body


def _warn_rebound_globals(body: Any, watched: Tuple[Tuple[str, Any], ...], task_name: str) -> Body:
    """body, checking when it starts that the globals it reads still have their values of spawn time; a
    rebound one warns (RuntimeWarning), since the body sees the new value."""
    g = body.__globals__

    def run() -> Any:
        for name, value in watched:
            now = g.get(name, value)
            if now is not value and (body.__code__, name) not in _warned_rebound:
                _warned_rebound.add((body.__code__, name))
                # Placed at the body's definition: the warning is raised on a worker, where no caller's frame
                # is the user's code (warnings.warn would say sys:1).
                code = body.__code__
                warnings.warn_explicit(
                    f"task {task_name} reads the global {name!r}, rebound since the task was spawned (spawned "
                    f"with {_short_repr(value)}, runs with {_short_repr(now)}): a body's globals are read when "
                    f"it runs, not captured at spawn (a loop at module level or in a notebook cell gives every "
                    f"task the latest value); bind it as a default argument, def {body.__name__}({name}={name}):",
                    RuntimeWarning, code.co_filename, code.co_firstlineno, module=g.get("__name__", "__main__"),
                    registry=g.setdefault("__warningregistry__", {}))
        return body()
    run.__name__ = body.__name__
    run.__qualname__ = body.__qualname__
    return run


def _short_repr(value: Any) -> str:
    try:
        text = repr(value)
    except Exception:
        return f"a {type(value).__name__}"
    return text if len(text) <= 40 else f"a {type(value).__name__}"


def _in_environment(context: Any, body: Body, tags: FrozenSet[str], name: str) -> Body:
    """Runs a body inside the task environment chosen for it (Parla.py's TaskEnvironment components)."""
    if context._environment_registry is None:
        context._environment_registry = TaskEnvironmentRegistry(context.environments)
    registry = context._environment_registry
    if tags and not any(tags <= e.tags for e in registry.environments):
        raise ValueError(f"task {name}: no task environment has tags {set(tags)} (Parla(environments))")
    if _is_async(body):
        return body

    def run() -> Any:
        env = registry.choose(get_current_devices()[0], tags)
        return body() if env is None else env._enter(body)
    run.__name__ = getattr(body, "__name__", "task")
    return run


def _next_key(space: TaskSpace) -> int:
    """The first integer key from len(space) on that names no task of the space yet."""
    k = len(space._tasks)
    while (k,) in space._tasks:
        k += 1
    return k


_GENERATOR_FLAGS = inspect.CO_GENERATOR | inspect.CO_ASYNC_GENERATOR


def _is_async(body: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(body)


def get_current_task() -> Optional[Task]:
    """The task whose body runs on the calling thread, or None outside task bodies."""
    return _core.current_task()


def get_current_device() -> Device:
    """Parla.py's older spelling: the first device of the running task (``cpu(0)`` outside task bodies)."""
    return get_current_devices()[0]


def get_current_devices() -> List[Device]:
    """The devices the running task was mapped to (``[cpu(0)]`` for CPU tasks, ``[gpu(1)]``, ...).

    Outside task bodies: ``[cpu(0)]``."""
    task = _core.current_task()
    if task is None:
        return [cpu(0)]
    return [device_of(i) for i in task._devices] or [cpu(0)]


_positions = _context.positions  # .stack: positions (in the task's device list) entered with `with ctx[i]:`


class TaskContext:
    """What ``get_current_context()`` returns: the devices of the running task. Iterable; ``ctx[i]`` is the
    context of its i-th device: ``with ctx[i]:`` makes that device (and, on a CUDA GPU with CuPy, the task's
    stream there) CuPy's current device and stream for the block."""

    def __init__(self, devices: List[Device], positions: Optional[List[int]] = None) -> None:
        self.devices = devices
        self._positions = positions if positions is not None else list(range(len(devices)))
        self._scopes: List[Any] = []

    def __iter__(self) -> Iterator[Device]:
        return iter(self.devices)

    def __len__(self) -> int:
        return len(self.devices)

    def __getitem__(self, i: int) -> "TaskContext":
        return TaskContext([self.devices[i]], [self._positions[i]])

    def __enter__(self) -> "TaskContext":
        scope = None
        _positions.stack = getattr(_positions, "stack", []) + [self._positions[0] if len(self.devices) == 1 else 0]
        if len(self.devices) == 1 and self.devices[0].architecture is not cpu:
            info = _context.device_table()[self.devices[0].index + 1]
            cupy = _cuda.cupy_or_none() if info["cuda"] else None
            if cupy is not None:
                scope = _cuda.cuda_scope(cupy, info["cuda_ordinal"], self._positions[0])
                scope.__enter__()
        self._scopes.append(scope)
        return self

    def __exit__(self, *exc: Any) -> Literal[False]:
        _positions.stack = _positions.stack[:-1]
        scope = self._scopes.pop()
        if scope is not None:
            scope.__exit__(*exc)
        return False

    def __repr__(self) -> str:
        return f"TaskContext({self.devices!r})"


def get_current_context() -> TaskContext:
    """The device context of the running task (see :class:`TaskContext`)."""
    return TaskContext(get_current_devices())


class Stream:
    """The stream of a task on a CUDA GPU when CuPy is not importable: ``ptr`` is the ``CUstream`` (an int, for
    the driver API through ctypes or another binding) and ``device`` the device."""

    def __init__(self, ptr: int, device: Device) -> None:
        self.ptr = ptr
        self.device = device

    def __repr__(self) -> str:
        return f"Stream(ptr={self.ptr:#x}, device={self.device!r})"


def get_current_stream() -> Any:
    """The stream of the running GPU task on its first device, or inside ``with ctx[i]:`` on its i-th: on a
    CUDA GPU, CuPy's current stream (an ``ExternalStream`` on the task's stream, which the runtime orders
    after the task's predecessors), or a :class:`Stream` when CuPy is not importable; None on the CPU and on
    virtual GPUs (their work is synchronous)."""
    devices = get_current_devices()
    stack = getattr(_positions, "stack", None)
    position = stack[-1] if stack else 0
    if position < len(devices) and devices[position].architecture is not cpu:
        device = devices[position]
        info = _context.device_table()[device.index + 1]
        if info["cuda"]:
            cupy = _cuda.cupy_or_none()
            if cupy is not None:
                return cupy.cuda.get_current_stream()
            ptr = _core.current_stream(position)
            return Stream(ptr, device) if ptr is not None else None
    return None


_core._spawn_setup(Task, _spawn, _watch_body, _global_reads, _finish_scopes, _record_in_finish, spawn_logger,
                   _native.Call)
_core._spawn_setup_data(resolve_placement, _engine_accesses, cpu, cpu(0), _PArray, _cuda.on_cuda_device,
                        mapping_logger)
