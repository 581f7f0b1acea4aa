"""The one interface every latency model has, and the relaxed (soft) evaluation the searches
differentiate through.

Relaxed architecture weights, as the searches hold them (space = a `hwnas.spaces.mbconv.Space`):
- op_weights[i][j]: Tensor[K_ij], a distribution over `space.op_names(i, j)` (that order)
  for layer j of searchable stage i, j in 0 .. max_depth_i - 1;
- depth_weights[i]: Tensor[max_depth_i - min_depth_i + 1], the probability that stage i has
  depth min_depth_i + d (sink-connecting: the stage output is the weighted sum of the
  outputs after each possible last layer);
- mids[i][j][k]: the current mid width of op k of layer j in stage i (elastic spaces), or
  None for the ops' default widths.

Then E[LAT] = base + sum_i sum_d depth_weights[i][d] * sum_{j < depth(d)} sum_k op_weights[i][j][k] * lat(i, j, k)
which at one-hot weights equals `predict` of that architecture (TF-NAS Eq. 4 and 6).
"""

from __future__ import annotations

from typing import Callable, Protocol, Sequence

import torch

from hwnas.spaces.mbconv import Arch, Space

OpWeights = Sequence[Sequence[torch.Tensor]]
DepthWeights = Sequence[torch.Tensor]
Mids = Sequence[Sequence[Sequence[int]]] | None


class LatencyModel(Protocol):
    name: str
    space: Space

    def predict(self, arch: Arch | dict) -> float:
        """Latency in ms of a discrete architecture."""
        ...


class DifferentiableLatencyModel(LatencyModel, Protocol):
    def soft(self, op_weights: OpWeights, depth_weights: DepthWeights, mids: Mids = None) -> torch.Tensor:
        """E[latency] in ms under relaxed weights, differentiable w.r.t. them."""
        ...


def soft_latency(
    space: Space,
    base_ms: float | torch.Tensor,
    layer_ms: Callable[[int, int, str, int], float],
    op_weights: OpWeights,
    depth_weights: DepthWeights,
    mids: Mids = None,
) -> torch.Tensor:
    """E[LAT] for any model whose latency is a base plus one term per (stage, layer, op, mid)."""
    total = torch.as_tensor(base_ms, dtype=torch.float32)
    for i, shape in enumerate(space.stages):
        names = [space.op_names(i, j) for j in range(shape.max_depth)]
        per_layer = []
        for j in range(shape.max_depth):
            lat = []
            for k, op in enumerate(names[j]):
                mid = mids[i][j][k] if mids is not None else space.default_choice(op, space.layer_c_in(i, j)).mid
                lat.append(layer_ms(i, j, op, mid))
            per_layer.append((op_weights[i][j] * torch.tensor(lat, dtype=op_weights[i][j].dtype)).sum())
        cumulative = torch.cumsum(torch.stack(per_layer), 0)  # latency if the stage ended after layer j
        total = total + (depth_weights[i] * cumulative[shape.min_depth - 1:]).sum()
    return total


def one_hot_weights(space: Space, arch: Arch) -> tuple[list[list[torch.Tensor]], list[torch.Tensor], list]:
    """The relaxed weights (and mids) that put all mass on `arch`: for testing soft == predict."""
    op_w, depth_w, mids = [], [], []
    for i, shape in enumerate(space.stages):
        layers, layer_mids = [], []
        stage = arch.stages[i]
        for j in range(shape.max_depth):
            names = space.op_names(i, j)
            w = torch.zeros(len(names))
            m = [space.default_choice(op, space.layer_c_in(i, j)).mid for op in names]
            if j < len(stage):
                k = names.index(stage[j].op)
                w[k] = 1.0
                m[k] = stage[j].mid
            else:
                w[0] = 1.0  # beyond the depth: weight is irrelevant, depth_weights zero it out
            layers.append(w)
            layer_mids.append(m)
        d = torch.zeros(shape.max_depth - shape.min_depth + 1)
        d[len(stage) - shape.min_depth] = 1.0
        op_w.append(layers)
        depth_w.append(d)
        mids.append(layer_mids)
    return op_w, depth_w, mids


def uniform_latency(model: DifferentiableLatencyModel) -> float:
    """E[LAT] with every op and every depth equally likely, at the ops' default widths: the
    expected latency of an untrained supernet (or of UNAS's uniform initial distribution)."""
    space = model.space
    op_w = [[torch.full((len(space.op_names(i, j)),), 1.0 / len(space.op_names(i, j))) for j in range(shape.max_depth)]
            for i, shape in enumerate(space.stages)]
    n_depths = [shape.max_depth - shape.min_depth + 1 for shape in space.stages]
    depth_w = [torch.full((n,), 1.0 / n) for n in n_depths]
    with torch.no_grad():
        return float(model.soft(op_w, depth_w))
