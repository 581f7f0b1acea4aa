"""The README's ten-minute tour, timed step by step: measure -> lookup table -> TF-NAS on the
table -> UNAS on the true latency -> report, each as the `hwnas` command a user types.

    python benchmarks/tour.py --work runs/tour

Prints each step's command and wall time, and the whole. A rerun resumes (the store and the run
directories already hold the work), so use a fresh --work to time it again.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("runs/tour"))
    ap.add_argument("--target", type=float, default=None, help="ms (default: 0.8 x the table's uniform latency)")
    args = ap.parse_args()
    w = args.work
    hwnas = [sys.executable, "-m", "hwnas.cli"]
    size = ["--space", "tfnas", "--resolution", "64", "--width-mult", "0.5"]
    db = ["--db", str(w / "measurements.sqlite")]
    w.mkdir(parents=True, exist_ok=True)
    timings = []

    def step(name: str, *argv: str) -> str:
        cmd = [*hwnas, *argv]
        t0 = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True)
        dt = time.perf_counter() - t0
        if done.returncode != 0:
            sys.exit(f"{name} failed ({done.returncode}): {done.stderr.strip().splitlines()[-1:]}")
        timings.append((name, "hwnas " + " ".join(argv), dt))
        print(f"{name:<28} {dt:7.1f} s   hwnas {' '.join(argv)}", flush=True)
        return done.stdout

    step("measure 3 random subnets", "measure", *size, "--classes", "10", "--random", "--n", "3", *db)
    # A quick table: one process per layer, the width grid every 64 channels and 0.1 s of timed runs
    # a layer (the default protocol's 3 processes took 36 min here under load; one process with a
    # 32-channel grid and 0.3 s, 17 min).
    step("lookup table", "lut", "build", *size, "--classes", "10", "--processes", "1", "--width-step", "64",
         "--min-time", "0.1", *db, "--out", str(w / "lut.json"))
    target = args.target
    if target is None:
        from hwnas.surrogates.base import uniform_latency
        from hwnas.surrogates.lut import LookupTable

        target = round(0.8 * uniform_latency(LookupTable.load(w / "lut.json")), 3)
    search = ["--target", str(target), "--lut", str(w / "lut.json"), *size, "--epochs", "6", "--warmup-epochs", "2", *db]
    step("TF-NAS on the table", "search", "--method", "tfnas", *search, "--out", str(w / "tfnas"))
    step("UNAS on the true latency", "search", "--method", "unas", "--true-latency", *search, "--out", str(w / "unas"))
    step("report", "report", str(w / "tfnas"), str(w / "unas"), "--store", str(w / "measurements.sqlite"),
         "--lut", str(w / "lut.json"), "--out", str(w / "report"))
    total = sum(t for _, _, t in timings)
    print(f"{'whole tour':<28} {total:7.1f} s   on {cpu_name()}, {len(__import__('os').sched_getaffinity(0))} cores")
    (w / "tour_timings.json").write_text(json.dumps({"cpu": cpu_name(), "target_ms": target,
                                                     "steps": [{"step": n, "command": c, "seconds": round(t, 1)}
                                                               for n, c, t in timings]}, indent=2))


if __name__ == "__main__":
    main()
