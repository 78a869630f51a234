"""Memory of finished tasks: a done task that cannot be part of a reference cycle leaves the cycle
collector's lists, and is tracked again when it could be (an attribute set, a failure in its runtime);
cycles through tasks are still collected; a task's body and closure are released once it finishes,
cancelled tasks included."""
import gc
import weakref

import pytest

from parla import Parla, TaskSpace, spawn


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
