"""Is latency additive over layers? Measure adjacent pairs as one model against their parts.

A pair (a, b) of consecutive layers of a subnet: T1 = a alone, T2 = b alone, T12 = a then b
as one ONNX model. The non-additive part T1 + T2 - T12 is what a lookup table cannot see
(fusion across the boundary, a shared input in cache, per-model overhead counted twice).
Fusion is flagged where it exceeds alpha * min(T1, T2).
"""

from __future__ import annotations

import sys

import pandas as pd
from tqdm import tqdm

from hwnas.errors import HwnasError
from hwnas.spaces.mbconv import Space

ALPHA = 0.5


def _labels(space: Space, arch) -> list[str]:
    """The op name of each layer of `space.layers(arch)`, in the same order (skips left out)."""
    ops = [c.op for stage in arch.stages for c in stage if c.op != "skip"]
    return ["stem", "fixed", *ops, "head"]


def adjacent_pairs(space: Space, n_pairs: int, seed: int = 0, batch: int = 1) -> list[tuple]:
    """Up to `n_pairs` distinct adjacent layer pairs, walked along random subnets of the space:
    every pair position of a subnet before the next subnet, so stage boundaries are covered."""
    if isinstance(n_pairs, bool) or not isinstance(n_pairs, int) or not 1 <= n_pairs <= 10_000:
        raise HwnasError(f"number of pairs must be in [1, 10000], got {n_pairs!r}")
    pairs, seen = [], set()
    for arch in space.random_archs(max(1, 4 * n_pairs), seed):
        specs = space.layers(arch, batch)
        labels = _labels(space, arch)
        for (a, la), (b, lb) in zip(zip(specs, labels), zip(specs[1:], labels[1:])):
            key = (a, b)  # LayerSpec equality ignores position: equal layers measured once
            if key in seen:
                continue
            seen.add(key)
            pairs.append((a, la, b, lb))
            if len(pairs) == n_pairs:
                return pairs
    return pairs


def additivity(space: Space, measurer, n_pairs: int = 20, seed: int = 0, batch: int = 1, alpha: float = ALPHA,
               show_progress: bool = True) -> pd.DataFrame:
    """One row per pair: T1, T2, T12, the non-additive ms and share, and the fusion flag."""

    rows = []
    for a, la, b, lb in tqdm(adjacent_pairs(space, n_pairs, seed, batch), desc="layer pairs", unit="pair",
                             file=sys.stderr, disable=not show_progress, dynamic_ncols=True):
        t1 = measurer.layer(a).measurement.stats["median_ms"]
        t2 = measurer.layer(b).measurement.stats["median_ms"]
        t12 = measurer.layers([a, b]).measurement.stats["median_ms"]
        gap = t1 + t2 - t12
        rows.append({
            "first": a.position, "second": b.position, "stage": a.position.split(".")[0], "op_first": la,
            "op_second": lb, "t1_ms": t1, "t2_ms": t2, "t12_ms": t12, "nonadditive_ms": gap,
            "nonadditive_share": gap / (t1 + t2), "fused": gap > alpha * min(t1, t2),
        })
    return pd.DataFrame(rows)


def summarize(pairs: pd.DataFrame) -> pd.DataFrame:
    """Mean and worst non-additive share, and fused pairs, per op kind (of the first layer) and per stage."""
    out = []
    for by, name in (("op_first", "op"), ("stage", "stage")):
        g = pairs.groupby(by).agg(pairs=("fused", "size"), mean_share=("nonadditive_share", "mean"),
                                  max_share=("nonadditive_share", "max"), mean_ms=("nonadditive_ms", "mean"),
                                  fused=("fused", "sum"))
        out.append(g.reset_index().rename(columns={by: "value"}).assign(group=name))
    cols = ["group", "value", "pairs", "mean_share", "max_share", "mean_ms", "fused"]
    return pd.concat(out, ignore_index=True)[cols]
