"""Export cost and equivalence: a subnet composed from cached per-layer ONNX files against one
PyTorch export of the whole subnet (TorchScript exporter, and the dynamo exporter with --dynamo).

    python benchmarks/export_speed.py --n 5 --resolution 224

Prints per subnet: export seconds (composed, first time and with its layers cached; whole-model
export) and the ort-cpu median latency of the composed and the whole-model file, measured
alternately in one run, with their ratio.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from hwnas.backends import MeasureProtocol, get_backend
from hwnas.exporters.onnx import export_arch, export_module, seeded_layer
from hwnas.spaces.mbconv import Space


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", default="tfnas")
    ap.add_argument("--resolution", type=int, default=224)
    ap.add_argument("--n", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dynamo", action="store_true", help="also time torch's dynamo exporter")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    space = Space(args.space, resolution=args.resolution)
    backend = get_backend("ort-cpu")
    protocol = MeasureProtocol(min_runs=30, min_time_s=0.5)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp)
        for arch in space.random_archs(args.n, args.seed):
            specs = space.layers(arch)
            t0 = time.perf_counter()
            composed = export_arch(space, arch, cache_dir=cache).path
            t_first = time.perf_counter() - t0
            (cache / composed.name).unlink()  # the subnet file again, its layers now cached
            t0 = time.perf_counter()
            export_arch(space, arch, cache_dir=cache)
            t_cached = time.perf_counter() - t0
            whole = cache / f"whole-{arch.hash}.onnx"
            net = torch.nn.Sequential(*(seeded_layer(s) for s in specs))
            t0 = time.perf_counter()
            export_module(net, specs[0].input_shape, whole)
            t_whole = time.perf_counter() - t0
            t_dynamo = float("nan")
            if args.dynamo:
                t0 = time.perf_counter()
                torch.onnx.export(net, (torch.randn(*specs[0].input_shape),), str(cache / "d.onnx"), dynamo=True,
                                  external_data=False, opset_version=18)
                t_dynamo = time.perf_counter() - t0
            a, b = [], []
            for _ in range(3):  # alternate, so drift on a shared machine hits both alike
                a.append(backend.measure(composed, protocol).median_ms)
                b.append(backend.measure(whole, protocol).median_ms)
            rows.append((t_first, t_cached, t_whole, t_dynamo, np.median(a), np.median(b)))
    print(f"{args.n} random {args.space} subnets at {args.resolution}x{args.resolution}, ort-cpu, 1 thread")
    print(f"{'composed_first_s':>16} {'composed_cached_s':>17} {'whole_s':>8} {'dynamo_s':>8} {'composed_ms':>11} {'whole_ms':>9} {'ratio':>6}")
    for r in rows:
        print(f"{r[0]:16.3f} {r[1]:17.3f} {r[2]:8.3f} {r[3]:8.3f} {r[4]:11.3f} {r[5]:9.3f} {r[4] / r[5]:6.3f}")
    r = np.array(rows)
    print(f"median export: composed {np.median(r[:, 0]):.3f} s first, {np.median(r[:, 1]):.3f} s with its layers cached; "
          f"whole model {np.median(r[:, 2]):.3f} s" + (f"; dynamo {np.median(r[:, 3]):.3f} s" if args.dynamo else ""))
    print(f"latency composed / whole, median: {np.median(r[:, 4] / r[:, 5]):.3f}")


if __name__ == "__main__":
    main()
