"""Does a weight-sharing supernet learn under single-path (uniformly sampled) training?

Trains a TF-NAS supernet the way the warm-up of `hwnas search --method tfnas` does (every
step two paths, each layer's op uniform, depth mixed by softmax(beta) at beta = 0; SGD with
momentum, cosine lr, grad clip 5; one backward) and prints per epoch the train accuracy of
the sampled paths and the search-val accuracy of fresh random paths (one per batch, BN in
training mode as in the search's architecture step). Variants:

    per-op        TF-NAS's per-op weights (Supernet(share_ops=False))
    shared        the ops of a layer share their convolution weights (the default)
    per-op-zero   per-op weights, last BN of residual branches zero-initialised
    shared-zero   shared weights, last BN of residual branches zero-initialised
    suffix @R     train at resolution R instead of --resolution (e.g. shared@16)

    .venv/bin/python benchmarks/supernet_trainability.py --variants per-op,shared --epochs 12

Measured (digits, tfnas, width 0.5, batch 64, 18 steps/epoch, SGD 0.05 cosine, 1 thread, seed 0):

    --variants per-op,shared --epochs 12 (32 px), val acc of random paths after epoch 2 / 4 / 12:
        per-op   0.094 / 0.136 / 0.146   (train acc 0.124 at epoch 12)
        shared   0.780 / 0.913 / 0.979   (train acc 0.990 at epoch 12)
    --variants per-op-zero,shared-zero,shared@16 --epochs 6, val acc after epoch 1 / 3 / 6:
        per-op-zero  0.087 / 0.136 / 0.153   (zero-init alone does not fix per-op weights)
        shared-zero  0.659 / 0.916 / 0.962   (faster start; not adopted, the default is enough)
        shared@16    0.279 / 0.735 / 0.923   (16 px: barely cheaper per epoch here, not adopted)
"""

import argparse
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def run(variant: str, args) -> list[tuple[int, float, float, float]]:
    import torch
    import torch.nn.functional as F

    from hwnas.data import load_dataset
    from hwnas.search.supernet import Supernet
    from hwnas.spaces.mbconv import Space

    name, _, res = variant.partition("@")
    res = int(res) if res else args.resolution
    share = name.startswith("shared")
    data = load_dataset(args.data, seed=args.seed)
    torch.manual_seed(args.seed)
    net = Supernet(Space(args.space, res, args.width_mult, data.num_classes), share_ops=share)
    if name.endswith("-zero"):
        with torch.no_grad():
            for stage in net.stages:
                for layer in stage:
                    for op in layer.ops:
                        if getattr(op, "residual", False):
                            op._bns()[2].weight.zero_()
    params = net.weight_parameters()
    opt = torch.optim.SGD(params, lr=args.lr, momentum=0.9, weight_decay=1e-5)
    gen = torch.Generator().manual_seed(args.seed)
    steps = math.ceil(data.size("train") / args.batch_size)
    total = args.epochs * steps
    depth_w = [d.detach() for d in net.depth_weights()]

    def path():
        return [[int(torch.randint(len(layer.names), (1,), generator=gen)) for layer in stage] for stage in net.stages]

    rows, started = [], time.monotonic()
    for epoch in range(args.epochs):
        net.train()
        correct = n = 0
        loss_sum = 0.0
        for step, (x, y) in enumerate(data.batches("train", args.batch_size, res, shuffle=True, generator=gen)):
            for g in opt.param_groups:
                g["lr"] = 0.5 * args.lr * (1 + math.cos(math.pi * (epoch * steps + step) / total))
            opt.zero_grad(set_to_none=True)
            logits = net(x, path(), depth_w)
            loss = F.cross_entropy(logits, y)
            (loss + F.cross_entropy(net(x, path(), depth_w), y)).backward()
            torch.nn.utils.clip_grad_norm_(params, 5.0)
            opt.step()
            correct += int((logits.argmax(1) == y).sum())
            n += y.numel()
            loss_sum += loss.item() * y.numel()
        vc = vn = 0
        with torch.no_grad():  # training-mode BN, as the architecture step sees it
            for x, y in data.batches("val", args.batch_size, res, shuffle=False):
                vc += int((net(x, path(), depth_w).argmax(1) == y).sum())
                vn += y.numel()
        rows.append((epoch + 1, loss_sum / n, correct / n, vc / vn))
        print(f"{variant:>14} epoch {epoch + 1:2d}: train loss {loss_sum / n:.3f} acc {correct / n:.3f}  "
              f"val acc {vc / vn:.3f}  ({time.monotonic() - started:.0f} s)", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", default="per-op,shared")
    ap.add_argument("--data", default="digits")
    ap.add_argument("--space", default="tfnas")
    ap.add_argument("--width-mult", type=float, default=0.5)
    ap.add_argument("--resolution", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    results = {v: run(v, args) for v in args.variants.split(",")}
    print("\nvariant         final train acc  final val acc  best val acc")
    for v, rows in results.items():
        print(f"{v:<15} {rows[-1][2]:>15.3f} {rows[-1][3]:>14.3f} {max(r[3] for r in rows):>13.3f}")


if __name__ == "__main__":
    main()
