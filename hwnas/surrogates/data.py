"""Ground truth for the surrogates: measured subnets, from the store or from a user's CSV."""

from __future__ import annotations

import csv
import io
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hwnas.backends.protocol import usable
from hwnas.errors import HwnasError
from hwnas.jsonutil import parse_json, read_text
from hwnas.spaces.elastic import elasticity_scale
from hwnas.spaces.mbconv import Arch, Space
from hwnas.validate import check_latency


@dataclass
class Subnets:
    """Architectures and their measured latencies (ms), in a stable order, and how much each
    counts in a fit (`weight`; None: all alike)."""

    archs: list[Arch]
    latency_ms: np.ndarray
    weight: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.archs)

    @property
    def weights(self) -> np.ndarray:
        """`weight`, or ones where there is none."""
        return np.ones(len(self)) if self.weight is None else self.weight

    def take(self, index) -> "Subnets":
        index = np.asarray(index, dtype=int)
        return Subnets([self.archs[i] for i in index], self.latency_ms[index],
                       None if self.weight is None else self.weight[index])


# A 95% CI narrower than this fraction of the median is not believed: timer resolution and
# drift between sessions are not in it, and one over-tight subnet would outweigh all the rest.
REL_FLOOR = 0.005


def ci_weights(median_ms, ci_low_ms, ci_high_ms) -> np.ndarray:
    """Per-subnet fit weights from each measurement's 95% CI (NaN: none, a single-process
    measurement): 1 / max(relative half-width, REL_FLOOR)**2, the inverse variance. A subnet
    without a CI gets the median weight of those with one (1 when none has one); mean 1."""
    median, low, high = (np.asarray(v, dtype=float) for v in (median_ms, ci_low_ms, ci_high_ms))
    rel_half = np.maximum(high - median, median - low) / median  # NaN where either end is missing
    has_ci = np.isfinite(rel_half)
    w = np.ones(len(median))
    if has_ci.any():
        w[has_ci] = 1.0 / np.maximum(rel_half[has_ci], REL_FLOOR) ** 2
        w[~has_ci] = np.median(w[has_ci])
    return w / w.mean() if len(w) else w


def sample(space: Space, measurer, n: int, seed: int = 0, batch: int = 1, show_progress: bool = True,
           align: int = 1, scale_to: tuple[Any, float, float] | None = None) -> list[dict]:
    """Measure `n` random subnets (reproducible by seed; widths on multiples of `align`, the
    distribution a search with that alignment ends in) end to end into the store. scale_to:
    (latency model, lo_ms, hi_ms): the subnets of `scaled_random_archs` instead."""
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 100_000:
        raise HwnasError(f"number of subnets must be in [1, 100000], got {n!r}")
    archs = space.random_archs(n, seed, align) if scale_to is None else scaled_random_archs(*scale_to, n, seed, align)
    rows = []
    done = measurer.many([measurer.arch_item(space, a, batch) for a in archs], "subnets", show_progress)
    for arch, m in zip(archs, done):
        rows.append({"arch": arch.hash, "depths": "-".join(map(str, arch.depths)), "macs_m": space.macs(arch) / 1e6,
                     "median_ms": m.measurement.stats["median_ms"], "cached": m.cached,
                     "flags": ",".join(m.measurement.flags)})
    return rows


def scaled_random_archs(model, lo_ms: float, hi_ms: float, n: int, seed: int = 0, align: int = 1) -> list[Arch]:
    """`n` random subnets of `model.space`, each elasticity-scaled under `model` to a target drawn
    uniformly in [lo_ms, hi_ms]: architectures of the kind a search ends with (a seed network's
    widths scaled stage by stage), where a model that corrects the search's table is used and
    should be fitted. A draw the width bound stops short of its target is replaced by the next."""

    if not model.space.definition.elastic:
        raise HwnasError(f"scaling subnets to a latency needs elastic widths; {model.space.name} has none")
    if not (np.isfinite([lo_ms, hi_ms]).all() and 0 < lo_ms <= hi_ms):
        raise HwnasError(f"latency range must satisfy 0 < lo <= hi, got {lo_ms}:{hi_ms} ms")
    rng = np.random.default_rng(seed)
    archs, draws = [], 0
    while len(archs) < n:
        if draws == 100 * n:
            raise HwnasError(f"only {len(archs)} of {draws} random subnets could be scaled into {lo_ms:g}-{hi_ms:g} ms "
                             "under the latency model; give a range nearer the space's typical latency")
        draws += 1
        result = elasticity_scale(model, model.space.random_arch(rng, align), rng.uniform(lo_ms, hi_ms), align=align)
        if result.bound is None:
            archs.append(result.arch)
    return archs


def measured_subnets(measurer, space: Space, batch: int = 1) -> Subnets:
    """Every subnet of `space` the store holds for this target (fingerprint) and protocol,
    one per architecture, in the order they were first measured. Measurements flagged noisy or
    disturbed are left out (`protocol.usable`), and how many is said on stderr."""

    fingerprint = measurer.backend.fingerprint(batch)
    protocol = measurer.protocol.to_json()
    df = measurer.store.dataframe(kind="arch", backend=measurer.backend.name)
    archs, lat, ci, seen, flagged = [], [], [], set(), 0
    for spec, fp, proto, ms, low, high, flags in zip(df["spec"], df["fingerprint"], df["protocol"], df["median_ms"],
                                                     df["ci_low_ms"], df["ci_high_ms"], df["flags"]):
        if spec.get("space") != space.config or spec.get("batch") != batch or fp != fingerprint or proto != protocol:
            continue
        if not usable(flags):
            flagged += 1
            continue
        arch = space.validate(spec["arch"])
        if arch.hash in seen:
            continue
        seen.add(arch.hash)
        archs.append(arch)
        lat.append(float(ms))
        ci.append((np.nan if low is None else low, np.nan if high is None else high))
    if flagged:
        print(f"hwnas: left out {flagged} stored subnet measurement(s) flagged noisy or disturbed", file=sys.stderr)
    lat = np.asarray(lat, dtype=float)
    ci = np.asarray(ci, dtype=float).reshape(-1, 2)
    return Subnets(archs, lat, ci_weights(lat, ci[:, 0], ci[:, 1]))


MAX_CSV_BYTES = 200_000_000


def read_csv(path: str | Path, space: Space) -> Subnets:
    """An external CSV with columns `arch` (the architecture's JSON text) and `latency_ms`, and
    optionally `weight` (how much each subnet counts in a fit, a positive number)."""
    path = Path(path)
    text = read_text(path, "CSV", MAX_CSV_BYTES)
    archs, lat, weight = [], [], []
    with io.StringIO(text, newline="") as f:
        try:
            reader = csv.DictReader(f)
            missing = {"arch", "latency_ms"} - set(reader.fieldnames or [])
            if missing:
                raise HwnasError(f"CSV {path} needs columns arch and latency_ms; it lacks {', '.join(sorted(missing))}")
            has_weight = "weight" in reader.fieldnames
            for row in reader:
                where = f"CSV {path} line {reader.line_num}"
                if None in row or any(v is None for v in row.values()):
                    raise HwnasError(f"{where}: wrong number of fields")
                doc = parse_json(row["arch"], f"{where}: arch")
                try:
                    arch = space.validate(doc)
                except HwnasError as e:
                    raise HwnasError(f"{where}: {e}") from None
                try:
                    ms = check_latency("latency_ms", float(row["latency_ms"]))
                except (ValueError, HwnasError):
                    raise HwnasError(f"{where}: latency_ms must be a positive number, got {row['latency_ms'][:40]!r}") from None
                if has_weight:
                    try:
                        w = float(row["weight"])
                    except ValueError:
                        w = np.nan
                    if not (np.isfinite(w) and w > 0):
                        raise HwnasError(f"{where}: weight must be a positive number, got {row['weight'][:40]!r}")
                    weight.append(w)
                archs.append(arch)
                lat.append(ms)
        except (csv.Error, UnicodeDecodeError) as e:
            raise HwnasError(f"CSV {path} is malformed: {e}") from None
    if not archs:
        raise HwnasError(f"CSV {path} has no rows")
    return Subnets(archs, np.asarray(lat, dtype=float), np.asarray(weight, dtype=float) if has_weight else None)


def split(data: Subnets, n_test: int, seed: int = 0) -> tuple[Subnets, Subnets]:
    """A disjoint train / held-out split by seed: the held-out set is `n_test` subnets drawn at
    random, the training set the rest, in a random order so its prefixes are random subsets."""
    order = np.random.default_rng(seed).permutation(len(data))
    return data.take(order[n_test:]), data.take(order[:n_test])
