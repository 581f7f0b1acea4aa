"""Overhead of measuring a subnet, and how repeatable its median is.

For N random subnets: wall time per measured subnet (export, session creation, warm-up and
timed runs) against the time spent inside timed inference; then the same subnets measured
again in a second, independent session, and the run-to-run spread of the median.

    python benchmarks/measure_overhead.py --space tfnas --resolution 224 --n 10
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from hwnas.backends import MeasureProtocol, get_backend
from hwnas.exporters.onnx import export_arch
from hwnas.spaces.mbconv import Space


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", default="tfnas")
    ap.add_argument("--resolution", type=int, default=224)
    ap.add_argument("--width-mult", type=float, default=1.0)
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--backend", default="ort-cpu")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    space = Space(args.space, resolution=args.resolution, width_mult=args.width_mult)
    backend = get_backend(args.backend, threads=args.threads)
    protocol = MeasureProtocol()  # the CLI's defaults
    archs = space.random_archs(args.n, args.seed)
    rows = []
    with tempfile.TemporaryDirectory() as cache:
        for arch in archs:
            t0 = time.perf_counter()
            path = export_arch(space, arch, cache_dir=Path(cache)).path
            t_export = time.perf_counter() - t0
            first = backend.measure(path, protocol)
            wall = time.perf_counter() - t0
            second = backend.measure(path, protocol)  # a fresh session: an independent repeat
            timed = sum(first.samples_ms) / 1e3
            spread = abs(second.median_ms - first.median_ms) / first.median_ms
            rows.append((wall, t_export, first.session_ms / 1e3, timed, first.median_ms, second.median_ms, spread, first.stats["n"]))
    a = np.array(rows)
    print(f"{args.n} random {args.space} subnets at {args.resolution}x{args.resolution}, {args.backend}, {args.threads} thread(s)")
    print(f"protocol: {protocol.to_json()}")
    print(f"{'subnet':>6} {'wall_s':>7} {'export_s':>8} {'session_s':>9} {'timed_s':>7} {'median1_ms':>10} {'median2_ms':>10} {'spread':>7} {'n':>4}")
    for i, r in enumerate(rows):
        print(f"{i:>6} {r[0]:7.3f} {r[1]:8.3f} {r[2]:9.3f} {r[3]:7.3f} {r[4]:10.3f} {r[5]:10.3f} {r[6]:7.2%} {r[7]:4d}")
    print(f"median wall time per measured subnet: {np.median(a[:, 0]):.3f} s (export {np.median(a[:, 1]):.3f} s)")
    print(f"median time inside timed inference:   {np.median(a[:, 3]):.3f} s")
    print(f"overhead ratio (wall / timed), median: {np.median(a[:, 0] / a[:, 3]):.2f}")
    print(f"run-to-run spread of the median across two sessions: median {np.median(a[:, 6]):.2%}, max {np.max(a[:, 6]):.2%}")


if __name__ == "__main__":
    main()
