"""The TF-NAS supernet: bi-sampling, sink-connecting depth, weight-shared elastic widths."""

import collections

import pytest
import torch

from hwnas.errors import HwnasError
from hwnas.search.supernet import (
    ElasticMBInvRes,
    Supernet,
    gumbel_softmax,
    other_op,
    sample_paths,
    straight_through,
)
from hwnas.spaces.mbconv import Space
from hwnas.spaces.mbconv_ops import MBInvRes


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


# --- weights shared across the ops of a layer; forward_mixed; skip ops (proxyless) -----------------


def _random_bn_and_alphas(net):
    """Non-trivial BN statistics and affine parameters, so equalities are not vacuous."""
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)


def test_shared_ops_use_one_weight_set_and_each_equals_its_standalone_block():
    torch.manual_seed(0)
    space = Space("tfnas", resolution=16, width_mult=0.25, num_classes=10)
    net = Supernet(space, share_ops=True)
    layer = net.stages[1][1]  # stride 1, residual
    shared = layer.shared
    # One conv weight set per layer: the ops hold only BNs and SE weights.
    own = {id(p) for op in layer.ops for p in op.parameters()}
    assert all(id(p) not in own for p in shared.parameters())
    assert shared.depthwise.weight.shape[-1] == 5
    assert shared.depthwise.weight.shape[0] == max(space.width_range(n, space.layer_c_in(1, 1))[1] for n in layer.names)
    n_params = sum(p.numel() for p in net.weight_parameters())
    assert n_params < 0.8 * sum(p.numel() for p in Supernet(space, share_ops=False).weight_parameters())
    _random_bn_and_alphas(net)
    net.eval()
    x = torch.randn(2, layer.ops[0].c_in, 8, 8)
    for k, name in enumerate(layer.names):
        op = layer.ops[k]
        lo, hi = space.width_range(name, op.c_in)
        op.set_width(lo + (hi - lo) // 3)
        block = op.to_module().eval()
        assert isinstance(block, MBInvRes) and block.depthwise[0].kernel_size == (space.ops[name].kernel,) * 2
        with torch.no_grad():
            torch.testing.assert_close(layer(x, k), block(x), rtol=1e-5, atol=1e-5)
    # A k3 op trains the centre of the shared k5 kernel, and only its kept channels.
    k3 = layer.names.index("k3_e3")
    op = layer.ops[k3]
    net.train()
    layer(x, k3).square().mean().backward()
    g = shared.depthwise.weight.grad
    assert g[:, :, 1:4, 1:4].abs().sum() > 0
    ring = g.clone()
    ring[:, :, 1:4, 1:4] = 0
    assert ring.abs().sum() == 0
    dropped = sorted(set(range(shared.max_mid)) - set(op.kept().tolist()))
    assert g[dropped].abs().sum() == 0 and g[op.kept()].abs().sum() > 0


def test_shared_e3_op_uses_the_top_ranked_shared_channels():
    torch.manual_seed(0)
    space = Space("tfnas", resolution=16, width_mult=0.25, num_classes=10)
    net = Supernet(space)
    layer = net.stages[2][0]
    with torch.no_grad():
        n = layer.shared.max_mid
        layer.shared.depthwise.weight.mul_(torch.linspace(0.1, 3.0, n)[torch.randperm(n)].view(-1, 1, 1, 1))
    for k, name in enumerate(layer.names):
        if space.ops[name].kernel == 5:
            layer.ops[k].set_width(space.width_range(name, layer.ops[k].c_in)[0])
    widths = {name: int(layer.ops[k].width) for k, name in enumerate(layer.names)}
    e3, e6 = layer.ops[layer.names.index("k5_e3")], layer.ops[layer.names.index("k5_e6")]
    assert widths["k5_e3"] < widths["k5_e6"]
    assert set(e3.kept().tolist()) <= set(e6.kept().tolist())  # same ranking: a prefix of it


@pytest.mark.parametrize("share_ops", [True, False])
def test_forward_mixed_at_one_hot_weights_equals_forward_along_the_path(space, share_ops):
    torch.manual_seed(0)
    net = Supernet(space, share_ops=share_ops)
    _random_bn_and_alphas(net)
    net.eval()
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        for b in net.beta:
            b.copy_(torch.randn(b.shape))
    depth_w = net.depth_weights()
    for _ in range(3):
        path = [[int(torch.randint(len(l.names), (1,), generator=gen)) for l in stage] for stage in net.stages]
        op_w = [[torch.nn.functional.one_hot(torch.tensor(k), len(l.names)).float() for k, l in zip(ks, stage)]
                for ks, stage in zip(path, net.stages)]
        with torch.no_grad():
            torch.testing.assert_close(net.forward_mixed(x, op_w, depth_w), net(x, path, depth_w), rtol=1e-5, atol=1e-5)


def test_forward_mixed_is_the_weighted_sum_and_differentiable_in_the_weights(space):
    torch.manual_seed(0)
    net = Supernet(space).eval()
    layer = net.stages[3][1]
    x = torch.randn(2, layer.ops[0].c_in, 4, 4)
    w = torch.softmax(torch.randn(len(layer.names)), 0).requires_grad_()
    with torch.no_grad():
        want = sum(float(w[k]) * layer(x, k) for k in range(len(layer.names)))
    got = layer.forward_mixed(x, w)
    torch.testing.assert_close(got.detach(), want, rtol=1e-5, atol=1e-5)
    op_w = [[torch.softmax(a.detach() + torch.randn(a.shape), 0).requires_grad_() for a in s] for s in net.alphas()]
    depth_w = [torch.softmax(torch.randn(b.shape), 0).requires_grad_() for b in net.beta]
    net.forward_mixed(torch.randn(2, 3, 16, 16), op_w, depth_w).square().sum().backward()
    assert all(w.grad is not None and w.grad.abs().sum() > 0 for s in op_w for w in s)
    assert all(d.grad is not None and d.grad.abs().sum() > 0 for d in depth_w if d.numel() > 1)
    with pytest.raises(HwnasError):
        net.forward_mixed(torch.randn(1, 3, 16, 16), op_w, depth_w[:-1])


@pytest.mark.parametrize("share_ops", [True, False])
def test_proxyless_supernet_with_skip_ops_runs_forward_mixed_and_derive(share_ops):
    torch.manual_seed(0)
    space = Space("proxyless", resolution=16, width_mult=0.35, num_classes=10)
    net = Supernet(space, share_ops=share_ops)
    _random_bn_and_alphas(net)
    net.eval()
    depth_w = [torch.tensor([1.0]) for _ in space.stages]
    assert [d.numel() for d in net.depth_weights()] == [1] * len(space.stages)
    skip_layers = [(i, j) for i, s in enumerate(net.stages) for j, l in enumerate(s) if "skip" in l.names]
    assert skip_layers and all(j > 0 for _, j in skip_layers)
    x = torch.randn(2, 3, 16, 16)
    # All-skip where possible: the skipped layers are the identity.
    path = [[l.names.index("skip") if "skip" in l.names else 0 for l in s] for s in net.stages]
    op_w = [[torch.nn.functional.one_hot(torch.tensor(k), len(l.names)).float() for k, l in zip(ks, s)]
            for ks, s in zip(path, net.stages)]
    with torch.no_grad():
        got = net(x, path, depth_w)
        torch.testing.assert_close(net.forward_mixed(x, op_w, depth_w), got, rtol=1e-5, atol=1e-5)
        h = net.fixed(net.stem(x))
        for s in net.stages:
            h = s[0](h, 0)  # only the first layer of each stage computes
        torch.testing.assert_close(got, net.head(h), rtol=1e-5, atol=1e-5)
    # Fixed widths: every op at its single width; skip has width 0.
    for i, stage in enumerate(net.mids()):
        for j, layer in enumerate(stage):
            for k, name in enumerate(space.op_names(i, j)):
                assert layer[k] == space.default_choice(name, space.layer_c_in(i, j)).mid
    with torch.no_grad():
        alphas = net.alphas()
        for i, j in skip_layers:
            alphas[i][j][net.stages[i][j].names.index("skip")] = 5.0
    arch = net.derive()
    assert all(arch.stages[i][j].op == "skip" for i, j in skip_layers)
    assert space.validate(arch.to_json()) == arch
    net.apply_arch(arch)  # widths of fixed-width ops and skips go back unchanged
    assert net.derive() == arch


def test_shared_supernet_learns_under_uniform_single_path_training():
    """The reason for share_ops: random paths reach well above chance within a few epochs
    (per-op weights stay near 10% here; benchmarks/supernet_trainability.py)."""
    import torch.nn.functional as F

    from hwnas.data import load_dataset

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        data = load_dataset("digits", seed=0, limit=640)
        torch.manual_seed(0)
        net = Supernet(Space("tfnas", resolution=16, width_mult=0.25, num_classes=10))
        opt = torch.optim.SGD(net.weight_parameters(), lr=0.05, momentum=0.9)
        gen = torch.Generator().manual_seed(0)
        depth_w = [d.detach() for d in net.depth_weights()]

        def path():
            return [[int(torch.randint(len(l.names), (1,), generator=gen)) for l in s] for s in net.stages]

        net.train()
        for _ in range(6):
            for x, y in data.batches("train", 32, 16, shuffle=True, generator=gen):
                if y.numel() < 2:  # BN needs two values per channel at 1x1
                    continue
                opt.zero_grad()
                F.cross_entropy(net(x, path(), depth_w), y).backward()
                torch.nn.utils.clip_grad_norm_(net.weight_parameters(), 5.0)
                opt.step()
        correct = n = 0
        with torch.no_grad():
            for x, y in data.batches("val", 64, 16):
                correct += int((net(x, path(), depth_w).argmax(1) == y).sum())
                n += y.numel()
    finally:
        torch.set_num_threads(threads)
    assert correct / n > 0.5, correct / n
