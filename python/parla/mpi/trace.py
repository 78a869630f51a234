"""One timeline from the per-rank traces of a distributed run.

    mpirun -n 4 python program.py            # with parla.mpi.Parla(trace="run.json")
    python -m parla.mpi.trace merge run.json -o timeline.json [--summary]

``Parla(trace="run.json")`` in a distributed context writes, per rank r, the engine's Chrome trace
``run.rank<r>.json`` and the rank's message log ``run.rank<r>.mpi.json`` (each message: peer, data id,
version, bytes, the send or receive task, and when MPI posted and completed it, in CLOCK_MONOTONIC ns).
:func:`merge` puts every rank's events on one time axis, 0 being the moment the ranks left the barrier at the
start of the context, as processes ``rank r workers`` and ``rank r devices``, and draws one flow arrow per
message from the send task on its rank to the receive task on the other (category ``mpi``, bytes in its
args). Each rank's trace clock is placed on the monotonic clock from the gate tasks of its messages, which
start as MPI reports completion; on one node every rank shares that clock, across nodes the start barrier
aligns them (to its skew, microseconds on a fast network).

``--summary`` prints per rank: messages and bytes sent and received, and the busy time of its workers.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import re
import statistics
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

__all__ = ["merge", "main"]


def _rank_files(base: str) -> List[Tuple[int, str, str]]:
    root, ext = os.path.splitext(base)
    if ext.lower() != ".json":
        root = base
    found = []
    for path in glob.glob(f"{glob.escape(root)}.rank*.mpi.json"):
        m = re.search(r"\.rank(\d+)\.mpi\.json$", path)
        if m:
            r = int(m.group(1))
            found.append((r, f"{root}.rank{r}.json", path))
    return sorted(found)


def _slices(events: List[Dict[str, Any]]) -> Dict[str, List[Dict[str, Any]]]:
    out: Dict[str, List[Dict[str, Any]]] = {}
    for e in events:
        if e.get("ph") == "X" and e.get("pid") == 1:
            out.setdefault(e["name"], []).append(e)
    for v in out.values():
        v.sort(key=lambda e: e["ts"])
    return out


def merge(base: str, out_path: str) -> Dict[str, Any]:
    """Merges the traces of every rank found next to ``base`` (the path given to ``Parla(trace=...)``) into
    one Chrome trace at ``out_path``. Returns ``{"ranks": [...], "messages": n, "flows": n, "per_rank":
    {rank: stats}}``. Raises FileNotFoundError when no rank's files are found, ValueError for a file that is
    not such a trace."""
    files = _rank_files(base)
    if not files:
        raise FileNotFoundError(f"no per-rank traces for {base} (expected {os.path.splitext(base)[0]}.rank0.json "
                                f"and .rank0.mpi.json, written by parla.mpi.Parla(trace=...))")
    merged: List[Dict[str, Any]] = []
    logs: Dict[int, Dict[str, Any]] = {}
    slices: Dict[int, Dict[str, List[Dict[str, Any]]]] = {}
    shift: Dict[int, float] = {}
    for r, trace_path, log_path in files:
        with open(log_path) as f:
            log = json.load(f)
        try:
            with open(trace_path) as f:
                events = json.load(f)["traceEvents"]
        except (ValueError, KeyError, TypeError):
            raise ValueError(f"{trace_path}: not a Chrome trace written by Parla") from None
        logs[r] = log
        by_name = _slices(events)
        slices[r] = by_name
        # Trace time 0 on the monotonic clock: each gate task starts right after MPI completed its request.
        offsets = []
        for m in log["messages"]:
            gate = by_name.get(f"{m['task']} done")
            if gate and m["done_ns"]:
                offsets.append(m["done_ns"] - gate[0]["ts"] * 1e3)
        t0 = statistics.median(offsets) if offsets else float(log["sync_mono_ns"])
        shift[r] = (t0 - log["sync_mono_ns"]) / 1e3  # us to add to this rank's trace times
        for e in events:
            e = dict(e)
            pid = e.get("pid", 1)
            e["pid"] = 100 * r + pid
            if e.get("ph") == "M" and e.get("name") == "process_name":
                e["args"] = {"name": f"rank {r} {e['args']['name']}"}
            elif e.get("ph") == "M" and e.get("name") == "process_sort_index":
                continue
            if "ts" in e:
                e["ts"] = round(e["ts"] + shift[r], 3)
            if e.get("ph") in ("s", "f", "t") and "id" in e:
                e["id"] = 10_000_000 * (r + 1) + int(e["id"])
            merged.append(e)
        for pid in (1, 2):
            merged.append({"ph": "M", "pid": 100 * r + pid, "name": "process_sort_index",
                           "args": {"sort_index": 100 * r + pid}})
    flows = 0
    n_messages = 0
    for r, log in logs.items():
        for m in log["messages"]:
            if m["kind"] != "send":
                continue
            n_messages += 1
            dst = m["peer"]
            if dst not in logs:
                continue
            recv = next((x for x in logs[dst]["messages"] if x["kind"] == "recv" and x["peer"] == r
                         and x["data"] == m["data"] and x["version"] == m["version"]), None)
            if recv is None:
                continue
            send_slices = slices[r].get(m["task"]) or []
            recv_slices = slices[dst].get(recv["task"]) or []
            if not send_slices or not recv_slices:
                continue
            s, f_ = send_slices[0], recv_slices[-1]
            flow_id = 1_000_000_000 + flows
            args = {"bytes": m["bytes"], "data": m["data"], "version": m["version"]}
            merged.append({"ph": "s", "pid": 100 * r + 1, "tid": s["tid"], "ts": round(s["ts"] + shift[r], 3),
                           "id": flow_id, "name": f"{m['bytes']} B", "cat": "mpi", "args": args})
            merged.append({"ph": "f", "bp": "e", "pid": 100 * dst + 1, "tid": f_["tid"],
                           "ts": round(max(f_["ts"] + shift[dst], s["ts"] + shift[r]), 3), "id": flow_id,
                           "name": f"{m['bytes']} B", "cat": "mpi", "args": args})
            flows += 1
    with open(out_path, "w") as f:
        json.dump({"displayTimeUnit": "ms", "traceEvents": merged}, f)
    per_rank = {}
    for r, log in logs.items():
        busy = sum(e["dur"] for v in slices[r].values() for e in v if e["name"] != "mpi progress")
        per_rank[r] = dict(log.get("stats", {}), busy_us=round(busy, 1))
    return {"ranks": sorted(logs), "messages": n_messages, "flows": flows, "per_rank": per_rank}


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m parla.mpi.trace", description=(__doc__ or "").split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("merge", help="merge run.rank*.json into one timeline")
    m.add_argument("base", help="the trace path given to parla.mpi.Parla(trace=...), e.g. run.json")
    m.add_argument("-o", "--output", default=None, help="merged trace (default: <base>.merged.json)")
    m.add_argument("--summary", action="store_true", help="print per-rank message and busy-time counts")
    args = parser.parse_args(argv)
    out = args.output or f"{os.path.splitext(args.base)[0]}.merged.json"
    try:
        info = merge(args.base, out)
    except (OSError, ValueError) as e:
        print(f"parla.mpi.trace: {e}", file=sys.stderr)
        return 1
    print(f"{out}: {len(info['ranks'])} ranks, {info['messages']} messages, {info['flows']} flows")
    if args.summary:
        for r, s in info["per_rank"].items():
            print(f"  rank {r}: {s.get('messages_sent', 0)} sent ({s.get('bytes_sent', 0)} B), "
                  f"{s.get('messages_received', 0)} received ({s.get('bytes_received', 0)} B), "
                  f"tasks busy {s['busy_us'] / 1e3:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
