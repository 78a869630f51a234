"""Type checks: the canonical program (tests/python/typing_sample.py) passes mypy, and a keyword typo in spawn
is caught."""
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
pytest.importorskip("mypy")


def _mypy(path):
    return subprocess.run([sys.executable, "-m", "mypy", "--follow-imports=silent", "--no-incremental",
                           "--config-file", os.path.join(ROOT, "pyproject.toml"), path],
                          capture_output=True, text=True, timeout=170, cwd=ROOT)


@pytest.mark.timeout(180)
def test_canonical_program_type_checks(tmp_path):
    r = _mypy(os.path.join(HERE, "typing_sample.py"))
    assert r.returncode == 0, r.stdout
    bad = tmp_path / "bad.py"
    bad.write_text("from parla import spawn, TaskSpace\nT = TaskSpace('T')\n"
                   "@spawn(T[0], placment=None)\ndef f() -> None: ...\n")
    r = _mypy(str(bad))
    assert r.returncode == 1 and "placment" in r.stdout, r.stdout
    bad.write_text("from parla import Parla\nwith Parla(n_workers=2, progess=True):\n    pass\n")
    r = _mypy(str(bad))
    assert r.returncode == 1 and "progess" in r.stdout, r.stdout
    # The decorated name is a Task, not the function.
    bad.write_text("from parla import spawn, TaskSpace\nT = TaskSpace('T')\n"
                   "@spawn(T[0])\ndef f() -> int: ...\nn: int = f()\n")
    r = _mypy(str(bad))
    assert r.returncode == 1 and '"Task" not callable' in r.stdout, r.stdout
