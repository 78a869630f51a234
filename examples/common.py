"""Command-line options shared by the mini-apps (jacobi.py, matmul.py, reduction.py)."""
from __future__ import annotations

import argparse
from typing import Any, Dict, Sequence


def add_runtime_options(ap: argparse.ArgumentParser, placements: Sequence[str]) -> None:
    """Adds --placement (choices, the first is the default), --workers, --virtual-gpus, --seed, --trace, --quiet."""
    ap.add_argument("--placement", choices=list(placements), default=placements[0])
    ap.add_argument("--workers", type=int, default=None, help="worker threads (default: all cores)")
    ap.add_argument("--virtual-gpus", type=int, default=0, help="add N virtual GPUs (default 0)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--trace", default=None, help="write a Chrome trace to this file")
    ap.add_argument("--quiet", action="store_true", help="print nothing")


def parla_options(args: argparse.Namespace) -> Dict[str, Any]:
    """Keyword arguments for Parla() from the parsed options."""
    options: Dict[str, Any] = {"virtual_gpus": args.virtual_gpus}
    if args.trace:
        options["trace"] = args.trace
    return options
