"""Traces: the Chrome trace JSON, the DOT graph and the summary match the tasks that ran."""
import json
import re
import time

import numpy as np
import pytest

from parla import Parla, TaskSpace, spawn
from parla.array import asarray
from parla.devices import cpu, gpu


def _program(n):
    """A diamond lattice of 2n tasks over cpu and two virtual GPUs, with PArray traffic."""
    A = asarray(np.zeros(1024))
    T = TaskSpace("T")
    tasks = []
    for i in range(n):
        deps = [T[i - 1]] if i else []
        placement = [cpu, gpu(0), gpu(1)][i % 3]

        @spawn(T[i], deps, placement=placement, inout=[A])
        def step(i=i):
            A.array[:] += i

        tasks.append(T[i])
        U = TaskSpace(f"U{i}")

        @spawn(U[0], [T[i]], placement=gpu, input=[A])
        def read():
            return float(A.array[0])

        tasks.append(U[0])
    return A, tasks


@pytest.mark.timeout(60)
def test_chrome_trace_matches_the_tasks_that_ran(tmp_path):
    trace, graph = tmp_path / "run.json", tmp_path / "run.dot"
    with Parla(n_workers=2, virtual_gpus=2, trace=str(trace), graph=str(graph)) as ctx:
        A, tasks = _program(12)
    assert np.all(A.array == sum(range(12)))
    events = json.loads(trace.read_text())["traceEvents"]
    slices = [e for e in events if e["ph"] == "X" and e.get("cat") == "task"]
    by_pid = {1: {}, 2: {}}
    for e in slices:
        by_pid[e["pid"]][e["name"]] = e
    names = {t.name for t in tasks}
    lanes = {e["tid"]: e["args"]["name"] for e in events
             if e["ph"] == "M" and e["name"] == "thread_name" and e["pid"] == 2}
    # One slice per task on the worker tracks and one on the device tracks.
    assert set(by_pid[1]) == names and set(by_pid[2]) == names
    for t in tasks:
        e = by_pid[1][t.name]
        device = t.devices[0]
        assert e["args"]["device"] == str(device), (t.name, e["args"])
        # Device tracks have one lane per concurrent slot ("gpu(1)", "gpu(1) #2"): the lane is the device's.
        assert lanes[by_pid[2][t.name]["tid"]].split(" ")[0] == str(device)
        assert e["args"]["state"] == "done"
    # Tasks placed with options carry their mapping scores.
    assert all("score" in by_pid[1][t.name]["args"] for t in tasks if t.name.startswith("U"))
    # Dependencies are flow arrows from the end of the predecessor to the start of the successor.
    starts = {e["id"]: e for e in events if e["ph"] == "s"}
    finishes = {e["id"]: e for e in events if e["ph"] == "f"}
    assert set(starts) == set(finishes) and len(starts) >= 2 * 12 - 1
    for fid, f in finishes.items():
        assert starts[fid]["ts"] <= f["ts"]
    # Every task starts after each predecessor (explicit dependency) ends.
    for i in range(1, 12):
        assert by_pid[1][f"T[{i - 1}]"]["ts"] + by_pid[1][f"T[{i - 1}]"]["dur"] <= by_pid[1][f"T[{i}]"]["ts"] + 1e-3
    # Copies between devices appear on the device tracks with their bytes.
    copies = [e for e in events if e.get("cat") == "copy"]
    assert copies and all(e["args"]["bytes"] > 0 for e in copies)
    # The DOT graph has every task and the chain's edges.
    dot = graph.read_text()
    assert dot.startswith("digraph parla")
    assert len(re.findall(r"^\s+t\d+ \[label=", dot, re.M)) == len(tasks)
    assert len(re.findall(r"->", dot)) >= 2 * 12 - 1
    # The summary names every device and the critical path.
    assert "critical path" in ctx.summary
    for device in ("cpu(0)", "gpu(0)", "gpu(1)"):
        assert device in ctx.summary


@pytest.mark.timeout(30)
def test_trace_from_environment_and_summary(tmp_path, monkeypatch, capsys):
    path = tmp_path / "env.json"
    monkeypatch.setenv("PARLA_TRACE", str(path))
    with Parla(n_workers=2, summary=True):
        T = TaskSpace("T")
        for i in range(5):
            @spawn(T[i], [T[i - 1]] if i else [])
            def f():
                pass
    captured = capsys.readouterr()
    out = captured.out
    assert "5 tasks" in out and "critical path: 5 tasks" in out
    assert f"parla: trace written to {path}" in captured.err
    events = json.loads(path.read_text())["traceEvents"]
    assert sum(1 for e in events if e["ph"] == "X" and e["pid"] == 1) == 5


@pytest.mark.timeout(30)
def test_a_dependency_that_finished_before_it_was_named_is_an_edge():
    # Each task is spawned only once its dependency is done: the finished task's edge is still traced, and the
    # critical path runs through the whole chain.
    with Parla(n_workers=2, summary=True) as ctx:
        T = TaskSpace("T")
        for i in range(6):
            @spawn(T[i], [T[i - 1]] if i else [])
            def f():
                time.sleep(0.002)
            T.wait()
            assert T[i].done
    text = ctx.summary
    assert text is not None
    assert "critical path: 6 tasks" in text, text
    assert "T[5] <- T[4] <- T[3] <- T[2] <- T[1] <- T[0]" in text, text


@pytest.mark.timeout(30)
def test_no_trace_unless_asked(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with Parla(n_workers=1) as ctx:
        @spawn()
        def f():
            pass
    assert ctx.summary is None
    assert list(tmp_path.iterdir()) == []


@pytest.mark.timeout(30)
def test_summary_file_gets_the_summary(tmp_path, capsys):
    # Parla's summary_file= was accepted and wrote nothing; it writes the summary there, and prints nothing.
    path = tmp_path / "summary.txt"
    with Parla(n_workers=2, summary_file=str(path)) as ctx:
        T = TaskSpace("T")
        for i in reversed(range(3)):  # last first: each dependency still unspawned when named
            @spawn(T[i], [T[i - 1]] if i else [])
            def f():
                pass
    text = path.read_text()
    assert text == ctx.summary
    assert "3 tasks" in text and "critical path: 3 tasks" in text
    assert "critical path" not in capsys.readouterr().out


@pytest.mark.timeout(30)
def test_summary_file_that_cannot_be_written_is_an_error(tmp_path):
    with pytest.raises(OSError):
        with Parla(n_workers=1, summary_file=str(tmp_path / "no" / "such" / "dir" / "s.txt")):
            @spawn()
            def f():
                pass
