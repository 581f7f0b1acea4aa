"""Scoring latency models on held-out measured subnets."""

from __future__ import annotations

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
