"""TaskSpace as parla-experimental reads it: bounds without a shape, T[:n], handles named outside a
context, view, start= alone, AtomicTaskSpace, wait(), spawn into a TaskSpace (Parla.py)."""

import pytest

from parla import AtomicTaskSpace, Parla, TaskSpace, UnspawnedDependencyError, spawn
from parla.tasks import AtomicTaskSpace as AtomicFromTasks, TaskHandle, TaskList, barrier
from parla.cython.tasks import AtomicTaskSpace as AtomicFromCython, wait as cython_wait

pytestmark = pytest.mark.timeout(20)


def test_keys_below_start_are_empty_without_shape():
    with Parla(n_workers=1):
        T = TaskSpace("T")
        assert isinstance(T[-1], TaskList) and list(T[-1]) == []
        for k in range(3):
            @spawn(T[k], dependencies=[T[k - 1]])
            def step():
                return k
        assert list(T[-3:2]) == [T[0], T[1]]  # the part below start is dropped
        S = TaskSpace("S", start=5)
        assert S.start == (5,) and S.shape is None
        assert list(S[4]) == [] and S[5].name == "S[5]"
        assert list(S[:7]) == [S[5], S[6]]
        spawn(S[5])(lambda: None)
        spawn(S[6])(lambda: None)
    assert [T[k].result for k in range(3)] == [0, 1, 2]


def test_open_start_slice():
    with Parla(n_workers=1):
        T = TaskSpace("T")
        assert list(T[:3]) == [T[0], T[1], T[2]] and list(T[:0]) == []
        for k in range(3):
            spawn(T[k], dependencies=[T[:k]])(lambda: None)


def test_handles_named_outside_a_context():
    T = TaskSpace("H")
    first, dep = T[1], T[0]
    assert isinstance(first, TaskHandle) and first.name == "H[1]" and first.state == "created"
    assert T[1] is first and len(T) == 2
    with Parla(n_workers=1):
        @spawn(first, dependencies=[dep])
        def b():
            return "b"

        @spawn(dep)
        def a():
            return "a"
    assert a.result == "a" and b.result == "b"
    assert T[1] is b  # after the context, the space gives the tasks it ran
    with pytest.raises(RuntimeError, match="no Parla runtime"):
        TaskSpace("X")[0].task()


def test_slices_named_outside_a_context_are_handles_too():
    """A slice taken outside a context names its tasks as single keys do; used as dependencies in the next
    context, they order the dependent after every task of the slice (they were silently dropped)."""
    import threading
    T, S = TaskSpace("HT"), TaskSpace("HS", shape=3)
    deps, sdeps = T[0:2], S[0:3]
    assert [t.name for t in deps] == ["HT[0]", "HT[1]"] and len(sdeps) == 3
    assert all(isinstance(t, TaskHandle) for t in deps)
    release, order = threading.Event(), []
    with Parla(n_workers=2):
        @spawn(dependencies=[deps, sdeps])
        def join():
            order.append("join")
        for space, n in ((T, 2), (S, 3)):
            for k in range(n):
                @spawn(space[k])
                def work():
                    release.wait(10)
                    order.append("work")
        release.set()
    assert order == ["work"] * 5 + ["join"]


def test_view_never_creates():
    with Parla(n_workers=1):
        T = TaskSpace("V")
        spawn(T[0])(lambda: 0)
        V = T.view
        assert V[0] is T[0]
        assert list(V[1]) == [] and list(V[0:3]) == [T[0]]
        assert len(T) == 1 and T.view is V
        assert list(TaskSpace("C", create=False)[0]) == []


def test_atomic_taskspace_and_wait():
    assert AtomicTaskSpace is AtomicFromTasks is AtomicFromCython
    results = []
    with Parla(n_workers=2):
        @spawn(vcus=0)
        def main():
            T = AtomicTaskSpace("A")

            def tree(i, depth):
                @spawn(T[i])
                def node():
                    if depth:  # tasks spawned into T while main waits
                        tree(2 * i, depth - 1)
                        tree(2 * i + 1, depth - 1)
                    results.append(i)
            tree(1, 3)
            T.wait()
            return len(T), sorted(results)
    n, done = main.result
    assert n == 15 and done == list(range(1, 16))


def test_wait_from_the_main_thread_and_on_lists():
    with Parla(n_workers=2):
        T = TaskSpace("W")
        for i in range(4):
            spawn(T[i])(lambda i=i: i * i)
        both = T[0:1] + T[1:2]
        assert isinstance(both, TaskList) and list(both) == [T[0], T[1]]
        cython_wait(both)
        assert T[0].done and T[1].done
        T.wait()
        assert [T[i].result for i in range(4)] == [0, 1, 4, 9]


def test_wait_on_a_never_spawned_task_is_an_error():
    with Parla(n_workers=1):
        T = TaskSpace("U")
        spawn(T[0])(lambda: None)
        T[1]
        with pytest.raises(UnspawnedDependencyError, match=r"U\[1\]"):
            barrier(T)
        spawn(T[1])(lambda: None)


def test_spawn_into_a_taskspace():
    with Parla(n_workers=1):
        first = TaskSpace("First")

        @spawn(first)
        def a():
            return 1

        second = TaskSpace("Second")

        @spawn(second, [first])
        def b():
            return a.result + 1
    assert a.name == "First[0]" and b.result == 2


def test_completed_taskspace_is_already_met():
    from parla.tasks import CompletedTaskSpace
    done = CompletedTaskSpace("done")
    with Parla(n_workers=1):
        T = TaskSpace("T")
        assert list(done[0]) == [] and list(done[0:5]) == []
        t = spawn(T[0], dependencies=[done[-1], done[3]])(lambda: "ran")
    assert t.result == "ran"
