"""One conformance suite every registered latency model passes: fitted on the session's measured
tiny space, it predicts finite positive latencies, repeats itself, saves and loads as JSON to the
same predictions, and, where differentiable, its soft latency equals its prediction at one-hot
weights with finite, non-zero gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hwnas.surrogates.base import one_hot_weights
from hwnas.surrogates.models import MODEL_NAMES, MODELS, fit_model, load_model, predict_all, save_model

TARGET = {"batch": 1, "backend": "ort-cpu", "fingerprint": None, "protocol": None}


def test_the_registry_lists_every_model_once_by_its_own_name():
    """A model is one class with `register_model` in the file a line of `MODELS` names."""
    assert len(MODEL_NAMES) == len(set(MODEL_NAMES)) >= 5 and list(MODEL_NAMES) == list(MODELS.modules)
    for name in MODEL_NAMES:
        cls = MODELS.get(name)
        assert cls.name == name and cls.__module__ == MODELS.modules[name]
        assert isinstance(cls.needs_lut, bool) and cls.min_train >= 0


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_predicts_finite_positive_latencies_deterministically(lab, name):
    archs = lab.space.random_archs(10, seed=5)
    a = predict_all(fit_model(name, lab.space, lab.data, lab.lut), archs)
    b = predict_all(fit_model(name, lab.space, lab.data, lab.lut), archs)
    assert np.isfinite(a).all() and (a > 0).all()
    assert np.array_equal(a, b)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_soft_equals_predict_at_one_hot_with_gradients(lab, name):
    model = fit_model(name, lab.space, lab.data, lab.lut)
    if not hasattr(model, "soft"):
        pytest.skip(f"{name} is not differentiable (searches use it only through a correction)")
    for arch in lab.space.random_archs(3, seed=11):
        op_w, depth_w, mids = one_hot_weights(lab.space, arch)
        leaves = [w for stage in op_w for w in stage] + list(depth_w)
        for w in leaves:
            w.requires_grad_(True)
        soft = model.soft(op_w, depth_w, mids)
        assert soft.item() == pytest.approx(model.predict(arch), rel=1e-5)
        soft.backward()
        assert sum(float(w.grad.abs().sum()) for w in leaves) > 0
        assert all(torch.isfinite(w.grad).all() for w in leaves)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_save_load_round_trip(lab, tmp_path, name):
    model = fit_model(name, lab.space, lab.data, lab.lut, target=TARGET)
    path = tmp_path / f"{name}.json"
    save_model(model, path)
    back = load_model(path, expect_space=lab.space, expect_backend="ort-cpu", expect_batch=1)
    archs = lab.space.random_archs(10, seed=21)
    assert np.array_equal(predict_all(back, archs), predict_all(model, archs))
    assert "pickle" not in path.read_text()[:200]
