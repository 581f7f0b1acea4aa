"""How many times the measured latency a lookup table reads: search runs' final architectures and
random ones scaled to a target on the table, each measured in k fresh processes.

A search on the table that ends by calibrating on the measured latency is only consistent if
the table's reading is known (UNAS's table target); a found-vs-random comparison matched on the
table is only matched on the measured latency if the table reads found and random networks
alike. This prints both: one line per network, then the median and range of table / measured
over the usable measurements, per kind.

    python benchmarks/table_reads.py --lut tour/lut.json --runs sq/unas-lut/0.3/seed* \
        --random 8 --target 0.3 --processes 5 --db reads.sqlite
"""

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hwnas.backends.protocol import usable  # noqa: E402
from hwnas.errors import HwnasError  # noqa: E402
from hwnas.jsonutil import read_json  # noqa: E402
from hwnas.latency.measured import MeasuredLatency  # noqa: E402
from hwnas.measure import open_measurer  # noqa: E402
from hwnas.spaces.elastic import elasticity_scale  # noqa: E402
from hwnas.surrogates.lut import LookupTable  # noqa: E402


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lut", type=Path, required=True)
    ap.add_argument("--runs", type=Path, nargs="*", default=[], help="search run directories (their final_arch.json)")
    ap.add_argument("--random", type=int, default=8, help="random networks scaled to --target on the table")
    ap.add_argument("--target", type=float, default=None, help="ms on the table, for the random networks")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--align", type=int, default=4)
    ap.add_argument("--processes", type=int, default=5, help="fresh processes per measurement")
    ap.add_argument("--min-time", type=float, default=0.3)
    ap.add_argument("--db", default=None)
    args = ap.parse_args(argv)
    if args.random and not (args.target and args.target > 0):
        ap.error("--random needs a positive --target")
    try:
        lut = LookupTable.load(args.lut)
        space = lut.space
        nets = [("found", space.validate(read_json(run / "final_arch.json", "final architecture"))) for run in args.runs]
    except HwnasError as e:
        sys.exit(f"table_reads: {e}")
    nets += [("random", elasticity_scale(lut, a, args.target, align=args.align).arch)
             for a in space.random_archs(args.random, seed=args.seed, align=args.align)]
    ratios: dict[str, list[float]] = {}
    with open_measurer("ort-cpu", db=args.db, min_time=args.min_time, processes=args.processes) as measurer:
        hardware = MeasuredLatency(space, measurer)
        for kind, arch in nets:
            measured_ms = hardware.predict(arch)  # re-measured once if flagged
            table_ms = float(lut.predict(arch))
            if usable(hardware.flags):
                ratios.setdefault(kind, []).append(table_ms / measured_ms)
            print(json.dumps({"kind": kind, "layers": sum(arch.depths), "table_ms": round(table_ms, 4),
                              "measured_ms": round(measured_ms, 4), "table_reads": round(table_ms / measured_ms, 3),
                              "flags": hardware.flags}), flush=True)
    for kind in dict.fromkeys(k for k, _ in nets):
        r = ratios.get(kind, [])
        n = sum(k == kind for k, _ in nets)
        print(f"{kind}: the table reads {statistics.median(r):.3f}x the measured latency (median; range "
              f"{min(r):.3f}-{max(r):.3f}) over {len(r)} of {n} usable measurements" if r else
              f"{kind}: none of {n} measurements usable")


if __name__ == "__main__":
    main()
