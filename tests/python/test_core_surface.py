"""parla._core's surface: the stub python/parla/_core.pyi names exactly what the extension defines (types,
methods, getters, constants, module functions), and the error mapping of the extension per site."""
import ast
import os
import subprocess
import sys

import numpy as np
import pytest

from parla import _core

STUB = os.path.join(os.path.dirname(_core.__file__), "_core.pyi")
if not os.path.exists(STUB):  # an editable install: the stub is in the source tree
    STUB = os.path.join(os.path.dirname(__file__), "..", "..", "python", "parla", "_core.pyi")


def _stub_names():
    tree = ast.parse(open(STUB).read())
    top, classes = set(), {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            top.add(node.name)
            classes[node.name] = {n.name for n in node.body if isinstance(n, ast.FunctionDef)} | {
                n.target.id for n in node.body if isinstance(n, ast.AnnAssign)}
        elif isinstance(node, ast.FunctionDef):
            top.add(node.name)
        elif isinstance(node, ast.AnnAssign):
            top.add(node.target.id)
    return top, classes


def _defined(names):
    return {n for n in names if not (n.startswith("__") and n.endswith("__"))}


@pytest.mark.timeout(30)
def test_stub_matches_module():
    top, classes = _stub_names()
    assert top == _defined(dir(_core)), (sorted(top ^ _defined(dir(_core))))
    for name, members in classes.items():
        tp = getattr(_core, name)
        defined = _defined(vars(tp))
        assert _defined(members) == defined, (name, sorted(_defined(members) ^ defined))
        if "__init__" in members:  # the stub's constructor is one the type accepts
            assert tp.__new__ is not object.__new__ or tp.__init__ is not object.__init__, name


# Runs code in a subinterpreter that shares the GIL and checks extensions' declarations; prints "ok" or the
# ImportError. 3.13 has the _interpreters module; 3.12 only _testcapi's helper.
SUBINTERP = r"""
import sys
code = sys.argv[1]
try:
    import _interpreters
except ImportError:
    import _testcapi
    flags = dict(use_main_obmalloc=True, allow_fork=True, allow_exec=True, allow_threads=True,
                 allow_daemon_threads=True, check_multi_interp_extensions=True, gil=1)
    code = "try:\n    " + code + "\n    print('ok')\nexcept ImportError as e:\n    print(e)"
    sys.stdout.flush()
    assert _testcapi.run_in_subinterp_with_config(code, **flags) == 0
else:
    interp = _interpreters.create(_interpreters.new_config("legacy", check_multi_interp_extensions=True))
    exc = _interpreters.run_string(interp, code)
    print(exc.msg if exc else "ok")
"""


@pytest.mark.skipif(sys.version_info < (3, 12), reason="Py_mod_multiple_interpreters is new in 3.12")
@pytest.mark.timeout(60)
def test_refused_in_subinterpreters():
    # Workers attach to the main interpreter, so the module declares it does not support others: the
    # import fails there with ImportError instead of running bodies in the wrong interpreter. A module that
    # supports them (math) imports in the same kind of subinterpreter.
    out = []
    for code in ("import math", "import parla._core"):
        r = subprocess.run([sys.executable, "-c", SUBINTERP, code], capture_output=True, text=True, timeout=25)
        assert r.returncode == 0, r.stderr
        out.append(r.stdout.strip().splitlines()[-1])
    assert out == ["ok", "module parla._core does not support loading in subinterpreters"], out


@pytest.mark.timeout(30)
def test_error_mapping_per_site():
    # A call the engine refuses for a bad argument raises ValueError at every site that checks one.
    rt = _core.Runtime(1)
    try:
        d = _core.Data(rt, np.zeros(16, dtype=np.uint8))
        with pytest.raises(ValueError):
            d.view([0, 32])  # past the end: PARLA_EINVAL from the engine
        with pytest.raises(ValueError, match="no device 5"):
            d.fetch(5)
        with pytest.raises(TypeError):
            _core.Task(object(), "T")
    finally:
        rt.close()


@pytest.mark.timeout(30)
def test_task_names_kept_whole():
    # The engine keeps names of up to 255 bytes; a task's name is whole at any length.
    rt = _core.Runtime(1)
    try:
        for name in ("T[1, 2]", "é" * 100, "x" * 300, "a\0b"):
            t = _core.Task(rt, name)
            assert t.name == name
            t._cancel()
    finally:
        rt.close()
