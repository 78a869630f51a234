"""The spawn path in C (parla.tasks.spawn) and the general spawn in Python (parla.tasks._spawn) accept and
refuse the same spawns, with the same errors, the same declarations on the task and the same placement:
one table of spawns with placement=, vcus=, memory=, input=/output=/inout= and priority=, each spawned
both ways in one context. And the common forms run no Python code at all in the C path."""
import re
import sys
from pathlib import Path

import numpy as np
import pytest

import parla.tasks as tasks
from parla import Parla, TaskSpace
from parla.array import PArray, asarray
from parla.devices import cpu, gpu

pytestmark = pytest.mark.timeout(60)


class SubArray(PArray):
    """A PArray subclass: declared through the general reading in both paths."""

    __slots__ = ()


# (case id, keyword arguments of spawn, given the arrays A, B, V = A[0:2], S (a SubArray)). Each is spawned
# as a named task, then as an anonymous one.
CASES = [
    ("nothing", lambda A, B, V, S: {}),
    ("input list", lambda A, B, V, S: dict(input=[A])),
    ("input one array", lambda A, B, V, S: dict(input=A)),
    ("three modes", lambda A, B, V, S: dict(input=[A], output=[B], inout=[V])),
    ("same array twice", lambda A, B, V, S: dict(input=[A, A], inout=[A])),
    ("view", lambda A, B, V, S: dict(inout=[V], input=(B,))),
    ("nested lists", lambda A, B, V, S: dict(input=[[A, [B]], (V,)])),
    ("empty declarations", lambda A, B, V, S: dict(input=[], output=(), inout=None)),
    ("subclass", lambda A, B, V, S: dict(input=[S], output=[A])),
    ("subclass pair", lambda A, B, V, S: dict(placement=[(gpu, gpu)], input=[(S, 1)])),
    ("not an array", lambda A, B, V, S: dict(input=[3])),
    ("numpy array", lambda A, B, V, S: dict(output=[np.zeros(2)])),
    ("string", lambda A, B, V, S: dict(input="abc")),
    ("generator", lambda A, B, V, S: dict(input=(x for x in [A]))),
    ("array then junk", lambda A, B, V, S: dict(input=[A, B], inout=[V, 1.5])),
    ("pair slot 0", lambda A, B, V, S: dict(input=[(A, 0)])),
    ("pair beyond one device", lambda A, B, V, S: dict(input=[(A, 1)])),
    ("pair on two devices", lambda A, B, V, S: dict(placement=[(gpu, gpu)], input=[(A, 0), (B, 1)], inout=[(V, 1)])),
    ("pair in one short option", lambda A, B, V, S: dict(placement=[(gpu, gpu), gpu], output=[(A, 1)])),
    ("pair negative", lambda A, B, V, S: dict(input=[(A, -1)])),
    ("pair bool", lambda A, B, V, S: dict(input=[(A, True)])),
    ("pair numpy int", lambda A, B, V, S: dict(placement=[(gpu, gpu)], input=[(A, np.int64(1))])),
    ("pair huge", lambda A, B, V, S: dict(input=[(A, 2 ** 70)])),
    ("pair nine", lambda A, B, V, S: dict(placement=[(gpu, gpu)], input=[(A, 9)])),
    ("pair not top level", lambda A, B, V, S: dict(input=(A, 1))),
    ("pair of arrays", lambda A, B, V, S: dict(input=[(A, B)])),
    ("pair nested", lambda A, B, V, S: dict(placement=(gpu, gpu), input=[[(A, 1)], B])),
    ("cpu", lambda A, B, V, S: dict(placement=cpu, input=[A])),
    ("cpu(0)", lambda A, B, V, S: dict(placement=cpu(0))),
    ("gpu", lambda A, B, V, S: dict(placement=gpu, input=[A], inout=[B])),
    ("gpu(1)", lambda A, B, V, S: dict(placement=gpu(1), output=[V])),
    ("alternatives", lambda A, B, V, S: dict(placement=[cpu, gpu(0)], input=[A])),
    ("missing device", lambda A, B, V, S: dict(placement=gpu(7))),
    ("missing alternative", lambda A, B, V, S: dict(placement=[gpu(7), gpu(0)])),
    ("a string placement", lambda A, B, V, S: dict(placement="gpu")),
    ("a number placement", lambda A, B, V, S: dict(placement=3)),
    ("empty list placement", lambda A, B, V, S: dict(placement=[])),
    ("empty tuple placement", lambda A, B, V, S: dict(placement=())),
    ("same device twice", lambda A, B, V, S: dict(placement=(gpu(0), gpu(0)))),
    ("resources", lambda A, B, V, S: dict(placement=gpu[{"vcus": 0.5, "memory": 100}], input=[A])),
    ("bad resources", lambda A, B, V, S: dict(placement=[gpu[{"vcus": 2.5}]])),
    ("placement by data", lambda A, B, V, S: dict(placement=A, inout=[A])),
    ("placement by numpy", lambda A, B, V, S: dict(placement=np.zeros(3))),
    ("vcus", lambda A, B, V, S: dict(vcus=0.5)),
    ("vcus with placement", lambda A, B, V, S: dict(placement=gpu, vcus=0.25, memory=64)),
    ("vcus zero", lambda A, B, V, S: dict(vcus=0.0)),
    ("vcus one int", lambda A, B, V, S: dict(vcus=1)),
    ("vcus thousandths", lambda A, B, V, S: dict(vcus=500)),
    ("vcus numpy", lambda A, B, V, S: dict(vcus=np.float64(0.5), placement=gpu)),
    ("vcus too big", lambda A, B, V, S: dict(vcus=2.5)),
    ("vcus negative", lambda A, B, V, S: dict(vcus=-0.5, placement=gpu)),
    ("vcus bool", lambda A, B, V, S: dict(vcus=True)),
    ("vcus string", lambda A, B, V, S: dict(vcus="half")),
    ("memory", lambda A, B, V, S: dict(memory=1000)),
    ("memory numpy", lambda A, B, V, S: dict(memory=np.int64(10), placement=gpu)),
    ("memory negative", lambda A, B, V, S: dict(memory=-1)),
    ("memory float", lambda A, B, V, S: dict(memory=1.5, placement=gpu)),
    ("memory 2**64", lambda A, B, V, S: dict(memory=2 ** 64)),
    ("memory 2**64 placed", lambda A, B, V, S: dict(memory=2 ** 64, placement=gpu)),
    ("memory too large for any device", lambda A, B, V, S: dict(memory=2 ** 62, placement=[gpu, cpu])),
    ("memory too large for the cpu", lambda A, B, V, S: dict(memory=2 ** 62)),
    ("priority", lambda A, B, V, S: dict(priority=5, input=[A])),
    ("priority numpy", lambda A, B, V, S: dict(priority=np.int64(-3))),
    ("priority too large", lambda A, B, V, S: dict(priority=10 ** 7)),
    ("priority bool", lambda A, B, V, S: dict(priority=True)),
    ("priority string", lambda A, B, V, S: dict(priority="high")),
    ("dependencies keyword", lambda A, B, V, S: dict(dependencies=[], placement=gpu, input=[A])),
    ("dependencies not tasks", lambda A, B, V, S: dict(dependencies=[1], placement=gpu, input=[A])),
    ("dependencies string", lambda A, B, V, S: dict(dependencies="T[0]", input=[A])),
]


def _outcome(task_or_error):
    """What a spawn gave, comparable across paths (anonymous numbers left out)."""
    if isinstance(task_or_error, BaseException):
        return ("raised", type(task_or_error), re.sub(r"#\d+", "#N", str(task_or_error)))
    t = task_or_error
    t.wait()
    # The devices' kinds (which GPU a task gets depends on where earlier tasks left its arrays).
    return ("spawned", re.sub(r"#\d+", "#N", t.name), t.state, repr(t.result),
            [d.architecture.name for d in t.devices], t._decl, t._modes, t._slots)


def _spawn_both(kwargs, named, spaces):
    """The outcome of the spawn with kwargs through each path: (C path, Python path)."""
    out = []
    for spawner, space in ((tasks.spawn, spaces[0]), (tasks._spawn, spaces[1])):
        args = (space[len(space)],) if named else ()
        try:
            def body():
                return 42
            result = spawner(*args, **kwargs)(body)
        except Exception as e:  # e.g. OverflowError for a position of 2**70 (both paths)
            result = e
        out.append(_outcome(result))
    return out


@pytest.mark.parametrize("case", [c[0] for c in CASES])
def test_both_paths_accept_and_refuse_alike(case):
    make = dict(CASES)[case]
    with Parla(n_workers=2, virtual_gpus=2):
        A, B = asarray(np.arange(6.0), name="A"), asarray(np.ones(4), name="B")
        V, S = A[0:2], SubArray(np.zeros(3))
        spaces = (TaskSpace("T"), TaskSpace("T"))
        for named in (True, False):
            for attempt in range(2):  # the second: placements now cached in the context
                c_path, py_path = _spawn_both(make(A, B, V, S), named, spaces)
                assert c_path == py_path, (named, attempt)
                if named and attempt == 0:
                    first = c_path
        # The table means what it says: the case spawned or raised as expected of it.
        assert (first[0] == "raised") == (case in _REFUSED), first


_REFUSED = {
    "not an array", "numpy array", "string", "generator", "array then junk", "pair beyond one device",
    "pair in one short option", "pair negative", "pair bool", "pair huge", "pair nine", "pair not top level",
    "missing device", "a string placement", "a number placement", "empty list placement",
    "empty tuple placement", "same device twice", "bad resources", "vcus too big", "vcus negative", "vcus bool",
    "vcus string", "memory negative", "memory float", "memory 2**64", "memory 2**64 placed",
    "memory too large for any device", "memory too large for the cpu", "priority too large", "priority bool",
    "priority string", "dependencies not tasks", "dependencies string",
}


@pytest.mark.parametrize("case", ["bad placement", "bad access", "fine"])
def test_a_spawned_task_is_refused_alike(case):
    """Spawning a task a second time: the placement and the declarations are read first (their errors
    win), then the task is found spawned already."""
    kwargs = {"bad placement": dict(placement=gpu(9)), "bad access": dict(input=[1]), "fine": dict(placement=gpu)}
    with Parla(n_workers=2, virtual_gpus=1):
        spaces = (TaskSpace("T"), TaskSpace("T"))
        for space in spaces:
            tasks.spawn(space[0])(lambda: None)
        outs = []
        for spawner, space in ((tasks.spawn, spaces[0]), (tasks._spawn, spaces[1])):
            try:
                spawner(space[0], **kwargs[case])(lambda: None)
            except (TypeError, ValueError, RuntimeError) as e:
                outs.append((type(e), str(e)))
        assert len(outs) == 2 and outs[0] == outs[1]
        assert ("already spawned" in outs[0][1]) == (case == "fine")


def _python_calls(fn):
    """The functions of the parla package that fn() calls on this thread (sys.setprofile 'call' events)."""
    seen = []

    def profile(frame, event, arg):
        if event == "call" and frame.f_code.co_filename.startswith(PACKAGE):
            seen.append(frame.f_code.co_name)
    sys.setprofile(profile)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return seen


PACKAGE = str(Path(tasks.__file__).parent)


def test_common_placed_spawns_with_accesses_run_no_python():
    with Parla(n_workers=1, virtual_gpus=2) as p:
        A, B = asarray(np.arange(6.0)), asarray(np.ones(4))
        V = A[0:2]
        T = TaskSpace("T")
        forms = [
            dict(placement=gpu, input=[A], inout=[B]),
            dict(placement=[cpu, gpu(1)], vcus=0.5, output=[V]),
            dict(placement=[(gpu, gpu)], input=[(A, 0), (B, 1)], priority=2),
            dict(placement=cpu, input=A, memory=64),
            dict(vcus=0.25, inout=[[A], (B,)]),
        ]

        def spawn_all(base):
            for k, kwargs in enumerate(forms):
                def body():
                    return None
                tasks.spawn(T[base + k], [T[base + k - 1]] if k else [], **kwargs)(body)
        spawn_all(0)  # the first use of each placement and array resolves them in Python, once per context
        p.runtime.wait_all()
        assert _python_calls(lambda: spawn_all(100)) == []
        p.runtime.wait_all()
        assert [T[100 + k].state for k in range(len(forms))] == ["done"] * len(forms)
        assert T[102].devices[0].architecture is gpu and len(T[102].devices) == 2
        # The general spawn, for comparison, runs Python code for the same spawns.
        assert _python_calls(lambda: tasks._spawn(T[200], placement=gpu, input=[A])(lambda: None)) != []
