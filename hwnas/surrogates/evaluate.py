"""Fit latency models on training subnets and score them on a disjoint held-out set."""

from __future__ import annotations

import time
from typing import Any

import pandas as pd

from hwnas.surrogates.data import Subnets
from hwnas.surrogates.lut import LookupTable
from hwnas.surrogates.metrics import curve_sizes, latency_metrics
from hwnas.surrogates.models import MODELS, check_fit, fit_model, predict_all


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
            if name != "lut" and n < MODELS[name].min_train:
                continue
            t0 = time.perf_counter()
            model = fit_model(name, space, train.take(range(n)), lut, target, seed, sample_hint)
            fit_s = time.perf_counter() - t0
            pred = predict_all(model, test.archs)
            rows.append({"model": name, "n_train": n, **latency_metrics(test.latency_ms, pred), "fit_s": fit_s})
    return pd.DataFrame(rows).rename(columns={"n": "n_test"})
