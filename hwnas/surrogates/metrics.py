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


def machine_scale(measured, predicted) -> float:
    """The one factor s that best maps predictions onto measurements (geometric mean of
    measured / predicted): a whole machine running faster or slower (drift) multiplies every
    latency alike, so metrics of s * predicted show the model's error with that removed."""
    y = np.asarray(measured, dtype=float)
    p = np.asarray(predicted, dtype=float)
    return float(np.exp(np.mean(np.log(y / p))))


SCALED = ("mape_pct", "within2_pct", "within5_pct", "bias_pct")  # tau and rho do not change with a scale


def latency_metrics_both(measured, predicted) -> dict[str, float]:
    """`latency_metrics`, then the scale-dependent ones again after removing `machine_scale`
    (`*_scaled`), and the scale itself."""
    out = latency_metrics(measured, predicted)
    s = machine_scale(measured, predicted)
    scaled = latency_metrics(measured, s * np.asarray(predicted, dtype=float))
    return {**out, "scale": s, **{f"{k}_scaled": scaled[k] for k in SCALED}}


CURVE_TOLERANCE = 0.05  # a curve's last point may sit this share above its best one before it counts as rising


def curve_rises(n_train, mape_pct) -> bool:
    """Whether a learning curve rises: the MAPE with every training subnet is worse than with
    fewer by more than CURVE_TOLERANCE of the better one. A model whose error grows with more
    data learns the measurements' noise, not latency."""
    n = np.asarray(n_train, dtype=float)
    m = np.asarray(mape_pct, dtype=float)
    if len(n) < 2:
        return False
    last = int(np.argmax(n))
    earlier = np.delete(m, last)
    return bool(m[last] > (1 + CURVE_TOLERANCE) * earlier.min())


def curve_sizes(n_train: int, sizes=LEARNING_CURVE) -> list[int]:
    """The learning-curve training sizes that fit in `n_train`, and n_train itself."""
    return sorted({s for s in sizes if s < n_train} | {n_train})
