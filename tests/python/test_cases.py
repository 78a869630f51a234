"""Runs each user program in ../shared/cases/ (a sibling of the repository) and asserts it exits 0."""
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, clean_env

CASES = Path(__file__).resolve().parents[3] / "shared" / "cases"
NEEDS_ARRAY = {"c09_virtual_gpus.py", "c10_subarrays.py"}


def _has_parla_array():
    try:
        import parla.array  # noqa: F401
    except ImportError:
        return False
    return True


def _cases():
    if not CASES.is_dir():
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"{CASES} is absent"))]
    params = []
    for path in sorted(CASES.glob("*.py")):
        marks = []
        if path.name in NEEDS_ARRAY and not _has_parla_array():
            marks.append(pytest.mark.xfail(reason="needs parla.array (not built yet)", strict=False))
        params.append(pytest.param(path, id=path.stem, marks=marks))
    return params


@pytest.mark.timeout(40)
@pytest.mark.parametrize("case", _cases())
def test_case_program(case):
    r = subprocess.run([sys.executable, str(case)], capture_output=True, text=True, timeout=30,
                       env=clean_env(), cwd=str(REPO))
    assert r.returncode == 0, f"{case.name} exited {r.returncode}\nstdout:\n{r.stdout[-3000:]}\nstderr:\n{r.stderr[-3000:]}"
