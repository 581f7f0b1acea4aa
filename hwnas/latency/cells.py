"""A latency lookup table for cell spaces (darts), and soft latency under relaxed edge weights.

Cells branch, so a network is not a chain of layers; its table holds one entry per part,
each measured alone as its own model:

  edge    (op, C, stride, H): one edge op on a C x H x H input
  add     (C, H): one two-input sum (a node with m inputs costs m - 1 of them)
  concat  (n, C, H): the cell output, n nodes of C channels (n = 1 is free)
  pre     (kind, C_in, C_out, H): preprocessing, ReLU-Conv1x1-BN ("rcb") or FactorizedReduce ("fr")
  stem    and head (global pool + linear on the last cell's channels)

A network's table latency is the sum of its parts. Under relaxed edge weights W[kind] (14 x 8,
rows summing to 1) the same sum is taken in expectation-like form: an edge counts with the
probability that its source is active; a node is active with probability
1 - prod_i (1 - P(source i active) (1 - W[i->j, none])); the sum, concat and preprocessing
terms interpolate linearly between integer numbers of inputs or nodes. At one-hot weights
every term is the hard one, so `soft` equals `predict` there (a tested property).

Each standalone measurement includes one model's fixed overhead, which a network pays once:
a built table subtracts it per part (`overhead_correction`), and `fit_correction` fits
measured ~ a + b * table + c * parts on whole measured networks instead.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from hwnas.errors import HwnasError
from hwnas.jsonutil import canonical_json, read_json, write_json
from hwnas.spaces.darts import (
    CELL_TYPES,
    Cell,
    EDGES,
    N_EDGES,
    PRIMITIVES,
    STEPS,
    DartsArch,
    DartsSpace,
    FactorizedReduce,
    ReLUConvBN,
    edge_index,
    edge_stride_hw,
    make_op,
)
from hwnas.measure.networks import module_item

FORMAT = "hwnas-cell-lut"
FORMAT_VERSION = 1
NONE = PRIMITIVES.index("none")


class _Add(nn.Module):
    def forward(self, x):
        return x + x.flip(1)  # two different operands, as in a node's sum


class _Concat(nn.Module):
    def __init__(self, n: int):
        super().__init__()
        self.n = n

    def forward(self, x):
        return torch.cat([x * (i + 1) for i in range(self.n)], dim=1) if self.n > 1 else x


class _Head(nn.Module):
    def __init__(self, c: int, classes: int):
        super().__init__()
        self.pool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(c, classes)

    def forward(self, x):
        return self.fc(self.pool(x).flatten(1))


def part_module(key: dict[str, Any]) -> tuple[nn.Module, tuple[int, ...]]:
    """The module an entry is measured as, and its input shape."""
    b, part = key["batch"], key["part"]
    if part == "edge":
        return make_op(key["op"], key["c"], key["stride"]), (b, key["c"], key["h"], key["h"])
    if part == "add":
        return _Add(), (b, key["c"], key["h"], key["h"])
    if part == "concat":
        return _Concat(key["n"]), (b, key["c"], key["h"], key["h"])
    if part == "pre":
        cls = ReLUConvBN if key["kind"] == "rcb" else FactorizedReduce
        return cls(key["c_in"], key["c_out"]), (b, key["c_in"], key["h"], key["h"])
    if part == "stem":
        c = key["c"]
        return nn.Sequential(nn.Conv2d(3, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)), (b, 3, key["h"], key["h"])
    if part == "head":
        return _Head(key["c"], key["classes"]), (b, key["c"], key["h"], key["h"])
    raise HwnasError(f"unknown table part {part!r}")


def _key(part: str, batch: int, **fields) -> str:
    return canonical_json({"part": part, "batch": batch, **fields})


def _pre_key(plan_row: dict[str, Any], which: int, n_prev: int, c_prev_unit: int, batch: int) -> str:
    """Key of preprocessing input `which` (0: from cell k-2, 1: from k-1) whose producer
    concatenates n_prev nodes of c_prev_unit channels (the stem: n_prev = 0, 3C)."""
    c_in = c_prev_unit * n_prev if n_prev else c_prev_unit
    if which == 0 and plan_row["reduction_prev"]:
        return _key("pre", batch, kind="fr", c_in=c_in, c_out=plan_row["c"], h=plan_row["h"] * 2)
    return _key("pre", batch, kind="rcb", c_in=c_in, c_out=plan_row["c"], h=plan_row["h"])


class CellLatencyTable:
    """Table latency of a darts space's networks on one target; `soft` for searches."""

    name = "cell-lut"

    def __init__(self, space: DartsSpace, batch: int, entries: dict[str, float], target: dict[str, Any] | None = None,
                 correction: dict[str, float] | None = None):
        self.space, self.batch, self.entries = space, batch, dict(entries)
        self.target = target or {}
        self.correction = correction  # {"a", "b", "c"}: measured ~ a + b * table + c * parts
        self.plan = space.cell_plan()
        self._producers = self._producer_units()
        missing = [k for k in self.needed_keys() if k not in self.entries]
        if missing:
            raise HwnasError(f"cell table lacks {len(missing)} entries, e.g. {missing[0]}")
        self._edge_ms = [self._edge_table(row) for row in self.plan]

    # --- what the table holds -----------------------------------------------------------------

    def _producer_units(self) -> list[tuple[tuple[int, int], tuple[int, int]]]:
        """Per cell: (cell index, channels per node) of its inputs 0 and 1; cell index -1 is the stem."""
        out = []
        for k in range(len(self.plan)):
            units = []
            for back in (2, 1):
                src = k - back
                units.append((src, 3 * self.space.channels) if src < 0 else (src, self.plan[src]["c"]))
            out.append(tuple(units))
        return out

    def needed_keys(self) -> list[str]:
        b, keys = self.batch, set()
        sp = self.space
        keys.add(_key("stem", b, c=3 * sp.channels, h=sp.resolution))
        for k, row in enumerate(self.plan):
            for e, (j, i) in enumerate(EDGES):
                stride, h = edge_stride_hw(row, i)
                keys.update(_key("edge", b, op=op, c=row["c"], stride=stride, h=h) for op in PRIMITIVES if op != "none")
            h_node = row["h"] // 2 if row["kind"] == "reduce" else row["h"]
            keys.add(_key("add", b, c=row["c"], h=h_node))
            keys.update(_key("concat", b, n=n, c=row["c"], h=h_node) for n in range(2, STEPS + 1))
            for which, (src, unit) in enumerate(self._producers[k]):
                for n in ([0] if src < 0 else range(1, STEPS + 1)):
                    keys.add(_pre_key(row, which, n, unit, b))
        last = self.plan[-1]
        h_last = last["h"] // 2 if last["kind"] == "reduce" else last["h"]
        keys.update(_key("head", b, c=n * last["c"], h=h_last, classes=sp.num_classes) for n in range(1, STEPS + 1))
        return sorted(keys)

    def _edge_table(self, row: dict[str, Any]) -> torch.Tensor:
        t = torch.zeros(N_EDGES, len(PRIMITIVES), dtype=torch.float64)
        for e, (j, i) in enumerate(EDGES):
            stride, h = edge_stride_hw(row, i)
            for o, op in enumerate(PRIMITIVES):
                if op != "none":
                    t[e, o] = self.entries[_key("edge", self.batch, op=op, c=row["c"], stride=stride, h=h)]
        return t

    def _ms(self, key: str) -> float:
        return self.entries[key]

    def _interp(self, keys: list[str], n: torch.Tensor, zero_at_one: bool = False) -> torch.Tensor:
        """Linear in n between the entries for n = 1..len(keys) (keys[0] is n = 1)."""
        values = torch.tensor([0.0 if (zero_at_one and i == 0) else self._ms(k) for i, k in enumerate(keys)],
                              dtype=torch.float64)
        n = n.clamp(1.0, float(len(keys)))
        lo = int(min(max(math.floor(float(n.detach())), 1), len(keys) - 1))
        return values[lo - 1] + (n - lo) * (values[lo] - values[lo - 1])

    # --- latency ---------------------------------------------------------------------------------

    def _total(self, weights: dict[str, torch.Tensor], concat_n: dict[str, int] | None = None,
               per_cell: list | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(table ms, number of parts) under edge weights {kind: [14, 8]}; `per_cell` receives each
        cell's share of both (its edges, sums, concat and preprocessing)."""
        b, sp = self.batch, self.space
        total = torch.tensor(self._ms(_key("stem", b, c=3 * sp.channels, h=sp.resolution)), dtype=torch.float64)
        parts = torch.tensor(1.0, dtype=torch.float64)
        n_out: list[torch.Tensor] = []
        one = torch.tensor(1.0, dtype=torch.float64)
        for k, row in enumerate(self.plan):
            before = (float(total), float(parts)) if per_cell is not None else None
            w = weights[row["kind"]].to(torch.float64)
            live = 1.0 - w[:, NONE]  # P(edge op is not none)
            p_act = [one, one]
            edge_ms = (w * self._edge_ms[k]).sum(1)  # [14]
            h_node = row["h"] // 2 if row["kind"] == "reduce" else row["h"]
            for j in range(STEPS):
                es = [edge_index(j, i) for i in range(2 + j)]
                on = [p_act[i] * live[e] for i, e in enumerate(es)]
                total = total + sum(p_act[i] * edge_ms[e] for i, e in enumerate(es))
                parts = parts + sum(on)
                m = sum(on)
                adds = torch.relu(m - 1.0)
                total = total + adds * self._ms(_key("add", b, c=row["c"], h=h_node))
                parts = parts + adds
                p_act.append(1.0 - torch.prod(torch.stack([1.0 - x for x in on])))
            n = (torch.tensor(float(concat_n[row["kind"]]), dtype=torch.float64) if concat_n
                 else sum(p_act[2:]))
            n_out.append(n)
            concat_keys = [""] + [_key("concat", b, n=i, c=row["c"], h=h_node) for i in range(2, STEPS + 1)]
            total = total + self._interp(concat_keys, n, zero_at_one=True)
            parts = parts + torch.clamp(n - 1.0, 0.0, 1.0)
            # preprocessing of inputs 0 and 1, each weighted by P(some edge uses it)
            for which, (src, unit) in enumerate(self._producers[k]):
                used = 1.0 - torch.prod(torch.stack([1.0 - live[edge_index(j, which)] for j in range(STEPS)]))
                if src < 0:
                    pre = torch.tensor(self._ms(_pre_key(row, which, 0, unit, b)), dtype=torch.float64)
                else:
                    pre = self._interp([_pre_key(row, which, i, unit, b) for i in range(1, STEPS + 1)], n_out[src])
                total = total + used * pre
                parts = parts + used
            if per_cell is not None:
                per_cell.append((float(total) - before[0], float(parts) - before[1]))
        last = self.plan[-1]
        h_last = last["h"] // 2 if last["kind"] == "reduce" else last["h"]
        heads = [_key("head", b, c=i * last["c"], h=h_last, classes=sp.num_classes) for i in range(1, STEPS + 1)]
        return total + self._interp(heads, n_out[-1]), parts + 1.0

    def _corrected(self, table: torch.Tensor, parts: torch.Tensor) -> torch.Tensor:
        if not self.correction:
            return table
        c = self.correction
        return c["a"] + c["b"] * table + c["c"] * parts

    def table_ms(self, arch) -> tuple[float, float]:
        """(uncorrected table ms, number of parts) of a network."""
        arch = self.space.validate(arch)
        t, p = self._total(one_hot(arch), {kind: len(arch.cell(kind).concat) for kind in CELL_TYPES})
        return float(t), float(p)

    def cell_ms(self, arch) -> list[tuple[float, float]]:
        """Per cell of a network: (uncorrected table ms, number of parts)."""
        arch = self.space.validate(arch)
        out: list[tuple[float, float]] = []
        self._total(one_hot(arch), {kind: len(arch.cell(kind).concat) for kind in CELL_TYPES}, per_cell=out)
        return out

    def predict(self, arch) -> float:
        arch = self.space.validate(arch)
        t, p = self._total(one_hot(arch), {kind: len(arch.cell(kind).concat) for kind in CELL_TYPES})
        return float(self._corrected(t, p))

    def soft(self, weights: dict[str, torch.Tensor]) -> torch.Tensor:
        """Latency (ms) under relaxed edge weights {"normal": [14, 8], "reduce": [14, 8]}; differentiable."""
        t, p = self._total(weights)
        return self._corrected(t, p).to(torch.float32)

    # --- build, fit, save --------------------------------------------------------------------------

    @classmethod
    def build(cls, space: DartsSpace, measurer, batch: int = 1, show_progress: bool = True) -> "CellLatencyTable":
        probe = cls.__new__(cls)
        probe.space, probe.batch, probe.plan = space, batch, space.cell_plan()
        probe._producers = probe._producer_units()
        keys = probe.needed_keys()

        def item(key):
            part = json.loads(key)
            return module_item(measurer, "cell_part", {"cell_part": part}, lambda: part_module(part)[0],
                               part_module(part)[1])

        # every part in one interleaved batch (k rounds of one fresh process each: A B C, A B C)
        done = measurer.many([item(k) for k in keys], "cell table", show_progress)
        entries = {k: float(m.measurement.stats["median_ms"]) for k, m in zip(keys, done)}
        target = {"backend": measurer.backend.name, "fingerprint": measurer.backend.fingerprint(batch),
                  "protocol": measurer.protocol.to_json()}
        table = cls(space, batch, entries, target)
        table.correction = table.overhead_correction()
        return table

    def overhead_correction(self) -> dict[str, float]:
        """Without a fit: every part was measured as its own model and paid one model's fixed
        overhead, which a network pays once. The overhead is taken as the cheapest identity edge
        (`overhead_ms`); table - parts * o + o."""
        o = self.overhead_ms()
        return {"a": o, "b": 1.0, "c": -o, "n_fit": 0}

    def overhead_ms(self) -> float:
        """One model's fixed overhead: the cheapest identity edge (skip_connect at stride 1)."""
        return min(v for k, v in self.entries.items() if '"op":"skip_connect"' in k and '"stride":1' in k)

    def fit_correction(self, archs: list, measured_ms: list[float]) -> dict[str, float]:
        """Least squares of measured ~ a + b * table + c * parts over whole measured networks."""
        if len(archs) < 4:
            raise HwnasError(f"a correction needs 4 measured networks at least, got {len(archs)}")
        rows = [self.table_ms(a) for a in archs]
        X = np.array([[1.0, t, p] for t, p in rows])
        coef, *_ = np.linalg.lstsq(X, np.asarray(measured_ms, dtype=float), rcond=None)
        self.correction = {"a": float(coef[0]), "b": float(coef[1]), "c": float(coef[2]), "n_fit": len(archs)}
        return self.correction

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": FORMAT_VERSION, "space": self.space.config, "batch": self.batch,
                "target": self.target, "correction": self.correction, "entries": self.entries}

    def save(self, path: str | Path) -> None:
        write_json(path, self.to_json())

    @classmethod
    def load(cls, path: str | Path, expect_space: DartsSpace | None = None) -> "CellLatencyTable":
        doc = read_json(path, "cell latency table", max_bytes=20_000_000)
        if not isinstance(doc, dict) or doc.get("format") != FORMAT or doc.get("version") != FORMAT_VERSION:
            raise HwnasError(f"{path} is not a cell latency table ({FORMAT} v{FORMAT_VERSION})")
        cfg = dict(doc["space"])
        cfg.pop("space", None)
        space = DartsSpace(**cfg)
        if expect_space is not None and expect_space.config != space.config:
            raise HwnasError(f"cell table {path} is for {space}, not {expect_space}")
        return cls(space, doc["batch"], doc["entries"], doc.get("target"), doc.get("correction"))


def one_hot(arch: DartsArch) -> dict[str, torch.Tensor]:
    """The architecture's edge weights: one-hot rows, [14, 8] per cell kind."""
    out = {}
    for kind in CELL_TYPES:
        w = torch.zeros(N_EDGES, len(PRIMITIVES), dtype=torch.float64)
        for e, op in enumerate(arch.cell(kind).edges):
            w[e, PRIMITIVES.index(op)] = 1.0
        out[kind] = w
    return out


# --- additivity: a cell measured as one model against the sum of its parts -------------------------


class CellAlone(nn.Module):
    """Cell `row` of a network's plan (`DartsSpace.cell_plan(arch)`) as its own model. Its two
    inputs are cut from one input x, which a model file has: s0 = x[:, :c_pp] and s1 = x[:, :c_p]
    (every other pixel after a reduction, where s0 is twice s1's size): two ONNX Slice ops of a
    few microseconds, part of what is measured."""

    def __init__(self, graph, row: dict[str, Any]):
        super().__init__()
        self.cell = Cell(graph, row["c_pp"], row["c_p"], row["c"], row["kind"] == "reduce", row["reduction_prev"])
        self.c_pp, self.c_p, self.step = row["c_pp"], row["c_p"], 2 if row["reduction_prev"] else 1

    def forward(self, x):
        return self.cell(x[:, :self.c_pp], x[:, :self.c_p, ::self.step, ::self.step])

    @staticmethod
    def input_shape(row: dict[str, Any], batch: int) -> tuple[int, int, int, int]:
        h = row["h"] * (2 if row["reduction_prev"] else 1)
        return batch, max(row["c_pp"], row["c_p"]), h, h


def cell_additivity(table: CellLatencyTable, measurer, n_archs: int, seed: int = 0,
                    show_progress: bool = True) -> list[dict[str, Any]]:
    """Every cell of `n_archs` random child graphs measured as one model (`CellAlone`), interleaved,
    against the table's sum of its parts less the overhead the parts paid beyond the one model's
    (parts - 1) * `overhead_ms`. One row per cell; `nonadditive_ms` > 0: the cell runs faster
    than its parts add up to. The row keeps the measurement's flags."""

    space, o = table.space, table.overhead_ms()
    rows, items = [], []
    for i, arch in enumerate(space.random_archs(n_archs, seed)):
        for row, (raw, parts) in zip(space.cell_plan(arch), table.cell_ms(arch)):
            graph = arch.cell(row["kind"])
            spec = {"darts_cell": {"edges": graph.edges_json(), "concat": list(graph.concat),
                                   **{k: row[k] for k in ("kind", "c", "h", "c_pp", "c_p", "reduction_prev")}}}
            items.append(module_item(measurer, "darts_cell", spec, lambda g=graph, r=row: CellAlone(g, r),
                                     CellAlone.input_shape(row, table.batch)))
            rows.append({"arch": i, "arch_hash": arch.hash, "cell": row["cell"], "kind": row["kind"], "parts": parts,
                         "table_raw_ms": raw, "table_ms": raw - (parts - 1) * o})
    for r, m in zip(rows, measurer.many(items, "cells", show_progress)):
        measured = m.measurement.stats["median_ms"]
        r.update({"measured_ms": measured, "nonadditive_ms": r["table_ms"] - measured,
                  "nonadditive_share": (r["table_ms"] - measured) / r["table_ms"],
                  "flags": ",".join(m.measurement.flags or [])})
    return rows
