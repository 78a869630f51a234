"""python -m parla.trace plot: a Gantt chart of a trace, rendered to a real PNG."""
import subprocess
import sys

import numpy as np
import pytest

from parla import Parla, TaskSpace, spawn
from parla.array import asarray
from parla.devices import cpu, gpu

pytest.importorskip("matplotlib")


@pytest.mark.timeout(120)
def test_plot_renders_lanes_tasks_copies_and_critical_path(tmp_path):
    trace = tmp_path / "run.json"
    with Parla(n_workers=2, virtual_gpus=1, gpu_memory=4096, trace=str(trace)):
        A = asarray(np.ones(256))   # 2 KiB each: two fit on the 4 KiB GPU, a third evicts
        B = asarray(np.ones(256))
        C = asarray(np.ones(256))
        T = TaskSpace("T")
        for i, X in enumerate((A, B, C)):
            @spawn(T[i], [T[i - 1]] if i else [], placement=gpu, inout=[X])
            def on_gpu():
                X.array[:] += 1

        @spawn(T[3], [T[2]], placement=cpu, input=[A, B, C])
        def back():
            pass
    out = tmp_path / "run.png"
    r = subprocess.run([sys.executable, "-m", "parla.trace", "plot", str(trace), "-o", str(out)],
                       capture_output=True, text=True, timeout=100)
    assert r.returncode == 0, r.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from parla.trace import plot
    counts = plot(str(trace), str(tmp_path / "again.png"))
    assert counts["tasks"] == 4 and counts["critical"] == 4
    assert counts["copies"] >= 3 and counts["evictions"] >= 1
    assert counts["lanes"] >= 3  # two workers and the GPU at least
    assert f"{out}: {counts['lanes']} lanes, 4 task segments" in r.stdout
    import matplotlib.image
    pixels = matplotlib.image.imread(str(out))
    assert pixels.shape[0] > 100 and pixels.shape[1] > 500 and pixels.std() > 0.05  # not a blank picture


def test_plot_rejects_other_files(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"hello": 1}')
    r = subprocess.run([sys.executable, "-m", "parla.trace", "plot", str(bad), "-o", str(tmp_path / "x.png")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "not a Chrome trace written by Parla" in r.stderr
