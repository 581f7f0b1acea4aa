"""Wall time of a UNAS search on the TRUE measured latency against the same search on the lookup table.

Runs `hwnas.search.unas.search` twice with one configuration and seed: once with every
sampled architecture measured on the backend in a worker process while the supernet trains
(`true_latency=True`), once with the latency taken from the lookup table. The true-latency
run gets a fresh, empty measurement store, so no sample is a free cache hit. Prints the
wall time of the search loop (training + architecture steps, what the overlap is meant to
hide) and of the whole run (with the final width calibration, which both runs do the same
way), and their ratios.

    .venv/bin/python benchmarks/true_latency_overhead.py --lut runs/demo/lut.json --target 2.724 --out runs/overhead
"""

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--lut", type=Path, required=True, help="lookup table of the deployment space (digits' 10 classes)")
    p.add_argument("--target", type=float, required=True, help="target latency, ms")
    p.add_argument("--out", type=Path, required=True, help="directory for the two runs and the fresh store")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--warmup-epochs", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--isolation", default="auto", choices=["auto", "pin", "pause", "none"],
                   help="how the measurement is kept off the training's core (the CLI's default: auto)")
    p.add_argument("--processes", type=int, default=3, help="k for the final measurement and calibration")
    args = p.parse_args(argv)

    import click

    from hwnas.cli.options import make_measurer
    from hwnas.data import load_dataset
    from hwnas.search import unas
    from hwnas.surrogates.lut import LookupTable

    lut = LookupTable.load(args.lut)
    data = load_dataset("digits", seed=args.seed)
    if args.out.exists():
        shutil.rmtree(args.out)
    args.out.mkdir(parents=True)
    results = {}
    for name, true_latency in (("lookup", False), ("measured", True)):
        with click.Context(click.Command("bench")) as ctx:  # the CLI's measurement settings
            ctx.meta["hwnas.measure"] = {"isolation": args.isolation, "processes": args.processes}
            measurer = make_measurer(lut.backend, 1, 1, "fp32", 5, 20, 0.3, args.out / "store.sqlite")
        print(f"{name}: isolation {measurer.isolation}, worker cores {measurer.worker.cpus}", file=sys.stderr)
        cfg = unas.UNASConfig(target_ms=args.target, true_latency=true_latency, epochs=args.epochs,
                              warmup_epochs=args.warmup_epochs, seed=args.seed, measure_every=0)
        started = time.monotonic()
        try:
            summary = unas.search(cfg, data, lut, args.out / name, measurer=measurer, lut=lut, show_progress=False)
        finally:
            measurer.close()
        total = time.monotonic() - started
        log = [json.loads(line) for line in (args.out / name / "log.jsonl").read_text().splitlines()]
        results[name] = {"loop_s": log[-1]["seconds"], "total_s": total, "measured_ms": summary["measured_ms"]}
        print(f"{name:9}: search loop {log[-1]['seconds']:.1f} s, whole run {total:.1f} s, final measured "
              f"{summary['measured_ms']:.4g} ms (target {args.target:.4g})", file=sys.stderr)
    m, lk = results["measured"], results["lookup"]
    print(f"true-latency / lookup-table wall time: search loop {m['loop_s'] / lk['loop_s']:.3f}x "
          f"({m['loop_s']:.1f} s / {lk['loop_s']:.1f} s), whole run {m['total_s'] / lk['total_s']:.3f}x")


if __name__ == "__main__":
    main()
