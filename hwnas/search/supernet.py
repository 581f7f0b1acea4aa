"""The TF-NAS supernet: mixed ops with elastic widths and sink-connecting depth.

Each searchable layer holds every candidate MBInvRes op of the space at its FULL width
(mid = e_max * C_in). An op's current width keeps the channels ranked first by the L1 norm
of their depthwise weights (TF-NAS Appendix C); the dropped channels keep their weights, so
they come back when the op widens again. One op runs per layer and forward (a sampled path);
a stage's output is the softmax(beta)-weighted sum of the outputs after each layer that may
end it (sink-connecting, TF-NAS Eq. 5).

Weights across the ops of a layer (`share_ops`, default True). TF-NAS (and SPOS) give every
op of a layer its own weights. With that, single-path training on a small data set does not
learn: on digits (tfnas space, width 0.5, 32 px, ~18 steps per epoch) uniformly sampled paths
stay near chance after 35 epochs, because each op sees 1/8 of the steps and the channels a
layer hands on mean something different for each op of the layer before it (see
benchmarks/supernet_trainability.py for the figures). With `share_ops=True` (a departure
from TF-NAS, in the way of Once-for-All) the ops of a layer share ONE set of convolution
weights at the layer's largest width and kernel: the expansion 1x1, a depthwise kernel of
the largest size (a k3 op uses its centre 3x3) and the projection 1x1; an op's width keeps
the top-ranked shared channels (so an e3 op uses a subset of the channels an e6 op uses).
Each op keeps its own BatchNorms (switchable BN: the statistics differ between kernels and
widths) and its own squeeze-excite weights (their sizes differ between ops). `share_ops=
False` is the per-op weights of the paper.

Architecture parameters follow `hwnas.surrogates.base`: alpha[i][j] is over
`space.op_names(i, j)` in that order and beta[i] over depths min_depth_i .. max_depth_i, so
the relaxed weights go straight into a latency model's `soft`. Spaces with skip ops
(proxyless) get an identity op for "skip"; their fixed-width ops are the same modules at a
single width.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from hwnas.errors import HwnasError
from hwnas.spaces.mbconv import SKIP, Arch, LayerChoice, Space
from hwnas.spaces.mbconv_ops import Head, MBInvRes, activation, conv_bn


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


def _centre(weight: torch.Tensor, kernel: int) -> torch.Tensor:
    """The centre kernel x kernel window of a depthwise weight [C, 1, K, K]."""
    off = (weight.shape[-1] - kernel) // 2
    return weight[:, :, off:off + kernel, off:off + kernel] if off else weight


class _ElasticBase(nn.Module):
    """Channel ranking, width and the block computation shared by both op kinds."""

    c_in: int
    max_mid: int
    se_channels: int
    c_out: int
    kernel: int
    stride: int
    act_name: str
    residual: bool

    def _init_width(self, ranked_channels: int, width: int) -> None:
        # Channel ranking (most important first) and current width live in the state dict,
        # so a checkpoint restores exactly which channels each op uses.
        self.register_buffer("order", torch.arange(ranked_channels))
        self.register_buffer("width", torch.tensor(int(width)))
        self.set_width(width)

    # the weights the op computes with: (expand, depthwise [kernel x kernel], project) convs,
    # and the three BatchNorms
    def _weights(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def _bns(self) -> tuple[nn.BatchNorm2d, nn.BatchNorm2d, nn.BatchNorm2d]:
        raise NotImplementedError

    def importance(self) -> torch.Tensor:
        """L1 norm of each mid channel's depthwise filter (at this op's kernel)."""
        return self._weights()[1].detach().abs().sum(dim=(1, 2, 3))

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
        w_exp, w_dw, w_proj = self._weights()
        bn_exp, bn_dw, bn_proj = self._bns()
        h = self.act(_bn(bn_exp, F.conv2d(x, w_exp[idx]), idx))
        h = F.conv2d(h, w_dw[idx], None, self.stride, self.kernel // 2, 1, m)
        h = self.act(_bn(bn_dw, h, idx))
        if self.se_channels:
            s = h.mean((2, 3), keepdim=True)
            s = self.se_act(F.conv2d(s, self.se_reduce.weight[:, idx], self.se_reduce.bias))
            h = h * torch.sigmoid(F.conv2d(s, self.se_expand.weight[idx], self.se_expand.bias[idx]))
        y = bn_proj(F.conv2d(h, w_proj[:, idx]))
        return x + y if self.residual else y

    def to_module(self) -> MBInvRes:
        """A standalone MBInvRes at the current width holding the kept channels' weights."""
        idx = self.kept()
        block = MBInvRes(self.c_in, idx.numel(), self.se_channels, self.c_out, self.kernel, self.stride, self.act_name)
        w_exp, w_dw, w_proj = self._weights()
        bn_exp, bn_dw, bn_proj = self._bns()
        with torch.no_grad():
            for w, bn, dst in ((w_exp, bn_exp, block.expand), (w_dw, bn_dw, block.depthwise)):
                dst[0].weight.copy_(w.index_select(0, idx))
                for name in ("weight", "bias", "running_mean", "running_var"):
                    getattr(dst[1], name).copy_(getattr(bn, name)[idx])
            if self.se_channels:
                block.se.reduce.weight.copy_(self.se_reduce.weight[:, idx])
                block.se.reduce.bias.copy_(self.se_reduce.bias)
                block.se.expand.weight.copy_(self.se_expand.weight[idx])
                block.se.expand.bias.copy_(self.se_expand.bias[idx])
            block.project[0].weight.copy_(w_proj[:, idx])
            block.project[1].load_state_dict(bn_proj.state_dict())
        return block

    def _init_se(self, channels: int, se: int, act: str) -> None:
        if se:
            self.se_reduce = nn.Conv2d(channels, se, 1)
            self.se_act = activation(act)
            self.se_expand = nn.Conv2d(se, channels, 1)


class ElasticMBInvRes(_ElasticBase):
    """An MBInvRes block at full width, with its own weights, whose forward uses only its
    `width` most important mid channels (TF-NAS's per-op weights)."""

    def __init__(self, c_in: int, max_mid: int, width: int, se: int, c_out: int, kernel: int, stride: int, act: str):
        super().__init__()
        if max_mid == c_in:
            # Standalone blocks drop the expansion conv at mid == C_in; elastic widths could not.
            raise HwnasError(f"elastic op needs a mid width range above C_in={c_in}")
        self.c_in, self.max_mid, self.se_channels, self.c_out = c_in, max_mid, se, c_out
        self.kernel, self.stride, self.act_name = kernel, stride, act
        self.expand = conv_bn(c_in, max_mid, 1)
        self.depthwise = conv_bn(max_mid, max_mid, kernel, stride, groups=max_mid)
        self.act = activation(act)
        self._init_se(max_mid, se, act)
        self.project = conv_bn(max_mid, c_out, 1)
        self.residual = stride == 1 and c_in == c_out
        self._init_width(max_mid, width)

    def _weights(self):
        return self.expand[0].weight, self.depthwise[0].weight, self.project[0].weight

    def _bns(self):
        return self.expand[1], self.depthwise[1], self.project[1]


class SharedConvs(nn.Module):
    """One layer's convolution weights shared by all its ops: expansion to the largest mid
    width, depthwise at the largest kernel, projection."""

    def __init__(self, c_in: int, max_mid: int, kernel: int, c_out: int):
        super().__init__()
        self.c_in, self.max_mid, self.kernel, self.c_out = c_in, max_mid, kernel, c_out
        self.expand = nn.Conv2d(c_in, max_mid, 1, bias=False)
        self.depthwise = nn.Conv2d(max_mid, max_mid, kernel, 1, kernel // 2, groups=max_mid, bias=False)
        self.project = nn.Conv2d(max_mid, c_out, 1, bias=False)


class SharedMBInvRes(_ElasticBase):
    """An elastic MBInvRes op computing with its layer's `SharedConvs` (the centre `kernel`
    window of the depthwise weights, the top-ranked `width` of the shared channels), with
    its own BatchNorms and squeeze-excite. Its upper width bound is `max_mid` (<= the
    shared width); the shared weights are held by the layer, not registered here."""

    def __init__(self, shared: SharedConvs, max_mid: int, width: int, se: int, kernel: int, stride: int, act: str):
        super().__init__()
        if max_mid > shared.max_mid or kernel > shared.kernel or kernel % 2 != shared.kernel % 2:
            raise HwnasError(f"op (mid {max_mid}, k{kernel}) does not fit the layer's shared weights "
                             f"(mid {shared.max_mid}, k{shared.kernel})")
        if max_mid == shared.c_in:
            raise HwnasError(f"elastic op needs a mid width range above C_in={shared.c_in}")
        self.__dict__["_shared"] = shared  # not a submodule: the layer owns (and saves) it once
        self.c_in, self.max_mid, self.se_channels, self.c_out = shared.c_in, max_mid, se, shared.c_out
        self.kernel, self.stride, self.act_name = kernel, stride, act
        n = shared.max_mid
        self.bn_expand, self.bn_depthwise, self.bn_project = nn.BatchNorm2d(n), nn.BatchNorm2d(n), nn.BatchNorm2d(shared.c_out)
        self.act = activation(act)
        self._init_se(n, se, act)
        self.residual = stride == 1 and shared.c_in == shared.c_out
        self._init_width(n, width)

    def _weights(self):
        s = self._shared
        return s.expand.weight, _centre(s.depthwise.weight, self.kernel), s.project.weight

    def _bns(self):
        return self.bn_expand, self.bn_depthwise, self.bn_project


class SkipOp(nn.Module):
    """The "skip" op: the identity (width 0, nothing to rank)."""

    width = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def set_width(self, width: int) -> None:
        if width != 0:
            raise HwnasError(f"a skip op has width 0, not {width}")


class MixedLayer(nn.Module):
    """The candidate ops of one searchable layer; forward runs the one op of the sampled path."""

    def __init__(self, space: Space, stage: int, layer: int, share_ops: bool = True):
        super().__init__()
        shape = space.stages[stage]
        c_in = space.layer_c_in(stage, layer)
        stride = shape.stride if layer == 0 else 1
        self.names = space.op_names(stage, layer)
        convs = [n for n in self.names if n != SKIP]
        self.share_ops = share_ops
        if share_ops:
            max_mid = max(space.width_range(n, c_in)[1] for n in convs)
            kernels = {space.ops[n].kernel for n in convs}
            if len({k % 2 for k in kernels}) > 1:
                raise HwnasError(f"space {space.name} mixes odd and even kernels; ops cannot share a depthwise kernel")
            self.shared = SharedConvs(c_in, max_mid, max(kernels), shape.c_out)
        ops: list[nn.Module] = []
        for name in self.names:
            if name == SKIP:
                if stride != 1 or c_in != shape.c_out:
                    raise HwnasError(f"skip op at stage {stage} layer {layer} changes the shape")
                ops.append(SkipOp())
                continue
            o = space.ops[name]
            _, hi = space.width_range(name, c_in)
            default = space.default_choice(name, c_in)
            if share_ops:
                ops.append(SharedMBInvRes(self.shared, hi, default.mid, default.se, o.kernel, stride, shape.act))
            else:
                ops.append(ElasticMBInvRes(c_in, hi, default.mid, default.se, shape.c_out, o.kernel, stride, shape.act))
        self.ops = nn.ModuleList(ops)

    def forward(self, x: torch.Tensor, k: int) -> torch.Tensor:
        return self.ops[k](x)

    def forward_mixed(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Sum over all ops of weights[k] * op_k(x)."""
        if weights.shape != (len(self.ops),):
            raise HwnasError(f"op weights of shape {tuple(weights.shape)} for a layer of {len(self.ops)} ops")
        out = 0
        for k, op in enumerate(self.ops):
            out = out + weights[k] * op(x)
        return out


class Supernet(nn.Module):
    """Stem, fixed block, the mixed searchable stages and the head of `space` (at training resolution).

    share_ops: the ops of a layer share their convolution weights (see the module docstring).
    """

    def __init__(self, space: Space, share_ops: bool = True):
        super().__init__()
        self.space = space
        self.share_ops = bool(share_ops)
        specs = space.layers(space.default_arch())
        stem, fixed = specs[0], specs[1]
        self.stem = conv_bn(stem.c_in, stem.c_out, stem.kernel, stem.stride, act=stem.act)
        self.fixed = MBInvRes(fixed.c_in, fixed.mid, fixed.se, fixed.c_out, fixed.kernel, fixed.stride, fixed.act)
        self.stages = nn.ModuleList(
            nn.ModuleList(MixedLayer(space, i, j, self.share_ops) for j in range(shape.max_depth))
            for i, shape in enumerate(space.stages)
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
        """Current width of every op of every layer, in op_names order (the latency models' `mids`;
        0 for skip)."""
        return [[[int(op.width) for op in layer.ops] for layer in stage] for stage in self.stages]

    # --- forward --------------------------------------------------------------------------------

    def _check_depths(self, depth_weights: Sequence[torch.Tensor]) -> None:
        if len(depth_weights) != len(self.stages):
            raise HwnasError(f"{len(depth_weights)} depth weight vectors for {len(self.stages)} stages")
        for i, shape in enumerate(self.space.stages):
            n = shape.max_depth - shape.min_depth + 1
            if depth_weights[i].numel() != n:
                raise HwnasError(f"stage {i} takes {n} depth weights, got {depth_weights[i].numel()}")

    def forward(
        self,
        x: torch.Tensor,
        path: Sequence[Sequence[int]],
        depth_weights: Sequence[torch.Tensor],
        op_scales: Sequence[Sequence[torch.Tensor]] | None = None,
    ) -> torch.Tensor:
        """Logits along one path: op path[i][j] in every layer; op_scales (value 1, straight-through)
        carry the gradient to alpha; depth_weights[i] weight the stage's sink outputs."""
        self._check_depths(depth_weights)
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

    def forward_mixed(
        self,
        x: torch.Tensor,
        op_weights: Sequence[Sequence[torch.Tensor]],
        depth_weights: Sequence[torch.Tensor],
    ) -> torch.Tensor:
        """Logits of the relaxed network: each layer's output is sum_k op_weights[i][j][k] * op_k(x)
        (every op runs; weights over space.op_names(i, j), gradients flow to them), each stage's
        output the depth_weights-weighted sum of its sink outputs, as in `forward`. At one-hot
        weights this equals `forward` along that path."""
        self._check_depths(depth_weights)
        x = self.fixed(self.stem(x))
        for i, (stage, shape) in enumerate(zip(self.stages, self.space.stages)):
            sink = 0
            for j, layer in enumerate(stage):
                x = layer.forward_mixed(x, op_weights[i][j])
                if j >= shape.min_depth - 1:
                    sink = sink + depth_weights[i][j - shape.min_depth + 1] * x
            x = sink
        return self.head(x)

    # --- discrete architectures --------------------------------------------------------------

    def derive(self, full: bool = False) -> Arch:
        """The seed network: the strongest op of each layer, the strongest depth of each stage
        (full: every stage at its maximum depth), each op at its current width."""
        stages = []
        alphas = self.alphas()
        for i, (stage, shape) in enumerate(zip(self.stages, self.space.stages)):
            depth = shape.max_depth if full else shape.min_depth + int(torch.argmax(self.beta[i].detach()))
            layers = []
            for j in range(depth):
                k = int(torch.argmax(alphas[i][j].detach()))
                name = stage[j].names[k]
                default = self.space.default_choice(name, self.space.layer_c_in(i, j))
                layers.append(LayerChoice(name, int(stage[j].ops[k].width), default.se))
            stages.append(tuple(layers))
        return self.space.validate(Arch(self.space.name, self.space.width_mult, tuple(stages)))

    def depth_probs(self) -> list[list[float]]:
        """softmax(beta) per stage, over depths min_depth .. max_depth."""
        return [w.detach().tolist() for w in self.depth_weights()]

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
