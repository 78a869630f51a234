"""Lesson 10: seeing what ran where, with a trace and a summary.

Three switches on `Parla(...)`, all off by default (and then free):

- `trace="run.json"` writes a Chrome trace when the block exits (also `PARLA_TRACE=run.json`). It has one
  track per worker thread and one per device, with every task, every copy between devices and every
  eviction; dependencies are drawn as arrows, and each task's arguments show the device it ran on and the
  mapping scores behind that choice.
- `graph="run.dot"` writes the task graph in Graphviz DOT.
- `summary=True` prints a text summary at exit: tasks and busy time per device, bytes copied in and out,
  evictions, and the critical path. The text is also kept as the context's `.summary`.

To look at the trace: open https://ui.perfetto.dev and drag the JSON file in ("Open trace file"), or open
chrome://tracing in Chrome/Chromium and press "Load". Render the graph with `dot -Tsvg run.dot -o run.svg`.

This lesson runs a small pipeline on the CPU and two virtual GPUs, then reads the JSON back to check that
every task is in it.

    python examples/tutorial/10_tracing.py [--out DIR]      # DIR defaults to a new temporary directory
"""
from typing import List, Optional

import argparse
import json
import os
import tempfile

import numpy as np

from parla import Parla, TaskSpace, spawn
from parla.array import asarray
from parla.devices import cpu, gpu


def main(argv: Optional[List[str]] = None) -> None:
    ap = argparse.ArgumentParser(description="Lesson 10: tracing")
    ap.add_argument("--out", default=None, help="directory for run.json and run.dot (default: a new temp dir)")
    args = ap.parse_args(argv)
    out = args.out or tempfile.mkdtemp(prefix="parla-lesson10-")
    os.makedirs(out, exist_ok=True)
    trace_path = os.path.join(out, "run.json")
    graph_path = os.path.join(out, "run.dot")

    blocks = [asarray(np.full(1000, float(i))) for i in range(3)]
    with Parla(n_workers=2, virtual_gpus=2, trace=trace_path, graph=graph_path, summary=True) as parla:
        fill = TaskSpace("fill")
        total = TaskSpace("total")
        for i, block in enumerate(blocks):
            @spawn(fill[i], placement=[cpu, gpu(0), gpu(1)][i], inout=[block])
            def _() -> None:
                block.array[:] += 1.0

        # The fills are listed as dependencies too: the data alone orders total[0] after them, but an arrow
        # is drawn only for an edge that ordered something, and a fill may have finished before this spawn.
        @spawn(total[0], [fill[0:3]], placement=cpu, input=blocks)
        def _() -> float:
            return float(sum(b.array.sum() for b in blocks))

        result = total[0]

    assert result.result == 1000 * (1 + 2 + 3)
    assert parla.summary and "critical path" in parla.summary

    with open(trace_path) as f:
        trace = json.load(f)                   # valid JSON, in the Chrome trace format
    events = trace["traceEvents"]
    task_names = {e["name"] for e in events if e.get("cat") == "task"}
    task_devices = {e["name"]: e["args"]["device"] for e in events if e.get("cat") == "task"}
    copies = [e["name"] for e in events if e.get("cat") == "copy"]
    arrows = sum(1 for e in events if e.get("ph") == "s")

    print("tasks in the trace:", sorted(task_names))
    print("where they ran:", task_devices)
    print(f"{len(copies)} copies, e.g. {copies[:2]}; {arrows} dependency arrows")
    print(f"trace: {trace_path}\n  open it at https://ui.perfetto.dev (Open trace file) or in chrome://tracing")
    print(f"graph: {graph_path}\n  render it with: dot -Tsvg {graph_path} -o run.svg")

    assert task_names == {"fill[0]", "fill[1]", "fill[2]", "total[0]"}
    assert task_devices["fill[1]"] == "gpu(0)" and task_devices["fill[2]"] == "gpu(1)"
    assert task_devices["total[0]"] == "cpu(0)"
    assert copies, "the GPU tasks needed their blocks copied in"
    assert arrows >= 3, "total[0] depends on the three fill tasks"
    with open(graph_path) as f:
        assert f.read().startswith("digraph")


if __name__ == "__main__":
    main()
    print("lesson 10 OK")
