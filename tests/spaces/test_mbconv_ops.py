import torch

from hwnas.spaces.mbconv import Space
from hwnas.spaces.mbconv_ops import MBInvRes, build, build_layer


def test_build_output_shapes_and_parameter_counts_match_the_specs(tiny_space):
    for arch in tiny_space.random_archs(5, seed=1):
        net = build(tiny_space, arch)
        assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)
        assert sum(p.numel() for p in net.parameters()) == tiny_space.params(arch)


def test_each_layer_produces_the_shape_the_next_spec_expects():
    s = Space("proxyless", resolution=64, width_mult=0.5, num_classes=7)
    specs = s.layers(s.random_archs(1, seed=2)[0])
    x = torch.randn(1, 3, 64, 64)
    for spec in specs[:-1]:
        assert tuple(x.shape) == spec.input_shape
        x = build_layer(spec)(x)
        assert tuple(x.shape[2:]) == spec.out_hw


def test_residual_only_when_shapes_match():
    assert MBInvRes(16, 48, 0, 16, 3, 1, "relu").residual
    assert not MBInvRes(16, 48, 0, 24, 3, 1, "relu").residual
    assert not MBInvRes(16, 48, 0, 16, 3, 2, "relu").residual
