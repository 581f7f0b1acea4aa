"""Can a UNAS or TF-NAS supernet tell its ops apart? (issue 18: why alpha hardly moves)

Loads a search's supernet from its run directory's checkpoint (the last epoch it saved; stop a
run with `--stop-after-epoch` to look at an earlier one) and, on fixed search-val batches,
evaluates single paths: M random paths at every stage's full depth (the same M for every
choice, so differences are paired), and for every op decision each of its choices put into
those paths. BatchNorm runs in training mode, as in the search's architecture step.

Per decision it prints:
    spread   the largest difference between its choices' mean losses (nats): what an
             architecture gradient could learn from, with every other layer averaged out;
    effect   the standard deviation of the choices' mean losses (nats);
    noise    the standard deviation, over paths, of a choice's loss about its mean over the
             choices: how much the other layers' random ops move the loss one step sees;
    steps    (noise / effect)^2: about how many independent samples one step of the
             architecture gradient needs before the choice's effect stands out of that noise.

Then the derived path (every decision's most likely op, full depth) against the random paths:
its loss, their mean and spread, its z-score among them and the share of them it beats (a
search that learnt nothing derives a random path: z about 0 +- 1, beating about half).

    python benchmarks/alpha_diagnosis.py RUN_DIR [--paths 16] [--batches 2]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="a tfnas or unas run directory (config.json, checkpoint.pt)")
    ap.add_argument("--paths", type=int, default=16, help="random paths each choice is put into (paired)")
    ap.add_argument("--batches", type=int, default=2, help="search-val batches each path is evaluated on")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--derived-only", action="store_true", help="skip the per-decision table")
    args = ap.parse_args()
    if args.paths < 2 or args.batches < 1:
        sys.exit("error: --paths must be at least 2 and --batches at least 1")

    import numpy as np
    import torch
    import torch.nn.functional as F

    from hwnas.data import load_dataset
    from hwnas.errors import HwnasError
    from hwnas.search.rundir import RunDir
    from hwnas.search.supernet import Supernet
    from hwnas.spaces.mbconv import Space

    try:
        config = json.loads((args.run / "config.json").read_text())
        if config.get("method") not in ("tfnas", "unas"):
            raise HwnasError(f"{args.run} is a {config.get('method')!r} run; this reads tfnas and unas runs")
        ck = RunDir(args.run).load_checkpoint()
    except (OSError, ValueError, HwnasError) as e:
        sys.exit(f"error: {e}")
    torch.set_num_threads(1)
    t = config["train_space"]
    space = Space(t["space"], t["resolution"], t["width_mult"], t["num_classes"])
    net = Supernet(space)
    net.load_state_dict(ck["supernet"])
    net.train()  # batch statistics, as the architecture step sees them
    data = load_dataset(config["data"], seed=config["seed"], limit=config.get("limit"))
    batches = [b for _, b in zip(range(args.batches), data.batches("val", config["batch_size"], space.resolution))]
    gen = np.random.default_rng(args.seed)
    rows = [(i, j) for i, s in enumerate(space.stages) for j in range(s.max_depth)]
    sizes = {(i, j): len(space.op_names(i, j)) for i, j in rows}
    paths = [{r: int(gen.integers(sizes[r])) for r in rows} for _ in range(args.paths)]
    full_depth = [torch.nn.functional.one_hot(torch.tensor(s.max_depth - s.min_depth), s.max_depth - s.min_depth + 1).float()
                  for s in space.stages]

    def loss(path: dict) -> float:
        p = [[path[(i, j)] for j in range(s.max_depth)] for i, s in enumerate(space.stages)]
        with torch.no_grad():
            return float(np.mean([F.cross_entropy(net(x, p, full_depth), y).item() for x, y in batches]))

    print(f"{args.run}: epoch {ck['epoch']}, {len(rows)} op decisions, {args.paths} paths x {args.batches} batches")
    print(f"{'decision':10s} {'choices':>7s} {'spread':>7s} {'effect':>7s} {'noise':>7s} {'steps':>7s}  best")
    started, summary = time.monotonic(), []
    for r in [] if args.derived_only else rows:
        names = space.op_names(*r)
        losses = np.array([[loss({**p, r: k}) for k in range(sizes[r])] for p in paths])  # [paths, choices]
        means = losses.mean(0)
        effect = float(means.std(ddof=1))
        noise = float((losses - losses.mean(1, keepdims=True)).std(ddof=1))
        steps = (noise / effect) ** 2 if effect > 0 else float("inf")
        summary.append((float(means.max() - means.min()), effect, noise, steps))
        print(f"{r[0]}.{r[1]:<8d} {sizes[r]:7d} {summary[-1][0]:7.4f} {effect:7.4f} {noise:7.4f} {steps:7.1f}  "
              f"{names[int(means.argmin())]}")
    if summary:
        spread, effect, noise, steps = (np.median([s[k] for s in summary]) for k in range(4))
        print(f"median     {'':7s} {spread:7.4f} {effect:7.4f} {noise:7.4f} {steps:7.1f}   ({time.monotonic() - started:.0f} s)")
    derived = derived_ops(config["method"], ck, net, rows)
    random_losses = np.array([loss(p) for p in paths])
    d = loss(derived)
    sd = random_losses.std(ddof=1)
    print(f"derived path: loss {d:.4f}; random paths: mean {random_losses.mean():.4f}, sd {sd:.4f}; "
          f"derived at z {(d - random_losses.mean()) / sd:+.2f}, better than {np.mean(random_losses > d):.0%} of them")
    return 0


def derived_ops(method: str, ck: dict, net, rows: list[tuple[int, int]]) -> dict:
    """Every op decision's most likely choice: UNAS's distribution, TF-NAS's alphas."""
    if method == "tfnas":
        alphas = net.alphas()
        return {(i, j): int(alphas[i][j].argmax()) for i, j in rows}
    from hwnas.search.unas import ArchDistribution

    dist = ArchDistribution(net.space)
    dist.load_state_dict(ck["dist"])
    best = dist.logits.detach().masked_fill(~dist.mask, float("-inf")).argmax(-1).tolist()
    return {(i, j): k for (kind, i, j), k in zip(dist.rows, best) if kind == "op"}


if __name__ == "__main__":
    raise SystemExit(main())
