import math

import numpy as np
import pytest

from hwnas.surrogates.metrics import curve_sizes, latency_metrics


def test_metrics_on_hand_made_data():
    # binary-exact values: relative errors +3.125 %, -12.5 %, 0 %, +6.25 %
    m = latency_metrics([2.0, 4.0, 8.0, 16.0], [2.0625, 3.5, 8.0, 17.0])
    assert m["n"] == 4
    assert m["rmse_ms"] == pytest.approx(math.sqrt((0.0625**2 + 0.5**2 + 0 + 1.0) / 4))
    assert m["mape_pct"] == pytest.approx((3.125 + 12.5 + 0 + 6.25) / 4)
    assert m["within2_pct"] == 25.0
    assert m["within5_pct"] == 50.0
    assert m["within10_pct"] == 75.0
    assert m["max_err_ms"] == 1.0
    assert m["max_err_pct"] == 12.5
    assert m["bias_pct"] == pytest.approx((3.125 - 12.5 + 0 + 6.25) / 4)
    assert m["kendall_tau"] == pytest.approx(1.0)
    assert m["spearman_rho"] == pytest.approx(1.0)


def test_rank_correlations_with_one_swapped_pair():
    m = latency_metrics([1.0, 2.0, 3.0, 4.0], [1.0, 3.0, 2.0, 4.0])
    assert m["kendall_tau"] == pytest.approx((5 - 1) / 6)  # 5 concordant, 1 discordant pair
    assert m["spearman_rho"] == pytest.approx(1 - 6 * 2 / (4 * (16 - 1)))
    assert m["mape_pct"] == pytest.approx((0 + 50 + 100 / 3 + 0) / 4)


def test_metrics_refuse_mismatched_input():
    with pytest.raises(ValueError):
        latency_metrics([1.0, 2.0], [1.0])
    with pytest.raises(ValueError):
        latency_metrics(np.ones(1), np.ones(1))


def test_learning_curve_sizes_are_capped():
    assert curve_sizes(130) == [25, 50, 100, 130]
    assert curve_sizes(400) == [25, 50, 100, 200, 400]
    assert curve_sizes(500) == [25, 50, 100, 200, 400, 500]
    assert curve_sizes(20) == [20]

