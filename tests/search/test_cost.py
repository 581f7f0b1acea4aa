"""The latency costs: one name means one cost in every method's `--cost`."""

import pytest
import torch

from hwnas.search.cost import COSTS, relative_cost, relative_cost_slope
from hwnas.search.unas import PENALTIES, latency_penalty


def test_relative_cost_forms_and_slopes():
    ratio = torch.tensor([0.8, 1.2])
    assert relative_cost(ratio, "hinge").tolist() == pytest.approx([0.0, 0.2])
    assert relative_cost(ratio, "abs").tolist() == pytest.approx([0.2, 0.2])
    assert [relative_cost_slope(r, "hinge") for r in (0.8, 1.2)] == [0.0, 1.0]
    assert [relative_cost_slope(r, "abs") for r in (0.8, 1.2)] == [-1.0, 1.0]
    with pytest.raises(ValueError, match="unknown latency cost 'huber'"):
        relative_cost(ratio, "huber")


def test_unas_shares_the_relative_costs_and_adds_its_per_ms_hinge():
    assert set(COSTS) < set(PENALTIES) and "hinge-ms" in PENALTIES
    lat = torch.tensor([0.24, 0.36])
    for kind in COSTS:  # the same name is the same cost, times the weight
        assert latency_penalty(lat, 0.3, 2.0, kind).tolist() == pytest.approx((2.0 * relative_cost(lat / 0.3, kind)).tolist())
    assert latency_penalty(lat, 0.3, 2.0, "hinge-ms").tolist() == pytest.approx([0.0, 0.12])  # per ms over
