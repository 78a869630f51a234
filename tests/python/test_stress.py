"""Large and random workloads: 10^5-task random DAGs, random failures, deep nested spawns."""
import itertools
import re
import random
import threading

import pytest

from parla import Parla, spawn, TaskSpace, TaskCancelledError
from parla._runtime import _MAX_FAILURE_NOTES as MAX_FAILURE_NOTES


def random_dag(n, rng, max_deps=3, window=64):
    """deps[i]: a list of j < i (mostly recent tasks, sometimes far back)."""
    deps = []
    for i in range(n):
        k = rng.randint(0, min(i, max_deps))
        chosen = set()
        for _ in range(k):
            if rng.random() < 0.8:
                chosen.add(rng.randint(max(0, i - window), i - 1))
            else:
                chosen.add(rng.randint(0, i - 1))
        deps.append(sorted(chosen))
    return deps


def run_dag(deps, order, n_workers):
    n = len(deps)
    start = [-1] * n
    end = [-1] * n
    counter = [0]
    lock = threading.Lock()
    with Parla(n_workers=n_workers):
        T = TaskSpace("D")
        for i in order:
            @spawn(T[i], dependencies=[T[j] for j in deps[i]])
            def body():
                with lock:
                    start[i] = counter[0]
                    counter[0] += 1
                with lock:
                    end[i] = counter[0]
                    counter[0] += 1
    return start, end


def check_order(deps, start, end):
    assert min(start) >= 0, "a task did not run"
    assert len(set(start) | set(end)) == 2 * len(deps)
    bad = [(j, i) for i, ds in enumerate(deps) for j in ds if not end[j] < start[i]]
    assert not bad, f"{len(bad)} dependencies violated, e.g. {bad[:5]}"


@pytest.mark.timeout(60)
def test_random_dag_100k_in_order():
    rng = random.Random(1234)
    deps = random_dag(100_000, rng)
    start, end = run_dag(deps, range(len(deps)), n_workers=2)
    check_order(deps, start, end)


@pytest.mark.timeout(40)
@pytest.mark.parametrize("seed", [1, 2])
def test_random_dag_shuffled_spawn_order(seed):
    # Spawn in a random order: most dependencies are placeholders when first named.
    rng = random.Random(seed)
    deps = random_dag(20_000, rng)
    order = list(range(len(deps)))
    rng.shuffle(order)
    start, end = run_dag(deps, order, n_workers=3)
    check_order(deps, start, end)


@pytest.mark.timeout(30)
def test_random_dag_one_worker():
    rng = random.Random(7)
    deps = random_dag(10_000, rng, max_deps=5)
    start, end = run_dag(deps, range(len(deps)), n_workers=1)
    check_order(deps, start, end)


class Boom(Exception):
    pass


def run_failing_dag(rng, n, fail_rate, n_workers):
    deps = random_dag(n, rng, max_deps=3, window=200)
    failing = {i for i in range(n) if rng.random() < fail_rate} | {rng.randrange(n)}
    counter = itertools.count()
    started = {}
    lock = threading.Lock()
    with pytest.raises(Boom) as info:
        with Parla(n_workers=n_workers) as ctx:
            T = TaskSpace("F")
            for i in range(n):
                @spawn(T[i], dependencies=[T[j] for j in deps[i]])
                def body():
                    with lock:
                        started[i] = next(counter)
                    if i in failing:
                        raise Boom(i, next(counter))
            tasks = [T[i] for i in range(n)]
    error = info.value
    return deps, failing, started, tasks, error, ctx.failed


@pytest.mark.timeout(60)
def test_random_failures_never_hang_and_report_first():
    rng = random.Random(99)
    for round_ in range(50):
        n = rng.choice([200, 1000, 3000])
        deps, failing, started, tasks, error, recorded = run_failing_dag(rng, n, rng.choice([0.001, 0.01, 0.05]),
                                                               n_workers=rng.choice([1, 2, 4]))
        # Which tasks have a failed ancestor (or are failing themselves)?
        doomed = [False] * n
        failed_ran = set()
        for i in range(n):
            doomed[i] = any(doomed[j] or (j in failing and j in failed_ran) for j in deps[i])
            if not doomed[i] and i in failing:
                failed_ran.add(i)
        if not failed_ran:
            # No failing task could run (impossible: the first failing task has no failed ancestor).
            raise AssertionError("test bug")
        for i in range(n):
            t = tasks[i]
            if doomed[i]:
                assert i not in started, f"round {round_}: task {i} ran although an ancestor failed"
                assert t.state == "cancelled", (round_, i, t.state)
                exc = t.exception
                assert isinstance(exc, TaskCancelledError)
                assert isinstance(exc.__cause__, Boom), (round_, i, exc, exc.__cause__)
                assert exc.__cause__.args[0] in failed_ran
            elif i in failing:
                assert t.state == "failed", (round_, i, t.state)
                assert isinstance(t.exception, Boom)
            else:
                assert t.state == "done", (round_, i, t.state)
                assert i in started
        # The reported error is the first failure the runtime recorded (Parla.failed, in order of failure),
        # which lists every failed task once. (The body's sequence numbers cannot order failures: a thread
        # switch between a body's raise and the runtime's record of it lets a later failure be recorded first.)
        reported = error.args[0]
        assert reported in failed_ran
        raised_at = {t.exception.args[0]: t.exception.args[1] for t in tasks if t.state == "failed"}
        assert recorded[0] is tasks[reported], (round_, recorded[0], reported)
        assert sorted(t.exception.args[0] for t in recorded) == sorted(raised_at), round_
        notes = "\n".join(error.__notes__)
        assert f"raised by Parla task F[{reported}]" in notes
        # Every other failure is named ("task F[k] also failed: ...") up to the runtime's cap, in the order
        # the failures were recorded; the rest are counted exactly.
        others = set(raised_at) - {reported}
        named = [int(k) for k in re.findall(r"task F\[(\d+)\] also failed: Boom", notes)]
        assert len(named) == len(set(named)), f"round {round_}: a failure named twice: {named}"
        assert set(named) <= others, f"round {round_}: notes name {set(named) - others}, which did not fail"
        assert len(named) == min(len(others), MAX_FAILURE_NOTES), (round_, len(named), len(others))
        assert named == [t.exception.args[0] for t in recorded[1:1 + len(named)]], round_
        if len(others) > MAX_FAILURE_NOTES:
            assert (f"and {len(others) - MAX_FAILURE_NOTES} more tasks failed ({len(others) + 1} in all; "
                    "Parla.failed lists them)") in notes, (round_, notes[-300:])
        else:
            assert "more tasks failed" not in notes


@pytest.mark.timeout(30)
def test_failures_inside_nested_spawns():
    with pytest.raises(Boom):
        with Parla(n_workers=2):
            @spawn()
            def outer():
                for k in range(200):
                    @spawn()
                    def inner():
                        if k % 37 == 5:
                            raise Boom(k)


def _chain_spawn(depth, limit, seen, lock):
    @spawn()
    def child():
        with lock:
            seen.append(depth)
        if depth + 1 < limit:
            _chain_spawn(depth + 1, limit, seen, lock)


@pytest.mark.timeout(20)
def test_1000_nested_spawns_chain():
    seen = []
    lock = threading.Lock()
    with Parla(n_workers=2):
        _chain_spawn(0, 1000, seen, lock)
    assert seen == list(range(1000))


@pytest.mark.timeout(20)
def test_1000_nested_spawns_depending_on_parent():
    # Each task spawns the next, which depends on the (still running) spawner.
    order = []
    with Parla(n_workers=2):
        T = TaskSpace("N")

        def make(k):
            @spawn(T[k], dependencies=[T[k - 1]] if k else [])
            def body():
                order.append(("start", k))
                if k + 1 < 1000:
                    make(k + 1)
                order.append(("end", k))
        make(0)
    expected = []
    for k in range(1000):
        expected += [("start", k), ("end", k)]
    assert order == expected


@pytest.mark.timeout(20)
def test_1000_spawns_from_one_task_and_tree():
    count = [0]
    lock = threading.Lock()

    def tree(level):
        @spawn()
        def node():
            with lock:
                count[0] += 1
            if level < 9:
                tree(level + 1)
                tree(level + 1)

    with Parla(n_workers=2):
        @spawn()
        def fan():
            for i in range(1000):
                @spawn()
                def leaf():
                    with lock:
                        count[0] += 1
        tree(0)
    assert count[0] == 1000 + (2 ** 10 - 1)


@pytest.mark.timeout(30)
def test_nested_async_awaits_1000():
    with Parla(n_workers=2):
        @spawn()
        async def driver():
            total = 0
            for k in range(1000):
                @spawn()
                async def mid():
                    @spawn()
                    def leaf():
                        return k
                    return await leaf
                total += await mid
            return total
    assert driver.result == sum(range(1000))


@pytest.mark.timeout(30)
def test_many_contexts_in_sequence():
    for k in range(200):
        with Parla(n_workers=2):
            T = TaskSpace("T")
            for i in range(10):
                spawn(T[i], [T[i - 1]] if i else [])(lambda: None)
