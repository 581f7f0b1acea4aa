"""Learned corrections of the lookup table, each a latency model in the registry of
`hwnas.surrogates.models`:

- mlp: a small torch MLP over `LearnedDesign` features.
- gbt: scikit-learn's HistGradientBoostingRegressor over the same features.

Both predict the table's relative residual (measured / table - 1), so they learn only what the
table misses; neither is differentiable, so searches use them only through a correction."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from hwnas.errors import HwnasError, first_line
from hwnas.surrogates.data import Subnets
from hwnas.surrogates.features import LearnedDesign
from hwnas.surrogates.models import FittedModel, register_model, sample_weight


@register_model
class MlpModel(FittedModel):
    """Two hidden layers of 64, standardized features and target, full-batch Adam, fixed seed."""

    name = "mlp"
    HIDDEN = 64
    EPOCHS = 1500
    LR = 3e-3
    WEIGHT_DECAY = 1e-3

    def __init__(self, space, target, n_train, lut, weights: dict[str, Any]):
        super().__init__(space, target, n_train, lut)
        self.design = LearnedDesign(space, lut)
        self.weights = weights
        self.net = self._net(len(weights["x_mean"]))
        try:
            self.net.load_state_dict({k: torch.tensor(v, dtype=torch.float32) for k, v in weights["state"].items()})
        except (RuntimeError, KeyError, TypeError, ValueError) as e:
            raise HwnasError(f"mlp model weights do not fit its network: {first_line(e)}") from None
        self.x_mean, self.x_std = np.asarray(weights["x_mean"]), np.asarray(weights["x_std"])
        self.t_mean, self.t_std = float(weights["t_mean"]), float(weights["t_std"])

    @classmethod
    def _net(cls, width: int) -> torch.nn.Sequential:
        h = cls.HIDDEN
        return torch.nn.Sequential(torch.nn.Linear(width, h), torch.nn.ReLU(), torch.nn.Linear(h, h), torch.nn.ReLU(),
                                   torch.nn.Linear(h, 1))

    @classmethod
    def fit(cls, space, train, lut=None, target=None, seed=0):
        design = LearnedDesign(space, lut)
        X = design.matrix(train.archs)
        t = train.latency_ms / design.lut_total(X) - 1.0
        x_mean, x_std = X.mean(0), X.std(0)
        x_std[x_std == 0] = 1.0  # a constant feature carries nothing; keep it at 0
        t_mean, t_std = float(t.mean()), float(t.std()) or 1.0
        torch.manual_seed(seed)
        net = cls._net(X.shape[1])
        xs = torch.tensor((X - x_mean) / x_std, dtype=torch.float32)
        ts = torch.tensor((t - t_mean) / t_std, dtype=torch.float32)[:, None]
        weight = sample_weight(train)
        ws = None if weight is None else torch.tensor(weight, dtype=torch.float32)[:, None]
        opt = torch.optim.Adam(net.parameters(), lr=cls.LR, weight_decay=cls.WEIGHT_DECAY)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # tiny matrices: threads only add overhead (8x slower on 2 busy cores)
        try:
            for _ in range(cls.EPOCHS):
                opt.zero_grad()
                loss = torch.nn.functional.mse_loss(net(xs), ts) if ws is None else (ws * (net(xs) - ts) ** 2).mean()
                loss.backward()
                opt.step()
        finally:
            torch.set_num_threads(threads)
        weights = {"state": {k: v.tolist() for k, v in net.state_dict().items()}, "x_mean": x_mean.tolist(),
                   "x_std": x_std.tolist(), "t_mean": t_mean, "t_std": t_std, "seed": seed}
        return cls(space, target or {}, len(train), lut, weights)

    def predict_many(self, archs):
        X = self.design.matrix(archs)
        with torch.no_grad():
            out = self.net(torch.tensor((X - self.x_mean) / self.x_std, dtype=torch.float32))[:, 0].double().numpy()
        return self.design.lut_total(X) * (1.0 + out * self.t_std + self.t_mean)

    def params_json(self):
        return self.weights

    @classmethod
    def from_params(cls, space, target, n_train, lut, p):
        return cls(space, target, n_train, lut, p)


@register_model
class GbtModel(FittedModel):
    """Gradient-boosted trees. scikit-learn's trees cannot be saved without pickle, so the file
    keeps the training subnets and the seed, and loading refits: deterministic for one
    scikit-learn version (recorded; a different version refits trees that may differ slightly)."""

    name = "gbt"
    PARAMS = {"max_iter": 400, "learning_rate": 0.05, "max_leaf_nodes": 15, "min_samples_leaf": 5, "l2_regularization": 1e-3}

    def __init__(self, space, target, n_train, lut, train: Subnets, seed: int):
        from sklearn.ensemble import HistGradientBoostingRegressor
        from threadpoolctl import threadpool_limits

        super().__init__(space, target, n_train, lut)
        self.design = LearnedDesign(space, lut)
        self.train, self.seed = train, seed
        X = self.design.matrix(train.archs)
        t = train.latency_ms / self.design.lut_total(X) - 1.0
        with threadpool_limits(1):  # a few hundred rows: OpenMP threads only contend
            self.trees = HistGradientBoostingRegressor(**self.PARAMS, early_stopping=False, random_state=seed).fit(
                X, t, sample_weight=sample_weight(train))

    @classmethod
    def fit(cls, space, train, lut=None, target=None, seed=0):
        return cls(space, target or {}, len(train), lut, train, seed)

    def predict_many(self, archs):
        X = self.design.matrix(archs)
        return self.design.lut_total(X) * (1.0 + self.trees.predict(X))

    def params_json(self):
        import sklearn

        return {"seed": self.seed, "sklearn": sklearn.__version__, "hyperparameters": self.PARAMS,
                "train_archs": [a.to_json() for a in self.train.archs], "train_latency_ms": self.train.latency_ms.tolist(),
                # only a weighted fit keeps its weights, which its refit on load needs: unweighted files are as before
                **({} if sample_weight(self.train) is None else {"train_weight": self.train.weight.tolist()})}

    @classmethod
    def from_params(cls, space, target, n_train, lut, p):
        weight = np.asarray(p["train_weight"], dtype=float) if "train_weight" in p else None
        if weight is not None and not (weight.shape == (len(p["train_archs"]),) and (weight > 0).all()):
            raise ValueError("train_weight: not one positive number per training subnet")
        train = Subnets([space.validate(a) for a in p["train_archs"]], np.asarray(p["train_latency_ms"], dtype=float),
                        weight)
        return cls(space, target, n_train, lut, train, p["seed"])
