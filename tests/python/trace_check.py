"""Checks of a Chrome trace written by the runtime (shared by the trace tests)."""
import collections
import json
from typing import Any, Dict, List, Tuple


def load(path) -> List[Dict[str, Any]]:
    with open(path) as f:
        return json.load(f)["traceEvents"]


def partial_overlaps(events: List[Dict[str, Any]]) -> List[Tuple[Any, str, str]]:
    """Pairs of complete ("X") slices on one track (pid, tid) that overlap without one containing the other:
    the Trace Event format cannot show those. Times in integer nanoseconds (the file has 3 decimals of us)."""
    tracks = collections.defaultdict(list)
    for e in events:
        if e["ph"] == "X":
            start = round(e["ts"] * 1000)
            tracks[(e["pid"], e["tid"])].append((start, start + round(e["dur"] * 1000), e["name"]))
    bad = []
    for track, slices in tracks.items():
        slices.sort(key=lambda s: (s[0], -s[1]))
        stack: List[Tuple[int, int, str]] = []
        for s in slices:
            while stack and stack[-1][1] <= s[0]:
                stack.pop()
            if stack and s[1] > stack[-1][1]:
                bad.append((track, stack[-1][2], s[2]))
            stack.append(s)
    return bad
