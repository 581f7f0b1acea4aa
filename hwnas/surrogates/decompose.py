"""Where the lookup table is wrong: its error on whole measured subnets, split into terms.

For each subnet, with every part (stem, fixed block, layers, head) of the network:

  raw        the sum of the parts' entries as measured, each a model of its own, interpolated
  table      the table's prediction: each entry less one model's overhead, the overhead once
  exact      the same at each layer's own width, measured there (no interpolation)
  measured   the whole network, measured

and raw - measured = overhead + interpolation + interaction, where

  overhead       raw - table: the per-model overhead every entry carries and a network pays once
  interpolation  table - exact: the width grid's straight lines between measured widths
  interaction    exact - measured: what the parts do to each other in one model (fusion, cache
                 state carried from layer to layer), plus the whole network's own measurement error

and `entry_noise` is the 95% half-width of the exact sum from the parts' own intervals (added in
quadrature): the share of the rest the entries' noise alone can explain. Whether the subnet has
any width off the fast multiple (`unaligned`) splits the figures in the summary.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pandas as pd

from hwnas.spaces.mbconv import Arch, LayerSpec
from hwnas.surrogates.lut import LookupTable

TERMS = ("overhead", "interpolation", "interaction")


def decompose(lut: LookupTable, archs: list[Arch], measured_ms, exact: Callable[[LayerSpec], tuple[float, float]]
              ) -> pd.DataFrame:
    """One row per subnet: the sums above, each term in ms and in % of the measured latency.
    exact(spec) -> (ms, 95% half-width ms) of the part measured as its own model at its width."""
    rows = []
    for arch, y in zip(archs, np.asarray(measured_ms, dtype=float)):
        parts = lut.space.layers(arch, lut.batch)
        measured_parts = [exact(spec) for spec in parts]
        raw = sum(lut.raw_layer_ms(spec) for spec in parts)
        table = lut.predict(arch)
        exact_ms = lut.overhead_ms + sum(lut.less_overhead(ms) for ms, _ in measured_parts)
        row = {"arch": arch.hash, "parts": len(parts), "measured_ms": y, "raw_ms": raw, "table_ms": table,
               "exact_ms": exact_ms, "entry_noise_ms": math.sqrt(sum(h * h for _, h in measured_parts)),
               "unaligned": any(s.part == "searchable" and s.mid % lut.align for s in parts),
               "overhead_ms": raw - table, "interpolation_ms": table - exact_ms, "interaction_ms": exact_ms - y}
        for name in (*TERMS, "entry_noise"):
            row[f"{name}_pct"] = 100.0 * row[f"{name}_ms"] / y
        row["raw_error_pct"] = 100.0 * (raw - y) / y
        row["table_error_pct"] = 100.0 * (table - y) / y
        rows.append(row)
    return pd.DataFrame(rows)


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """Per term and error: mean (signed) and mean absolute, in % of the measured latency, over all
    subnets and over those with and without unaligned widths."""
    cols = ["raw_error_pct", "table_error_pct", *(f"{t}_pct" for t in TERMS), "entry_noise_pct"]
    groups = [("all", df), ("aligned", df[~df["unaligned"]]), ("unaligned", df[df["unaligned"]])]
    rows = []
    for name, g in groups:
        if g.empty:
            continue
        for c in cols:
            rows.append({"subnets": name, "n": len(g), "figure": c.removesuffix("_pct"), "mean_pct": g[c].mean(),
                         "mean_abs_pct": g[c].abs().mean()})
    return pd.DataFrame(rows)
