"""Is the cell a SNAS search found more accurate than random child graphs of the same measured
latency, each trained from scratch? (issue 20, goal 3)

    taskset -c 0 python benchmarks/darts_found_vs_random.py RUN_DIR --random 5 --seeds 3 --epochs 10 \
        --out found_vs_random.json

RUN_DIR is a finished `hwnas search --method snas` run: its space (config.json) and final
architecture. Random child graphs (every edge uniform over the 8 ops) are drawn until --random
of them measure within --tolerance of the found network's measured latency (ort-cpu, 1 thread,
through the store). Each network is trained with `hwnas.search.train.train_arch` on the run's
data for every seed; the result of each (network, seed) is written to --out as soon as it is
done and reused on a rerun. Prints mean test accuracy and its standard error per network kind.
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import numpy as np

from hwnas.data import load_dataset
from hwnas.jsonutil import read_json, write_json
from hwnas.measure import Measurer
from hwnas.backends import MeasureProtocol, get_backend
from hwnas.search.train import train_arch
from hwnas.spaces import get_space
from hwnas.measure.networks import measure_arch
from hwnas.store import Store


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--random", type=int, default=5)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--tolerance", type=float, default=0.05, help="relative latency window of the random networks")
    ap.add_argument("--max-draws", type=int, default=400)
    ap.add_argument("--out", type=Path, default=Path("found_vs_random.json"))
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    config = read_json(args.run / "config.json", "run config")
    options = {k: v for k, v in config["space"].items() if k != "space"}
    space = get_space("darts", **options)
    found = space.validate(read_json(args.run / "final_arch.json", "final architecture"))
    measurer = Measurer(get_backend("ort-cpu", threads=1), Store(None), MeasureProtocol(min_runs=20, min_time_s=0.3))
    found_ms = measure_arch(measurer, space, found).measurement.stats["median_ms"]
    rng, randoms, draws = np.random.default_rng(0), [], 0
    while len(randoms) < args.random and draws < args.max_draws:
        draws += 1
        a = space.sample(rng)
        ms = measure_arch(measurer, space, a).measurement.stats["median_ms"]
        if abs(ms / found_ms - 1) <= args.tolerance:
            randoms.append((a, ms))
    data = load_dataset(config["data"], seed=config.get("seed", 0), limit=config.get("limit"))
    results = read_json(args.out, "results") if args.out.exists() else {}
    for kind, arch, ms in [("found", found, found_ms)] + [("random", a, m) for a, m in randoms]:
        for seed in range(args.seeds):
            key = f"{arch.hash}:{seed}"
            if key not in results:
                r = train_arch(space, arch, data, epochs=args.epochs, seed=seed, show_progress=False)
                results[key] = {"kind": kind, "arch_hash": arch.hash, "measured_ms": ms, "seed": seed,
                                "test_acc": r["test_acc"], "params_m": r["params_m"]}
                write_json(args.out, results)
    summary = {}
    for kind in ("found", "random"):
        acc = np.array([r["test_acc"] for r in results.values() if r["kind"] == kind])
        if len(acc):
            summary[kind] = {"n": len(acc), "mean_test_acc": float(acc.mean()),
                             "se": float(acc.std(ddof=1) / np.sqrt(len(acc))) if len(acc) > 1 else None}
    print(json.dumps({"found_ms": found_ms, "random_found": len(randoms), "draws": draws, **summary}, indent=2))
    measurer.store.close()


if __name__ == "__main__":
    main()
