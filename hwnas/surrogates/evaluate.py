"""Fit latency models on training subnets and score them on a disjoint held-out set."""

from __future__ import annotations

import sys
import time
from typing import Any

import numpy as np
import pandas as pd

from hwnas.errors import HwnasError
from hwnas.surrogates import DEFAULT_MODELS
from hwnas.surrogates.data import Subnets, measured_subnets, split
from hwnas.surrogates.lut import LookupTable
from hwnas.surrogates.metrics import curve_rises, curve_sizes, latency_metrics_both
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


REPEAT = "repeat"  # the row of the truth measured again: the floor no model can be shown below


def evaluate(models: list[str], train: Subnets, test: Subnets, lut: LookupTable | None, space,
             target: dict[str, Any] | None = None, seed: int = 0, curve: bool = True,
             sample_hint: str = "hwnas sample", test_again: np.ndarray | None = None) -> pd.DataFrame:
    """One row per (model, training-set size): the learning curve over nested prefixes of the
    (already shuffled) training set, ending at all of it. lut is not fitted: one row, n_train 0.
    Every metric comes raw and, as `*_scaled`, after removing one machine-wide scale.

    test_again: the held-out subnets measured a second time, independently. Their agreement with
    the first measurement is the row `repeat` (the floor), and a fitted model `beats_lut` only
    where its scaled MAPE is below the table's by more than the floor's. A fitted model whose
    learning curve rises (`curve_rises`) is `refused`, with a line on stderr saying so."""
    rows = []
    if test_again is not None:
        again = np.asarray(test_again, dtype=float)
        if again.shape != test.latency_ms.shape:
            raise HwnasError(f"the repeated truth has {again.size} latencies for {len(test)} held-out subnets")
        ok = np.isfinite(again)  # NaN: that repeat was flagged, so it says nothing of the truth's repeatability
        if (~ok).any():
            print(f"hwnas: {int((~ok).sum())} of {len(again)} repeated held-out measurements are flagged and left "
                  "out of the floor", file=sys.stderr)
        if ok.sum() >= 2:
            rows.append({"model": REPEAT, "n_train": 0, **latency_metrics_both(test.latency_ms[ok], again[ok]),
                         "fit_s": 0.0})
    for name in models:
        check_fit(name, len(train), lut is not None, sample_hint)
        sizes = [0] if name == "lut" else curve_sizes(len(train)) if curve else [len(train)]
        for n in sizes:
            if name != "lut" and n < MODELS.get(name).min_train:
                continue
            t0 = time.perf_counter()
            try:
                model = fit_model(name, space, train.take(range(n)), lut, target, seed, sample_hint)
                fit_s = time.perf_counter() - t0
                pred = predict_all(model, test.archs)
            except HwnasError as e:  # a fit that predicts no latency: that point of the curve is missing, said so
                print(f"hwnas: left out of the evaluation: {e}", file=sys.stderr)
                continue
            rows.append({"model": name, "n_train": n, **latency_metrics_both(test.latency_ms, pred), "fit_s": fit_s})
    df = pd.DataFrame(rows).rename(columns={"n": "n_test"})
    return judge(df)


def judge(df: pd.DataFrame) -> pd.DataFrame:
    """Add `refused` (a fitted model whose learning curve rises) and `beats_lut` (at its full
    training set, better than the table by more than the repeat floor; empty without a table or
    a floor) to evaluate's rows."""
    df = df.copy()
    df["refused"] = False
    df["beats_lut"] = None
    for name, g in df.groupby("model", sort=False):
        if name in ("lut", REPEAT):
            continue
        if curve_rises(g["n_train"], g["mape_pct"]):
            df.loc[g.index, "refused"] = True
            first, last = g.loc[g["n_train"].idxmin()], g.loc[g["n_train"].idxmax()]
            print(f"hwnas: refused {name}: its learning curve rises (MAPE {first.mape_pct:.3g}% from "
                  f"{first.n_train} training subnets, {last.mape_pct:.3g}% from {last.n_train}): it learns the "
                  "measurements' noise, not latency", file=sys.stderr)
    by = df.set_index("model")
    if "lut" in by.index and REPEAT in by.index:
        lut_mape, floor = float(by.loc["lut", "mape_pct_scaled"]), float(by.loc[REPEAT, "mape_pct_scaled"])
        for name, g in df.groupby("model", sort=False):
            if name in ("lut", REPEAT):
                continue
            full = g["n_train"].idxmax()
            df.loc[full, "beats_lut"] = bool(not df.loc[full, "refused"] and
                                             lut_mape - df.loc[full, "mape_pct_scaled"] > floor)
    return df
