"""Elasticity-scaling's depth fitting ends, even where no depth can reach the target."""

from __future__ import annotations

from hwnas.spaces.elastic import elasticity_scale, fit_depth
from hwnas.spaces.mbconv import Space


class DepthHeavy:
    """Latency dominated by depth: each layer costs 10 ms, widths add at most ~1 ms in all, so a
    target between two depths' reach is unreachable by widths at either depth."""

    def __init__(self, space):
        self.space = space

    def predict(self, arch):
        arch = self.space.validate(arch)
        layers = [c for st in arch.stages for c in st]
        return 10.0 * len(layers) + sum(c.mid for c in layers) / 1e4


def test_a_target_between_two_depths_ends_instead_of_oscillating():
    space = Space("tfnas", resolution=32, width_mult=0.25, num_classes=10)
    model = DepthHeavy(space)
    full = space.default_arch()
    depths = [s.min_depth for s in space.stages]
    probs = [[1.0 / (s.max_depth - s.min_depth + 1)] * (s.max_depth - s.min_depth + 1) for s in space.stages]
    target = 10.0 * (sum(depths) + 1) + 5.0  # between d+1 layers (~10(d+1) ms) and d+2 layers
    arch, changes = fit_depth(model, full, depths, probs, target)
    assert changes and len(changes) < 50
    result = elasticity_scale(model, space.default_arch(), target, full=full, depth_probs=probs)
    assert result.bound is not None  # the bound that stopped it is reported, not a hang
