"""Seed 001's goals for slot searches, on torchvision mobilenet_v2 (reduced width, small
resolution, digits-translated or --data digits, SPOS estimator), on true latency (ort-cpu):

  1. NSGA-II after N measured architectures against random search after 2N: hypervolume of the
     accuracy / measured-latency front, both against one reference point;
  2. the NSGA-II front measured again in fresh processes (a new store): within its intervals?
  3. a latency-constrained TPE search (bound: the median latency of the NSGA-II front): its
     architecture's measured latency against the bound, its accuracy against the unconstrained
     front's best at or under the bound;
  4. Kendall tau between SPOS accuracy and train-from-scratch accuracy on K random architectures.

    python benchmarks/pareto_modnas.py --out runs/modnas-bench [--n 20] [--kendall 10]
    python benchmarks/pareto_modnas.py --out runs/modnas-bench --only-kendall   # the ranking alone, later

Every search is a real `hwnas search --method modnas` run directory (resumable); the three
searches share the supernet (same configuration and seed) and the store. Prints the figures
as JSON and writes them to OUT/figures.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, StopIteration):
        return platform.processor()


def base_config(args) -> dict:
    return {
        "model": "torchvision:mobilenet_v2", "width_mult": args.width, "resolution": args.resolution,
        "slots": {"kinds": ["mbconv"]},
        "estimator": {"name": "spos", "epochs": args.epochs, "batch_size": 32, "lr": 0.05},
        "objectives": ["accuracy", "latency"],
        "backend": {"processes": args.processes, "min_time": args.min_time, "min_runs": 10,
                    "db": str(Path(args.out) / "store.sqlite")},
        "data": {"name": args.data}, "seed": args.seed,
    }


def run_search(args, name: str, **over) -> dict:
    from hwnas.search import slot_config
    from hwnas.search.modnas import search

    cfg = slot_config.check({**base_config(args), **over})
    out = Path(args.out) / name
    first = Path(args.out) / "nsga2" / "supernet.pt"
    if first.exists() and not (out / "supernet.pt").exists():  # same supernet config and seed: train it once
        out.mkdir(parents=True, exist_ok=True)
        shutil.copy(first, out / "supernet.pt")
    started = time.monotonic()
    summary = search(cfg, out, echo=lambda s: print(f"[{name}] {s}", file=sys.stderr, flush=True))
    summary["seconds"] = round(time.monotonic() - started, 1)
    return summary


def front_of(df: pd.DataFrame) -> pd.DataFrame:
    from hwnas.search.discrete import pareto_mask

    ok = df[(df["state"] == "COMPLETE") & df["feasible"]].drop_duplicates("arch_hash")
    return ok[pareto_mask(ok["accuracy"].to_numpy(float), ok["latency"].to_numpy(float))].sort_values("latency")


def remeasure(args, front: pd.DataFrame) -> list[dict]:
    """The front's architectures in a fresh store: every measurement new, k fresh processes each."""
    from hwnas.search.modnas import make_measurer, make_space
    from hwnas.search import slot_config
    from hwnas.measure.networks import measure_arch

    cfg = slot_config.check(base_config(args))
    cfg["backend"]["db"] = str(Path(args.out) / "remeasure.sqlite")
    space = make_space(cfg, 10)
    measurer = make_measurer(cfg)
    rows = []
    try:
        for _, r in front.iterrows():
            arch = space.validate({"choices": json.loads(r["choices"])})
            m = measure_arch(measurer, space, arch, 1, force=True).measurement
            rows.append({"arch_hash": arch.hash, "search_ms": r["latency"], "ci": [r["latency_ci_low"], r["latency_ci_high"]],
                         "again_ms": m.stats["median_ms"], "again_ci": m.ci95_ms, "flags": m.flags,
                         "within": bool(r["latency_ci_low"] <= m.stats["median_ms"] <= r["latency_ci_high"]),
                         "ratio": m.stats["median_ms"] / r["latency"]})
    finally:
        measurer.close()
    return rows


def kendall(args, k: int) -> dict:
    """SPOS accuracy (the NSGA-II run's supernet) against train-from-scratch on k random architectures."""
    from scipy.stats import kendalltau

    from hwnas.data import load_dataset
    from hwnas.search import slot_config
    from hwnas.search.estimators import SPOSEstimator
    from hwnas.search.modnas import make_space
    from hwnas.search.train import train_arch

    cfg = slot_config.check(base_config(args))
    data = load_dataset(args.data, seed=args.seed)
    space = make_space(cfg, data.num_classes)
    spos = SPOSEstimator(space, data, epochs=args.epochs, batch_size=32, lr=0.05, seed=args.seed)
    spos.prepare(Path(args.out) / "nsga2")
    rows = []
    for arch in space.random_archs(k, seed=1000 + args.seed):
        r = train_arch(space, arch, data, epochs=args.scratch_epochs, batch_size=32, lr=0.05, seed=args.seed,
                       show_progress=False)
        rows.append({"arch_hash": arch.hash, "spos": spos.accuracy(arch), "scratch": r["val_acc"], "seconds": r["seconds"]})
        print(f"[kendall] {len(rows)}/{k}: spos {rows[-1]['spos']:.3f}, scratch {rows[-1]['scratch']:.3f}",
              file=sys.stderr, flush=True)
    tau, p = kendalltau([r["spos"] for r in rows], [r["scratch"] for r in rows])
    return {"k": k, "tau": float(tau), "p_value": float(p), "scratch_epochs": args.scratch_epochs, "rows": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--n", type=int, default=20, help="NSGA-II's measured architectures (random gets 2N).")
    ap.add_argument("--population", type=int, default=10)
    ap.add_argument("--data", default="digits-translated", choices=["digits-translated", "digits"],
                    help="digits: the plain 8x8 digits, on which a short SPOS training gets well above chance.")
    ap.add_argument("--width", type=float, default=0.25)
    ap.add_argument("--resolution", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=10, help="SPOS supernet epochs.")
    ap.add_argument("--scratch-epochs", type=int, default=10)
    ap.add_argument("--kendall", type=int, default=10, help="Architectures for the SPOS ranking (0: skip).")
    ap.add_argument("--processes", type=int, default=3)
    ap.add_argument("--min-time", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip", default="", help="Comma-separated parts to skip: random,remeasure,tpe,kendall.")
    ap.add_argument("--only-kendall", action="store_true",
                    help="Only the SPOS ranking, on the supernet of an earlier run's OUT/nsga2 (to OUT/kendall.json).")
    args = ap.parse_args()
    if args.only_kendall:
        result = {"command": "python " + " ".join(sys.argv), "cpu": cpu_model(), "load_at_start": os.getloadavg(),
                  **kendall(args, args.kendall), "load_at_end": os.getloadavg()}
        (Path(args.out) / "kendall.json").write_text(json.dumps(result, indent=2, default=float))
        print(json.dumps({k: v for k, v in result.items() if k != "rows"}, default=float))
        return
    skip = set(filter(None, args.skip.split(",")))
    Path(args.out).mkdir(parents=True, exist_ok=True)
    from hwnas.search.discrete import hypervolume

    figures = {"command": "python " + " ".join(sys.argv), "cpu": cpu_model(), "cores": len(os.sched_getaffinity(0)),
               "load_at_start": os.getloadavg(), "args": vars(args)}
    save = lambda: (Path(args.out) / "figures.json").write_text(json.dumps(figures, indent=2, default=float))  # noqa: E731
    n = args.n
    figures["nsga2"] = run_search(args, "nsga2", optimizer={"name": "nsga2", "trials": n, "population": args.population})
    nsga = pd.read_csv(Path(args.out) / "nsga2" / "trials.csv")
    save()
    if "random" not in skip:
        figures["random"] = run_search(args, "random", optimizer={"name": "random", "trials": 2 * n})
        rnd = pd.read_csv(Path(args.out) / "random" / "trials.csv")
        ref = 1.1 * float(pd.concat([nsga["latency"], rnd["latency"]]).max())
        hv = lambda df: hypervolume(front_of(df)["accuracy"], front_of(df)["latency"], ref)  # noqa: E731
        done = lambda df, k: df[df["state"] == "COMPLETE"].head(k)  # noqa: E731
        figures["hypervolume"] = {"reference": {"accuracy": 0.0, "latency_ms": ref}, "N": n,
                                  "nsga2_N": hv(nsga), "random_2N": hv(done(rnd, 2 * n)), "random_N": hv(done(rnd, n))}
        save()
    front = front_of(nsga)
    if "remeasure" not in skip:
        rows = remeasure(args, front)
        figures["remeasure"] = {"points": len(rows), "within": sum(r["within"] for r in rows),
                                "ratio_median": float(np.median([r["ratio"] for r in rows])),
                                "ratio_range": [min(r["ratio"] for r in rows), max(r["ratio"] for r in rows)], "rows": rows}
        save()
    if "tpe" not in skip:
        bound = float(front["latency"].median())
        figures["tpe"] = run_search(args, "tpe", optimizer={"name": "tpe", "trials": n, "init": max(n // 3, 2)},
                                    constraints={"latency": bound})
        under = front[front["latency"] <= bound]
        figures["tpe"]["bound_ms"] = bound
        figures["tpe"]["meets_bound"] = figures["tpe"].get("measured_ms", float("inf")) <= bound
        figures["tpe"]["unconstrained_front_best_under_bound"] = float(under["accuracy"].max()) if len(under) else None
        save()
    if "kendall" not in skip and args.kendall:
        figures["kendall"] = kendall(args, args.kendall)
        save()
    figures["load_at_end"] = os.getloadavg()
    save()
    print(json.dumps({k: v for k, v in figures.items() if k not in ("remeasure", "kendall")}, indent=2, default=float))
    for part in ("remeasure", "kendall"):
        if part in figures:
            print(part, json.dumps({k: v for k, v in figures[part].items() if k != "rows"}, default=float))


if __name__ == "__main__":
    main()
