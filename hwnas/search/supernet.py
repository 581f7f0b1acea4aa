"""The TF-NAS supernet: mixed ops with elastic, weight-shared widths and sink-connecting depth.

Each searchable layer holds every candidate MBInvRes op of the space at its FULL width
(mid = e_max * C_in). An op's current width keeps the channels ranked first by the L1 norm
of their depthwise weights (TF-NAS Appendix C); the dropped channels keep their weights, so
they come back when the op widens again. One op runs per layer and forward (a sampled path);
a stage's output is the softmax(beta)-weighted sum of the outputs after each layer that may
end it (sink-connecting, TF-NAS Eq. 5).

Architecture parameters follow `hwnas.surrogates.base`: alpha[i][j] is over
`space.op_names(i, j)` in that order and beta[i] over depths min_depth_i .. max_depth_i, so
the relaxed weights go straight into a latency model's `soft`.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from hwnas.errors import HwnasError
from hwnas.modules import Head, MBInvRes, activation, conv_bn
from hwnas.space import SKIP, Arch, LayerChoice, Space


def _bn(bn: nn.BatchNorm2d, x: torch.Tensor, idx: torch.Tensor | None) -> torch.Tensor:
    """BatchNorm over the kept channels only; their running statistics are written back."""
    if idx is None:
        return bn(x)
    weight, bias = bn.weight[idx], bn.bias[idx]
    if not bn.training:
        return F.batch_norm(x, bn.running_mean[idx], bn.running_var[idx], weight, bias, False, 0.0, bn.eps)
    mean, var = bn.running_mean[idx], bn.running_var[idx]  # copies: batch_norm updates them in place
    y = F.batch_norm(x, mean, var, weight, bias, True, bn.momentum, bn.eps)
    with torch.no_grad():
        bn.running_mean[idx] = mean
        bn.running_var[idx] = var
    return y


class ElasticMBInvRes(nn.Module):
    """An MBInvRes block at full width whose forward uses only its `width` most important mid channels."""

    def __init__(self, c_in: int, max_mid: int, width: int, se: int, c_out: int, kernel: int, stride: int, act: str):
        super().__init__()
        if max_mid == c_in:
            # Standalone blocks drop the expansion conv at mid == C_in; elastic widths could not.
            raise HwnasError(f"elastic op needs a mid width range above C_in={c_in}")
        self.c_in, self.max_mid, self.se_channels, self.c_out = c_in, max_mid, se, c_out
        self.kernel, self.stride, self.act_name = kernel, stride, act
        self.expand = conv_bn(c_in, max_mid, 1, act=act)
        self.depthwise = conv_bn(max_mid, max_mid, kernel, stride, groups=max_mid, act=act)
        if se:
            self.se_reduce = nn.Conv2d(max_mid, se, 1)
            self.se_act = activation(act)
            self.se_expand = nn.Conv2d(se, max_mid, 1)
        self.project = conv_bn(max_mid, c_out, 1)
        self.residual = stride == 1 and c_in == c_out
        # Channel ranking (most important first) and current width live in the state dict,
        # so a checkpoint restores exactly which channels each op uses.
        self.register_buffer("order", torch.arange(max_mid))
        self.register_buffer("width", torch.tensor(int(width)))
        self.set_width(width)

    def importance(self) -> torch.Tensor:
        """L1 norm of each mid channel's depthwise filter."""
        return self.depthwise[0].weight.detach().abs().sum(dim=(1, 2, 3))

    def set_width(self, width: int) -> None:
        """Keep the `width` channels of highest importance (ties: lower index first)."""
        if not 1 <= width <= self.max_mid:
            raise HwnasError(f"width {width} is outside [1, {self.max_mid}]")
        imp = self.importance()
        # Stable descending sort so equal importances (e.g. at init) keep a fixed order.
        order = torch.sort(-imp, stable=True).indices
        with torch.no_grad():
            self.order.copy_(order)
            self.width.fill_(int(width))

    def kept(self) -> torch.Tensor:
        return self.order[: int(self.width)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idx = self.kept()
        m = idx.numel()
        conv, bn, act = self.expand
        h = act(_bn(bn, F.conv2d(x, conv.weight[idx]), idx))
        conv, bn, act = self.depthwise
        h = F.conv2d(h, conv.weight[idx], None, self.stride, self.kernel // 2, 1, m)
        h = act(_bn(bn, h, idx))
        if self.se_channels:
            s = h.mean((2, 3), keepdim=True)
            s = self.se_act(F.conv2d(s, self.se_reduce.weight[:, idx], self.se_reduce.bias))
            h = h * torch.sigmoid(F.conv2d(s, self.se_expand.weight[idx], self.se_expand.bias[idx]))
        conv, bn = self.project
        y = bn(F.conv2d(h, conv.weight[:, idx]))
        return x + y if self.residual else y

    def to_module(self) -> MBInvRes:
        """A standalone MBInvRes at the current width holding the kept channels' weights."""
        idx = self.kept()
        block = MBInvRes(self.c_in, idx.numel(), self.se_channels, self.c_out, self.kernel, self.stride, self.act_name)
        with torch.no_grad():
            for src, dst, dim in ((self.expand, block.expand, 0), (self.depthwise, block.depthwise, 0)):
                dst[0].weight.copy_(src[0].weight.index_select(dim, idx))
                for name in ("weight", "bias", "running_mean", "running_var"):
                    getattr(dst[1], name).copy_(getattr(src[1], name)[idx])
            if self.se_channels:
                block.se.reduce.weight.copy_(self.se_reduce.weight[:, idx])
                block.se.reduce.bias.copy_(self.se_reduce.bias)
                block.se.expand.weight.copy_(self.se_expand.weight[idx])
                block.se.expand.bias.copy_(self.se_expand.bias[idx])
            block.project[0].weight.copy_(self.project[0].weight[:, idx])
            block.project[1].load_state_dict(self.project[1].state_dict())
        return block


class MixedLayer(nn.Module):
    """The candidate ops of one searchable layer; forward runs the one op of the sampled path."""

    def __init__(self, space: Space, stage: int, layer: int):
        super().__init__()
        shape = space.stages[stage]
        c_in = space.layer_c_in(stage, layer)
        stride = shape.stride if layer == 0 else 1
        self.names = space.op_names(stage, layer)
        ops = []
        for name in self.names:
            if name == SKIP:
                raise HwnasError(f"space {space.name} has skip ops; the TF-NAS supernet searches depth by sink-connecting")
            o = space.ops[name]
            lo, hi = space.width_range(name, c_in)
            default = space.default_choice(name, c_in)
            ops.append(ElasticMBInvRes(c_in, hi, default.mid, default.se, shape.c_out, o.kernel, stride, shape.act))
        self.ops = nn.ModuleList(ops)

    def forward(self, x: torch.Tensor, k: int) -> torch.Tensor:
        return self.ops[k](x)


class Supernet(nn.Module):
    """Stem, fixed block, the mixed searchable stages and the head of `space` (at training resolution)."""

    def __init__(self, space: Space):
        super().__init__()
        self.space = space
        specs = space.layers(space.default_arch())
        stem, fixed = specs[0], specs[1]
        self.stem = conv_bn(stem.c_in, stem.c_out, stem.kernel, stem.stride, act=stem.act)
        self.fixed = MBInvRes(fixed.c_in, fixed.mid, fixed.se, fixed.c_out, fixed.kernel, fixed.stride, fixed.act)
        self.stages = nn.ModuleList(
            nn.ModuleList(MixedLayer(space, i, j) for j in range(shape.max_depth)) for i, shape in enumerate(space.stages)
        )
        self.head = Head(space.stages[-1].c_out, space.head_channels, space.num_classes, space.definition.head_act)
        # Zeros: uniform distributions over ops and depths at the start of the search.
        self.alpha = nn.ParameterList(
            nn.Parameter(torch.zeros(len(layer.names))) for stage in self.stages for layer in stage
        )
        self.beta = nn.ParameterList(
            nn.Parameter(torch.zeros(s.max_depth - s.min_depth + 1)) for s in space.stages
        )
        self._alpha_index = [(i, j) for i, stage in enumerate(self.stages) for j in range(len(stage))]

    # --- parameters -------------------------------------------------------------------------

    def arch_parameters(self) -> list[nn.Parameter]:
        return list(self.alpha) + list(self.beta)

    def weight_parameters(self) -> list[nn.Parameter]:
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def alphas(self) -> list[list[torch.Tensor]]:
        """alpha as [stage][layer] -> logits over op_names(stage, layer)."""
        out: list[list[torch.Tensor]] = [[] for _ in self.stages]
        for (i, _), a in zip(self._alpha_index, self.alpha):
            out[i].append(a)
        return out

    def depth_weights(self) -> list[torch.Tensor]:
        return [torch.softmax(b, 0) for b in self.beta]

    def mids(self) -> list[list[list[int]]]:
        """Current width of every op of every layer, in op_names order (the latency models' `mids`)."""
        return [[[int(op.width) for op in layer.ops] for layer in stage] for stage in self.stages]

    # --- forward --------------------------------------------------------------------------------

    def forward(
        self,
        x: torch.Tensor,
        path: Sequence[Sequence[int]],
        depth_weights: Sequence[torch.Tensor],
        op_scales: Sequence[Sequence[torch.Tensor]] | None = None,
    ) -> torch.Tensor:
        """Logits along one path: op path[i][j] in every layer; op_scales (value 1, straight-through)
        carry the gradient to alpha; depth_weights[i] weight the stage's sink outputs."""
        x = self.fixed(self.stem(x))
        for i, (stage, shape) in enumerate(zip(self.stages, self.space.stages)):
            sink = 0
            for j, layer in enumerate(stage):
                x = layer(x, path[i][j])
                if op_scales is not None:
                    x = x * op_scales[i][j]
                if j >= shape.min_depth - 1:
                    sink = sink + depth_weights[i][j - shape.min_depth + 1] * x
            x = sink
        return self.head(x)

    # --- discrete architectures --------------------------------------------------------------

    def derive(self) -> Arch:
        """The seed network: the strongest op of each layer, the strongest depth of each stage,
        each op at its current width."""
        stages = []
        alphas = self.alphas()
        for i, (stage, shape) in enumerate(zip(self.stages, self.space.stages)):
            depth = shape.min_depth + int(torch.argmax(self.beta[i].detach()))
            layers = []
            for j in range(depth):
                k = int(torch.argmax(alphas[i][j].detach()))
                op = stage[j].ops[k]
                default = self.space.default_choice(stage[j].names[k], self.space.layer_c_in(i, j))
                layers.append(LayerChoice(stage[j].names[k], int(op.width), default.se))
            stages.append(tuple(layers))
        return self.space.validate(Arch(self.space.name, self.space.width_mult, tuple(stages)))

    def apply_arch(self, arch: Arch) -> None:
        """Put an architecture's widths back: each chosen op keeps its top-L1 channels."""
        arch = self.space.validate(arch)
        for i, stage in enumerate(arch.stages):
            for j, choice in enumerate(stage):
                layer = self.stages[i][j]
                layer.ops[layer.names.index(choice.op)].set_width(choice.mid)


# --- sampling -----------------------------------------------------------------------------------


def gumbel_softmax(logits: torch.Tensor, tau: float, generator: torch.Generator) -> tuple[torch.Tensor, int]:
    """Relaxed sample softmax((alpha + g) / tau), g ~ Gumbel(0, 1) (TF-NAS Eq. 3), and its argmax."""
    g = -torch.empty_like(logits, dtype=torch.float32).exponential_(generator=generator).log()
    soft = torch.softmax((logits + g) / tau, 0)
    return soft, int(torch.argmax(soft.detach()))


def straight_through(soft: torch.Tensor, k: int) -> torch.Tensor:
    """Value 1 (the hard one-hot at k), gradient of soft[k]: one path runs, alpha still learns."""
    return 1.0 - soft[k].detach() + soft[k]


def other_op(k: int, n: int, generator: torch.Generator) -> int:
    """An op drawn uniformly among the n - 1 ops other than k (the bi-sampling second path)."""
    if n < 2:
        return k
    r = int(torch.randint(n - 1, (1,), generator=generator))
    return r if r < k else r + 1


def sample_paths(alphas: Sequence[Sequence[torch.Tensor]], tau: float, generator: torch.Generator):
    """Bi-sampling: per layer a Gumbel-softmax sample (soft weights and argmax path) and a second
    path uniform among the other ops. Returns (soft, first, second), each [stage][layer]."""
    soft, first, second = [], [], []
    for stage in alphas:
        s_soft, s_first, s_second = [], [], []
        for a in stage:
            w, k = gumbel_softmax(a, tau, generator)
            s_soft.append(w)
            s_first.append(k)
            s_second.append(other_op(k, a.numel(), generator))
        soft.append(s_soft)
        first.append(s_first)
        second.append(s_second)
    return soft, first, second


def entropy(logits: Sequence[torch.Tensor]) -> float:
    """Mean entropy (nats) of softmax(logits) over the given distributions."""
    values = []
    for a in logits:
        p = torch.softmax(a.detach(), 0)
        values.append(float(-(p * torch.log(p.clamp_min(1e-12))).sum()))
    return sum(values) / len(values) if values else math.nan
