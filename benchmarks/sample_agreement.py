"""Do a true-latency search's samples agree with the same subnets measured alone?

Reads a UNAS run's `samples.jsonl` (each sample's latency as measured during the search, beside
the training) and re-measures every distinct sampled subnet with nothing else of hwnas running
(k fresh processes, the same reference baseline, a fresh store). Prints the per-subnet
difference (median, p95, max), how many differ by more than 2% / 5%, and how many of those the
search had flagged.

    python benchmarks/sample_agreement.py --run runs/overhead/measured --db runs/overhead/store.sqlite
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, required=True, help="a UNAS run directory measured with --true-latency")
    ap.add_argument("--db", type=Path, required=True, help="the store the run measured into")
    ap.add_argument("--processes", type=int, default=3)
    ap.add_argument("--limit", type=int, default=60, help="re-measure at most this many distinct subnets")
    args = ap.parse_args()

    from hwnas.backends import MeasureProtocol, get_backend
    from hwnas.backends.protocol import usable
    from hwnas.backends.system import cpu_model
    from hwnas.measure import Measurer, isolation_cores
    from hwnas.spaces.mbconv import Space
    from hwnas.store import Store

    config = json.loads((args.run / "config.json").read_text())
    c = config["deploy_space"]
    space = Space(c["space"], resolution=c["resolution"], width_mult=c["width_mult"], num_classes=c["num_classes"])
    samples = {}
    for line in (args.run / "samples.jsonl").read_text().splitlines():
        s = json.loads(line)
        if s.get("source") == "measured" and not s.get("cached") and s["arch_hash"] not in samples:
            samples[s["arch_hash"]] = s
    with Store(args.db) as store:
        archs = {}
        for spec in store.dataframe(kind="arch")["spec"]:
            if spec.get("space") == space.config:
                a = space.validate(spec["arch"])
                archs[a.hash] = a
        backend = get_backend(config.get("backend", "ort-cpu"))
        run_measurer = Measurer(backend, store, MeasureProtocol())
        baseline = store.reference_baseline(run_measurer.target_hash())
        run_measurer.worker.close()
    todo = [h for h in samples if h in archs][: args.limit]
    mode, cpus, own = isolation_cores("auto", None, backend)
    fresh = Measurer(backend, Store(Path(tempfile.mkdtemp()) / "quiet.sqlite"),
                     MeasureProtocol(processes=args.processes), cpus=cpus, own_cpus=own, isolation=mode)
    fresh._baseline = baseline["baseline_ms"] if baseline else None  # the run's scale
    done = fresh.many([fresh.arch_item(space, archs[h]) for h in todo], "re-measuring")
    fresh.close()
    d = np.array([100 * (samples[h]["latency_ms"] / m.measurement.stats["median_ms"] - 1) for h, m in zip(todo, done)])
    flagged = np.array([not usable(samples[h].get("flags")) for h in todo])
    quiet_flagged = np.array([not usable(m.measurement.flags) for m in done])
    a = np.abs(d)
    isolation = {s.get('isolation') for s in samples.values()}
    print(f"cpu: {cpu_model()}; run {args.run} (measured with isolation {','.join(sorted(map(str, isolation)))}); {len(todo)} distinct samples "
          f"re-measured with k={args.processes}, isolation {mode}")
    print(f"sample vs alone: median |d| {np.median(a):.2f}%, p95 {np.percentile(a, 95):.2f}%, max {a.max():.2f}%, "
          f"bias {np.median(d):+.2f}%")
    for lim in (2.0, 5.0):
        off = a > lim
        print(f"  off by more than {lim:g}%: {int(off.sum())}, of which flagged in the search {int((off & flagged).sum())}"
              f", unflagged {int((off & ~flagged).sum())}")
    print(f"  flagged in the search: {int(flagged.sum())}; the quiet re-measurement flagged {int(quiet_flagged.sum())}")


if __name__ == "__main__":
    main()
