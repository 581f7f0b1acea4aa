"""Does the reference model see what slows a measurement? Raw latency against its ratio to the reference.

In one process, on one core, a subnet and a second model (the reference model, or another
subnet) run in alternation for --seconds; the runs are grouped into windows of --window
seconds. Printed: the coefficient of variation over windows of each model's window median, and
of their ratio. A machine that turns slow for a moment moves both raw columns; where the
second model sees the same slowness, the ratio stays put.

    python benchmarks/reference_tracking.py --seconds 10 --against reference
    python benchmarks/reference_tracking.py --seconds 10 --against subnet
"""

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--window", type=float, default=0.5)
    ap.add_argument("--against", choices=["reference", "subnet"], default="reference")
    ap.add_argument("--resolution", type=int, default=112)
    ap.add_argument("--width-mult", type=float, default=0.5)
    ap.add_argument("--cpu", type=int, default=None, help="pin to this core (default: the last usable one)")
    args = ap.parse_args()

    from hwnas.backends import get_backend
    from hwnas.backends.reference import reference_path
    from hwnas.backends.system import cpu_model
    from hwnas.exporters.onnx import export_layers
    from hwnas.spaces.mbconv import Space

    space = Space("tfnas", resolution=args.resolution, width_mult=args.width_mult, num_classes=10)
    a, b = space.random_archs(2, seed=1, align=4)
    path_a = export_layers(space.layers(a, 1), None).path
    path_b = reference_path() if args.against == "reference" else export_layers(space.layers(b, 1), None).path
    cpu = args.cpu if args.cpu is not None else sorted(os.sched_getaffinity(0))[-1]
    os.sched_setaffinity(0, {cpu})
    backend = get_backend("ort-cpu")
    ra, rb = backend.load(path_a, 1), backend.load(path_b, 1)
    for _ in range(30):
        ra.time_once(time.perf_counter)
        rb.time_once(time.perf_counter)
    ta, tb, at = [], [], []
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < args.seconds:
        at.append(time.perf_counter() - t0)
        ta.append(ra.time_once(time.perf_counter) * 1e3)
        tb.append(rb.time_once(time.perf_counter) * 1e3)
    ta, tb, w = np.array(ta), np.array(tb), (np.array(at) // args.window).astype(int)
    ma = np.array([np.median(ta[w == i]) for i in np.unique(w)])
    mb = np.array([np.median(tb[w == i]) for i in np.unique(w)])
    r = ma / mb

    def cov(x):
        return x.std(ddof=1) / x.mean()

    print(f"cpu: {cpu_model()}, core {cpu}; {args.seconds:g} s, {len(ma)} windows of {args.window:g} s; "
          f"subnet {ma.mean():.3f} ms, {args.against} {mb.mean():.3f} ms")
    print(f"CoV over windows: subnet {cov(ma):.1%}, {args.against} {cov(mb):.1%}, ratio {cov(r):.1%}; "
          f"slowest/fastest window: subnet {ma.max() / ma.min():.2f}x, ratio {r.max() / r.min():.2f}x")


if __name__ == "__main__":
    main()
