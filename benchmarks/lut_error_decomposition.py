"""Issue 16, section 1: where the lookup table is wrong on whole subnets, term by term.

Builds the table (store-backed), measures N random subnets (the default protocol: k fresh
processes, the reference), measures every layer of those subnets again at its own width with the
table's protocol, and splits each subnet's raw table error into the per-model overhead, the width
grid's interpolation and the layers' interaction, beside the entries' own noise
(`hwnas.surrogates.decompose`). Subnets whose measurement is flagged are left out and counted.

    python benchmarks/lut_error_decomposition.py --resolution 64 --width-mult 0.5 --classes 10 \
        --width-step 64 --table-processes 1 --min-time 0.1 --n 40 --db runs/decomp.sqlite

Everything goes through the store, so a rerun measures nothing again.
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hwnas.backends.protocol import usable  # noqa: E402
from hwnas.measure import open_measurer  # noqa: E402
from hwnas.spaces.mbconv import Space  # noqa: E402
from hwnas.surrogates.decompose import decompose, summarize  # noqa: E402
from hwnas.surrogates.lut import LookupTable  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", default="tfnas")
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--width-mult", type=float, default=0.5)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--width-step", type=int, default=64)
    ap.add_argument("--align", type=int, default=4, help="subnets' widths on multiples of this (4: a search's)")
    ap.add_argument("--n", type=int, default=40, help="random subnets")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--min-time", type=float, default=0.1, help="minimum timed seconds per measurement")
    ap.add_argument("--table-processes", type=int, default=1, help="fresh processes per table entry")
    ap.add_argument("--processes", type=int, default=3, help="fresh processes per subnet")
    ap.add_argument("--db", default=None)
    ap.add_argument("--out", type=Path, default=None, help="per-subnet CSV")
    ap.add_argument("--include-flagged", action="store_true",
                    help="decompose flagged subnets too (labelled so): on a small network every k-process median may be "
                         "flagged noisy (docs/measurement.md), and its median is still the best estimate there is")
    args = ap.parse_args()

    space = Space(args.space, resolution=args.resolution, width_mult=args.width_mult, num_classes=args.classes)
    with open_measurer("ort-cpu", min_time=args.min_time, processes=args.table_processes, db=args.db) as parts:
        lut = LookupTable.build(space, parts, width_step=args.width_step)
        archs = space.random_archs(args.n, args.seed, args.align)
        specs = list(dict.fromkeys(s for a in archs for s in space.layers(a)))
        done = parts.many([parts.layers_item([s]) for s in specs], "layers at their own widths")
        exact = {s: m.measurement for s, m in zip(specs, done)}
    with open_measurer("ort-cpu", min_time=args.min_time, processes=args.processes, db=args.db) as whole:
        measured = whole.many([whole.arch_item(space, a) for a in archs], "subnets")

    keep = [k for k, m in enumerate(measured) if args.include_flagged or usable(m.measurement.flags)]
    flagged = sum(not usable(m.measurement.flags) for m in measured)
    print(f"{space}: table overhead {lut.overhead_ms * 1e3:.2f} us (one model's fixed cost), {len(specs)} layer specs at "
          f"their own widths; {flagged} of {len(archs)} subnet measurements flagged, "
          + ("INCLUDED (--include-flagged): the figures below rest on flagged measurements" if args.include_flagged
             else "left out"))

    def exact_ms(spec):
        m = exact[spec]
        ms = m.stats["median_ms"]
        half = max(m.ci95_ms[1] - ms, ms - m.ci95_ms[0]) if m.ci95_ms else 0.0  # one process: no interval
        return ms, half

    df = decompose(lut, [archs[k] for k in keep], [measured[k].measurement.stats["median_ms"] for k in keep], exact_ms)
    if df.empty:
        sys.exit("no usable subnet measurement: nothing to decompose")
    with pd.option_context("display.width", 200):
        print(summarize(df).to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    print(f"subnets {df.measured_ms.min():.3g}..{df.measured_ms.max():.3g} ms, {df.parts.min()}..{df.parts.max()} parts; "
          f"table MAPE {df.table_error_pct.abs().mean():.3g}% (raw sum {df.raw_error_pct.abs().mean():.3g}%), "
          f"median subnet CI half-width "
          f"{np.median([100 * (m.measurement.ci95_ms[1] - m.measurement.stats['median_ms']) / m.measurement.stats['median_ms'] for m in measured if m.measurement.ci95_ms] or [np.nan]):.2g}%")
    if args.out:
        df.to_csv(args.out, index=False)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
