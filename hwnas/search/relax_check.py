"""A problem small enough to enumerate, for checking gradient estimators against the exact
gradient: L layers of K ops, a non-additive black-box "latency" (the sum of per-op values
plus a bottleneck term, the largest of them) through a hinge at its median, and a linear
surrogate of the latency fitted by least squares over every configuration as control variate."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Callable

import torch

from hwnas.search import relax


@dataclass
class ToyProblem:
    logits: torch.Tensor  # [L, K]
    mask: torch.Tensor  # [L, K] valid ops
    configs: torch.Tensor  # [N, L] every configuration
    latency: Callable[[torch.Tensor], torch.Tensor]  # z [..., L] -> [...]
    cost: Callable[[torch.Tensor], torch.Tensor]  # relu(latency - target)
    control: Callable[[torch.Tensor], torch.Tensor]  # the surrogate through the same hinge, on [..., L, K]
    surrogate_fit: Callable[[], torch.Tensor]  # the surrogate's latency for every configuration

    def exact_gradient(self) -> torch.Tensor:
        """d E_{z~softmax(logits)}[cost(z)] / d logits, by enumeration."""
        logits = self.logits.clone().requires_grad_()
        log_q = relax.masked_log_softmax(logits, self.mask)
        log_p = log_q[torch.arange(self.configs.shape[1]), self.configs].sum(-1)
        (log_p.exp() * self.cost(self.configs)).sum().backward()
        return logits.grad


def toy_problem(mask: torch.Tensor | None = None, seed: int = 0, L: int = 3, K: int = 4, bottleneck: float = 1.0) -> ToyProblem:
    g = torch.Generator().manual_seed(seed)
    lat = 1.0 + 2.0 * torch.rand(L, K, generator=g, dtype=torch.float64)
    logits = torch.randn(L, K, generator=g, dtype=torch.float64)
    if mask is None:
        mask = torch.ones(L, K, dtype=torch.bool)
    choices = [torch.nonzero(mask[i]).flatten().tolist() for i in range(L)]
    configs = torch.tensor(list(itertools.product(*choices)))

    def latency(z):
        per_layer = lat.expand(*z.shape, K).gather(-1, z.unsqueeze(-1)).squeeze(-1)
        return per_layer.sum(-1) + bottleneck * per_layer.amax(-1)

    target = latency(configs).median()
    onehots = torch.nn.functional.one_hot(configs, K).to(torch.float64)
    design = torch.cat([onehots.flatten(1), torch.ones(len(configs), 1, dtype=torch.float64)], 1)
    coef = torch.linalg.pinv(design) @ latency(configs)
    weight, bias = coef[:-1].reshape(L, K), coef[-1]

    def cost(z):
        return torch.relu(latency(z) - target)

    def control(w):
        return torch.relu((w * weight).sum((-1, -2)) + bias - target)

    return ToyProblem(logits, mask, configs, latency, cost, control, lambda: design @ coef)
