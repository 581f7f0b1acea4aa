"""Latency models fitted on measured subnets, behind `LatencyModel`; saved as JSON, never pickled.

- lut: the lookup table itself (no fitting).
- linear: ridge regression over `LinearDesign` (UNAS's surrogate, width entering linearly).
- lut+linear: the table scaled and corrected by a ridge model of its residuals.
- mlp and gbt (`hwnas.surrogates.learned`): learned corrections of the table.
- transfer (`hwnas.surrogates.transfer`): another target's table mapped to this one by a few subnets.

lut, linear, lut+linear and transfer are differentiable (`soft`). A new model is one file whose class is
registered with `register_model`, and a line in `MODELS` naming that file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from hwnas.errors import HwnasError
from hwnas.jsonutil import write_json
from hwnas.registry import Registry
from hwnas.spaces.mbconv import Arch, Space, closest
from hwnas.surrogates.base import DepthWeights, Mids, OpWeights, soft_latency
from hwnas.surrogates.data import Subnets
from hwnas.surrogates.features import LinearDesign
from hwnas.surrogates.lut import FORMAT as LUT_FORMAT
from hwnas.surrogates.lut import LookupTable, check_config, read_doc, space_from_config
from hwnas.validate import MAX_LATENCY_MS

FORMAT = "hwnas-latency-model"
FORMAT_VERSION = 1
# Latency models by name, in the order reports list them, and the module whose import registers
# each. A model is one class registered with `register_model`; what it needs (a lookup table, a
# number of training subnets) are its attributes.
MODELS: Registry[type] = Registry("latency model", {
    "lut": "hwnas.surrogates.models", "linear": "hwnas.surrogates.models", "lut+linear": "hwnas.surrogates.models",
    "mlp": "hwnas.surrogates.learned", "gbt": "hwnas.surrogates.learned", "transfer": "hwnas.surrogates.transfer"})


def register_model(cls):
    MODELS.add(cls.name, cls)
    return cls


RIDGE_ALPHAS = tuple(np.logspace(-4, 3, 15))  # chosen per fit by leave-one-out (RidgeCV)


def sample_weight(train: Subnets) -> np.ndarray | None:
    """The weights every fitted model fits `train` with, scaled to mean 1 over it (so a ridge
    penalty means the same at any weighting); None when all are alike, which fits exactly as
    an unweighted fit does."""
    w = train.weights
    return None if np.unique(w).size <= 1 else w / w.mean()


def _ridge(X: np.ndarray, y: np.ndarray, weight: np.ndarray | None) -> tuple[np.ndarray, float, float]:
    from sklearn.linear_model import RidgeCV

    r = RidgeCV(alphas=RIDGE_ALPHAS, fit_intercept=True).fit(X, y, sample_weight=weight)
    return r.coef_.astype(float), float(r.intercept_), float(r.alpha_)


@register_model
class TableModel:
    """The lookup table itself as a latency model: nothing to fit."""

    name = "lut"
    needs_lut = True
    min_train = 0  # fewest training subnets it is fitted on; fewer gives a fit that means nothing

    @classmethod
    def fit(cls, space, train, lut=None, target=None, seed: int = 0):
        return lut


class FittedModel:
    """What every fitted model shares: its space, the target its data came from, and a JSON form."""

    name = ""
    needs_lut = True
    min_train = 20

    def __init__(self, space: Space, target: dict[str, Any], n_train: int, lut: LookupTable | None):
        self.space, self.target, self.n_train, self.lut = space, target, n_train, lut

    def predict(self, arch: Arch | dict) -> float:
        arch = self.space.validate(arch)
        ms = float(self.predict_many([arch])[0])
        if not 0 < ms <= MAX_LATENCY_MS:  # a fit can extrapolate below zero: never pass that on as a latency
            raise HwnasError(f"the {self.name} latency model predicts {ms!r} ms for architecture {arch.hash}: "
                             "not a latency; refit it on more subnets or use the lookup table")
        return ms

    def predict_many(self, archs: list[Arch]) -> np.ndarray:
        raise NotImplementedError

    def params_json(self) -> dict[str, Any]:
        raise NotImplementedError

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT, "version": FORMAT_VERSION, "model": self.name, "space": self.space.config,
            **self.target, "n_train": self.n_train, "lut": self.lut.to_json() if self.lut else None,
            "params": self.params_json(),
        }


@register_model
class LinearModel(FittedModel):
    name = "linear"
    needs_lut = False
    min_train = 10

    def __init__(self, space, target, n_train, lut, coef, intercept, alpha):
        super().__init__(space, target, n_train, lut)
        self.design = LinearDesign(space)
        self.coef, self.intercept, self.alpha = np.asarray(coef, dtype=float), float(intercept), float(alpha)
        if len(self.coef) != len(self.design):
            raise HwnasError(f"{self.name} model has {len(self.coef)} coefficients; the space needs {len(self.design)}")

    @classmethod
    def fit(cls, space: Space, train: Subnets, lut=None, target=None, seed: int = 0) -> "LinearModel":
        coef, intercept, alpha = _ridge(LinearDesign(space).matrix(train.archs), train.latency_ms, sample_weight(train))
        return cls(space, target or {}, len(train), None, coef, intercept, alpha)

    def predict_many(self, archs):
        return self.intercept + self.design.matrix(archs) @ self.coef

    def layer_ms(self, i: int, j: int, op: str, mid: int) -> float:
        return self.design.layer_ms(self.coef, i, j, op, mid)

    def soft(self, op_weights: OpWeights, depth_weights: DepthWeights, mids: Mids = None) -> torch.Tensor:
        return soft_latency(self.space, self.design.base(self.coef, self.intercept), self.layer_ms, op_weights,
                            depth_weights, mids)

    def params_json(self):
        return {"coef": self.coef.tolist(), "intercept": self.intercept, "alpha": self.alpha}

    @classmethod
    def from_params(cls, space, target, n_train, lut, p):
        return cls(space, target, n_train, lut, p["coef"], p["intercept"], p["alpha"])


@register_model
class LutLinearModel(LinearModel):
    """latency = (1 + scale) * LUT + linear(arch): a global scale for what every layer shares
    (each table entry is measured as its own model) and per-op corrections on top."""

    name = "lut+linear"
    needs_lut = True

    def __init__(self, space, target, n_train, lut, coef, intercept, alpha, scale):
        super().__init__(space, target, n_train, lut, coef, intercept, alpha)
        self.scale = float(scale)

    @classmethod
    def fit(cls, space, train, lut=None, target=None, seed=0):
        lut_ms = np.array([lut.predict(a) for a in train.archs])
        X = np.column_stack([LinearDesign(space).matrix(train.archs), lut_ms])
        coef, intercept, alpha = _ridge(X, train.latency_ms - lut_ms, sample_weight(train))
        return cls(space, target or {}, len(train), lut, coef[:-1], intercept, alpha, coef[-1])

    def predict_many(self, archs):
        lut_ms = np.array([self.lut.predict(a) for a in archs])
        return (1 + self.scale) * lut_ms + super().predict_many(archs)

    def layer_ms(self, i, j, op, mid):
        return (1 + self.scale) * self.lut.op_ms(i, j, op, mid) + super().layer_ms(i, j, op, mid)

    def soft(self, op_weights, depth_weights, mids=None):
        base = (1 + self.scale) * self.lut.base_ms + self.design.base(self.coef, self.intercept)
        return soft_latency(self.space, base, self.layer_ms, op_weights, depth_weights, mids)

    def params_json(self):
        return {**super().params_json(), "scale": self.scale}

    @classmethod
    def from_params(cls, space, target, n_train, lut, p):
        return cls(space, target, n_train, lut, p["coef"], p["intercept"], p["alpha"], p["scale"])


MODEL_NAMES = tuple(MODELS.names())


def parse_models(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    for n in names:
        if n not in MODEL_NAMES:
            raise HwnasError(f"unknown model {n!r}{closest(n, MODEL_NAMES)}; known: {', '.join(MODEL_NAMES)}")
    if not names:
        raise HwnasError(f"give at least one model: {', '.join(MODEL_NAMES)}")
    return list(dict.fromkeys(names))


def check_fit(name: str, n_train: int, has_lut: bool, sample_hint: str = "hwnas sample") -> None:
    """Refuse in one line a model that cannot be fitted: unknown, no table, or too few subnets."""
    if name not in MODEL_NAMES:
        parse_models(name)
    if MODELS.get(name).needs_lut and not has_lut:
        raise HwnasError(f"model {name} needs a lookup table: build one with `hwnas lut build`")
    if n_train < MODELS.get(name).min_train:
        raise HwnasError(f"model {name} needs at least {MODELS.get(name).min_train} measured training subnets, got {n_train}: "
                         f"measure more with `{sample_hint}`")


def fit_model(name: str, space: Space, train: Subnets, lut: LookupTable | None = None,
              target: dict[str, Any] | None = None, seed: int = 0, sample_hint: str = "hwnas sample"):
    """Fit model `name` on measured subnets; the lookup table is the model for "lut". A fit that
    predicts no latency (NaN, zero, negative) for architectures of its space is refused here, as
    `load_model` would refuse its file."""
    check_fit(name, len(train), lut is not None, sample_hint)
    model = MODELS.get(name).fit(space, train, lut=lut, target=target, seed=seed)
    _check_predictions(model, f"the {name} model fitted on {len(train)} subnets")
    return model


def predict_all(model, archs: list[Arch]) -> np.ndarray:
    """Latencies of many architectures; one that is no latency raises `predict`'s line for it."""
    if hasattr(model, "predict_many"):
        ms = np.asarray(model.predict_many(archs), dtype=float)
        for i in np.flatnonzero(~((ms > 0) & (ms <= MAX_LATENCY_MS)))[:1]:
            model.predict(archs[i])
        return ms
    return np.array([model.predict(a) for a in archs], dtype=float)


def save_model(model, path: str | Path) -> None:
    doc = model.to_json()
    try:
        write_json(path, doc)
    except OSError as e:
        raise HwnasError(f"cannot write model {path}: {e.strerror or e}") from None


def load_model(path: str | Path, expect_space: Space | None = None, expect_backend: str | None = None,
               expect_batch: int | None = None, expect_fingerprint: dict[str, Any] | None = None):
    """A model file written by `save_model`; a lookup table file loads as the lut model.
    expect_fingerprint: refuse a file measured on another target (a model fitted on a CSV
    records no target, and is the user's word)."""
    doc = read_doc(path, "latency model", (FORMAT, LUT_FORMAT), FORMAT_VERSION)
    what = "lookup table" if doc["format"] == LUT_FORMAT else "latency model"
    if doc.get("fingerprint") is None and doc["format"] == FORMAT:
        expect_fingerprint = None
    check_config(doc, what, path, expect_space, expect_backend, expect_batch, expect_fingerprint)
    if doc["format"] == LUT_FORMAT:
        return LookupTable.from_json(doc, path)
    name = doc.get("model")
    if name not in MODEL_NAMES or not issubclass(MODELS.get(name), FittedModel):
        raise HwnasError(f"latency model {path} is of unknown kind {name!r}")
    try:
        lut = LookupTable.from_json(doc["lut"], path) if doc.get("lut") else None
        space = space_from_config(doc["space"])
        target = {k: doc.get(k) for k in ("batch", "backend", "fingerprint", "protocol")}
        _check_finite(doc["params"], f"latency model {path}")
        model = MODELS.get(name).from_params(space, target, doc.get("n_train", 0), lut, doc["params"])
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, OverflowError) as e:
        raise HwnasError(f"latency model {path} is corrupt: missing or malformed field {e}") from None
    _check_predictions(model, f"latency model {path}")
    return model


def _check_finite(value, what: str) -> None:
    """Every number of a model's parameters is finite: a NaN or infinity would predict nonsense."""
    stack = [value]
    while stack:  # iterative: the guarded reader bounds the depth, but no recursion is needed at all
        v = stack.pop()
        if isinstance(v, dict):
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
        elif isinstance(v, float) and not np.isfinite(v):
            raise HwnasError(f"{what} holds a parameter {v!r}: not a finite number")


def _check_predictions(model, what: str) -> None:
    """A model that predicts no latency (NaN, zero, negative) for architectures of its own space
    is refused when loaded, not discovered at the end of a search (`predict` checks each value)."""
    space = model.space
    for arch in [space.default_arch(), *space.random_archs(4, 0)]:
        try:
            model.predict(arch)
        except HwnasError as e:
            raise HwnasError(f"{what}: {e}") from None
