"""Type checks: the canonical program (tests/python/typing_sample.py) passes mypy, and a keyword typo in spawn
is caught."""
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
pytest.importorskip("mypy")


def _mypy(path, cache):
    # A cache of the test's own (cache: a fresh directory): the first run checks parla and numpy's stubs, the
    # later ones reuse that work. Each run without a cache took about as long as the first, and four of them
    # under one timeout came near it on a loaded machine.
    return subprocess.run([sys.executable, "-m", "mypy", "--follow-imports=silent", "--cache-dir", str(cache),
                           "--config-file", os.path.join(ROOT, "pyproject.toml"), path],
                          capture_output=True, text=True, timeout=170, cwd=ROOT)


@pytest.mark.timeout(180)
def test_canonical_program_type_checks(tmp_path):
    cache = tmp_path / "mypy_cache"
    r = _mypy(os.path.join(HERE, "typing_sample.py"), cache)
    assert r.returncode == 0, r.stdout
    # Each program a file of its own: the cache tells a changed file by its size and time, which a
    # rewrite within the same second may keep.
    bad = tmp_path / "bad_spawn_keyword.py"
    bad.write_text("from parla import spawn, TaskSpace\nT = TaskSpace('T')\n"
                   "@spawn(T[0], placment=None)\ndef f() -> None: ...\n")
    r = _mypy(str(bad), cache)
    assert r.returncode == 1 and "placment" in r.stdout, r.stdout
    bad = tmp_path / "bad_parla_keyword.py"
    bad.write_text("from parla import Parla\nwith Parla(n_workers=2, progess=True):\n    pass\n")
    r = _mypy(str(bad), cache)
    assert r.returncode == 1 and "progess" in r.stdout, r.stdout
    # The decorated name is a Task, not the function.
    bad = tmp_path / "bad_task_call.py"
    bad.write_text("from parla import spawn, TaskSpace\nT = TaskSpace('T')\n"
                   "@spawn(T[0])\ndef f() -> int: ...\nn: int = f()\n")
    r = _mypy(str(bad), cache)
    assert r.returncode == 1 and '"Task" not callable' in r.stdout, r.stdout
