"""Topology (issue 22): the in-degrees of the derived nodes under EnTranNAS-DST for a few lambda
(Eq. 11's weight), against DARTS's fixed two.

    taskset -c 0 python benchmarks/entrannas_topology.py --out /tmp/entrannas_bench --lambdas 0 0.1 1

Runs share --out with entrannas_consistency.py (its lambda 0.1 run is reused). Prints, per lambda,
the final derived network's in-degree histogram over the 8 intermediate nodes (normal + reduce),
the mean in-degree per epoch, and the final thresholds t_j.
"""

from __future__ import annotations

import argparse
import collections
import json

from entrannas_common import run, setup, size_arguments


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    size_arguments(ap)
    ap.add_argument("--lambdas", type=float, nargs="+", default=[0.0, 0.1, 1.0])
    args = ap.parse_args()
    data, space = setup(args)
    result = {}
    for lam in args.lambdas:
        r = run(f"dst_lambda{lam:g}", "entrannas", args, data, space, dst=True, dst_lambda=lam)
        degrees = [d for kind in ("normal", "reduce") for d in r["log"][-1]["in_degrees"][kind]]
        result[f"lambda {lam:g}"] = {
            "final_in_degrees": r["log"][-1]["in_degrees"],
            "histogram": dict(sorted(collections.Counter(degrees).items())),
            "mean_in_degree_per_epoch": [round(sum(d for k in ("normal", "reduce") for d in rec["in_degrees"][k]) / 8, 2)
                                         for rec in r["log"]],
            "edges_per_cell": {k: sum(r["log"][-1]["in_degrees"][k]) for k in ("normal", "reduce")},
            "multi_op_edges_per_epoch": [rec["multi_op_edges"] for rec in r["log"]],
            "thresholds": {k: [round(t, 3) for t in v] for k, v in r["log"][-1]["thresholds"].items()},
            "val_acc_derived": r["log"][-1]["val_acc_derived"],
        }
    result["darts (top-2 rule)"] = {"histogram": {2: 8}, "edges_per_cell": {"normal": 8, "reduce": 8}}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
