"""Traces follow the Trace Event format (no partial overlap on a track), the summary's numbers mean what
their labels say, and the DOT graph has a legend, the critical path and data edges drawn apart."""
import os
import re
import sys
import threading
import time

import numpy as np
import pytest

from parla import Parla, TaskSpace, spawn
from parla.array import asarray
from parla.devices import cpu, gpu

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(HERE)), "examples"))

import trace_check  # noqa: E402


@pytest.mark.timeout(120)
def test_demo_trace_has_no_partial_overlap(tmp_path):
    import cholesky
    a = cholesky.make_spd(768)
    path = tmp_path / "demo.json"
    l, _ = cholesky.run(a, 96, 4, virtual_gpus=2, trace=str(path), all_devices=True)
    assert cholesky.residual(a, l) < 1e-10
    events = trace_check.load(path)
    slices = [e for e in events if e["ph"] == "X"]
    assert sum(1 for e in slices if e["pid"] == 1 and e["cat"] == "task") == cholesky.count_tasks(8)
    assert trace_check.partial_overlaps(events) == []
    # Every device slice sits on a lane named after its device.
    names = {(e["pid"], e["tid"]): e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "thread_name"}
    assert {names[(2, e["tid"])].split(" ")[0] for e in slices if e["pid"] == 2} <= {"cpu(0)", "gpu(0)", "gpu(1)"}


def test_checker_finds_partial_overlap():
    events = [{"ph": "X", "pid": 1, "tid": 0, "ts": 0.0, "dur": 2.0, "name": "a"},
              {"ph": "X", "pid": 1, "tid": 0, "ts": 1.0, "dur": 2.0, "name": "b"},
              {"ph": "X", "pid": 1, "tid": 0, "ts": 1.0, "dur": 0.5, "name": "nested in a"}]
    assert trace_check.partial_overlaps(events) == [((1, 0), "a", "b")]


@pytest.mark.timeout(60)
def test_suspended_time_is_not_busy_and_awaits_are_on_the_critical_path(tmp_path):
    path = tmp_path / "await.json"
    p = Parla(n_workers=1, trace=str(path), summary=False)
    with p:
        T = TaskSpace("T")

        @spawn(T["outer"])
        async def outer():
            @spawn(T["slow"])
            def slow():
                time.sleep(0.2)
            await slow
            time.sleep(0.01)
    summary = p.summary
    span = float(re.search(r"tasks in ([\d.]+) ms \(first task start to last task end\)", summary).group(1))
    events = trace_check.load(path)
    segments = [e for e in events if e["ph"] == "X" and e["pid"] == 1]
    start = min(e["ts"] for e in segments)
    end = max(e["ts"] + e["dur"] for e in segments)
    assert span == pytest.approx((end - start) / 1e3, abs=0.01)
    outer_segments = [e for e in segments if e["name"] == "T['outer']"]
    assert [e["args"]["state"] for e in outer_segments] == ["suspended", "done"]
    busy = float(re.search(r"cpu\(0\)\s+\d+\s+([\d.]+)%", summary).group(1))
    assert busy <= 100.0  # one worker: the suspended outer task does not count while slow runs
    assert re.search(r"critical path: 2 tasks.*T\['slow'\]", summary)
    assert trace_check.partial_overlaps(events) == []
    awaits = [e for e in events if e["ph"] == "s" and e["name"] == "await"]
    assert len(awaits) == 1


@pytest.mark.timeout(60)
def test_dot_legend_critical_path_and_edge_kinds(tmp_path):
    path = tmp_path / "g.dot"
    # T[0] runs until all three are spawned: a writer that has already finished when its reader is spawned
    # leaves no data-flow edge to draw (the main thread can lose the GIL between spawns to a worker).
    spawned = threading.Event()
    with Parla(n_workers=2, virtual_gpus=1, graph=str(path)):
        A = asarray(np.zeros(4))
        T = TaskSpace("T")

        @spawn(T[0], placement=gpu, output=[A])
        def write():
            spawned.wait(30)
            A.array[:] = 1

        @spawn(T[1], placement=cpu, input=[A])      # a data flow from T[0]
        def read():
            pass

        @spawn(T[2], [T[1]], placement=cpu)         # an explicit dependency
        def after():
            pass
        spawned.set()
    dot = path.read_text()
    assert "subgraph cluster_legend" in dot and 'label="legend"' in dot
    lines = {m.group(1): m.group(2) for m in re.finditer(r'(t\d+ -> t\d+) \[(.*)\];', dot)}
    styles = sorted(lines.values())
    assert len(styles) == 2
    assert any("style=dashed" in s for s in styles) and any("style=solid" in s for s in styles)
    assert all("color=red" in s for s in styles)  # T[0] -> T[1] -> T[2] is the critical path
    assert dot.count("color=red, penwidth=3") == 4  # three tasks and the legend's sample
