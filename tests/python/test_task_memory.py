"""Memory of finished tasks: a done task that cannot be part of a reference cycle leaves the cycle
collector's lists, and is tracked again when it could be (an attribute set, a failure in its runtime);
cycles through tasks are still collected; a task's body and closure are released once it finishes,
cancelled tasks included. A finished plain task keeps only its name, state and result (its engine task is
released), and a TaskSpace stores integer keys compactly."""
import gc
import threading
import weakref

import numpy as np
import pytest

import parla
from parla import Parla, TaskSpace, _core, spawn
from parla.array import asarray
from parla.devices import cpu


class Payload:
    pass


@pytest.mark.timeout(30)
def test_done_tasks_untracked_until_they_could_be_in_a_cycle():
    with Parla(n_workers=2):
        T = TaskSpace("T")

        @spawn(T[0])
        def first():
            return 1

        @spawn(T[1], dependencies=[T[0]])
        def second():
            return [2]  # a list result may come to reference the task: stays tracked
    assert T[0].result == 1 and T[1].result == [2]
    assert not gc.is_tracked(T[0])
    assert gc.is_tracked(T[1])
    assert T[1].dependencies == [T[0]]
    T[0].note = "set after it finished"  # the task may now reach anything
    assert gc.is_tracked(T[0]) and T[0].note == "set after it finished"


@pytest.mark.timeout(30)
def test_first_failure_tracks_every_task_of_the_runtime_again():
    with pytest.raises(ZeroDivisionError):
        with Parla(n_workers=1):
            T = TaskSpace("T")

            @spawn(T[0])
            def fine():
                return None
            T[0].wait()
            untracked_before = not gc.is_tracked(T[0])

            @spawn(T[1], dependencies=[T[0]])
            def fails():
                return 1 // 0
    assert untracked_before
    assert gc.is_tracked(T[0])  # the failed task's traceback could reach it


@pytest.mark.timeout(30)
def test_cycles_through_tasks_are_collected():
    def run():
        with Parla(n_workers=1):
            T = TaskSpace("T")

            @spawn(T[0])
            def make():
                return []
        T[0].result.append(T)  # task -> result -> TaskSpace -> task
        return weakref.ref(T[0])
    ref = run()
    gc.collect()
    assert ref() is None


def _spawn_holding_payload(T):
    obj = Payload()

    @spawn(T[1], dependencies=[T[0]])
    def never():
        return obj  # captured by value at spawn
    return weakref.ref(obj)


@pytest.mark.timeout(30)
def test_waiting_tasks_and_their_bodies_leave_the_collector_until_they_finish():
    # A spawned task is held by the engine until it finishes, so it cannot be part of a garbage cycle: it and
    # its body (a plain function) are untracked meanwhile, listed by Runtime._pending, and put back when it
    # finishes (the body as soon as the task lets it go).
    gate = threading.Event()

    def shared():  # a body something else references too
        return 3
    with Parla(n_workers=1) as p:
        T = TaskSpace("T")

        @spawn(T[0])
        def blocker():
            gate.wait(10)

        @spawn(T[1], dependencies=[T[0]])
        def second():
            return [2]  # not a leaf: tracked again at its finish
        spawn(T[2], [T[0]])(shared)
        assert not gc.is_tracked(T[1]) and not gc.is_tracked(T[2]) and not gc.is_tracked(shared)
        assert {t.name for t in p.runtime._pending()} >= {"T[1]", "T[2]"}
        assert gc.collect() >= 0 and T[1].state == "submitted"  # a collection meanwhile changes nothing
        gate.set()
    assert T[1].result == [2] and T[2].result == 3
    assert gc.is_tracked(shared) and gc.is_tracked(T[1]) and not gc.is_tracked(T[2])


@pytest.mark.timeout(30)
def test_cancelled_task_releases_its_body_and_closure():
    T = TaskSpace("T")
    with pytest.raises(ValueError):
        with Parla(n_workers=1):
            @spawn(T[0])
            def fails():
                raise ValueError("first")
            ref = _spawn_holding_payload(T)
    assert T[1].state == "cancelled"
    assert ref() is None, "the cancelled task still holds its body's closure"


@pytest.mark.timeout(30)
def test_task_table_is_the_dict_a_taskspace_used():
    # TaskSpace._tasks: integer keys stored compactly (dense 0, 1, 2, ... and then any order), other keys
    # in a dict; one insertion order over both, as a dict keeps.
    t = _core.TaskTable()
    assert t.setdefault((0,), "a") == "a" and t.setdefault((0,), "other") == "a"
    t.setdefault((1,), "b")
    t[(5,)] = "x"  # out of order: the table stops being dense
    t[("s",)] = "s"
    t[(1, 2)] = "p"
    assert t.setdefault((2,), "c") == "c"
    assert len(t) == 6 and t.values() == ["a", "b", "x", "s", "p", "c"]
    assert t.get((5,)) == "x" and t.get((3,)) is None and t.get((3,), "default") == "default"
    assert t.get((True,)) == "b" and (1.0,) in t and (np.int64(5),) in t  # equal keys, as in a dict
    assert t[(1, 2)] == "p" and ("s",) in t and ("q",) not in t and (2, 1) not in t and 7 not in t
    with pytest.raises(KeyError):
        t[(4,)]
    with pytest.raises(TypeError):
        t.get(([1],))  # unhashable, as with a dict
    t[(0,)] = "A"  # replaces in place
    assert t.values() == ["A", "b", "x", "s", "p", "c"]
    big = _core.TaskTable()
    for i in range(1000):
        big.setdefault((i,), i)
    for i in range(-1, -1001, -1):  # leaves the dense layout; the index grows several times
        big.setdefault((i,), i)
    assert len(big) == 2000 and all(big.get((i,)) == i for i in range(-1000, 1000))
    assert big.values()[:3] == [0, 1, 2] and big.values()[1000:1003] == [-1, -2, -3]


@pytest.mark.timeout(30)
def test_a_finished_plain_task_keeps_its_name_state_and_result_only():
    with Parla(n_workers=2):
        T = TaskSpace("T")

        @spawn(T[0])
        def plain():
            return 5

        data = asarray(np.ones(4))

        @spawn(T[1], input=[data])  # a data access: the engine task is kept
        def reads():
            return 6
        T[0].wait()
        T[1].wait()
        assert T[0]._released and not T[1]._released
        assert (T[0].state, T[0].done, T[0].result, T[0].exception, T[0].name) == ("done", True, 5, None, "T[0]")
        assert T[0].devices == [cpu(0)] and T[0].placement_reason is None
        assert T[1].devices == [cpu(0)] and T[1].result == 6

        @spawn(T[2], dependencies=[T[0]])
        async def after():
            return (await T[0]) + (await T[1])
        T[2].wait()
        assert T[2].result == 11 and T[2].dependencies == [T[0]]
        assert parla.wait([T[0], T[2]], timeout=10).not_done == set()
        with pytest.raises(RuntimeError, match="already spawned"):
            @spawn(T[0])
            def again():
                pass
    assert T[0].result == 5 and repr(T[0]) == "<Task T[0] done>"
    assert not gc.is_tracked(T[0]) and T.drop_results() == 3
    # Dropping is a flag in the object: no __dict__ is made, the task stays off the collector's lists.
    assert T[0]._dropped and not gc.is_tracked(T[0]) and "_dropped" not in getattr(T[0], "__dict__", {})
    with pytest.raises(RuntimeError, match=r"result of task T\[0\] was dropped"):
        T[0].result



@pytest.mark.timeout(60)
def test_named_finished_tasks_take_few_bytes_each():
    # 10^6 named tasks took 514 MiB of peak RSS (about 480 bytes a task: the engine task and its name, the
    # Task object, the TaskSpace's key tuple, int and dict entry). A finished plain task now keeps its Task
    # object (128 bytes with the collector's header), its name (16) and about 21 bytes of TaskSpace and
    # collector bookkeeping (the table's and the untracked list's slots, with their growth slack): 160 in
    # all here, and a 16-byte larger Task object would exceed the bound. Measured with tracemalloc (the
    # engine's memory is not traced: it holds none for these tasks) over 20,000 tasks.
    import tracemalloc
    n = 20_000
    gc.collect()
    tracemalloc.start()
    try:
        with Parla(n_workers=2):
            T = TaskSpace("T")
            base = tracemalloc.get_traced_memory()[0]
            for i in range(n):
                @spawn(T[i])
                def task():
                    pass
            del task
        gc.collect()
        per_task = (tracemalloc.get_traced_memory()[0] - base) / n
    finally:
        tracemalloc.stop()
    assert len(T) == n and all(T[i]._released and T[i].state == "done" for i in (0, n // 2, n - 1))
    assert per_task <= 172, f"{per_task:.0f} bytes a finished named task"


def _declarations_seen():
    t = parla.tasks.get_current_task()
    return t._decl, t._modes


@pytest.mark.timeout(60)
def test_declarations_leave_the_collector_while_pending_and_go_at_the_finish():
    # A spawn's declarations (_decl, _modes, _slots: what .array reads in the body) hang from the pending task
    # untracked, so a loop spawning tasks that declare PArrays adds nothing to the collector's lists (it added
    # about four containers per task, which a full collection visited); a finished task drops them and keeps
    # no PArray alive.
    gate = threading.Event()
    n = 400
    arrays = [asarray(np.zeros(4)) for _ in range(3)]
    with Parla(n_workers=1):
        T = TaskSpace("T")
        G = TaskSpace("G")
        spawn(G[0])(lambda: gate.wait(20))
        gc.collect()
        before = len(gc.get_objects())
        for i in range(n):
            spawn(T[i], [G[0]], input=[arrays[i % 3], arrays[(i + 1) % 3]], inout=[arrays[(i + 2) % 3]])(
                _declarations_seen)
        grown = len(gc.get_objects()) - before
        assert T[0]._decl[2] == (arrays[2],)  # pending: declared
        gate.set()
    assert grown < n // 10, f"{grown} objects more in the collector's lists for {n} pending tasks"
    for i in range(n):  # each body saw its declarations
        a, b, c = arrays[i % 3], arrays[(i + 1) % 3], arrays[(i + 2) % 3]
        assert T[i].result == (((a, b), (), (c,)), {id(a): _core.READ, id(b): _core.READ, id(c): _core.READWRITE})
    assert all(T[i]._decl == ((), (), ()) and T[i]._modes is None for i in range(n))
    probe = asarray(np.zeros(2))
    ref = weakref.ref(probe)
    with Parla(n_workers=1):
        U = TaskSpace("U")
        spawn(U[0], input=[probe])(lambda: None)
    del probe  # U[0], alive, is what could still hold it
    gc.collect()
    assert ref() is None and U[0].done, "a finished task kept the PArray it declared alive"
    assert not gc.is_tracked(U[0])  # no __dict__ left, a leaf result: a finished plain task
