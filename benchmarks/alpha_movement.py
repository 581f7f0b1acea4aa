"""Does UNAS's architecture distribution move, and towards ops that are better? (issue 18, part 1)

Runs `hwnas search --method unas` on a lookup table (no --true-latency: the question is the
cross-entropy side, and the table keeps measurement noise out of it) for each variant and seed,
each into its own run directory under --work (a finished run is not run again), then reads:

    entropy    alpha's entropy at the end against the start (uniform), in percent;
    max p      the mean over decisions of the most likely choice's probability;
    agreement  the cross-entropy gradient's agreement over each architecture epoch (the norm of
               the epoch's mean gradient over the mean norm), averaged over epochs: about
               1/sqrt(steps per epoch) when the steps are pure noise;
    z, beats   the derived path's search-val loss among random paths of the same supernet
               (`benchmarks/alpha_diagnosis.py`): z-score (negative: lower loss) and the share of
               random paths it beats; a search that learnt nothing lands at z ~ 0 +- 1, ~50%.

A variant is ESTIMATOR:ARCH_LR, e.g. gumbel:0.01 (the old default) or rloo:0.1.

    python benchmarks/alpha_movement.py --lut LUT --work DIR [--variants gumbel:0.01,gumbel:0.1,rloo:0.1]
        [--seeds 0,1,2] [-- extra hwnas search options]
"""

from __future__ import annotations

import argparse
import json
import math
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lut", required=True, type=Path, help="the lookup table the searches use")
    ap.add_argument("--work", required=True, type=Path, help="run directories go here; rerunning reuses them")
    ap.add_argument("--variants", default="gumbel:0.01,gumbel:0.1,rloo:0.01,rloo:0.1")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--target", type=float, default=0.34)
    ap.add_argument("--space", default="--space tfnas --resolution 64 --width-mult 0.5",
                    help="space options, as one string (default: the README tour's)")
    ap.add_argument("--paths", type=int, default=64, help="random paths the derived one is ranked among")
    ap.add_argument("--parallel", type=int, default=2, help="searches run at once (each trains on one thread)")
    args, extra = ap.parse_known_args()
    extra = [a for a in extra if a != "--"]
    try:
        variants = [(e, float(lr)) for e, lr in (v.split(":") for v in args.variants.split(","))]
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        sys.exit(f"error: variants are ESTIMATOR:ARCH_LR and seeds integers, got {args.variants!r} and {args.seeds!r}")
    if not args.lut.is_file():
        sys.exit(f"error: no lookup table at {args.lut}")
    args.work.mkdir(parents=True, exist_ok=True)

    jobs = [(e, lr, s) for e, lr in variants for s in seeds]
    todo = [j for j in jobs if not (run_dir(args.work, *j) / "summary.json").exists()]
    running: list[tuple[subprocess.Popen, float]] = []
    for j in todo:
        while len(running) >= args.parallel:
            running = wait_one(running)
        e, lr, s = j
        cmd = ["hwnas", "search", "--method", "unas", *args.space.split(), "--target", str(args.target),
               "--lut", str(args.lut), "--ce-estimator", e, "--arch-lr", str(lr), "--seed", str(s),
               "--out", str(run_dir(args.work, *j)), *extra]
        log = open(args.work / f"{run_dir(args.work, *j).name}.log", "w")
        running.append((subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), time.monotonic()))
        print(f"started {' '.join(cmd)}", flush=True)
    while running:
        running = wait_one(running)

    print(f"\n{'variant':14s} {'seed':>4s} {'entropy':>8s} {'max p':>6s} {'agreement':>9s} {'noise':>6s} {'z':>6s} {'beats':>6s} {'wall':>6s}")
    for e, lr, s in jobs:
        d = run_dir(args.work, e, lr, s)
        if not (d / "summary.json").exists():
            print(f"{e}:{lr:<8g} {s:4d}  failed: see {d}.log")
            continue
        log = [json.loads(line) for line in (d / "log.jsonl").read_text().splitlines()]
        arch = [r for r in log if "grad_agreement_ce" in r]
        h0, h1 = log[0]["alpha_entropy"], log[-1]["alpha_entropy"]
        agreement = sum(r["grad_agreement_ce"] for r in arch) / len(arch)
        steps = sum(1 for r in json_lines(d / "samples.jsonl") if r["epoch"] == arch[0]["epoch"])
        diag = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "alpha_diagnosis.py"), str(d), "--derived-only",
                               "--paths", str(args.paths)], capture_output=True, text=True, check=True).stdout
        m = re.search(r"derived at z ([-+0-9.]+), better than (\d+)%", diag)
        print(f"{e}:{lr:<8g} {s:4d} {100 * (h1 / h0 - 1):+7.1f}% {sum(log[-1]['max_prob']) / len(log[-1]['max_prob']):6.3f} "
              f"{agreement:9.3f} {1 / math.sqrt(steps):6.3f} {float(m[1]):+6.2f} {int(m[2]):5d}% {log[-1]['seconds']:5.0f}s")
    return 0


def run_dir(work: Path, estimator: str, lr: float, seed: int) -> Path:
    return work / f"{estimator}-{lr:g}_s{seed}"


def json_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def wait_one(running):
    while True:
        for i, (p, _) in enumerate(running):
            if p.poll() is not None:
                return running[:i] + running[i + 1:]
        time.sleep(1)


if __name__ == "__main__":
    raise SystemExit(main())
