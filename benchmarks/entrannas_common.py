"""Shared by the benchmarks/entrannas_*.py scripts: one search per named variant into its own run
directory under --out (a finished or interrupted one is resumed, so a rerun costs nothing), and
its per-epoch log."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from hwnas.data import load_dataset
from hwnas.spaces import get_space


def size_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--out", type=Path, required=True, help="directory of the run directories")
    ap.add_argument("--limit", type=int, default=600, help="digits images (search-train + search-val)")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--channels", type=int, default=8)
    ap.add_argument("--cells", type=int, default=5)
    ap.add_argument("--resolution", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)


def setup(args):
    data = load_dataset("digits", seed=args.seed, limit=args.limit)
    space = get_space("darts", channels=args.channels, cells=args.cells, num_classes=data.num_classes,
                      resolution=args.resolution)
    return data, space


def run(name: str, method: str, args, data, space, table=None, measurer=None, **options) -> dict:
    """Search (or resume) variant `name`, or read a finished one; returns {"summary", "log", "wall_s" (this call's)}."""
    from hwnas.search import entrannas, snas

    out = args.out / name
    started = time.monotonic()
    info = {"limit": args.limit}
    if (out / "summary.json").exists():  # finished: read it back as it is
        summary = json.loads((out / "summary.json").read_text())
    elif method == "snas":
        cfg = snas.SNASConfig(epochs=args.epochs, seed=args.seed, **options)
        summary = snas.search(cfg, space, data, out, table=table, measurer=measurer, run_info=info, show_progress=False,
                              echo=lambda s: print(f"[{name}] {s}", flush=True))
    else:
        cfg = entrannas.EnTranNASConfig(epochs=args.epochs, seed=args.seed, **options)
        summary = entrannas.search(cfg, space, data, out, table=table, measurer=measurer, run_info=info,
                                   show_progress=False, echo=lambda s: print(f"[{name}] {s}", flush=True))
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    return {"summary": summary, "log": log, "wall_s": time.monotonic() - started}
