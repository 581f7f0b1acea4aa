"""Overhead of building a lookup table: wall time against time spent inside timed inference.

Builds the table of a small space into a fresh store and ONNX cache (nothing cached), then
splits the wall time into timed inference (the samples the medians come from), session
creation, first runs, and the rest (export with its parity check, warm-up, store writes).
A second build shows what the store saves: it re-measures nothing.

    .venv/bin/python benchmarks/lut_overhead.py --space tfnas --resolution 64 --width-mult 0.5 --width-step 32
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--space", default="tfnas")
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--width-mult", type=float, default=0.5)
    ap.add_argument("--width-step", type=int, default=32)
    ap.add_argument("--min-time", type=float, default=0.1)
    ap.add_argument("--min-runs", type=int, default=20)
    ap.add_argument("--torch-threads", type=int, default=1, help="torch threads for the exports")
    ap.add_argument("--processes", type=int, default=3, help="k fresh processes per layer")
    ap.add_argument("--isolation", default="auto", choices=["auto", "pin", "pause"],
                    help="pin (auto on 2+ cores): export on the other cores while a layer is timed")
    ap.add_argument("--no-reference", action="store_true", help="time no reference model beside each layer")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="lut-overhead-"))
    os.environ["HWNAS_CACHE"] = str(tmp)  # a cold ONNX cache: every export counts
    import torch

    from hwnas.backends import MeasureProtocol, get_backend
    from hwnas.measure import Measurer, isolation_cores
    from hwnas.spaces.mbconv import Space, distinct_layers
    from hwnas.store import Store
    from hwnas.surrogates.lut import LookupTable

    torch.set_num_threads(args.torch_threads)
    space = Space(args.space, resolution=args.resolution, width_mult=args.width_mult)
    store = Store(tmp / "store.sqlite")
    protocol = MeasureProtocol(min_runs=args.min_runs, min_time_s=args.min_time, processes=args.processes,
                               reference=not args.no_reference)
    backend = get_backend("ort-cpu", threads=1)
    mode, cpus, own = isolation_cores(args.isolation, None, backend)
    measurer = Measurer(backend, store, protocol, cpus=cpus, own_cpus=own, isolation=mode)
    measurer.baseline_ms()  # once per target; not part of a table's build
    n = len(distinct_layers(space, 1, args.width_step))

    t0 = time.perf_counter()
    table = LookupTable.build(space, measurer, 1, args.width_step)
    wall = time.perf_counter() - t0
    t0 = time.perf_counter()
    LookupTable.build(space, measurer, 1, args.width_step, show_progress=False)
    rebuild = time.perf_counter() - t0

    df = store.dataframe(kind="layer")
    timed = df["samples"].map(sum).sum() / 1e3
    session = (df["session_ms"] * df["processes"]).sum() / 1e3  # each process loads its own session
    first = (df["first_run_ms"] * df["processes"]).sum() / 1e3
    print(f"{space}, width step {args.width_step}: {n} layer specs, {len(table.entries)} table entries")
    print(f"protocol: {args.min_runs} runs and {args.min_time} s minimum per layer, 5 warm-up runs / 0.1 s, "
          f"k={args.processes} processes, reference {'off' if args.no_reference else 'on'}, isolation {mode}")
    print(f"build wall time        {wall:8.1f} s  ({wall / n * 1e3:.0f} ms per layer)")
    print(f"  timed inference      {timed:8.1f} s  ({timed / wall:.1%})")
    print(f"  session creation     {session:8.1f} s  ({session / wall:.1%})")
    print(f"  first runs           {first:8.1f} s  ({first / wall:.1%})")
    rest = wall - timed - session - first
    print(f"  export, warm-up, rest{rest:8.1f} s  ({rest / wall:.1%})")
    print(f"overhead ratio (wall / timed inference): {wall / timed:.2f}")
    print(f"rebuild through the store: {rebuild:.2f} s, nothing re-measured ({len(store)} rows)")
    measurer.close()


if __name__ == "__main__":
    main()
