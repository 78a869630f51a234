"""Regression tests for problems found by trying to break the runtime."""
import numpy as np
import pytest

from conftest import thread_count_settled, thread_count_steady
from parla import DependencyCycleError, Parla, TaskSpace, spawn
from parla.array import asarray
from parla.devices import cpu, gpu


@pytest.mark.timeout(30)
def test_any_gpu_with_a_named_gpu_always_maps():
    tasks = []
    with Parla(n_workers=2, virtual_gpus=2):
        for i in range(40):
            @spawn(placement=(gpu, gpu(0)))
            def both():
                return 1
            tasks.append(both)
    assert all(t.state == "done" for t in tasks)
    assert all(sorted(map(str, t.devices)) == ["gpu(0)", "gpu(1)"] for t in tasks)


@pytest.mark.timeout(30)
def test_unwritable_trace_keeps_data_and_closes(tmp_path):
    A = asarray(np.zeros(4))
    with pytest.raises(RuntimeError, match="cannot open"):
        with Parla(n_workers=2, virtual_gpus=1, trace=str(tmp_path / "missing" / "run.json")):
            @spawn(placement=gpu, inout=[A])
            def write():
                A.array[:] = 42
    assert np.all(A.array == 42)
    with Parla(n_workers=1):  # the runtime was closed: a new context starts
        pass


@pytest.mark.timeout(30)
def test_unwritable_trace_does_not_hide_a_task_error(tmp_path):
    with pytest.raises(ValueError, match="boom") as info:
        with Parla(n_workers=1, trace=str(tmp_path / "missing" / "run.json")):
            @spawn()
            def fails():
                raise ValueError("boom")
    assert any("trace could not be written" in n for n in info.value.__notes__)


@pytest.mark.timeout(30)
def test_view_made_before_update_is_refused():
    A = asarray(np.zeros(10, dtype=np.float32))
    V = A[5:10]
    A.update(np.arange(10, dtype=np.float64))
    with pytest.raises(RuntimeError, match="before update"):
        V.array
    with Parla(n_workers=1):
        with pytest.raises(RuntimeError, match="before update"):
            @spawn(inout=[V])
            def stale():
                pass
        W = A[5:10]

        @spawn(placement=cpu, inout=[W])
        def fresh():
            W.array[:] += 100
    assert np.array_equal(A.array, np.r_[np.arange(5.0), np.arange(5.0, 10.0) + 100])


@pytest.mark.timeout(30)
def test_taskspace_reverse_slices_and_integer_types():
    with Parla(n_workers=1):
        S = TaskSpace("S", shape=(3,))
        assert [t.name for t in S[::-1]] == ["S[2]", "S[1]", "S[0]"]
        assert S[np.int64(1)] is S[1]
        with pytest.raises(ValueError, match="step"):
            S[0:3:0]
        for i in range(3):
            @spawn(S[i])
            def f():
                pass


@pytest.mark.timeout(30)
def test_object_arrays_are_refused_and_0d_kept():
    with pytest.raises(TypeError, match="not Python objects"):
        asarray(np.array([object()]))
    assert asarray(np.float64(3.0)).shape == ()


def _await_own_reader():
    """A context whose async task awaits a reader of the data it writes; returns that task."""
    A = asarray(np.zeros(4))
    with pytest.raises(DependencyCycleError, match="await"):
        with Parla(n_workers=2):
            @spawn(inout=[A])
            async def parent():
                @spawn(input=[A])
                def child():
                    return float(A.array[0])
                await child
    return parent


@pytest.mark.timeout(30)
def test_async_task_awaiting_a_reader_of_its_own_data_is_a_cycle():
    _await_own_reader()


@pytest.mark.timeout(30)
def test_cycle_through_an_await_leaves_no_threads_behind():
    # The awaited task is cancelled and the suspended one is cancelled too, not resumed; the workers end.
    before = None  # counted after a first context: a library may start a thread pool of its own once
    for round in range(5):
        assert _await_own_reader().state == "cancelled"
        before = before or thread_count_steady()
    assert thread_count_settled(before) == before


@pytest.mark.timeout(30)
def test_declared_view_writable_when_sliced_again_in_the_body():
    A = asarray(np.arange(8.0))
    with Parla(n_workers=1, virtual_gpus=1):
        @spawn(placement=gpu(0), input=[A], inout=[A[0:4]])
        def g():
            A[0:4].array[:] = 28
    assert np.array_equal(A.array, [28, 28, 28, 28, 4, 5, 6, 7])


@pytest.mark.timeout(30)
@pytest.mark.parametrize("size", [0, 2**64, 1.5, "99999999999TB"])
def test_bad_gpu_memory_sizes(size):
    with pytest.raises(ValueError):
        with Parla(virtual_gpus=1, gpu_memory=size):
            pass


@pytest.mark.timeout(30)
def test_cycle_error_names_the_waiting_tasks():
    with pytest.raises(DependencyCycleError) as info:
        with Parla(n_workers=2):
            T = TaskSpace("T")

            @spawn(T[0], [T[1]])
            def a():
                pass

            @spawn(T[1], [T[0]])
            def b():
                pass
    message = str(info.value)
    assert "T[0] (waiting on T[1])" in message and "T[1] (waiting on T[0])" in message, message


@pytest.mark.timeout(60)
def test_inline_placement_requests_do_not_grow_the_placement_cache():
    """``placement=gpu[{"vcus": 0.5}]`` makes a new PlacementRequest at every spawn. The context's cache of
    resolved placements is keyed by value, so a loop of such spawns adds one entry per distinct request (it
    added one per spawn: memory grew without bound)."""
    from parla import get_current_devices
    n = 1000
    seen = []
    with Parla(n_workers=2, virtual_gpus=2) as p:
        base = len(p._placement_cache)
        for i in range(n):
            @spawn(placement=gpu[{"vcus": 0.5}])
            def half():
                return get_current_devices()[0].architecture.name

            @spawn(placement=[gpu(1)[{"vcus": 0.25, "memory": 64}], cpu[{"vcus": 0.5}]])
            def either():
                return None
            if i % 250 == 0:
                seen.append(len(p._placement_cache) - base)
        grown = len(p._placement_cache) - base
    assert half.result == "gpu"
    assert grown == 2 and seen == [2] * 4, (grown, seen)
    # equal requests are equal, different ones differ (also by a value's type: vcus=True is an error)
    assert gpu[{"vcus": 0.5}] == gpu[{"vcus": 0.5}] and hash(gpu[{"vcus": 0.5}]) == hash(gpu[{"vcus": 0.5}])
    assert gpu[{"vcus": 0.5}] != gpu[{"vcus": 0.25}] and gpu[{"vcus": 0.5}] != gpu(0)[{"vcus": 0.5}]
    assert gpu[{"vcus": 1}] != gpu[{"vcus": True}] and gpu[{"vcus": 1}] != gpu[{"vcus": 1.0}]


@pytest.mark.timeout(30)
def test_strings_among_dependencies_empty_keys_and_odd_shapes_get_errors_naming_them():
    # A string inside a dependency list iterated to strings until "nested too deeply"; parla.tasks.tasks(["a"])
    # recursed without end; T[()] failed in min(); shape=2.5 failed in tuple(); n_workers=10**12 overflowed a C int.
    from parla.tasks import tasks
    with Parla(n_workers=1):
        T = TaskSpace("T")
        for bad, shown in ((["abc"], "'abc'"), ([T[0], [b"x"]], "b'x'")):
            with pytest.raises(TypeError, match=f"task T\\[1\\]: .*not the string {shown}"):
                @spawn(T[1], bad)
                def t():
                    pass
        assert T[1].state == "created"
        with pytest.raises(TypeError, match="not the string 'abc'"):
            tasks(["abc"])
        with pytest.raises(IndexError, match="TaskSpace 'T': an index needs at least one key"):
            T[()]
        for shape in (2.5, float("nan"), "ab"):
            with pytest.raises(TypeError, match=f"TaskSpace 'X': shape={shape!r} must be an integer"):
                TaskSpace("X", shape=shape)
        with pytest.raises(TypeError, match="TaskSpace 'X': start=1.5 must be an integer"):
            TaskSpace("X", shape=2, start=1.5)

        @spawn(T[1], [T[0]])
        def after():
            return 2

        @spawn(T[0])
        def first():
            return 1
    assert (T[0].result, T[1].result) == (1, 2)
    with pytest.raises(ValueError, match="n_workers=1000000000000 is more than the limit of 4096"):
        with Parla(n_workers=10**12):
            pass


@pytest.mark.timeout(30)
def test_a_generator_function_as_body_is_refused_on_both_spawn_paths():
    # Its code never ran: the task ended done with a generator object as its result, and nothing said so.
    import parla.tasks as tasks

    def gen():
        yield 1

    async def agen():
        yield 1

    with Parla(n_workers=1):
        T = TaskSpace("T")
        for i, (spawner, body) in enumerate([(spawn, gen), (spawn, agen), (tasks._spawn, gen), (tasks._spawn, agen)]):
            with pytest.raises(TypeError, match=rf"task T\[{i}\]: the body is a generator function \(it contains "
                                                r"yield\)"):
                spawner(T[i])(body)
            assert T[i].state == "created"

            @spawn(T[i])
            def plain():
                return i
        anonymous_error = None
        try:
            spawn()(gen)
        except TypeError as e:
            anonymous_error = str(e)
        assert anonymous_error is not None and "generator function" in anonymous_error
    assert [T[i].result for i in range(4)] == [0, 1, 2, 3]


@pytest.mark.timeout(30)
def test_a_task_awaiting_itself_and_a_bad_timeout_on_a_finished_task_are_named():
    # The first said "parla_task_suspend_on: task B[0]: awaited task 0 is the task itself" (the C API's words);
    # the second returned without complaint once the task had finished (the timeout was checked only before).
    B = TaskSpace("B")
    seen = []
    with Parla(n_workers=1):
        @spawn(B[0])
        async def t():
            try:
                await B[0]
            except RuntimeError as e:
                seen.append(str(e))
            return 5

        @spawn(B[1])
        def u():
            return 1
        B[1].wait()
        for bad in ("x", float("nan"), -1):
            with pytest.raises(ValueError, match=r"task B\[1\]\.wait\(timeout=.*\): timeout must be a number"):
                B[1].wait(timeout=bad)
    assert seen == ["task B[0] awaits itself, which would never finish"] and B[0].result == 5


@pytest.mark.timeout(30)
def test_file_arguments_of_parla_that_are_not_paths_name_the_argument():
    # Parla(trace=5) said only "expected str, bytes or os.PathLike object, not int", from deep in the start.
    for key in ("trace", "graph", "summary_file", "logfile"):
        with pytest.raises(TypeError, match=rf"Parla\({key}=5\): {key} is a file path"):
            with Parla(**{key: 5}):
                pass


@pytest.mark.timeout(30)
def test_memory_beyond_64_bits_names_the_task_and_strict_access_reads_off_as_off(monkeypatch):
    # A placement option's memory=10**30 said "a memory size must be ..." without the task; PARLA_STRICT_ACCESS
    # took any value but 0/false/no as on (so "off" turned it on) and "maybe" passed.
    T = TaskSpace("T")
    with Parla(virtual_gpus=1, n_workers=1):
        for kw in (dict(placement=gpu[{"memory": 10**30}]), dict(memory=10**30), dict(memory=-1)):
            with pytest.raises(ValueError, match=r"task T\[0\]: memory=-?\d+ must be a non-negative number of bytes"):
                @spawn(T[0], **kw)
                def t():
                    pass
    monkeypatch.setenv("PARLA_STRICT_ACCESS", "off")
    assert Parla().strict_access is False
    monkeypatch.setenv("PARLA_STRICT_ACCESS", "on")
    assert Parla().strict_access is True
    monkeypatch.setenv("PARLA_STRICT_ACCESS", "maybe")
    with pytest.raises(ValueError, match="PARLA_STRICT_ACCESS='maybe'"):
        Parla()
