"""Error of predicted against measured latency. Percent errors are relative to the measurement."""

from __future__ import annotations

import numpy as np
from scipy import stats

LEARNING_CURVE = (25, 50, 100, 200, 400)


def latency_metrics(measured, predicted) -> dict[str, float]:
    y = np.asarray(measured, dtype=float)
    p = np.asarray(predicted, dtype=float)
    if y.shape != p.shape or y.ndim != 1 or len(y) < 2:
        raise ValueError("need two 1-d arrays of equal length >= 2")
    err = p - y
    rel = 100.0 * err / y
    abs_rel = np.abs(rel)
    worst = int(np.argmax(np.abs(err)))
    return {
        "n": len(y),
        "rmse_ms": float(np.sqrt(np.mean(err**2))),
        "mape_pct": float(abs_rel.mean()),
        "within2_pct": float(100.0 * np.mean(abs_rel <= 2.0)),
        "within5_pct": float(100.0 * np.mean(abs_rel <= 5.0)),
        "within10_pct": float(100.0 * np.mean(abs_rel <= 10.0)),
        "kendall_tau": float(stats.kendalltau(y, p).statistic),
        "spearman_rho": float(stats.spearmanr(y, p).statistic),
        "max_err_ms": float(abs(err[worst])),
        "max_err_pct": float(abs_rel.max()),
        "bias_pct": float(rel.mean()),  # > 0: the model over-predicts on average
    }


def curve_sizes(n_train: int, sizes=LEARNING_CURVE) -> list[int]:
    """The learning-curve training sizes that fit in `n_train`, and n_train itself."""
    return sorted({s for s in sizes if s < n_train} | {n_train})
