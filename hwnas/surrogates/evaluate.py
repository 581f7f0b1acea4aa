"""Fit latency models on training subnets and score them on a disjoint held-out set."""

from __future__ import annotations

import time
from typing import Any

import pandas as pd

from hwnas.surrogates import DEFAULT_MODELS
from hwnas.surrogates.data import Subnets, measured_subnets, split
from hwnas.surrogates.lut import LookupTable
from hwnas.surrogates.metrics import curve_sizes, latency_metrics
from hwnas.surrogates.models import MODELS, check_fit, fit_model, predict_all


def measured_target(measurer, batch: int) -> dict[str, Any]:
    """The target a model fitted on this measurer's subnets predicts for."""
    b = measurer.backend
    return {"batch": batch, "backend": b.name, "fingerprint": b.fingerprint(batch), "protocol": measurer.protocol.to_json()}


def evaluate_stored(measurer, space, lut: LookupTable, batch: int = 1, seed: int = 0,
                    sample_hint: str = "hwnas sample") -> tuple[pd.DataFrame | None, str]:
    """`evaluate` on the usable subnets the store holds for this target (`measured_subnets`): a
    fifth (at least 5) held out, the default models that the rest can fit. Returns the metrics
    (None where too few subnets fit any model but the table) and a line saying what was done."""
    data = measured_subnets(measurer, space, batch)
    n_test = max(5, len(data) // 5)
    fitted = [m for m in DEFAULT_MODELS if m != "lut" and MODELS.get(m).min_train <= len(data) - n_test]
    if not fitted:
        need = n_test + min(MODELS.get(m).min_train for m in DEFAULT_MODELS if m != "lut")
        return None, (f"{len(data)} usable measured subnets of {space}; scoring a latency model needs at least {need}: "
                      f"measure more with `{sample_hint}`")
    train, test = split(data, n_test, seed)
    df = evaluate(["lut", *fitted], train, test, lut, space, measured_target(measurer, batch), seed, True, sample_hint)
    return df, f"lut, {', '.join(fitted)} fitted on {len(train)} and scored on {n_test} held-out measured subnets"


def evaluate(models: list[str], train: Subnets, test: Subnets, lut: LookupTable | None, space,
             target: dict[str, Any] | None = None, seed: int = 0, curve: bool = True,
             sample_hint: str = "hwnas sample") -> pd.DataFrame:
    """One row per (model, training-set size): the learning curve over nested prefixes of the
    (already shuffled) training set, ending at all of it. lut is not fitted: one row, n_train 0."""
    rows = []
    for name in models:
        check_fit(name, len(train), lut is not None, sample_hint)
        sizes = [0] if name == "lut" else curve_sizes(len(train)) if curve else [len(train)]
        for n in sizes:
            if name != "lut" and n < MODELS.get(name).min_train:
                continue
            t0 = time.perf_counter()
            model = fit_model(name, space, train.take(range(n)), lut, target, seed, sample_hint)
            fit_s = time.perf_counter() - t0
            pred = predict_all(model, test.archs)
            rows.append({"model": name, "n_train": n, **latency_metrics(test.latency_ms, pred), "fit_s": fit_s})
    return pd.DataFrame(rows).rename(columns={"n": "n_test"})
