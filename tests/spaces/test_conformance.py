"""One conformance suite every registered search space passes (Optuna-style): a new space is a
new file plus a registry entry, and these tests run on it unchanged, at its `small_options`."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from hwnas.errors import HwnasError
from hwnas.exporters.networks import export_network
from hwnas.spaces import get_space, space_names


def small(name: str):
    return get_space(name, **get_space(name).small_options)


@pytest.fixture(params=space_names())
def small_space(request):
    return small(request.param)


def test_every_space_declares_a_small_instance(small_space):
    assert small_space.small_options, f"{small_space.name} has no small_options"
    assert small_space.config  # recorded with every measurement


def test_samples_validate_round_trip_and_hash_stably(small_space):
    archs = small_space.random_archs(4, seed=3)
    assert len({a.hash for a in archs}) > 1, "sampling should vary"
    for a in archs:
        again = small_space.validate(a.to_json())
        assert again.hash == a.hash and again.to_json() == a.to_json()
    assert [a.hash for a in small_space.random_archs(4, seed=3)] == [a.hash for a in archs]


def test_bad_architectures_are_refused_with_hwnas_error(small_space):
    for bad in (None, 3, "x", [], {"nonsense": True}):
        with pytest.raises(HwnasError):
            small_space.validate(bad)


def test_build_runs_at_the_input_shape_and_counts_match_pytorch(small_space):
    arch = small_space.sample(np.random.default_rng(0))
    net = small_space.build(arch).eval()
    shape = small_space.input_shape(2)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        out = net(torch.randn(*shape))
    assert out.shape[0] == 2 and torch.isfinite(out).all()
    torch_params = sum(p.numel() for p in net.parameters())
    assert small_space.params(arch) == pytest.approx(torch_params, rel=0.02)
    # MACs: convolutions and linear layers (FLOPs / 2 per sample), what the spaces count.
    torch_macs = counter.get_total_flops() / 2 / 2
    assert small_space.macs(arch) == pytest.approx(torch_macs, rel=0.05)


def test_export_matches_pytorch(small_space, tmp_path):
    arch = small_space.sample(np.random.default_rng(1))
    exported = export_network(small_space, arch, batch=1, cache_dir=tmp_path)
    assert exported.path.exists() and exported.max_abs_diff <= 1e-3


def test_the_parts_a_table_measures_add_up_to_the_network(small_space):
    """A space whose latency table is per part (`layers`: the MBConv spaces' layer specs) counts
    each part's parameters and MACs so that they add up to the whole network's."""
    if not hasattr(small_space, "layers"):
        pytest.skip(f"{small_space.name} has no per-layer specs (its table is of another shape)")
    for arch in small_space.random_archs(3, seed=5):
        specs = small_space.layers(arch, 1)
        assert specs and sum(s.params for s in specs) == small_space.params(arch)
        assert sum(s.macs for s in specs) == small_space.macs(arch)
