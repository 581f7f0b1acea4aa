"""How well the cell latency table predicts whole darts networks, raw and corrected.

    taskset -c 0 python benchmarks/cell_table_accuracy.py --channels 8 --cells 5 --resolution 16 \
        --fit 30 --test 30 --save-table cell_lut.json

Builds the table of the space on ort-cpu (1 thread), measures random child graphs (SNAS-style:
each edge uniform over the 8 ops, `none` included) and DARTS-V1/V2, fits the parts-count
correction (measured ~ a + b * table + c * parts) on the first --fit networks and reports MAPE
and Kendall tau on the held-out --test networks for the raw and the corrected table. Every
measurement goes through the store (--db), so a rerun or a larger rerun only measures what is new.
Goal (issue 20): the best model within 3% MAPE, Kendall tau >= 0.9.
"""

from __future__ import annotations

import argparse
import json
import warnings

import numpy as np

from hwnas.latency.cells import CellLatencyTable
from hwnas.measure import Measurer
from hwnas.profilers import MeasureProtocol, get_backend
from hwnas.spaces import get_space
from hwnas.spaces.pipeline import measure_arch
from hwnas.store import Store
from hwnas.surrogates.metrics import latency_metrics


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--channels", type=int, default=8)
    ap.add_argument("--cells", type=int, default=5)
    ap.add_argument("--resolution", type=int, default=16)
    ap.add_argument("--fit", type=int, default=30, help="random networks the correction is fitted on")
    ap.add_argument("--test", type=int, default=30, help="held-out random networks")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--min-time", type=float, default=0.3)
    ap.add_argument("--db", default=None)
    ap.add_argument("--save-table", default=None, help="write the corrected table here (for search --lut)")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    space = get_space("darts", channels=args.channels, cells=args.cells, resolution=args.resolution)
    measurer = Measurer(get_backend("ort-cpu", threads=1), Store(args.db),
                        MeasureProtocol(min_runs=20, min_time_s=args.min_time))
    table = CellLatencyTable.build(space, measurer)
    archs = space.random_archs(args.fit + args.test, args.seed)
    refs = [space.validate(name) for name in space.references]
    measured = [measure_arch(measurer, space, a).measurement.stats["median_ms"] for a in archs + refs]
    fit_archs, fit_ms = archs[:args.fit], measured[:args.fit]
    test_archs, test_ms = archs[args.fit:] + refs, measured[args.fit:]
    raw = [table.table_ms(a)[0] for a in test_archs]
    overhead = [table.predict(a) for a in test_archs]  # the built table's default: one model overhead per part removed
    correction = table.fit_correction(fit_archs, fit_ms)
    corrected = [table.predict(a) for a in test_archs]
    result = {"space": space.config, "n_fit": args.fit, "n_test": len(test_archs), "correction": correction,
              "raw": latency_metrics(test_ms, raw), "overhead_removed": latency_metrics(test_ms, overhead), "corrected": latency_metrics(test_ms, corrected),
              "measured_ms_range": [float(np.min(test_ms)), float(np.max(test_ms))],
              "references": {name: {"measured_ms": m, "corrected_ms": p}
                             for name, m, p in zip(space.references, measured[-len(refs):], corrected[-len(refs):])}}
    print(json.dumps(result, indent=2))
    if args.save_table:
        table.save(args.save_table)
    measurer.store.close()


if __name__ == "__main__":
    main()
