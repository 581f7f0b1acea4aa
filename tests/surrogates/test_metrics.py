import math

import numpy as np
import pytest

from hwnas.surrogates.metrics import curve_rises, curve_sizes, latency_metrics, latency_metrics_both, machine_scale


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



def test_a_machine_wide_scale_is_removed_and_nothing_else():
    y = np.array([1.0, 2.0, 4.0, 8.0])
    shape = np.array([1.02, 0.98, 1.0, 1.0])  # the model's own error: +2 %, -2 %, 0, 0
    m = latency_metrics_both(y, 1.07 * shape * y)  # ...on a machine that ran 7 % faster than the model thinks
    assert m["mape_pct"] > 5
    assert m["scale"] == pytest.approx(1 / 1.07 / np.exp(np.log(shape).mean()))
    assert m["mape_pct_scaled"] == pytest.approx(latency_metrics(y, shape / np.exp(np.log(shape).mean()) * y)["mape_pct"])
    assert m["mape_pct_scaled"] < 2.1
    assert m["kendall_tau"] == latency_metrics(y, shape * y)["kendall_tau"]
    assert machine_scale(y, y) == 1.0


def test_a_curve_that_rises_with_more_data_is_caught():
    assert curve_rises([25, 50, 100, 200], [6.7, 7.5, 8.8, 9.7])  # the MLP the issue saw
    assert curve_rises([200, 25, 50], [9.7, 6.7, 7.0])  # order does not matter: the largest n is judged
    assert not curve_rises([25, 50, 100, 200], [21.0, 9.0, 6.0, 5.1])
    assert not curve_rises([25, 50, 100], [3.0, 2.9, 3.0])  # within the tolerance of its best
    assert not curve_rises([200], [9.7])
