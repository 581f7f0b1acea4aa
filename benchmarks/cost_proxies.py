"""Which cost should a search constrain? Measured latency against params, FLOPs, MAC, the lookup
table and the best surrogate, over random architectures of each space; then SNAS with each cost.

    python benchmarks/cost_proxies.py --n 150 --spaces darts-search,darts-mid,tfnas
    python benchmarks/cost_proxies.py --n 80 --processes 10 --spaces darts-mid --searches --target 1.4

Part 1, per space: N random architectures (darts: SNAS-style child graphs, every edge uniform
over the 8 ops; tfnas: its random subnets at 32 px, width 0.25, 10 classes), measured on ort-cpu
with 1 thread on the default protocol (k fresh processes, interleaved, the reference beside them).
Architectures whose measurement is flagged (noisy, disturbed) are left out and counted; where
fewer than 30 are usable, the figures over all of them are given beside, labelled. For each
proxy: Kendall tau against the measured latency, and the MAPE of a linear fit
(measured ~ a + b * proxy) fitted on the even-indexed half and scored on the odd half.
darts proxies: params, flops (MACs), mac (memory access cost), the cell table (overhead removed per
part, its default), the cell table with its parts correction (the best surrogate here; fitted on
the even half). tfnas: params, flops, the layer table and lut+linear (fitted on the even half).
darts sizes (C, cells, px): darts-search 8/5/16, darts-mid 16/8/32, darts-eval 36/20/32.

Part 2 (--searches): per darts space, a SNAS search per cost, trained at the darts-search size
and deployed in that space (`--deploy-*`), the penalty on the derived child's cost
(`--cost-on child`), each tuned to one target: the latency cost takes the target in ms on the
cell table with its parts correction (fitted on the usable even half); the others take the proxy
value the part-1 linear fit (usable architectures) maps to that latency. Reported per cost: the
derived network's measured latency (10 fresh processes, its interval and flags) against the
target, its table latency, and its child validation accuracy from the search's log.

Every measurement goes through the store (--db; default $HWNAS_DB), so a rerun only measures what
is new; run directories under --out are resumed. Results: JSON on stdout and in --out.
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import numpy as np
from scipy import stats

from hwnas.backends.protocol import usable
from hwnas.measure import open_measurer

DARTS_SIZES = {"darts-search": {"channels": 8, "cells": 5, "resolution": 16},
               "darts-mid": {"channels": 16, "cells": 8, "resolution": 32},
               "darts-eval": {"channels": 36, "cells": 20, "resolution": 32}}


def proxy_scores(measured: np.ndarray, proxies: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    even, odd = np.arange(0, len(measured), 2), np.arange(1, len(measured), 2)
    out = {}
    for name, x in proxies.items():
        b, a = np.polyfit(x[even], measured[even], 1)
        pred = a + b * x[odd]
        out[name] = {"kendall_tau": float(stats.kendalltau(measured, x).statistic),
                     "mape_pct_linear_fit": float(np.mean(np.abs(pred - measured[odd]) / measured[odd]) * 100),
                     "fit": [float(a), float(b)]}
    return out


MIN_USABLE = 30  # fewer usable architectures than this: the figures on all of them are given beside, labelled


def measured_sets(measurer, items: list, archs: list) -> tuple[dict, dict]:
    """{set name: (architectures, medians)}: the usable ones ("usable_only"), and where fewer than
    MIN_USABLE are, every one ("all_networks_flagged_included", labelled, never in their place);
    and the counts."""
    done = measurer.many(items, "networks")
    medians = np.array([m.measurement.stats["median_ms"] for m in done])
    keep = [i for i, m in enumerate(done) if usable(m.measurement.flags)]
    counts = {"n": len(done), "usable": len(keep), "flagged": len(done) - len(keep),
              "measured_ms_range": [float(medians.min()), float(medians.max())]}
    sets = {}
    if len(keep) >= 8:
        sets["usable_only"] = ([archs[i] for i in keep], medians[keep])
    if len(keep) < MIN_USABLE:
        sets["all_networks_flagged_included"] = (list(archs), medians)
    return sets, counts


def darts_part(name: str, n: int, measurer, seed: int) -> tuple[dict, object, object]:
    from hwnas.latency.cells import CellLatencyTable
    from hwnas.measure.networks import arch_item
    from hwnas.spaces import get_space

    space = get_space("darts", **DARTS_SIZES[name])
    table = CellLatencyTable.build(space, measurer)
    overhead = dict(table.correction)
    drawn = space.random_archs(n, seed)
    sets, counts = measured_sets(measurer, [arch_item(measurer, space, a) for a in drawn], drawn)
    out = {"space": space.config, **counts}
    for label, (archs, measured) in reversed(list(sets.items())):  # the usable set last: its fit stays on the table
        costs = [space.costs(a) for a in archs]
        table.correction = overhead
        table_ms = np.array([table.predict(a) for a in archs])
        table.fit_correction(archs[0::2], measured[0::2])
        proxies = {"params": np.array([c["params"] for c in costs], float),
                   "flops": np.array([c["macs"] for c in costs], float),
                   "mac": np.array([c["mac"] for c in costs], float), "cell_table": table_ms,
                   "cell_table_corrected": np.array([table.predict(a) for a in archs])}
        out[label] = proxy_scores(measured, proxies)
    return out, space, table


def tfnas_part(n: int, measurer, seed: int) -> dict:
    from hwnas.spaces.mbconv import Space
    from hwnas.surrogates.data import Subnets
    from hwnas.surrogates.lut import LookupTable
    from hwnas.surrogates.models import fit_model, predict_all

    space = Space("tfnas", resolution=32, width_mult=0.25, num_classes=10)
    table = LookupTable.build(space, measurer, width_step=8)
    drawn = space.random_archs(n, seed)
    sets, counts = measured_sets(measurer, [measurer.arch_item(space, a) for a in drawn], drawn)
    out = {"space": space.config, **counts}
    for label, (archs, measured) in sets.items():
        even = np.arange(0, len(archs), 2)
        surrogate = fit_model("lut+linear", space, Subnets(archs, measured).take(even), lut=table)
        proxies = {"params": np.array([space.params(a) for a in archs], float),
                   "flops": np.array([space.macs(a) for a in archs], float),
                   "lookup_table": predict_all(table, archs), "lut+linear": predict_all(surrogate, archs)}
        out[label] = proxy_scores(measured, proxies)
    return out


def searches(space, table, part: dict, target_ms: float, out: Path, epochs: int, limit: int, measurer) -> dict:
    """Part 2: SNAS per cost, trained at the darts-search size and deployed in `space` (every cost
    counted, the table read and the final network measured there, over 10 fresh processes), the
    penalty on the derived child's cost (`--cost-on child`), so each cost's target is the deployed
    network's."""
    from hwnas.data import load_dataset
    from hwnas.search.snas import SNASConfig, search
    from hwnas.spaces import get_space

    data = load_dataset("digits", seed=0, limit=limit)
    trained = get_space("darts", **DARTS_SIZES["darts-search"], num_classes=space.num_classes)
    fits = part.get("usable_only")
    results = {"trained": trained.config, "deployed": space.config, "fits_from": "usable_only"}
    for resource, proxy in (("latency", None), ("params", "params"), ("flops", "flops"), ("mac", "mac")):
        if proxy is None:
            target = target_ms
        else:  # the proxy value the linear fit maps to target_ms, in the cost's units (millions)
            if fits is None:
                results[resource] = {"skipped": "fewer than 8 usable architectures: no fit to map the target"}
                continue
            a, b = fits[proxy]["fit"]
            target = (target_ms - a) / b / 1e6
        if not target > 0:
            results[resource] = {"skipped": f"the linear fit maps {target_ms} ms to a non-positive {resource}"}
            continue
        cfg = SNASConfig(resource=resource, target=target, cost_on="child", epochs=epochs, measure_every=0,
                         final_sessions=10)
        run = out / f"snas-{resource}"
        summary = search(cfg, trained, data, run, table=table, measurer=measurer, show_progress=False, deploy=space)
        log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
        results[resource] = {"target": target, "measured_ms": summary["measured_ms"],
                             "measured_ci95_ms": summary["measured_ci95_ms"], "measured_flags": summary["measured_flags"],
                             "measured_vs_target_ms_pct": 100 * (summary["measured_ms"] / target_ms - 1),
                             "table_ms": summary["predicted_ms"], "child_val_acc": log[-1]["val_acc_child"],
                             "params_m": summary["params_m"], "macs_m": summary["macs_m"], "arch_hash": summary["arch_hash"]}
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=150)
    ap.add_argument("--spaces", default="darts-search,darts-eval,tfnas")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--db", default=None)
    ap.add_argument("--min-time", type=float, default=0.3)
    ap.add_argument("--processes", type=int, default=3, help="k fresh processes per architecture")
    ap.add_argument("--searches", action="store_true", help="part 2: a SNAS search per cost, deployed in each darts space")
    ap.add_argument("--target", type=float, default=0.6, help="part 2: target latency in ms")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--limit", type=int, default=600)
    ap.add_argument("--out", type=Path, default=Path("cost_proxies_out"))
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    measurer = open_measurer("ort-cpu", min_time=args.min_time, db=args.db, processes=args.processes)
    report = {}
    for name in args.spaces.split(","):
        if name in DARTS_SIZES:
            report[name], space, table = darts_part(name, args.n, measurer, args.seed)
            if args.searches:
                report["searches"] = searches(space, table, report[name], args.target, args.out, args.epochs, args.limit,
                                              measurer)
        elif name == "tfnas":
            report[name] = tfnas_part(args.n, measurer, args.seed)
        else:
            raise SystemExit(f"unknown space {name!r}; known: {', '.join([*DARTS_SIZES, 'tfnas'])}")
    measurer.close()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cost_proxies.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
