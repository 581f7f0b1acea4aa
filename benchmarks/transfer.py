"""How far a lookup table measured on one target carries to another (issue 16's transfer).

Random subnets of the table's space are measured on --backend (k fresh processes each, rounds
interleaved so drift spreads over all of them; the store keeps them, so a rerun measures
nothing again). Flagged measurements are left out and counted. Then, for each training size k,
over --splits random splits of the usable subnets into k to fit and the rest to score:

- lut: the other target's table as it is (no fitting; scored on every usable subnet);
- transfer: offset + slope x that table, fitted on the k;
- lut+linear: the table corrected per op by ridge, fitted on the same k (where k allows).

One line per (model, k): MAPE, share within +-5% and Kendall tau, each the median over the
splits with its range. Ranks are what a search needs and what carries over; MAPE says
whether the milliseconds do.

    python benchmarks/transfer.py --lut tour/lut.json --backend torch-cpu --n 40 --k 5,10,20 \\
        --splits 20 --processes 3 --db transfer.sqlite
"""

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hwnas.backends.protocol import usable  # noqa: E402
from hwnas.errors import HwnasError  # noqa: E402
from hwnas.measure import open_measurer  # noqa: E402
from hwnas.surrogates.data import Subnets  # noqa: E402
from hwnas.surrogates.lut import LookupTable  # noqa: E402
from hwnas.surrogates.metrics import latency_metrics  # noqa: E402
from hwnas.surrogates.models import MODELS, fit_model, predict_all  # noqa: E402

FITTED = ("transfer", "lut+linear")
SHOWN = (("mape_pct", "MAPE %"), ("within5_pct", "within 5 %"), ("kendall_tau", "tau"))


def summary(rows: list[dict]) -> str:
    parts = []
    for key, label in SHOWN:
        v = np.array([r[key] for r in rows])
        parts.append(f"{label} {np.median(v):.3g} ({v.min():.3g}-{v.max():.3g})")
    return ", ".join(parts)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lut", type=Path, required=True, help="a table measured on another target")
    ap.add_argument("--backend", default="torch-cpu", help="the target the table is carried to")
    ap.add_argument("--n", type=int, default=40, help="random subnets measured on --backend")
    ap.add_argument("--k", default="5,10,20", help="training sizes, comma-separated")
    ap.add_argument("--splits", type=int, default=20, help="random train/test splits per size")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--align", type=int, default=4)
    ap.add_argument("--processes", type=int, default=3, help="fresh processes per measurement")
    ap.add_argument("--min-time", type=float, default=0.3)
    ap.add_argument("--db", default=None)
    args = ap.parse_args(argv)
    try:
        sizes = sorted({int(k) for k in args.k.split(",")})
    except ValueError:
        ap.error(f"--k takes comma-separated training sizes, got {args.k!r}")
    if min(sizes) < MODELS.get("transfer").min_train or args.splits < 1:
        ap.error(f"--k sizes of at least {MODELS.get('transfer').min_train} and --splits >= 1, please")
    if args.n < max(sizes) + 5:
        ap.error(f"--n {args.n} leaves fewer than 5 subnets to score after the largest --k {max(sizes)}")
    try:
        lut = LookupTable.load(args.lut)
        measurer = open_measurer(args.backend, db=args.db, min_time=args.min_time, processes=args.processes)
    except HwnasError as e:
        sys.exit(f"transfer: {e}")
    if lut.backend == args.backend:
        print(f"transfer: note: the table was measured on {lut.backend} too; this shows a same-backend map", file=sys.stderr)
    space = lut.space
    archs = space.random_archs(args.n, seed=args.seed, align=args.align)
    with measurer:
        done = measurer.many([measurer.arch_item(space, a, lut.batch) for a in archs], f"subnets on {args.backend}")
    keep = [i for i, m in enumerate(done) if usable(m.measurement.flags)]
    data = Subnets([archs[i] for i in keep], np.array([done[i].measurement.stats["median_ms"] for i in keep]))
    print(f"{args.backend}: {len(data)} of {len(archs)} subnets usable (the rest flagged); table from {lut.backend}")
    if len(data) < max(sizes) + 5:
        sys.exit(f"transfer: {len(data)} usable subnets leave fewer than 5 to score after --k {max(sizes)}; "
                 "measure more (--n) or on a quieter machine")
    print(f"lut (as it is), all {len(data)}: {summary([latency_metrics(data.latency_ms, predict_all(lut, data.archs))])}")
    rng = np.random.default_rng(args.seed)
    for k in sizes:
        scores: dict[str, list[dict]] = {name: [] for name in FITTED}
        refused = dict.fromkeys(FITTED, 0)
        for _ in range(args.splits):
            order = rng.permutation(len(data))
            train, test = data.take(order[:k]), data.take(order[k:])
            for name in FITTED:
                if k < MODELS.get(name).min_train:
                    continue
                try:
                    model = fit_model(name, space, train, lut)
                    scores[name].append(latency_metrics(test.latency_ms, predict_all(model, test.archs)))
                except HwnasError as e:  # a split the model cannot fit, e.g. a backwards slope
                    refused[name] += 1
                    print(f"  {name}, k {k}: {e}", file=sys.stderr)
        for name in FITTED:
            also = f", {refused[name]} refused" if refused[name] else ""
            if scores[name]:
                print(f"{name}, k {k} ({len(scores[name])} splits{also}): {summary(scores[name])}")
            elif refused[name]:
                print(f"{name}, k {k}: every one of {refused[name]} splits refused (reasons on stderr)")
            else:
                print(f"{name}, k {k}: needs at least {MODELS.get(name).min_train} training subnets")


if __name__ == "__main__":
    main()
