"""Does a measurement repeat? The same subnets measured in independent passes, per protocol.

For each protocol, every subnet is measured in two quiet passes (the second after every other
protocol's first pass, so minutes apart) and in one pass with a synthetic training job (a torch
training loop, one thread) running on the other core(s). Each pass writes a fresh store; all
share one reference baseline, measured first, so they are on one scale.

Protocols:
  single         one long-lived process times every model in turn, no reference (hwnas before)
  k              k fresh processes per model, one model after another, no reference
  k+interleave   k rounds, each one fresh process timing every model once (A B C, A B C)
  k+int+ref      the same, each process timing the reference model in alternating blocks:
                 latency normalised by the reference, drift-flagged and retried (the default)
  sessions       the same with --sessions sessions per process, each timed for a share of the
                 time: each draws another memory layout (docs/measurement.md)

Printed per protocol: per-subnet |pass 1 - pass 2| (median, p95, max), the loaded pass against
the mean of the quiet ones (median |delta|, how many are off by more than 2%, and how many of
those were left unflagged), and wall time per pass.

    python benchmarks/repeatability.py --n112 8 --n224 4 --nproxyless 4 --out runs/repeatability.csv
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TRAINING_JOB = """
import torch, time
torch.set_num_threads(1)
net = torch.nn.Sequential(torch.nn.Conv2d(3, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(32, 32, 3, padding=1),
                          torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(32, 10))
opt = torch.optim.SGD(net.parameters(), lr=0.01)
x, y = torch.randn(32, 3, 32, 32), torch.randint(0, 10, (32,))
while True:
    opt.zero_grad(); torch.nn.functional.cross_entropy(net(x), y).backward(); opt.step()
"""


def subnets(args):
    from hwnas.spaces.mbconv import Space

    out = []
    for name, res, n in (("tfnas", 112, args.n112), ("tfnas", 224, args.n224), ("proxyless", 112, args.nproxyless)):
        space = Space(name, resolution=res, width_mult=args.width_mult, num_classes=10)
        out += [(f"{name}@{res}", space, a) for a in space.random_archs(n, seed=args.seed, align=4)]
    return out


def protocols(args):
    from hwnas.backends import MeasureProtocol

    base = MeasureProtocol(min_time_s=args.min_time, processes=args.k)
    return {
        "single": (replace(base, processes=1, reference=False), True),
        "k": (replace(base, reference=False), False),
        "k+interleave": (replace(base, reference=False), True),
        "k+int+ref": (base, True),
        "sessions": (replace(base, sessions=args.sessions), True),
    }


def one_pass(name, protocol, interleave, models, db, baseline, cpus, own):
    from hwnas.backends import get_backend
    from hwnas.measure import Measurer
    from hwnas.store import Store

    m = Measurer(get_backend("ort-cpu"), Store(db), protocol, cpus=cpus, own_cpus=own, isolation="pin" if cpus else "")
    m._baseline = baseline if protocol.reference else None
    t0 = time.perf_counter()
    if interleave:
        done = m.many([m.arch_item(space, a) for _, space, a in models], desc=name, show_progress=False)
    else:
        done = [m.arch(space, a) for _, space, a in models]
    wall = time.perf_counter() - t0
    m.close()
    return [d.measurement for d in done], wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n112", type=int, default=8)
    ap.add_argument("--n224", type=int, default=4)
    ap.add_argument("--nproxyless", type=int, default=4)
    ap.add_argument("--width-mult", type=float, default=0.5)
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--min-time", type=float, default=0.3)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--sessions", type=int, default=8, help="sessions per process of the protocol `sessions`")
    ap.add_argument("--protocols", default="single,k,k+interleave,k+int+ref,sessions")
    ap.add_argument("--out", type=Path, default=None, help="per-subnet results as CSV")
    args = ap.parse_args()

    from hwnas.backends import get_backend
    from hwnas.backends.system import cpu_model
    from hwnas.measure import Measurer, isolation_cores
    from hwnas.store import Store

    tmp = Path(tempfile.mkdtemp(prefix="repeatability-"))
    os.environ.setdefault("HWNAS_CACHE", str(tmp / "cache"))
    models = subnets(args)
    chosen = {k: v for k, v in protocols(args).items() if k in args.protocols.split(",")}
    mode, cpus, own = isolation_cores("auto", None, get_backend("ort-cpu"))
    print(f"cpu: {cpu_model()}, {os.cpu_count()} cores; worker on {cpus}, this process and the training job on {own}; "
          f"{len(models)} subnets, k={args.k}, min time {args.min_time} s", flush=True)
    from hwnas.exporters.onnx import export_layers

    for _, space, a in models:  # export once, before any timing
        export_layers(space.layers(a, 1), None)
    with Store(tmp / "baseline.sqlite") as store:
        bm = Measurer(get_backend("ort-cpu"), store, next(iter(chosen.values()))[0], cpus=cpus, own_cpus=own)
        baseline = bm.measure_baseline()["baseline_ms"]
        bm.close()
    print(f"reference baseline {baseline:.4f} ms", flush=True)

    results, walls = {}, {}
    plan = [(p, "quiet1") for p in chosen] + [(p, "quiet2") for p in chosen] + [(p, "load") for p in chosen]
    for name, which in plan:
        job = None
        if which == "load":
            job = subprocess.Popen([sys.executable, "-c", TRAINING_JOB],
                                   preexec_fn=(lambda: os.sched_setaffinity(0, own)) if own else None)
            time.sleep(1.0)
        try:
            protocol, interleave = chosen[name]
            ms, wall = one_pass(name, protocol, interleave, models, tmp / f"{name}-{which}.sqlite", baseline, cpus, own)
        finally:
            if job is not None:
                job.kill()
                job.wait()
        results[(name, which)] = ms
        walls[(name, which)] = wall
        print(f"  {name:13s} {which:6s} {wall:6.1f} s", flush=True)

    rows, table = [], []
    for name in chosen:
        q1 = np.array([m.stats["median_ms"] for m in results[(name, "quiet1")]])
        q2 = np.array([m.stats["median_ms"] for m in results[(name, "quiet2")]])
        ld = np.array([m.stats["median_ms"] for m in results[(name, "load")]])
        flagged = np.array([bool({"noisy", "disturbed"} & set(m.flags)) for m in results[(name, "load")]])
        quiet = results[(name, "quiet1")] + results[(name, "quiet2")]
        ci = [100 * (m.ci95_ms[1] - m.ci95_ms[0]) / 2 / m.stats["median_ms"] for m in quiet if m.ci95_ms]
        d12 = 100 * np.abs(q1 / q2 - 1)
        dl = 100 * np.abs(ld / ((q1 + q2) / 2) - 1)
        off = dl > 2.0
        table.append({"protocol": name, "median_dq_pct": np.median(d12), "p95_dq_pct": np.percentile(d12, 95),
                      "max_dq_pct": d12.max(), "quiet_flagged": sum(bool({"noisy", "disturbed"} & set(m.flags)) for m in quiet),
                      "quiet_ci_half_pct": np.median(ci) if ci else np.nan, "load_median_d_pct": np.median(dl), "load_off2pct": int(off.sum()),
                      "load_off2pct_unflagged": int((off & ~flagged).sum()), "load_flagged": int(flagged.sum()),
                      "wall_s_per_pass": np.mean([walls[(name, w)] for w in ("quiet1", "quiet2")])})
        for (label, _, _), a, b, c, f in zip(models, q1, q2, ld, flagged):
            rows.append({"protocol": name, "subnet": label, "quiet1_ms": a, "quiet2_ms": b, "load_ms": c, "load_flagged": f})
    df = pd.DataFrame(table)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(df.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(rows).to_csv(args.out, index=False)
        df.to_csv(args.out.with_name(args.out.stem + "_summary.csv"), index=False)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
