"""transfer: another target's lookup table, mapped to this target by a few subnets measured here.

latency = offset + slope * table(arch), the two numbers fitted by (interval-weighted) least
squares on this target's subnets. A table ranks the subnets of a like target before any is
measured on it (HELP's observation: the ranking is what transfers); the affine map then puts
the predictions in this target's milliseconds, its offset taking the runtime's fixed cost and
its slope the per-layer speed. Two numbers, so five subnets fit it and its learning curve cannot
rise from overfitting. The slope must be positive: a table that ranks this target's subnets
backwards is refused, not inverted. Differentiable: the table's soft latency, mapped the same way.

`hwnas surrogate fit|eval --model transfer --transfer --lut OTHER_TARGET.json`."""

from __future__ import annotations

import numpy as np

from hwnas.errors import HwnasError
from hwnas.surrogates.base import soft_latency
from hwnas.surrogates.models import FittedModel, register_model, sample_weight


@register_model
class TransferModel(FittedModel):
    name = "transfer"
    needs_lut = True
    min_train = 5

    def __init__(self, space, target, n_train, lut, offset: float, slope: float):
        super().__init__(space, target, n_train, lut)
        self.offset, self.slope = float(offset), float(slope)
        if not self.slope > 0:
            raise HwnasError(f"the transfer model's slope is {self.slope:.4g}: the table ranks this target's subnets "
                             "the other way round, so no affine map of it predicts them; measure a table on this target")

    @classmethod
    def fit(cls, space, train, lut=None, target=None, seed: int = 0):
        table_ms = np.array([lut.predict(a) for a in train.archs])
        if np.ptp(table_ms) == 0:
            raise HwnasError("every training subnet reads the same on the table: they cannot fit its slope; "
                             "measure subnets of other sizes")
        w = sample_weight(train)
        # np.polyfit weighs residuals by w, least squares by w**2: the square root gives the fit's weights
        slope, offset = np.polyfit(table_ms, train.latency_ms, 1, w=None if w is None else np.sqrt(w))
        return cls(space, target or {}, len(train), lut, offset, slope)

    def predict_many(self, archs):
        return self.offset + self.slope * np.array([self.lut.predict(a) for a in archs])

    def layer_ms(self, i: int, j: int, op: str, mid: int) -> float:
        return self.slope * self.lut.op_ms(i, j, op, mid)

    def soft(self, op_weights, depth_weights, mids=None):
        return soft_latency(self.space, self.offset + self.slope * self.lut.base_ms, self.layer_ms, op_weights,
                            depth_weights, mids)

    def params_json(self):
        return {"offset": self.offset, "slope": self.slope}

    @classmethod
    def from_params(cls, space, target, n_train, lut, p):
        return cls(space, target, n_train, lut, p["offset"], p["slope"])
