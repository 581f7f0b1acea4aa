"""The TF-NAS supernet: bi-sampling, sink-connecting depth, weight-shared elastic widths."""

import collections

import pytest
import torch

from hwnas.modules import MBInvRes
from hwnas.search.supernet import (
    ElasticMBInvRes, Supernet, gumbel_softmax, other_op, sample_paths, straight_through,
)
from hwnas.space import Space


@pytest.fixture
def space():
    return Space("tfnas", resolution=16, width_mult=0.25, num_classes=10)


def test_bi_sampling_draws_two_different_paths_second_uniform_over_the_others(space):
    torch.manual_seed(0)
    net = Supernet(space)
    with torch.no_grad():
        for a in net.alpha:
            a.copy_(torch.randn(a.shape) * 2)
    gen = torch.Generator().manual_seed(0)
    alphas = [[a.detach() for a in stage] for stage in net.alphas()]
    n = 4000
    firsts, seconds = collections.Counter(), collections.Counter()
    for _ in range(n):
        soft, first, second = sample_paths(alphas, 1.0, gen)
        for i, stage in enumerate(first):
            for j, k in enumerate(stage):
                assert second[i][j] != k  # two different paths in every layer
                assert abs(float(soft[i][j].sum()) - 1) < 1e-5 and int(soft[i][j].argmax()) == k
        firsts[(first[0][0])] += 1
        seconds[(first[0][0], second[0][0])] += 1
    # The Gumbel path follows softmax(alpha) (Gumbel-max trick): frequencies within 4 sigma.
    p = torch.softmax(alphas[0][0], 0)
    for k in range(len(p)):
        sd = (n * p[k] * (1 - p[k])) ** 0.5
        assert abs(firsts[k] - n * p[k]) < 4 * sd + 1
    # The second path is uniform among the K-1 other ops, whatever the first was.
    K = len(p)
    for k in range(K):
        if firsts[k] < 200:
            continue
        for r in range(K):
            if r == k:
                continue
            expected, sd = firsts[k] / (K - 1), (firsts[k] * (1 / (K - 1)) * (1 - 1 / (K - 1))) ** 0.5
            assert abs(seconds[(k, r)] - expected) < 4 * sd + 1


def test_other_op_and_straight_through():
    gen = torch.Generator().manual_seed(1)
    assert {other_op(2, 4, gen) for _ in range(200)} == {0, 1, 3}
    logits = torch.tensor([0.5, -1.0, 2.0], requires_grad=True)
    soft, k = gumbel_softmax(logits, 0.7, gen)
    s = straight_through(soft, k)
    assert float(s.detach()) == pytest.approx(1.0)  # the hard sample: the path is not rescaled
    s.backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0  # alpha still learns


def test_sink_output_is_the_softmax_beta_weighted_sum_of_layer_outputs(space):
    torch.manual_seed(0)
    net = Supernet(space).eval()
    with torch.no_grad():
        for b in net.beta:
            b.copy_(torch.randn(b.shape))
    x = torch.randn(2, 3, 16, 16)
    path = [[(i + j) % len(layer.names) for j, layer in enumerate(stage)] for i, stage in enumerate(net.stages)]
    depth_w = net.depth_weights()
    with torch.no_grad():
        got = net(x, path, depth_w)
        # By hand: run every layer, then weight the outputs after layers min_depth-1 .. max_depth-1.
        h = net.fixed(net.stem(x))
        for i, (stage, shape) in enumerate(zip(net.stages, space.stages)):
            outs = []
            for j, layer in enumerate(stage):
                h = layer.ops[path[i][j]](h)
                outs.append(h)
            v = torch.softmax(net.beta[i], 0)
            assert len(v) == shape.max_depth - shape.min_depth + 1
            h = sum(float(v[d]) * outs[shape.min_depth - 1 + d] for d in range(len(v)))
        want = net.head(h)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert any(s.max_depth > s.min_depth for s in space.stages)  # the sum really mixes depths


def test_narrowed_op_keeps_top_l1_channels_and_equals_the_standalone_block():
    torch.manual_seed(0)
    op = ElasticMBInvRes(c_in=8, max_mid=64, width=48, se=8, c_out=16, kernel=5, stride=2, act="swish")
    with torch.no_grad():  # distinct importances so the ranking is well defined
        op.depthwise[0].weight.mul_(torch.linspace(0.1, 2.0, 64).view(-1, 1, 1, 1))
    op.set_width(20)
    imp = op.importance()
    assert set(op.kept().tolist()) == set(torch.topk(imp, 20).indices.tolist())
    op.eval()
    block = op.to_module().eval()
    assert isinstance(block, MBInvRes)
    x = torch.randn(3, 8, 12, 12)
    with torch.no_grad():
        torch.testing.assert_close(op(x), block(x))


def test_dropped_channels_keep_their_weights_and_come_back_when_widening():
    torch.manual_seed(0)
    op = ElasticMBInvRes(c_in=8, max_mid=32, width=32, se=0, c_out=8, kernel=3, stride=1, act="relu")
    with torch.no_grad():
        op.depthwise[0].weight.mul_(torch.linspace(2.0, 0.1, 32).view(-1, 1, 1, 1))
    op.set_width(12)
    dropped = sorted(set(range(32)) - set(op.kept().tolist()))
    before = op.expand[0].weight[dropped].clone(), op.depthwise[0].weight[dropped].clone()
    opt = torch.optim.SGD(op.parameters(), lr=0.1)
    op.train()
    for _ in range(3):
        opt.zero_grad()
        op(torch.randn(4, 8, 6, 6)).square().mean().backward()
        opt.step()
    torch.testing.assert_close(op.expand[0].weight[dropped], before[0], rtol=0, atol=0)
    torch.testing.assert_close(op.depthwise[0].weight[dropped], before[1], rtol=0, atol=0)
    op.set_width(32)
    assert sorted(op.kept().tolist()) == list(range(32))


def test_apply_arch_then_derive_round_trips(space):
    torch.manual_seed(0)
    net = Supernet(space)
    arch = space.random_archs(1, seed=3)[0]
    net.apply_arch(arch)
    with torch.no_grad():  # make the architecture's ops and depths the strongest
        alphas = net.alphas()
        for i, stage in enumerate(arch.stages):
            net.beta[i].zero_()
            net.beta[i][len(stage) - space.stages[i].min_depth] = 1.0
            for j, c in enumerate(stage):
                alphas[i][j].zero_()
                alphas[i][j][space.op_names(i, j).index(c.op)] = 1.0
    assert net.derive() == arch
    mids = net.mids()
    for i, stage in enumerate(arch.stages):
        for j, c in enumerate(stage):
            assert mids[i][j][space.op_names(i, j).index(c.op)] == c.mid
