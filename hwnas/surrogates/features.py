"""Architecture encodings for the fitted latency models.

A slot is one layer position (stage i, layer j < max depth); in an architecture it holds
one op or is absent (the stage is shallower). Slots index the same way as the relaxed
weights of `hwnas.surrogates.base`.
"""

from __future__ import annotations

import numpy as np

from hwnas.spaces.mbconv import SKIP, Arch, Space
from hwnas.surrogates.lut import DEFAULT_ALIGN, LookupTable, layer_spec


def slots(space: Space) -> list[tuple[int, int]]:
    return [(i, j) for i, shape in enumerate(space.stages) for j in range(shape.max_depth)]


class LinearDesign:
    """UNAS's linear surrogate, widened: per slot a one-hot z_ijk over the ops, z_ijk * mid / C_in
    for elastic ops, the same two again for widths off the kernels' alignment (u = 1 where
    mid % align != 0: ~3x slower on ONNX Runtime CPU, see `hwnas.surrogates.lut`), and an
    'absent' indicator where the stage may end before the slot.

    Prediction = intercept + x . coef, which regroups exactly into the base + per-layer form
    soft evaluation needs: base = intercept + sum of the absent coefficients, and a present
    layer costs its op terms minus its slot's absent coefficient."""

    def __init__(self, space: Space, align: int = DEFAULT_ALIGN):
        self.space, self.align = space, align
        self.columns: list[tuple[str, int, int, str]] = []
        for i, j in slots(space):
            for op in space.op_names(i, j):
                self.columns.append(("op", i, j, op))
                if space.definition.elastic and op != SKIP:
                    self.columns.append(("width", i, j, op))
                    if align > 1:
                        self.columns += [("unaligned", i, j, op), ("unaligned_width", i, j, op)]
            if j >= space.stages[i].min_depth:
                self.columns.append(("absent", i, j, ""))
        self.index = {c: n for n, c in enumerate(self.columns)}

    def __len__(self) -> int:
        return len(self.columns)

    def row(self, arch: Arch) -> np.ndarray:
        x = np.zeros(len(self.columns))
        for i, j in slots(self.space):
            stage = arch.stages[i]
            if j >= len(stage):
                x[self.index["absent", i, j, ""]] = 1.0
                continue
            c = stage[j]
            for kind, value in self._terms(i, j, c.op, c.mid):
                x[self.index[kind, i, j, c.op]] = value
        return x

    def _terms(self, i: int, j: int, op: str, mid: int):
        """(column kind, value) of a present layer; its op's columns, the others of the slot stay 0."""
        yield "op", 1.0
        if ("width", i, j, op) in self.index:
            ratio = mid / self.space.layer_c_in(i, j)
            yield "width", ratio
            if ("unaligned", i, j, op) in self.index and mid % self.align:
                yield "unaligned", 1.0
                yield "unaligned_width", ratio

    def matrix(self, archs: list[Arch]) -> np.ndarray:
        return np.stack([self.row(a) for a in archs]) if archs else np.zeros((0, len(self.columns)))

    def base(self, coef: np.ndarray, intercept: float) -> float:
        return float(intercept + sum(coef[n] for c, n in self.index.items() if c[0] == "absent"))

    def layer_ms(self, coef: np.ndarray, i: int, j: int, op: str, mid: int) -> float:
        ms = sum(coef[self.index[kind, i, j, op]] * value for kind, value in self._terms(i, j, op, mid))
        if ("absent", i, j, "") in self.index:
            ms -= coef[self.index["absent", i, j, ""]]
        return float(ms)


class LearnedDesign:
    """Features for the MLP and the trees: per slot the one-hot op (with 'absent'), the width
    ratio, whether the width is unaligned, and the layer's lookup-table ms, MACs, parameters and memory traffic (0 where the
    slot is absent or skipped); then the same four summed over the whole network."""

    PER_LAYER = ("width", "unaligned", "lut_ms", "macs", "params", "memory")

    def __init__(self, space: Space, lut: LookupTable):
        self.space, self.lut = space, lut
        self.ops = {(i, j): space.op_names(i, j) for i, j in slots(space)}
        self.width = sum(len(ops) + 1 + len(self.PER_LAYER) for ops in self.ops.values()) + 4

    def row(self, arch: Arch) -> np.ndarray:
        x, totals = [], np.zeros(4)
        for spec in self.space.layers(arch, self.lut.batch):
            if spec.part != "searchable":
                totals += [self.lut.layer_ms(spec), spec.macs, spec.params, spec.memory]
        for (i, j), ops in self.ops.items():
            onehot = np.zeros(len(ops) + 1)
            per = np.zeros(len(self.PER_LAYER))
            stage = arch.stages[i]
            if j >= len(stage):
                onehot[-1] = 1.0
            else:
                c = stage[j]
                onehot[ops.index(c.op)] = 1.0
                if c.op != SKIP:
                    spec = layer_spec(self.space, i, j, c.op, c.mid, self.lut.batch)
                    per = np.array([c.mid / spec.c_in, float(c.mid % self.lut.align != 0), self.lut.layer_ms(spec),
                                    spec.macs, spec.params, spec.memory])
                    totals += per[2:]
            x.extend(onehot)
            x.extend(per)
        x.extend(totals)
        return np.asarray(x, dtype=float)

    def matrix(self, archs: list[Arch]) -> np.ndarray:
        return np.stack([self.row(a) for a in archs]) if archs else np.zeros((0, self.width))

    @staticmethod
    def lut_total(X: np.ndarray) -> np.ndarray:
        return X[:, -4]
