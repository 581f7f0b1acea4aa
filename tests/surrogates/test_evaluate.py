"""Scoring latency models on held-out measured subnets."""

from __future__ import annotations

import pytest

from hwnas.surrogates import DEFAULT_MODELS
from hwnas.surrogates.evaluate import evaluate_stored
from hwnas.surrogates.models import MODELS


def test_evaluate_stored_scores_the_models_the_usable_subnets_fit(lab):
    """What the demo writes for the report (which fits nothing): the table and each default model
    that the store's usable subnets can train, on a held-out fifth."""
    n = len(lab.data)
    df, note = evaluate_stored(lab.measurer, lab.space, lab.lut)
    n_test = max(5, n // 5)
    expect = ["lut", *(m for m in DEFAULT_MODELS if m != "lut" and MODELS.get(m).min_train <= n - n_test)]
    assert list(dict.fromkeys(df["model"])) == expect and (df["n_test"] == n_test).all()
    assert df.groupby("model")["n_train"].max().drop("lut").eq(n - n_test).all()
    assert f"fitted on {n - n_test} and scored on {n_test} held-out" in note


def _rows(*rows):
    import pandas as pd

    cols = ("model", "n_train", "mape_pct", "mape_pct_scaled")
    return pd.DataFrame([dict(zip(cols, r)) for r in rows])


def test_a_model_beats_the_table_only_by_more_than_the_floor():
    from hwnas.surrogates.evaluate import REPEAT, judge

    df = judge(_rows((REPEAT, 0, 3.0, 1.0), ("lut", 0, 4.0, 3.0), ("gbt", 25, 3.0, 2.5), ("gbt", 50, 2.5, 1.5),
                     ("mlp", 25, 3.0, 2.5), ("mlp", 50, 2.9, 2.4), ("linear", 25, 9.0, 9.0), ("linear", 50, 12.0, 2.0)))
    full = df.groupby("model").tail(1).set_index("model")
    assert full.loc["gbt", "beats_lut"] is True  # 3.0 - 1.5 > 1.0
    assert full.loc["mlp", "beats_lut"] is False  # better, but by 0.6, less than the floor
    assert full.loc["linear", "refused"] and full.loc["linear", "beats_lut"] is False  # its curve rises
    assert not df.loc[df.model != "linear", "refused"].any()
    assert df.loc[df.model.isin(["lut", REPEAT]), "beats_lut"].isna().all()


def test_without_a_floor_no_model_is_called_better():
    from hwnas.surrogates.evaluate import judge

    df = judge(_rows(("lut", 0, 4.0, 3.0), ("gbt", 25, 3.0, 2.5), ("gbt", 50, 1.0, 0.5)))
    assert df["beats_lut"].isna().all() and not df["refused"].any()


def test_evaluate_scores_the_repeat_and_judges(lab, capsys):
    import numpy as np

    from hwnas.surrogates.data import split
    from hwnas.surrogates.evaluate import REPEAT, evaluate

    train, test = split(lab.data, 5, 0)
    again = test.latency_ms * 1.1  # a whole machine 10 % slower the second time: a floor of 0 once scaled
    again[0] = np.nan  # a flagged repeat
    df = evaluate(["lut", "linear"], train, test, lab.lut, lab.space, test_again=again)
    rep = df[df.model == REPEAT].iloc[0]
    assert rep.n_test == 4 and rep.mape_pct == pytest.approx(10) and rep.mape_pct_scaled == pytest.approx(0, abs=1e-9)
    assert "1 of 5 repeated held-out measurements are flagged" in capsys.readouterr().err
    assert {"scale", "within2_pct_scaled", "refused", "beats_lut"} <= set(df.columns)
