"""PyTorch modules for layer specs and whole architectures.

`build(space, arch)` is assembled from `build_layer(spec)` over `space.layers(arch)`, so
the network that is measured end to end is exactly the sum of the layers a lookup table
measures one by one.
"""

from __future__ import annotations

import torch
from torch import nn

from hwnas.spaces.mbconv import Arch, LayerSpec, Space


def activation(name: str) -> nn.Module:
    return {"relu": nn.ReLU, "relu6": nn.ReLU6, "swish": nn.SiLU}[name]()


def conv_bn(c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1, act: str | None = None) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(c_out),
    ]
    if act:
        layers.append(activation(act))
    return nn.Sequential(*layers)


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, se: int, act: str):
        super().__init__()
        self.reduce = nn.Conv2d(channels, se, 1)
        self.act = activation(act)
        self.expand = nn.Conv2d(se, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * torch.sigmoid(self.expand(self.act(self.reduce(s))))


class MBInvRes(nn.Module):
    """MobileNetV2's inverted residual block, SE on the depthwise output (TF-NAS, Appendix A)."""

    def __init__(self, c_in: int, mid: int, se: int, c_out: int, kernel: int, stride: int, act: str):
        super().__init__()
        self.expand = conv_bn(c_in, mid, 1, act=act) if mid != c_in else nn.Identity()
        self.depthwise = conv_bn(mid, mid, kernel, stride, groups=mid, act=act)
        self.se = SqueezeExcite(mid, se, act) if se else nn.Identity()
        self.project = conv_bn(mid, c_out, 1)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.se(self.depthwise(self.expand(x))))
        return x + y if self.residual else y


class Head(nn.Module):
    def __init__(self, c_in: int, channels: int, num_classes: int, act: str):
        super().__init__()
        self.conv = conv_bn(c_in, channels, 1, act=act)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.conv(x).mean((2, 3)))


def build_layer(spec: LayerSpec) -> nn.Module:
    if spec.kind == "stem":
        return conv_bn(spec.c_in, spec.c_out, spec.kernel, spec.stride, act=spec.act)
    if spec.kind == "head":
        return Head(spec.c_in, spec.c_out, spec.num_classes, spec.act)
    if spec.kind == "mbinvres":
        return MBInvRes(spec.c_in, spec.mid, spec.se, spec.c_out, spec.kernel, spec.stride, spec.act)
    raise ValueError(f"unknown layer kind {spec.kind!r}")


def build(space: Space, arch: Arch | dict) -> nn.Sequential:
    """The standalone network of `arch`, in eval mode, with PyTorch's default initialisation."""
    specs = space.layers(arch)
    net = nn.Sequential(*(build_layer(s) for s in specs))
    return net.eval()
