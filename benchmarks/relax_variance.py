"""RELAX vs REINFORCE on an enumerable toy search space, against the exact gradient.

Toy: 3 searchable layers x 4 ops. Measured latency = sum of per-op latencies (uniform in
[1, 3] ms) + a pipeline-bottleneck term (max per-layer latency), so it is not additive.
Cost = relu(latency - T) with T the median latency over all 64 architectures. The RELAX
control variate is a linear latency model least-squares fitted on all architectures,
through the same hinge: it captures most, not all, of the cost.

    .venv/bin/python benchmarks/relax_variance.py --samples 20000 --seed 0
"""

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hwnas.search import relax  # noqa: E402
from hwnas.search.relax_check import toy_problem  # noqa: E402

L, K = 3, 4


def build_toy(seed: int, bottleneck: float):
    toy = toy_problem(seed=seed, L=L, K=K, bottleneck=bottleneck)

    def r2(pred, true):
        return 1.0 - ((true - pred) ** 2).mean() / true.var(unbiased=False)

    onehots = torch.nn.functional.one_hot(toy.configs, K).to(torch.float64)
    latency = toy.latency(toy.configs)
    fit = dict(
        latency_r2=r2(toy.surrogate_fit(), latency).item(),
        cost_r2=r2(toy.control(onehots), toy.cost(toy.configs)).item(),
        frac_over=(toy.cost(toy.configs) > 0).double().mean().item(),
    )
    return toy.logits, toy.configs, toy.cost, toy.control, fit, toy


def estimates(logits, cost, control, n, tau, seed, kind):
    """Per-sample gradient estimates [n, L, K] from one batched backward pass."""
    gen = torch.Generator().manual_seed(seed)
    a = logits.expand(n, L, K).clone().requires_grad_()
    s = relax.sample(a, tau, generator=gen)
    f_z = cost(s.z)
    loss = relax.relax_loss(f_z, control, s) if kind == "relax" else relax.reinforce_loss(f_z, s)
    loss.sum().backward()
    return a.grad


def fmt(t):
    return "\n".join("    " + " ".join(f"{v:+.4f}" for v in row) for row in t.tolist())


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--samples", type=int, default=20_000)
    p.add_argument("--seed", type=int, default=0, help="toy problem and sampling seed")
    p.add_argument("--tau", type=float, default=0.5, help="Gumbel-softmax temperature")
    p.add_argument("--bottleneck", type=float, default=1.0, help="weight of the non-additive max term")
    args = p.parse_args(argv)

    logits, configs, cost, control, fit, toy = build_toy(args.seed, args.bottleneck)
    exact = toy.exact_gradient()
    print(f"toy: {L} layers x {K} ops, {len(configs)} architectures, {fit['frac_over']:.0%} over the target")
    print(f"linear surrogate R^2: latency {fit['latency_r2']:.3f}, hinged cost {fit['cost_r2']:.3f}")
    print(f"samples {args.samples}, tau {args.tau}, seed {args.seed}\n")
    print("exact gradient of E[cost] w.r.t. logits:\n" + fmt(exact))

    total_var = {}
    for i, kind in enumerate(("reinforce", "relax")):
        g = estimates(logits, cost, control, args.samples, args.tau, args.seed + 1 + i, kind)
        mean, var = g.mean(0), g.var(0)
        se = (var / args.samples).sqrt()
        total_var[kind] = var.sum().item()
        print(f"\n{kind.upper()} mean gradient:\n" + fmt(mean))
        print(
            f"  rel. error |mean-exact|/|exact| = {((mean - exact).norm() / exact.norm()).item():.4f}, "
            f"max |mean-exact|/s.e. = {((mean - exact).abs() / se).max().item():.2f}, "
            f"total variance = {total_var[kind]:.4f}"
        )
    ratio = total_var["relax"] / total_var["reinforce"]
    print(f"\nvariance ratio RELAX/REINFORCE = {ratio:.3f}  ({1 / ratio:.2f}x reduction)")


if __name__ == "__main__":
    main()
