"""spawn: placements, dependency forms, closures captured by value, task attributes."""
import threading
import time

import pytest

from parla import Parla, spawn, TaskSpace, Task
from parla.devices import cpu, gpu
from parla.tasks import get_current_task, get_current_devices, get_current_context, get_current_stream

pytestmark = pytest.mark.timeout(10)


@pytest.mark.parametrize("placement", [
    None, cpu, cpu(0), cpu[{"vcus": 0.5}], cpu(0)[{"vcus": 1.0}], cpu[{"memory": 1024}],
    [cpu], [cpu(0)], [cpu, cpu(0)], [cpu[{"vcus": 0.25}]],
    # Alternatives that this runtime lacks (no GPUs here) are skipped, as long as one option exists.
    [gpu, cpu], [cpu, gpu(1)],
], ids=repr)
def test_cpu_placements(placement):
    with Parla(n_workers=2):
        @spawn(placement=placement)
        def body():
            return get_current_devices()
    assert body.state == "done"
    assert body.result == [cpu(0)]


def test_vcus_and_memory_arguments():
    with Parla(n_workers=2):
        @spawn(placement=cpu, vcus=0.5, memory=1 << 20)
        def body():
            return 7
    assert body.result == 7


@pytest.mark.parametrize("placement", [gpu, gpu(0), gpu(1), gpu[{"vcus": 0.5}], [gpu], [gpu(0), gpu(1)],
                                       gpu * 2, (cpu, gpu)], ids=repr)
def test_gpu_placement_without_gpus(placement):
    with Parla(n_workers=1):
        T = TaskSpace("G")
        with pytest.raises(ValueError) as info:
            @spawn(T[3], placement=placement)
            def body():
                pass
        message = str(info.value)
        assert "G[3]" in message
        assert "device" in message or "GPU" in message or "gpu" in message
        # The rejected task was not spawned; the context exits cleanly once it is spawned on the CPU.
        @spawn(T[3], placement=cpu)
        def body():
            return "cpu"
    assert body.result == "cpu"


@pytest.mark.parametrize("placement,err", [
    (cpu(1), ValueError), ([], ValueError), ("cpu", TypeError), (42, TypeError),
    (cpu[{"vcus": -1}], ValueError), (cpu[{"vcus": 1.5}], ValueError), (cpu[{"memory": -1}], ValueError),
], ids=repr)
def test_invalid_placements(placement, err):
    with Parla(n_workers=1):
        T = TaskSpace("bad")
        with pytest.raises(err, match=r"bad\[0\]"):
            @spawn(T[0], placement=placement)
            def body():
                pass


def test_invalid_resource_key():
    with pytest.raises(ValueError, match="vcus"):
        cpu[{"cores": 2}]


def test_unknown_spawn_keyword():
    with Parla(n_workers=1):
        with pytest.raises(TypeError, match="nonsense"):
            spawn(nonsense=1)


def test_bad_taskid():
    with Parla(n_workers=1):
        with pytest.raises(TypeError, match="taskid"):
            @spawn("T0")
            def body():
                pass


def test_spawn_returns_task():
    with Parla(n_workers=1):
        T = TaskSpace("T")

        @spawn(T[0])
        def body():
            return 1
        assert body is T[0]
        assert isinstance(body, Task)

        @spawn()
        def anon():
            return 2
        assert isinstance(anon, Task)
        assert "anon" in anon.name
    assert (body.result, anon.result) == (1, 2)


def test_closure_captured_by_value():
    out = {}
    with Parla(n_workers=2):
        T = TaskSpace("T")
        for i in range(20):
            x = [i]

            @spawn(T[i])
            def body():
                time.sleep(0.001)
                out[i] = x[0]
        i = -1  # rebinding after the loop must not change captured values
        x = None
    assert out == {i: i for i in range(20)}


def test_closure_capture_is_shallow():
    # By value means the binding, not a deep copy: a mutable object is shared.
    shared = []
    with Parla(n_workers=1):
        for i in range(3):
            @spawn()
            def body():
                shared.append(i)
    assert sorted(shared) == [0, 1, 2]


def test_closure_capture_in_nested_function():
    results = {}
    with Parla(n_workers=2):
        def make(k):
            y = k * 10

            @spawn()
            def body():
                results[k] = y
            return body
        tasks = [make(k) for k in range(5)]
    assert results == {k: k * 10 for k in range(5)}
    assert all(t.state == "done" for t in tasks)


def test_default_arguments_kept():
    with Parla(n_workers=1):
        @spawn()
        def body(a=3, *, b=4):
            return a + b
    assert body.result == 7


def test_callable_object_body():
    class Body:
        def __call__(self):
            return "called"
    with Parla(n_workers=1):
        t = spawn()(Body())
    assert t.result == "called"


def test_non_callable_body():
    with Parla(n_workers=1):
        T = TaskSpace("T")
        with pytest.raises(TypeError, match=r"T\[0\]"):
            spawn(T[0])(42)


@pytest.mark.parametrize("form", ["task", "list", "tuple", "slice", "nested", "generator", "set", "taskspace"])
def test_dependency_forms(form):
    order = []
    lock = threading.Lock()
    with Parla(n_workers=2):
        T = TaskSpace("T")
        for i in range(4):
            @spawn(T[i])
            def first():
                time.sleep(0.02)
                with lock:
                    order.append(i)
        deps = {
            "task": T[0],
            "list": [T[0], T[1], T[2], T[3]],
            "tuple": (T[0], T[1], T[2], T[3]),
            "slice": T[0:4],
            "nested": [T[0], [T[1], (T[2], [T[3]])]],
            "generator": (T[i] for i in range(4)),
            "set": {T[0], T[1], T[2], T[3]},
            "taskspace": T,
        }[form]

        firsts = list(T[0:4])

        @spawn(dependencies=deps)
        def last():
            with lock:
                order.append("last")
    if form == "task":
        assert order.index(0) < order.index("last")
    else:
        assert order[-1] == "last"
        assert sorted(order[:-1]) == [0, 1, 2, 3]
    if form not in ("task", "taskspace"):
        assert sorted(last.dependencies, key=lambda t: t.name) == firsts


def test_dependency_empty_and_none():
    with Parla(n_workers=1):
        @spawn(dependencies=[])
        def a():
            return 1

        @spawn(dependencies=None)
        def b():
            return 2

        @spawn(dependencies=[[], (), None])
        def c():
            return 3
    assert (a.result, b.result, c.result) == (1, 2, 3)


def test_dependency_bad_type():
    with Parla(n_workers=1):
        T = TaskSpace("T")
        with pytest.raises(TypeError, match=r"T\[0\]"):
            @spawn(T[0], dependencies=[42])
            def body():
                pass


def test_self_dependency():
    with Parla(n_workers=1):
        T = TaskSpace("T")
        with pytest.raises(ValueError, match="itself"):
            @spawn(T[0], dependencies=[T[0]])
            def body():
                pass


def test_dependency_on_finished_task():
    with Parla(n_workers=1):
        @spawn()
        def a():
            return 1
        a.wait(10)  # finished (a sleep left that to timing)
        assert a.state == "done"

        @spawn(dependencies=[a])
        def b():
            return a.result + 1
    assert b.result == 2


def test_out_of_order_spawn():
    order = []
    with Parla(n_workers=2):
        T = TaskSpace("T")

        @spawn(T[1], dependencies=[T[0]])
        def second():
            order.append(1)
        assert T[0].state == "created"
        assert second.state in ("submitted", "created")
        time.sleep(0.05)
        assert order == []

        @spawn(T[0])
        def first():
            order.append(0)
    assert order == [0, 1]


def test_dependencies_from_another_runtime():
    with Parla(n_workers=1):
        @spawn()
        def old():
            pass
    with Parla(n_workers=1):
        with pytest.raises(ValueError, match="another Parla runtime"):
            @spawn(dependencies=[old])
            def new():
                pass


def test_priority_accepted():
    with Parla(n_workers=1):
        @spawn(priority=5)
        def hi():
            return "hi"

        @spawn(priority=-5)
        def lo():
            return "lo"
    assert (hi.result, lo.result) == ("hi", "lo")


def test_priority_order_with_one_worker():
    order = []
    with Parla(n_workers=1):
        gate = threading.Event()
        started = threading.Event()

        @spawn()
        def block():
            started.set()
            gate.wait(5)
        assert started.wait(10)  # the only worker is now busy
        for p in (-1, 0, 1):
            for k in range(3):
                @spawn(priority=p)
                def body():
                    order.append(p)
        gate.set()
    assert order == [1, 1, 1, 0, 0, 0, -1, -1, -1]


def test_task_attributes():
    with Parla(n_workers=2):
        T = TaskSpace("attr")
        gate = threading.Event()
        started = threading.Event()
        assert T[0].state == "created"
        assert T[0].name == "attr[0]"

        @spawn(T[0])
        def slow():
            started.set()
            gate.wait(5)
            return "value"

        @spawn(T[1], dependencies=[T[0]])
        def after():
            return get_current_task()
        assert started.wait(10)  # running (a sleep left that to timing)
        assert slow.state == "running"
        assert not slow.done
        assert after.state in ("submitted",)
        with pytest.raises(RuntimeError, match="not finished"):
            slow.result
        assert slow.exception is None
        assert after.dependencies == [T[0]]
        assert slow.dependencies == []
        gate.set()
    assert slow.state == "done" and slow.done
    assert slow.result == "value"
    assert after.result is after
    assert after.exception is None
    assert repr(after).startswith("<Task attr[1]")


def test_multi_dim_names():
    with Parla(n_workers=1):
        T = TaskSpace("M")

        @spawn(T[1, 2])
        def a():
            return get_current_task().name

        @spawn(T[0, "a"])
        def b():
            return get_current_task().name
    assert a.result == "M[1, 2]"
    assert b.result == "M[0, 'a']"


def test_get_current_outside_and_inside():
    assert get_current_task() is None
    with Parla(n_workers=1):
        @spawn(placement=cpu)
        def body():
            ctx = get_current_context()
            return get_current_task(), list(ctx), get_current_stream(), len(ctx)
    task, devices, stream, n = body.result
    assert task is body and devices == [cpu(0)] and stream is None and n == 1
