"""Consistency (issue 22): each epoch, the supernet's validation accuracy beside the derived
network's (supernet weights, no retraining), for EnTranNAS, EnTranNAS-DST and SNAS; and how long
each default-size search takes (the issue's "minutes on 2 cores").

    taskset -c 0 python benchmarks/entrannas_consistency.py --out /tmp/entrannas_bench --epochs 10

Supernet accuracy: EnTranNAS and DST with the Engine coefficients of the epoch, SNAS with
softmax(alpha / tau) (no noise). Derived: Engine-cells (SNAS: every cell) computing only the
derived graph with coefficient 1. BatchNorm uses batch statistics in both. SNAS runs one-level
with the reparameterised gradient and no resource term (lambda 0), its authors' setting otherwise.
"""

from __future__ import annotations

import argparse
import json

from entrannas_common import run, setup, size_arguments


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    size_arguments(ap)
    ap.add_argument("--dst-lambda", type=float, default=0.1)
    args = ap.parse_args()
    data, space = setup(args)
    runs = {
        "entrannas": run("entrannas", "entrannas", args, data, space),
        "entrannas-dst": run(f"dst_lambda{args.dst_lambda:g}", "entrannas", args, data, space, dst=True,
                             dst_lambda=args.dst_lambda),
        "snas": run("snas", "snas", args, data, space, resource="flops", lam=0.0),
    }
    print(f"{space}, digits {data.size('train')}/{data.size('val')} search-train/val images, {args.epochs} epochs")
    print("epoch | " + " | ".join(f"{n}: supernet / derived" for n in runs))
    for e in range(args.epochs):
        cells = []
        for name, r in runs.items():
            rec = r["log"][e]
            derived = rec.get("val_acc_derived", rec.get("val_acc_child"))
            cells.append(f"{rec['val_acc_supernet']:.3f} / {derived:.3f}")
        print(f"{e + 1:5d} | " + " | ".join(cells))
    result = {}
    for name, r in runs.items():
        gaps = [abs(rec["val_acc_supernet"] - rec.get("val_acc_derived", rec.get("val_acc_child"))) for rec in r["log"]]
        last = r["log"][-1]
        result[name] = {"mean_abs_gap": sum(gaps) / len(gaps), "last_gap": gaps[-1],
                        "search_s": last["seconds"], "final_in_degrees": r["summary"].get("in_degrees"),
                        "final_params_m": r["summary"]["params_m"], "arch_hash": r["summary"]["arch_hash"]}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
