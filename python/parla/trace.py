"""Pictures of a trace written by ``Parla(trace="run.json")``, without a browser.

    python -m parla.trace plot run.json -o run.png [--title TEXT]

draws a Gantt chart with matplotlib (the ``plot`` extra: ``pip install "parla-c[plot]"``): one lane per worker
thread and per device lane (``gpu(0)``, ``gpu(0) #2`` when two bodies ran on it at once), task bodies coloured
by device, copies hatched on their destination device, evictions as triangles, and the tasks of the critical
path outlined in red. The same from Python: :func:`plot`.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

__all__ = ["plot", "main"]

_COLORS = ["#9e9e9e", "#64b5f6", "#81c784", "#ffb74d", "#ba68c8", "#fff176", "#f06292", "#4dd0e1", "#a1887f"]


def _device_index(name: str) -> int:
    """0 for cpu(0), 1 + k for gpu(k): the colour of a device, as in the DOT graph."""
    if name.startswith("gpu("):
        try:
            return 1 + int(name[4:name.index(")")])
        except ValueError:
            return 0
    return 0


def plot(trace_path: str, out_path: str, title: Optional[str] = None) -> Dict[str, int]:
    """Renders the trace at ``trace_path`` (Chrome trace JSON from this runtime) as a Gantt chart to
    ``out_path`` (any format matplotlib writes: .png, .svg, .pdf). Returns counts of what was drawn:
    ``lanes``, ``tasks`` (body segments), ``copies``, ``evictions``, ``critical``. Raises ImportError without
    matplotlib, ValueError for a file that is not such a trace."""
    with open(trace_path) as f:
        try:
            events = json.load(f)["traceEvents"]
        except (ValueError, KeyError, TypeError):
            raise ValueError(f"{trace_path}: not a Chrome trace written by Parla (no traceEvents)") from None
    try:
        from matplotlib.figure import Figure  # no pyplot: the application's backend stays as it is
        from matplotlib.patches import Patch
    except ImportError:
        raise ImportError("plotting a trace needs matplotlib: pip install matplotlib "
                          "(or the package's 'plot' extra)") from None
    names: Dict[Tuple[int, int], str] = {}
    order: Dict[Tuple[int, int], int] = {}
    for e in events:
        if e.get("ph") == "M" and e.get("name") == "thread_name":
            names[(e["pid"], e["tid"])] = e["args"]["name"]
    slices = [e for e in events if e.get("ph") == "X"]
    used = {(e["pid"], e["tid"]) for e in slices} | {(e["pid"], e["tid"]) for e in events if e.get("ph") == "i"}
    lanes = sorted(used, key=lambda k: (k[0], k[1]))
    for i, key in enumerate(lanes):
        order[key] = i
    height = max(2.0, 0.45 * len(lanes) + 1.2)
    fig = Figure(figsize=(12, height))
    ax = fig.subplots()
    counts = {"lanes": len(lanes), "tasks": 0, "copies": 0, "evictions": 0, "critical": 0}
    t0 = min((e["ts"] for e in slices), default=0.0)
    for e in slices:
        y = order[(e["pid"], e["tid"])]
        start = (e["ts"] - t0) / 1e3
        width = max(e["dur"] / 1e3, 1e-4)
        args = e.get("args", {})
        if e.get("cat") == "copy":
            counts["copies"] += 1
            ax.broken_barh([(start, width)], (y - 0.35, 0.7), facecolors="white", edgecolors="black",
                           hatch="////", linewidth=0.5)
        else:
            device = args.get("device") or names.get((e["pid"], e["tid"]), "cpu(0)")
            color = _COLORS[_device_index(str(device)) % len(_COLORS)]
            critical = bool(args.get("critical"))
            if e.get("cat") == "task" and e["pid"] == 1:
                counts["tasks"] += 1
                counts["critical"] += critical
            ax.broken_barh([(start, width)], (y - 0.35, 0.7), facecolors=color,
                           edgecolors="red" if critical else "black", linewidth=1.6 if critical else 0.3,
                           alpha=0.6 if e.get("cat") == "device work" else 1.0)
    for e in events:
        if e.get("ph") == "i" and e.get("cat") == "evict":
            counts["evictions"] += 1
            ax.plot([(e["ts"] - t0) / 1e3], [order[(e["pid"], e["tid"])] - 0.45], marker="v", color="crimson",
                    markersize=6, linestyle="none")
    ax.set_yticks(range(len(lanes)))
    ax.set_yticklabels([names.get(k, f"{k[0]}:{k[1]}") for k in lanes])
    ax.invert_yaxis()
    ax.set_xlabel("time (ms)")
    ax.set_title(title or f"Parla trace: {counts['tasks']} task segments, {counts['copies']} copies")
    devices = sorted({str(e.get("args", {}).get("device")) for e in slices if e.get("cat") == "task"},
                     key=_device_index)
    handles: List[Any] = [Patch(facecolor=_COLORS[_device_index(d) % len(_COLORS)], edgecolor="black", label=f"task on {d}")
               for d in devices if d != "None"]
    handles.append(Patch(facecolor="white", edgecolor="red", linewidth=1.6, label="critical path"))
    handles.append(Patch(facecolor="white", edgecolor="black", hatch="////", label="copy"))
    if counts["evictions"]:
        from matplotlib.lines import Line2D
        handles.append(Line2D([], [], marker="v", color="crimson", linestyle="none", label="eviction"))
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    ax.grid(axis="x", linewidth=0.3)
    fig.tight_layout()
    fig.savefig(out_path, dpi=120)
    return counts


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m parla.trace plot run.json -o run.png``: prints where the picture went; exit status 2 for a
    bad command line or file."""
    parser = argparse.ArgumentParser(prog="python -m parla.trace", description="Pictures of Parla traces.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("plot", help="a Gantt chart (PNG, SVG, PDF) of a trace written with Parla(trace=...)")
    p.add_argument("trace", help="the trace file (JSON)")
    p.add_argument("-o", "--output", required=True, help="the picture to write, e.g. run.png")
    p.add_argument("--title", default=None)
    args = parser.parse_args(argv)
    try:
        counts = plot(args.trace, args.output, args.title)
    except (OSError, ValueError, ImportError) as e:
        print(f"python -m parla.trace: {e}", file=sys.stderr)
        return 2
    print(f"{args.output}: {counts['lanes']} lanes, {counts['tasks']} task segments "
          f"({counts['critical']} on the critical path), {counts['copies']} copies, {counts['evictions']} evictions")
    return 0


if __name__ == "__main__":
    sys.exit(main())
