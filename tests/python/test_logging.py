"""The package logs through `logging` ("parla" and its children) and writes nothing else to stderr."""
import logging
import subprocess
import sys
import textwrap

import pytest

from parla import Parla, TaskSpace, spawn
from parla.devices import gpu

PROGRAM = textwrap.dedent("""
    from parla import Parla, spawn, TaskSpace
    from parla.array import asarray
    from parla.devices import gpu
    import numpy as np
    with Parla(n_workers=2, virtual_gpus=1, trace=%r):
        A = asarray(np.ones(4))
        T = TaskSpace("T")
        @spawn(T[0], placement=gpu, inout=[A])
        def f():
            A.array[:] += 1
    print(A.array.sum())
""")


def _run(tmp_path, env_level=None, prelude=""):
    env = {"PATH": "/usr/bin:/bin"}
    if env_level:
        env["PARLA_LOG_LEVEL"] = env_level
    code = prelude + PROGRAM % str(tmp_path / "run.json")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)


@pytest.mark.timeout(90)
def test_default_stderr_is_the_info_record_only(tmp_path):
    r = _run(tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "8.0"
    assert r.stderr.splitlines() == [f"parla: trace written to {tmp_path / 'run.json'}"]


@pytest.mark.timeout(90)
def test_parla_log_level_debug_shows_children(tmp_path):
    r = _run(tmp_path, "DEBUG")
    assert r.returncode == 0, r.stderr
    assert "parla: spawn T[0]" in r.stderr
    assert "parla: task T[0]: placement options" in r.stderr
    assert "parla: gpu(0): 32 bytes in" in r.stderr  # the data logger: A's 4 doubles copied to the GPU
    assert "parla: context started: 2 workers" in r.stderr
    r = _run(tmp_path, "WARNING")
    assert r.returncode == 0 and r.stderr == ""


@pytest.mark.timeout(90)
def test_application_logging_takes_over(tmp_path):
    prelude = "import logging, sys\nlogging.basicConfig(stream=sys.stdout, level=logging.DEBUG, format='%(name)s|%(message)s')\n"
    r = _run(tmp_path, prelude=prelude)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""  # the package's handler steps aside
    assert f"parla.trace|trace written to {tmp_path / 'run.json'}" in r.stdout


def test_bad_level_is_named(monkeypatch):
    monkeypatch.setenv("PARLA_LOG_LEVEL", "LOUD")
    with pytest.raises(ValueError, match="PARLA_LOG_LEVEL='LOUD'"):
        with Parla(n_workers=1):
            pass


def test_records_reach_caplog(caplog):
    logging.getLogger("parla").setLevel(logging.DEBUG)
    try:
        with caplog.at_level(logging.DEBUG, logger="parla"):
            with Parla(n_workers=1, virtual_gpus=1):
                T = TaskSpace("T")

                @spawn(T[0], placement=gpu)
                def f():
                    pass
    finally:
        logging.getLogger("parla").setLevel(logging.INFO)
    names = {r.name for r in caplog.records}
    assert {"parla", "parla.spawn", "parla.mapping"} <= names
    spawn_records = [r for r in caplog.records if r.name == "parla.spawn"]
    assert spawn_records[0].levelno == logging.DEBUG and "T[0]" in spawn_records[0].getMessage()


@pytest.mark.timeout(60)
def test_a_level_set_between_two_spawns_applies_to_the_next_one(caplog):
    """The spawn path in C remembers that the spawn logger's cache said 'not enabled' (until the cache
    changes): a level set between two spawns of one context, and set back, shows in the very next spawn."""
    spawn_logger = logging.getLogger("parla.spawn")
    with caplog.at_level(logging.INFO, logger="parla"):
        caplog.handler.setLevel(logging.DEBUG)  # the loggers' levels decide
        with Parla(n_workers=1):
            T = TaskSpace("T")
            for i in range(3):  # quiet spawns: the answer 'not enabled' is remembered
                spawn(T[i])(lambda: None)
            spawn_logger.setLevel(logging.DEBUG)
            try:
                spawn(T[3])(lambda: None)
            finally:
                spawn_logger.setLevel(logging.NOTSET)
            spawn(T[4])(lambda: None)
            logging.disable(logging.CRITICAL)
            logging.disable(logging.NOTSET)
            spawn_logger.setLevel(logging.DEBUG)
            try:
                spawn(T[5])(lambda: None)
            finally:
                spawn_logger.setLevel(logging.NOTSET)
    logged = [r.getMessage() for r in caplog.records if r.name == "parla.spawn"]
    assert [m.split(":")[0] for m in logged] == ["spawn T[3]", "spawn T[5]"], logged
