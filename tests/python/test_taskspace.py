"""TaskSpace: keys, dimensions, slices, lists, shape/start bounds, len/iter/in."""
import pytest

from parla import Parla, spawn, TaskSpace, TaskList, Task

pytestmark = pytest.mark.timeout(10)


@pytest.fixture
def ctx():
    with Parla(n_workers=1) as p:
        yield p


def test_same_key_same_task(ctx):
    T = TaskSpace("T")
    assert T[0] is T[0]
    assert T[1, 2] is T[1, 2]
    assert T[0] is not T[1]
    assert T[(3,)] is T[3]


def test_hashable_keys(ctx):
    T = TaskSpace("K")
    keys = ["a", ("x", 1), 2.5, frozenset({1}), None, True]
    for k in keys:
        assert isinstance(T[k], Task)
    assert T["a"] is T["a"]
    assert T[0, "a"] is T[0, "a"]
    assert T[0, "a"].name == "K[0, 'a']"
    with pytest.raises(TypeError):
        T[{"a": 1}]


def test_multi_dimensional(ctx):
    T = TaskSpace("T")
    for i in range(3):
        for j in range(4):
            @spawn(T[i, j], dependencies=[T[i - 1, j]] if i else [])
            def body():
                return (i, j)
    assert len(T) == 12
    assert T[2, 3].name == "T[2, 3]"
    assert T[1, 1, 1] is not T[1, 1]


def test_slices_and_lists(ctx):
    T = TaskSpace("S")
    row = T[0:4]
    assert isinstance(row, TaskList)
    assert list(row) == [T[0], T[1], T[2], T[3]]
    assert list(T[0:6:2]) == [T[0], T[2], T[4]]
    assert list(T[[5, 1]]) == [T[5], T[1]]
    assert list(T[range(2)]) == [T[0], T[1]]
    grid = T[0:2, 0:3]
    assert len(grid) == 6
    assert list(grid) == [T[i, j] for i in range(2) for j in range(3)]
    assert list(T[1, [0, 2]]) == [T[1, 0], T[1, 2]]
    assert list(T[3:3]) == []
    assert list(T[:4]) == list(T[0:4])  # an open start is the space's start (0)
    with pytest.raises(ValueError, match="bounds"):
        T[2:]


def test_slices_reference_placeholders(ctx):
    T = TaskSpace("P")
    deps = T[0:3]
    assert all(t.state == "created" for t in deps)

    @spawn(T[10], dependencies=deps)
    def after():
        return "after"
    for i in range(3):
        @spawn(T[i])
        def before():
            pass


def test_shape_and_start(ctx):
    T = TaskSpace("B", shape=(4,))
    assert T.shape == (4,) and T.start == (0,)
    assert isinstance(T[0], Task)
    assert list(T[-1]) == [] and isinstance(T[-1], TaskList)
    assert list(T[4]) == []
    assert len(T[:]) == 4
    assert list(T[2:10]) == [T[2], T[3]]
    U = TaskSpace("U", shape=(2, 3), start=(1, 10))
    assert U.start == (1, 10)
    assert isinstance(U[1, 10], Task)
    assert list(U[0, 10]) == []
    assert list(U[1, 13]) == []
    assert len(U[:, :]) == 6
    assert list(U[2, :]) == [U[2, 10], U[2, 11], U[2, 12]]
    with pytest.raises(IndexError):
        U[1]
    with pytest.raises(ValueError):
        TaskSpace("V", shape=(2, 2), start=(0,))
    V = TaskSpace("V", shape=3, start=5)
    assert V.shape == (3,) and V.start == (5,)
    assert list(V[4]) == [] and isinstance(V[5], Task)


def test_out_of_bounds_as_no_dependency(ctx):
    T = TaskSpace("W", shape=(5,))
    for i in range(5):
        @spawn(T[i], dependencies=[T[i - 1]])
        def body():
            return i
    assert len(T) == 5


def test_len_iter_contains(ctx):
    T = TaskSpace("L")
    assert len(T) == 0 and list(T) == []
    a, b = T[0], T["x", 1]
    assert len(T) == 2
    assert list(T) == [a, b]
    assert a in T and b in T
    assert 0 in T and ("x", 1) in T
    assert 7 not in T
    other = TaskSpace("other")
    assert other[0] not in T
    assert set(T.tasks) == {a, b}
    for t in (a, b):
        spawn(t)(lambda: None)


def test_taskspace_across_contexts():
    T = TaskSpace("X")
    with Parla(n_workers=1):
        @spawn(T[0])
        def first():
            return 1
    # A new context gets a fresh task for the same key.
    with Parla(n_workers=1):
        @spawn(T[0])
        def again():
            return 2
    assert again.result == 2


def test_repr(ctx):
    T = TaskSpace("R")
    T[0]
    assert "R" in repr(T)
    assert "TaskList" in repr(T[0:1])
    spawn(T[0])(lambda: None)


@pytest.mark.timeout(30)
def test_a_negative_key_in_any_position_is_an_empty_tasklist():
    # Without a shape, T[-1, 0] gave an empty TaskList but T[0, -1] made a task that never runs.
    from parla.tasks import TaskList
    with Parla(n_workers=2):
        D = TaskSpace("D")
        for key in ((0, -1), (-1, 0), (3, 2, -5)):
            assert isinstance(D[key], TaskList) and len(D[key]) == 0, key
        for i in range(3):
            for j in range(3):
                spawn(D[i, j], [D[i - 1, j], D[i, j - 1]])(lambda i=i, j=j: i + j)
    assert [D[i, j].result for i in range(3) for j in range(3)] == [i + j for i in range(3) for j in range(3)]


@pytest.mark.timeout(30)
def test_a_copied_space_and_a_view_name_the_same_tasks():
    # name, shape, start and the tasks are slots of the C base (not in __dict__): copy.copy and view keep them.
    import copy
    T = TaskSpace("T", shape=3, start=1)
    with Parla(n_workers=1):
        spawn(T[1])(lambda: 5)
    U = copy.copy(T)
    assert (U.name, U.shape, U.start, U._create) == ("T", (3,), (1,), True)
    assert U[1] is T[1] and U[1].result == 5 and len(U) == 1 and repr(U) == "TaskSpace('T', 1 tasks)"
    V = T.view
    assert V[1] is T[1] and V.name == "T" and not V._create and T._create and len(V[2]) == 0
