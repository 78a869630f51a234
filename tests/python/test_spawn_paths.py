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
from parla import Parla, TaskSpace, kernels, native
from parla.array import PArray, asarray
from parla.devices import cpu, gpu
from test_native import c_abs, c_memset  # libc's abs and memset as ctypes functions

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
            [d.architecture.name for d in t.devices])


def _spawn_both(kwargs, named, spaces):
    """The outcome of the spawn with kwargs through each path: (C path, Python path)."""
    out = []
    for spawner, space in ((tasks.spawn, spaces[0]), (tasks._spawn, spaces[1])):
        args = (space[len(space)],) if named else ()
        try:
            def body():  # the declarations the running task sees
                t = tasks.get_current_task()
                return 42, t._decl, t._modes, t._slots
            result = spawner(*args, **kwargs)(body)
        except Exception as e:  # e.g. ValueError for a position of 2**70 (both paths)
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


def test_a_huge_device_position_is_refused_naming_the_argument():
    """(A, 2**70) is a position like (A, 9): ValueError naming the task and the argument (it was a bare
    OverflowError from the bit mask of positions)."""
    with Parla(n_workers=1, virtual_gpus=2):
        A = asarray(np.zeros(2))
        T = TaskSpace("T")
        for spawner in (tasks.spawn, tasks._spawn):
            with pytest.raises(ValueError, match=re.escape(f"task T[0]: input=[(array, {2 ** 70})] asks for the "
                                                           f"array on the task's device {2 ** 70}")):
                spawner(T[0], placement=[(gpu, gpu)], input=[(A, 2 ** 70)])(lambda: None)
        assert T[0].state == "created"


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


# ------------------------------------------------------------------------------ native bodies -- #

dscal = native.blas("dscal")  # dscal(int *n, double *alpha, double *x, int *incx): x := alpha x

def _arrays():
    """Fresh arrays for one native spawn: A 48 bytes (uint8), B 4 float64, V = A[8:24], S a SubArray (uint8),
    F 4 float32, K and L 2 x 2 float64 tiles (K positive definite)."""
    A = asarray(np.zeros(48, dtype=np.uint8))
    return dict(A=A, B=asarray(np.ones(4)), V=A[8:24], S=SubArray(np.zeros(8, dtype=np.uint8)),
                F=asarray(np.ones(4, dtype=np.float32)), K=asarray(np.array([[4.0, 1.0], [1.0, 3.0]])),
                L=asarray(np.array([[1.0, 2.0], [3.0, 4.0]])))


# (case id, arrays -> (keyword arguments of spawn, the native call)), arrays from _arrays(); their contents after
# the context are compared too.
NATIVE_CASES = [
    ("memset inout", lambda a: (dict(inout=[a["A"]]), native.call(c_memset, a["A"], 7, 48))),
    ("memset input only", lambda a: (dict(input=[a["A"]]), native.call(c_memset, a["A"], 7, 48))),
    ("memset placed", lambda a: (dict(placement=gpu, inout=[a["A"]]), native.call(c_memset, a["A"], 3, 48))),
    ("memset alternatives", lambda a: (dict(placement=[cpu, gpu], output=[a["A"]], priority=3),
                                       native.call(c_memset, a["A"], 1, 40))),
    ("numpy scalars", lambda a: (dict(inout=[a["A"]]), native.call(c_memset, a["A"], np.int32(5), np.uint64(9)))),
    ("view declared whole", lambda a: (dict(inout=[a["A"]]), native.call(c_memset, a["V"], 1, 16))),
    ("view declared", lambda a: (dict(inout=[a["V"]]), native.call(c_memset, a["V"], 2, 16))),
    ("view undeclared", lambda a: (dict(inout=[a["B"]]), native.call(c_memset, a["V"], 2, 16))),
    ("undeclared", lambda a: (dict(input=[a["B"]]), native.call(c_memset, a["A"], 7, 48))),
    ("no declarations", lambda a: ({}, native.call(c_memset, a["A"], 7, 48))),
    ("bool for an int", lambda a: (dict(inout=[a["A"]]), native.call(c_memset, a["A"], True, 8))),
    ("bool for a size", lambda a: (dict(inout=[a["A"]]), native.call(c_memset, a["A"], 0, False))),
    ("float for an int", lambda a: (dict(inout=[a["A"]]), native.call(c_memset, a["A"], 2.5, 8))),
    ("int too large", lambda a: (dict(inout=[a["A"]]), native.call(c_memset, a["A"], 2 ** 40, 8))),
    ("negative size", lambda a: (dict(inout=[a["A"]]), native.call(c_memset, a["A"], 0, -1))),
    ("numpy array", lambda a: (dict(inout=[a["A"]]), native.call(c_memset, np.zeros(3), 0, 8))),
    ("subclass", lambda a: (dict(inout=[a["S"]]), native.call(c_memset, a["S"], 4, 8))),
    ("too few", lambda a: (dict(inout=[a["A"]]), native.call(c_memset, a["A"], 4))),
    ("parray for an int", lambda a: (dict(inout=[a["A"]]), native.call(c_abs, a["A"]))),
    ("null and size 0", lambda a: ({}, native.call(c_memset, None, 0, 0))),
    ("stream", lambda a: ({}, native.call(c_memset, native.stream, 0, 0))),
    ("status for a void pointer", lambda a: ({}, native.call(c_memset, native.status, 0, 4))),
    ("descriptor", lambda a: (dict(input=[a["A"]]), native.call(c_memset, native.array(a["A"]), 0, 0))),
    ("ref", lambda a: ({}, native.call(c_memset, native.ref(5), 0, 4))),
    ("abs zero", lambda a: ({}, native.call(c_abs, 0))),
    ("dscal", lambda a: (dict(inout=[a["B"]]), native.call(dscal, 4, 2.5, a["B"], 1))),
    ("dscal wrong dtype", lambda a: (dict(inout=[a["F"]]), native.call(dscal, 4, 2.5, a["F"], 1))),
    ("dscal status for a double", lambda a: (dict(inout=[a["B"]]), native.call(dscal, 4, 2.5, native.status, 1))),
    ("dscal bool by reference", lambda a: (dict(inout=[a["B"]]), native.call(dscal, True, 2.5, a["B"], 1))),
    ("dscal int too large", lambda a: (dict(inout=[a["B"]]), native.call(dscal, 2 ** 31, 2.5, a["B"], 1))),
    ("potrf", lambda a: (dict(inout=[a["K"]]), kernels.potrf(a["K"]))),
    ("potrf undeclared", lambda a: (dict(input=[a["L"]]), kernels.potrf(a["K"]))),
    ("gemm", lambda a: (dict(placement=gpu, input=[a["K"], a["L"]], inout=[a["L"]]),
                        kernels.gemm(a["K"], a["K"], a["L"]))),
    ("trsm", lambda a: (dict(input=[a["K"]], inout=[a["L"]]), kernels.trsm(a["K"], a["L"]))),
    ("syrk", lambda a: (dict(input=[a["K"]], inout=[a["L"]]), kernels.syrk(a["K"], a["L"]))),
]

_NATIVE_REFUSED = {
    "view undeclared", "undeclared", "no declarations", "bool for an int", "bool for a size", "float for an int",
    "int too large", "negative size", "numpy array", "subclass", "too few", "parray for an int",
    "dscal wrong dtype", "dscal status for a double", "dscal bool by reference",
    "dscal int too large", "potrf undeclared",
}


def _native_run(make, spawner):
    """Spawns the case through spawner four times (named and anonymous, twice each: the second time the
    placement and the kernel were seen in the context) with fresh arrays each time; returns the outcomes and
    then the arrays' contents after the context."""
    outcomes, arrays = [], []
    with Parla(n_workers=2, virtual_gpus=2):
        T = TaskSpace("T")
        for named in (True, False):
            for attempt in range(2):
                a = _arrays()
                arrays.append(a)
                kwargs, call = make(a)
                try:
                    result = spawner(*((T[len(arrays)],) if named else ()), **kwargs)(call)
                except Exception as e:
                    result = e
                outcomes.append(_native_outcome(result))
    return outcomes, [{k: np.asarray(v.array).tolist() for k, v in a.items()} for a in arrays]


def _native_outcome(task_or_error):
    if isinstance(task_or_error, BaseException):
        return ("raised", type(task_or_error), re.sub(r"#\d+", "#N", str(task_or_error)))
    t = task_or_error
    t.wait()
    return ("spawned", re.sub(r"#\d+", "#N", t.name), t.state, repr(t.result), [d.architecture.name for d in t.devices],
            sorted((t._modes or {}).values()), t._slots)


@pytest.mark.parametrize("case", [c[0] for c in NATIVE_CASES])
def test_native_bodies_both_paths_alike(case):
    """A native body spawned through the C path and through the general spawn: the same errors (type and
    message) or the same task (name, state, devices, declarations), and the same array contents after."""
    make = dict(NATIVE_CASES)[case]
    c_path = _native_run(make, tasks.spawn)
    py_path = _native_run(make, tasks._spawn)
    assert c_path == py_path
    first = c_path[0][0]
    assert (first[0] == "raised") == (case in _NATIVE_REFUSED), first
    if first[0] == "spawned":
        assert first[2] == "done"


def test_native_body_values():
    """What some of the table's spawns compute (so that equal outcomes are also right ones)."""
    outcomes, arrays = _native_run(dict(NATIVE_CASES)["memset inout"], tasks.spawn)
    assert arrays[0]["A"] == [7] * 48
    outcomes, arrays = _native_run(dict(NATIVE_CASES)["view declared whole"], tasks.spawn)
    assert arrays[0]["A"] == [0] * 8 + [1] * 16 + [0] * 24
    outcomes, arrays = _native_run(dict(NATIVE_CASES)["dscal"], tasks.spawn)
    assert arrays[0]["B"] == [2.5] * 4
    outcomes, arrays = _native_run(dict(NATIVE_CASES)["potrf"], tasks.spawn)
    np.testing.assert_allclose(np.tril(arrays[0]["K"]), np.linalg.cholesky([[4.0, 1.0], [1.0, 3.0]]))
    outcomes, _ = _native_run(dict(NATIVE_CASES)["bool for an int"], tasks.spawn)
    assert outcomes[0][1] is TypeError and "task T[1]: argument 1 of native body memset: True is a bool" in outcomes[0][2]


def test_native_spawns_run_no_python():
    """Native bodies (ctypes and SciPy functions, the shipped kernels) with declared PArrays, markers and
    numbers are bound to their tasks in C: once the context has seen the placement and the arrays, spawning
    them calls no function of the parla package. The same spawns through the general spawn do."""
    with Parla(n_workers=1, virtual_gpus=2) as p:
        a = _arrays()
        A, B, K, L = a["A"], a["B"], a["K"], a["L"]
        T = TaskSpace("T")

        def calls():  # made outside the measured spawns (parla.kernels checks the tiles in Python)
            return [
                (dict(placement=gpu, inout=[A]), native.call(c_memset, A, 7, 48)),
                (dict(input=[K, K], inout=[L], priority=1), kernels.gemm(K, K, L)),
                (dict(placement=[cpu, gpu], inout=[K]), kernels.potrf(K)),
                (dict(inout=[B]), native.call(dscal, 4, 0.5, B, 1)),
                (dict(placement=[(gpu, gpu)], inout=[(A, 0), (B, 1)]), native.call(c_memset, A, 1, 8)),
                ({}, native.call(c_memset, native.stream, 0, 0)),
            ]

        def spawn_all(base, made, spawner=tasks.spawn):
            for k, (kwargs, call) in enumerate(made):
                spawner(T[base + k], **kwargs)(call)
        spawn_all(0, calls())  # the first use of each placement and array resolves them in Python, once
        p.runtime.wait_all()
        made = calls()
        assert _python_calls(lambda: spawn_all(100, made)) == []
        p.runtime.wait_all()
        assert [T[100 + k].state for k in range(len(made))] == ["done"] * len(made)
        made = calls()
        assert "_bind" in _python_calls(lambda: spawn_all(200, made, tasks._spawn))


@pytest.mark.parametrize("shape,start,keys", [
    ((4,), None, [0, 3, 4, -1, (2,)]),
    ((3, 5), None, [(0, 0), (2, 4), (3, 0), (0, 5), (-1, 2), (1,), (1, 2, 3)]),
    ((3, 3, 3), (1, 1, 1), [(1, 1, 1), (3, 3, 3), (0, 1, 1), (4, 1, 1), (2 ** 70, 1, 1)]),
    (None, (2, 10), [(2, 10), (1, 10), (5, 9), (5, 100), 7, 1]),
    ((2,), (-3,), [-3, -2, -1, 0]),
])
def test_shaped_spaces_name_new_tasks_as_python_does(shape, start, keys):
    """A new task of a TaskSpace with a shape or a start is made in C (no Python code) when its key is in the
    bounds; the task names, empty TaskLists and errors are those of the general indexing (_getitem)."""
    def outcome(space, key):
        try:
            t = space[key] if space is not None else None
        except Exception as e:
            return ("raised", type(e), str(e))
        return ("task", t.name) if isinstance(t, tasks.Task) else ("list", len(t))

    with Parla(n_workers=1):
        C, P = TaskSpace("S", shape=shape, start=start), TaskSpace("S", shape=shape, start=start)
        for key in keys:
            try:
                py = P._getitem(key)
                py = ("task", py.name) if isinstance(py, tasks.Task) else ("list", len(py))
            except Exception as e:
                py = ("raised", type(e), str(e))
            assert outcome(C, key) == py, key
        # (negative indices, allowed by a negative start, are named in Python)
        inside = [k for k in keys if outcome(P, k)[0] == "task" and min(k if isinstance(k, tuple) else (k,)) >= 0]
        F = TaskSpace("F", shape=shape, start=start)
        calls = _python_calls(lambda: [F[k] for k in inside])
        assert calls == [] and len(F) == len({(k,) if not isinstance(k, tuple) else k for k in inside})
