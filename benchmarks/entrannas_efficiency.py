"""Efficiency (issue 22): peak memory and time of one search step, EnTranNAS against a DARTS-style
full supernet of the same size (every cell the whole DAG, one op set per edge, softmax over the 8
ops), each a first-order bi-level step: architecture on a val batch, then weights on a train batch.

    taskset -c 0 python benchmarks/entrannas_efficiency.py --channels 8 --cells 8 --resolution 16 --batch 64 \
        --steps 3 --repeats 2 [--dst-checkpoint RUN_DIR]

Each variant runs in a fresh process (one torch thread): it builds its network, reads its
resident memory, resets the peak (/proc/self/clear_refs), runs 1 + --steps steps and reports the
peak resident memory over the start (activations, gradients, optimiser state) and the median wall
and CPU time of the timed steps. The variants run in turn, --repeats times (spread: min-max over
repeats). DST's Engine-cells skip the connections it pruned, so its cost depends on the
thresholds: at initialisation (everything live) and, with --dst-checkpoint, with the alpha and beta
of a finished DST run of the same size.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

VARIANTS = ("darts", "entrannas", "entrannas-b4", "dst-init", "dst-searched")


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(field)


def child(args) -> None:
    import torch
    import torch.nn.functional as F

    from hwnas.data import load_dataset
    from hwnas.search import entrannas, snas
    from hwnas.spaces import get_space

    torch.set_num_threads(1)
    torch.manual_seed(0)
    data = load_dataset("digits", seed=0, limit=4 * args.batch)
    space = get_space("darts", channels=args.channels, cells=args.cells, num_classes=10, resolution=args.resolution)
    x, y = next(data.batches("train", args.batch, args.resolution))
    xv, yv = next(data.batches("val", args.batch, args.resolution))
    v = args.variant
    if v == "darts":
        net = snas.SNASSupernet(space)
        opt_w = torch.optim.SGD(net.weight_parameters(), lr=0.025, momentum=0.9, weight_decay=3e-4)
        opt_a = torch.optim.Adam(net.arch_parameters(), lr=3e-4, betas=(0.5, 0.999), weight_decay=1e-3)

        def step():
            w = {k: torch.softmax(a, -1) for k, a in net.alphas().items()}
            opt_a.zero_grad(set_to_none=True)
            F.cross_entropy(net(xv, w), yv).backward()
            opt_a.step()
            w = {k: torch.softmax(a.detach(), -1) for k, a in net.alphas().items()}
            opt_w.zero_grad(set_to_none=True)
            F.cross_entropy(net(x, w), y).backward()
            opt_w.step()
    else:
        cfg = entrannas.EnTranNASConfig(dst=v.startswith("dst"), bottleneck=4 if v == "entrannas-b4" else 1)
        net = entrannas.EnTranNASNet(space, cfg.engines(space), cfg.bottleneck)
        if v == "dst-searched":
            ck = torch.load(f"{args.dst_checkpoint}/checkpoint.pt", map_location="cpu", weights_only=True)["supernet"]
            with torch.no_grad():
                for name in ("alpha_normal", "alpha_reduce", "beta_normal", "beta_reduce"):
                    getattr(net, name).copy_(ck[name])
        opt_w = torch.optim.SGD(net.weight_parameters(), lr=cfg.lr, momentum=0.9, weight_decay=3e-4)
        opt_a = torch.optim.Adam(net.arch_parameters(cfg.dst), lr=cfg.arch_lr, betas=(0.5, 0.999), weight_decay=1e-3)
        tau = cfg.tau_min if v == "dst-searched" else cfg.tau

        def step():
            entrannas.train_step(net, opt_w, opt_a, cfg, space, None, tau, x, y, xv, yv)
    net.train()
    rss0 = _status_kb("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak resident size to the current one
    walls, cpus = [], []
    for i in range(1 + args.steps):
        w0, c0 = time.perf_counter(), time.process_time()
        step()
        if i:  # the first step allocates the optimisers' state: not timed
            walls.append(time.perf_counter() - w0)
            cpus.append(time.process_time() - c0)
    peak = _status_kb("VmHWM")
    n_params = sum(p.numel() for p in net.parameters())
    print(json.dumps({"variant": v, "peak_mb": (peak - rss0) / 1024, "wall_s": statistics.median(walls),
                      "cpu_s": statistics.median(cpus), "params_m": n_params / 1e6,
                      "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--channels", type=int, default=8)
    ap.add_argument("--cells", type=int, default=8)
    ap.add_argument("--resolution", type=int, default=16)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--dst-checkpoint", default=None, help="a finished DST run directory of the same size")
    ap.add_argument("--variant", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.variant:
        return child(args)
    variants = [v for v in VARIANTS if v != "dst-searched" or args.dst_checkpoint]
    rows: dict[str, list[dict]] = {v: [] for v in variants}
    for r in range(args.repeats):
        for v in (variants if r % 2 == 0 else variants[::-1]):
            cmd = [sys.executable, __file__, "--variant", v] + [
                f"--{k}={getattr(args, k)}" for k in ("channels", "cells", "resolution", "batch", "steps")]
            if args.dst_checkpoint:
                cmd.append(f"--dst-checkpoint={args.dst_checkpoint}")
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            rows[v].append(json.loads(out.strip().splitlines()[-1]))
            print(json.dumps(rows[v][-1]), flush=True)
    base = {k: statistics.median(r[k] for r in rows["darts"]) for k in ("peak_mb", "wall_s", "cpu_s")}
    print(f"darts(channels={args.channels}, cells={args.cells}, resolution={args.resolution}), batch {args.batch}, "
          f"{args.steps} timed steps, {args.repeats} repeats (median; min-max)")
    print("variant | peak MB | x darts | step CPU s | x darts | step wall s | params M")
    for v, rs in rows.items():
        def col(k):
            vals = [r[k] for r in rs]
            return statistics.median(vals), min(vals), max(vals)
        p, c, w = col("peak_mb"), col("cpu_s"), col("wall_s")
        print(f"{v} | {p[0]:.0f} ({p[1]:.0f}-{p[2]:.0f}) | {p[0] / base['peak_mb']:.2f} | {c[0]:.2f} ({c[1]:.2f}-{c[2]:.2f}) "
              f"| {c[0] / base['cpu_s']:.2f} | {w[0]:.2f} ({w[1]:.2f}-{w[2]:.2f}) | {rs[0]['params_m']:.3f}")


if __name__ == "__main__":
    main()
