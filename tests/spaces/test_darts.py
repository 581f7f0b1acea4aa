"""The darts space: the networks built, their counts, both JSON forms and their errors, export."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hwnas.errors import HwnasError
from hwnas.spaces import get_space
from hwnas.spaces.darts import REFERENCES, Cell, make_op, parse_arch


@pytest.fixture
def small():
    return get_space("darts", channels=4, cells=3, num_classes=10, resolution=16)


def torch_params(net: nn.Module) -> int:
    aux = sum(p.numel() for p in net.auxiliary.parameters()) if net.auxiliary is not None else 0
    return sum(p.numel() for p in net.parameters()) - aux


def hook_macs(net: nn.Module, shape) -> int:
    """Multiply-accumulates of every conv and linear layer, counted from the shapes PyTorch sees."""
    total = 0

    def hook(m, inp, out):
        nonlocal total
        if isinstance(m, nn.Conv2d):
            total += out.numel() // out.shape[0] * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
        elif isinstance(m, nn.Linear):
            total += m.in_features * m.out_features

    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        net(torch.zeros(shape))
    for h in handles:
        h.remove()
    return total


def test_reference_parameter_counts_at_darts_evaluation_size():
    space = get_space("darts", channels=36, cells=20, num_classes=10, resolution=32)
    v2 = space.build("darts-v2", auxiliary=True)
    assert space.params("darts-v2") == torch_params(v2) == 3_349_342  # DARTS reports 3.3M, without the auxiliary head
    assert space.params("darts-v1") == torch_params(space.build("darts-v1"))


@pytest.mark.parametrize("seed", range(4))
def test_counts_match_pytorch_on_random_child_graphs(small, seed):
    arch = small.sample(np.random.default_rng(seed))
    net = small.build(arch)
    assert small.params(arch) == torch_params(net)
    assert small.macs(arch) == hook_macs(net, small.input_shape(1))


def darts_cell_by_hand(cell: Cell, pairs, concat, s0, s1):
    """DARTS's model.py cell: pairs 2k and 2k+1 feed node k+2; each pair's op on its input state."""
    states = [cell.pre0(s0), cell.pre1(s1)]
    for k in range(4):
        (_, i1), (_, i2) = pairs[2 * k], pairs[2 * k + 1]
        h1 = cell.ops[f"{i1}_{k + 2}"](states[i1])
        h2 = cell.ops[f"{i2}_{k + 2}"](states[i2])
        states.append(h1 + h2)
    return torch.cat([states[i] for i in concat], dim=1)


def sep_conv_by_hand(op: nn.Sequential, x, stride: int, k: int):
    """ReLU-dw(k, stride)-1x1-BN, twice (the second at stride 1), with the op's own weights."""
    m = list(op)
    for base, s in ((0, stride), (4, 1)):
        dw, pw, bn = m[base + 1], m[base + 2], m[base + 3]
        x = F.conv2d(F.relu(x), dw.weight, stride=s, padding=k // 2, groups=x.shape[1])
        x = F.batch_norm(F.conv2d(x, pw.weight), bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
    return x


def test_cell_output_equals_a_hand_built_darts_cell():
    torch.manual_seed(0)
    v2 = parse_arch(REFERENCES["darts-v2"])
    for graph, pairs, reduction in ((v2.normal, REFERENCES["darts-v2"]["normal"], False),
                                    (v2.reduce, REFERENCES["darts-v2"]["reduce"], True)):
        cell = Cell(graph, 12, 16, 8, reduction=reduction, reduction_prev=False).eval()
        s0, s1 = torch.randn(2, 12, 8, 8), torch.randn(2, 16, 8, 8)
        with torch.no_grad():
            got = cell(s0, s1)
            want = darts_cell_by_hand(cell, pairs, [2, 3, 4, 5], s0, s1)
        assert got.shape == (2, 32, 4 if reduction else 8, 4 if reduction else 8)
        torch.testing.assert_close(got, want)
    op = make_op("sep_conv_5x5", 6, 2).eval()
    x = torch.randn(1, 6, 9, 9)
    with torch.no_grad():
        torch.testing.assert_close(op(x), sep_conv_by_hand(op, x, 2, 5))


def test_both_forms_give_one_architecture(small):
    a = small.validate(REFERENCES["darts-v2"])
    b = small.validate(a.to_json())
    assert a == b and a.hash == b.hash
    assert small.validate(a.genotype()) == a  # back to DARTS's notation (pairs ordered by input)
    graph = {"normal_edges": [["sep_conv_3x3", "none"], ["none", "none", "none"], ["none"] * 4, ["none"] * 5],
             "reduce_edges": [["none", "max_pool_3x3"], ["skip_connect", "none", "sep_conv_5x5"], ["none"] * 4, ["none"] * 5]}
    c = small.validate(graph)
    assert c.normal.concat == (2,) and c.reduce.concat == (2, 3)
    assert c.genotype() is None  # one-input nodes have no DARTS notation
    net = small.build(c)
    assert net(torch.randn(1, 3, 16, 16)).shape == (1, 10)
    assert small.params(c) == torch_params(net)


def test_edges_from_inactive_nodes_drop(small):
    graph = {"normal_edges": [["none", "none"], ["none", "skip_connect", "sep_conv_3x3"], ["none"] * 4, ["none"] * 5],
             "reduce_edges": [["max_pool_3x3", "none"], ["none"] * 3, ["none"] * 4, ["none"] * 5]}
    a = small.validate(graph)
    assert a.normal.active == (3,) and a.normal.inputs(1) == [(1, "skip_connect")]


def genotype_with(**change):
    doc = copy.deepcopy(REFERENCES["darts-v2"])
    doc.update(change)
    return doc


@pytest.mark.parametrize("doc, message", [
    (genotype_with(normal=[["sep_conv_7x7", 0]] + REFERENCES["darts-v2"]["normal"][1:]), "unknown op 'sep_conv_7x7'"),
    (genotype_with(normal=REFERENCES["darts-v2"]["normal"][:7] + [["skip_connect", 9]]), "out of range"),
    (genotype_with(normal=[["skip_connect", 2]] + REFERENCES["darts-v2"]["normal"][1:]), "cycle"),
    (genotype_with(normal_concat=[5]), "node 3 has no path to the output"),
    ({"normal_edges": [["none", "none"], ["none"] * 3, ["none"] * 4, ["none"] * 5],
      "reduce_edges": [["max_pool_3x3", "none"], ["none"] * 3, ["none"] * 4, ["none"] * 5]}, "no active node"),
    ({"normal": [], "normal_edges": []}, "not both"),
])
def test_bad_architectures_are_named(small, doc, message):
    with pytest.raises(HwnasError, match=message):
        small.validate(doc)


@pytest.mark.parametrize("options, message", [
    ({"cells": 1}, "impossible with 1 cells"),
    ({"cells": 5, "reductions": [3, 3]}, "impossible"),
    ({"cells": 5, "reductions": [1, 5]}, "impossible"),
    ({"channels": 5}, "even"),
    ({"resolution": 18}, "divisible by 4"),
])
def test_bad_space_options(options, message):
    with pytest.raises(HwnasError, match=message):
        get_space("darts", **options)


def test_unknown_space_names_a_close_match():
    with pytest.raises(HwnasError, match="did you mean 'darts'"):
        get_space("dart")


def test_export_has_parity_and_measures(small, tmp_path, fast_protocol):
    from hwnas.measure import Measurer
    from hwnas.backends import get_backend
    from hwnas.exporters.networks import export_network
    from hwnas.measure.networks import measure_arch
    from hwnas.store import Store

    arch = small.sample(np.random.default_rng(3))
    exported = export_network(small, arch, cache_dir=tmp_path)
    assert exported.max_abs_diff <= 1e-3 and not exported.cached
    assert export_network(small, arch, cache_dir=tmp_path).cached
    measurer = Measurer(get_backend("ort-cpu"), Store(tmp_path / "m.sqlite"), fast_protocol, cache_dir=tmp_path)
    first = measure_arch(measurer, small, arch)
    assert first.measurement.stats["median_ms"] > 0 and not first.cached
    assert measure_arch(measurer, small, arch.to_json()).cached
    measurer.store.close()
