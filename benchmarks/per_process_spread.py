"""Is the spread between fresh processes ONNX Runtime's memory arena? One model timed in many
fresh processes, pinned to one core, with the arena and memory pattern on (ORT's default) and
off, the two variants interleaved; prints each variant's median, CoV and range over processes.

    python benchmarks/per_process_spread.py MODEL.onnx --processes 6 --seconds 1.5 --core 1

Each process: a session with one thread, 0.3 s of warm-up, then back-to-back runs for --seconds;
its figure is the median run. Nothing of hwnas is imported in the timed process."""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys

CHILD = r"""
import sys, time
import numpy as np
import onnxruntime as ort
path, variant, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
so = ort.SessionOptions()
so.intra_op_num_threads = so.inter_op_num_threads = 1
if variant == "no-arena":
    so.enable_cpu_mem_arena = False
    so.enable_mem_pattern = False
sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
inp = sess.get_inputs()[0]
x = np.random.default_rng(0).standard_normal([d if isinstance(d, int) else 1 for d in inp.shape]).astype(np.float32)
def loop(sec):
    t0, ts = time.perf_counter(), []
    while time.perf_counter() - t0 < sec:
        s = time.perf_counter()
        sess.run(None, {inp.name: x})
        ts.append(time.perf_counter() - s)
    return ts
loop(0.3)
print(float(np.median(loop(seconds))) * 1e3)
"""


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--processes", type=int, default=6)
    ap.add_argument("--seconds", type=float, default=1.5)
    ap.add_argument("--core", type=int, default=None, help="pin every process to this core (default: no pinning)")
    args = ap.parse_args(argv)
    pin = ["taskset", "-c", str(args.core)] if args.core is not None else []
    results: dict[str, list[float]] = {"arena": [], "no-arena": []}
    for _ in range(args.processes):
        for variant in results:  # interleaved, so a slow minute falls on both
            out = subprocess.run([*pin, sys.executable, "-c", CHILD, args.model, variant, str(args.seconds)],
                                 capture_output=True, text=True, check=True)
            results[variant].append(float(out.stdout.strip()))
    for variant, xs in results.items():
        med = statistics.median(xs)
        print(f"{variant:9s} median {med:.4f} ms  CoV {100 * statistics.pstdev(xs) / statistics.mean(xs):.2f}%  "
              f"range {100 * (max(xs) - min(xs)) / med:.2f}%  per process {[round(x, 4) for x in xs]}")


if __name__ == "__main__":
    main()
