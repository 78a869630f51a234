"""Every ```python block in README.md and docs/*.md runs as written (in a fresh interpreter, from a temporary
folder), so the documentation's examples stay true."""
import importlib.util
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FILES = ["README.md"] + sorted(os.path.join("docs", f) for f in os.listdir(os.path.join(ROOT, "docs"))
                               if f.endswith(".md"))


def _snippets():
    for name in FILES:
        with open(os.path.join(ROOT, name)) as f:
            text = f.read()
        for k, m in enumerate(re.finditer(r"```python\n(.*?)```", text, re.S)):
            line = text.count("\n", 0, m.start()) + 2
            yield pytest.param(m.group(1), id=f"{name}:{line}")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("code", list(_snippets()))
def test_snippet_runs(code, tmp_path):
    if re.search(r"\bparla\.mpi\b|from parla import mpi\b", code) and importlib.util.find_spec("mpi4py") is None:
        pytest.skip("the snippet uses parla.mpi, which needs mpi4py (the 'mpi' extra); not installed here")
    env = dict(os.environ, PARLA_VIRTUAL_GPUS="", PYTHONPATH=os.path.join(ROOT, "examples"))
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=110,
                       env=env)
    assert r.returncode == 0, f"snippet failed:\n{code}\n--- stderr:\n{r.stderr[-3000:]}"
