"""Latency lookup tables: every distinct layer of a space measured on one target.

One entry per layer spec without its mid width (TF-NAS style): a map from mid width to
median ms over a grid of widths, linearly interpolated between grid points and exact at
them. A subnet's latency = base (stem + fixed block + head) + the sum of its searchable
layers. A spec the table does not hold is an error, never 0.

Widths come in two classes with their own curves: ONNX Runtime's CPU kernels are ~3x
slower on a mid width that is not a multiple of 4 (measured: 0.10 ms at mid 256, 260, 264;
0.35 ms at 257, 258, 259, 261, ...), so one curve through multiples of the step would miss
nearly every random subnet's widths. In an elastic space the table also measures, beside
each grid width g, the unaligned width g + 1 (and hi - 1), and a lookup interpolates
within the class of the asked width (`align`, default 4; 1 turns this off).

Each entry is measured as a model of its own and so carries one model's fixed cost (the
runtime's call, output hand-over, timer), which a whole network pays once. A build measures
that cost as an empty model (an identity on a 1x1x1 input, `overhead_ms`, capped at the
cheapest entry, which cannot cost less than the call), and a lookup
subtracts it from every part and adds it back once: without it the table over-predicts small
networks by the summed overhead of their ~20 parts (+22-25% on the tour's 0.3 ms networks).
A table written before this reads with no overhead, as it was.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hwnas.errors import ForeignTargetError, HwnasError
from hwnas.jsonutil import canonical_json, read_json, write_json
from hwnas.measure.networks import module_item
from hwnas.spaces.mbconv import SKIP, Arch, LayerSpec, Space, conv_out, distinct_layers
from hwnas.surrogates.base import DepthWeights, Mids, OpWeights, soft_latency
from hwnas.validate import MAX_LATENCY_MS, check_number

FORMAT = "hwnas-lut"
FORMAT_VERSION = 1
DEFAULT_WIDTH_STEP = 8  # TF-NAS measured every 8 channels
DEFAULT_ALIGN = 4  # ONNX Runtime CPU: widths that are multiples of 4 take the fast kernels
MAX_FILE_BYTES = 50_000_000
# Fingerprint fields that identify the target; python or OS versions do not change a table.
TARGET_FIELDS = ("backend", "backend_version", "provider", "threads", "precision", "batch", "cpu", "gpu")


def entry_key(spec: LayerSpec) -> str:
    """The table key: the layer spec without its mid width."""
    key = spec.key()
    del key["mid"]
    return canonical_json(key)


def describe(spec: LayerSpec) -> str:
    where = f" at {spec.position}" if spec.position else ""
    return (f"{spec.kind} layer{where} (c_in={spec.c_in}, mid={spec.mid}, se={spec.se}, c_out={spec.c_out}, "
            f"k={spec.kernel}, s={spec.stride}, {spec.h}x{spec.w}, batch={spec.batch})")


def stage_input_hw(space: Space) -> list[int]:
    """Spatial size entering each searchable stage (fixed: stage depth >= 1 applies every stride)."""
    h = space.fixed_block().out_hw[0]
    sizes = []
    for shape in space.stages:
        sizes.append(h)
        h = conv_out(h, 3, shape.stride)
    return sizes


def layer_spec(space: Space, i: int, j: int, op: str, mid: int, batch: int = 1) -> LayerSpec:
    """The spec of layer j of searchable stage i running `op` at width `mid` (as Space.layers builds it)."""
    shape = space.stages[i]
    h = stage_input_hw(space)[i]
    if j > 0:
        h = conv_out(h, 3, shape.stride)
    o = space.ops[op]
    return LayerSpec(
        "mbinvres", space.layer_c_in(i, j), shape.c_out, o.kernel, shape.stride if j == 0 else 1, shape.act,
        h, h, batch, mid=int(mid), se=o.se_ratio * space.layer_c_in(i, j), part="searchable",
        position=f"stage{i + 3}.layer{j + 1}",
    )


def check_config(doc: dict[str, Any], what: str, path: Any, space: Space | None, backend: str | None,
                 batch: int | None, fingerprint: dict[str, Any] | None) -> None:
    """Refuse, in one line, a table or model made for another space, resolution, batch or target."""
    if space is not None and doc.get("space") != space.config:
        got, want = doc.get("space"), space.config
        got = got if isinstance(got, dict) else {}
        diff = [f"{k} {got.get(k)!r} (asked for {want[k]!r})" for k in want if got.get(k) != want[k]]
        raise HwnasError(f"{what} {path} is for another space: {', '.join(diff)}")
    if backend is not None and doc.get("backend") != backend:
        raise ForeignTargetError(f"{what} {path} was measured on backend {doc.get('backend')!r}, not {backend!r}")
    if batch is not None and doc.get("batch") != batch:
        raise HwnasError(f"{what} {path} is for batch {doc.get('batch')!r}, not {batch}")
    if fingerprint is not None:
        got = doc.get("fingerprint")
        got = got if isinstance(got, dict) else {}
        for k in TARGET_FIELDS:
            if got.get(k) != fingerprint.get(k):
                raise ForeignTargetError(f"{what} {path} was measured on another target: {k} {got.get(k)!r}, "
                                 f"this target has {fingerprint.get(k)!r}")


def space_from_config(cfg: dict[str, Any]) -> Space:
    return Space(cfg["space"], resolution=cfg["resolution"], width_mult=cfg["width_mult"], num_classes=cfg["num_classes"])


def read_doc(path: str | Path, what: str, formats: tuple[str, ...], version: int) -> dict[str, Any]:
    """Read a JSON file of ours; a truncated, corrupt or foreign file is one line."""
    path = Path(path)
    doc = read_json(path, what, MAX_FILE_BYTES)
    if not isinstance(doc, dict) or doc.get("format") not in formats:
        raise HwnasError(f"{path} is not an hwnas {what}")
    if doc.get("version") != version:
        raise HwnasError(f"{what} {path} has format version {doc.get('version')!r}; this hwnas reads {version}")
    return doc


def with_unaligned(space: Space, specs: list[LayerSpec], align: int) -> list[LayerSpec]:
    """`specs` and, in an elastic space, beside each grid width g of a layer the unaligned
    width g + 1 (and hi - 1), so both width classes have a curve over the whole range."""

    if align == 1 or not space.definition.elastic:
        return specs
    grids: dict[str, list[LayerSpec]] = {}
    for spec in specs:
        if spec.part == "searchable":
            grids.setdefault(entry_key(spec), []).append(spec)
    out = dict.fromkeys(specs)
    for family in grids.values():
        family.sort(key=lambda s: s.mid)
        lo, hi = family[0].mid, family[-1].mid
        for spec in family:
            for mid in (spec.mid + 1, spec.mid - 1):
                if lo <= mid <= hi and mid % align and (mid == spec.mid + 1 or spec.mid == hi):
                    out.setdefault(replace(spec, mid=mid))
    return list(out)


OVERHEAD_SHAPE = (1, 1, 1)  # per batch: an input too small for the identity to cost anything but the call


def overhead_item(measurer, batch: int):
    """The empty model whose latency is one model's fixed cost on this target (`overhead_ms`)."""
    shape = (batch, *OVERHEAD_SHAPE)
    return module_item(measurer, "overhead", {"overhead": "identity", "input_shape": list(shape)}, torch.nn.Identity,
                       shape)


class LookupTable:
    """Per-layer latencies of one space on one target; predict and soft evaluation."""

    name = "lut"

    def __init__(self, space: Space, batch: int, backend: str, fingerprint: dict[str, Any], protocol: dict[str, Any],
                 width_step: int | None, entries: dict[str, tuple[list[int], list[float]]], align: int = DEFAULT_ALIGN,
                 overhead_ms: float = 0.0):
        self.space = space
        self.batch = batch
        self.backend = backend
        self.fingerprint = fingerprint
        self.protocol = protocol
        self.width_step = width_step
        if isinstance(align, bool) or not isinstance(align, int) or align < 1:
            raise HwnasError(f"alignment must be a positive integer, got {align!r}")
        self.align = align
        self.overhead_ms = check_number("lookup table overhead_ms", overhead_ms, 0.0, MAX_LATENCY_MS)
        self.entries = {k: (np.asarray(m, dtype=float), np.asarray(v, dtype=float)) for k, (m, v) in entries.items()}
        self.curves: dict[tuple[str, bool], tuple[np.ndarray, np.ndarray]] = {}  # (key, aligned) -> mids, ms
        check_number("lookup table batch", batch, 1, 4096, integer=True)
        for k, (m, v) in self.entries.items():
            if m.ndim != 1 or len(m) == 0 or m.shape != v.shape or not np.all(np.isfinite(m)) or np.any(np.diff(m) <= 0):
                raise HwnasError(f"lookup table entry {k} is malformed: mids must increase and match the latencies")
            # Every value must be a latency: a NaN, zero, negative or absurd entry would give silent nonsense.
            bad = ~((v > 0) & (v <= MAX_LATENCY_MS))
            if bad.any():
                raise HwnasError(f"lookup table entry {k} holds {v[bad][0]!r} ms at width {m[bad][0]:g}: "
                                 f"not a latency (must be in (0, {MAX_LATENCY_MS:g}] ms)")
            for aligned in (True, False):
                pick = (m % align == 0) == aligned
                if pick.any():
                    self.curves[k, aligned] = m[pick], v[pick]
        # the network's one model overhead goes with the parts every subnet has
        self.base_ms = self.overhead_ms + sum(self.layer_ms(s) for s in (space.stem(batch), space.fixed_block(batch),
                                                                          self.head_spec))

    @property
    def head_spec(self) -> LayerSpec:
        h = stage_input_hw(self.space)[-1]
        return self.space.head(conv_out(h, 3, self.space.stages[-1].stride), self.batch)

    # --- building -------------------------------------------------------------------------

    @classmethod
    def build(cls, space: Space, measurer, batch: int = 1, width_step: int | None = DEFAULT_WIDTH_STEP,
              show_progress: bool = True) -> "LookupTable":
        """Measure every distinct layer through the store: a rebuild or a resumed build re-measures nothing."""
        if width_step is not None and (isinstance(width_step, bool) or not isinstance(width_step, int) or width_step < 1):
            raise HwnasError(f"width step must be a positive integer, got {width_step!r}")
        specs = with_unaligned(space, distinct_layers(space, batch, width_step), DEFAULT_ALIGN)
        points: dict[str, dict[int, float]] = {}
        overhead, *done = measurer.many([overhead_item(measurer, batch), *(measurer.layers_item([s]) for s in specs)],
                                        "lookup table", show_progress)
        for spec, measured in zip(specs, done):
            points.setdefault(entry_key(spec), {})[spec.mid] = measured.measurement.stats["median_ms"]
        entries = {k: (sorted(p), [p[m] for m in sorted(p)]) for k, p in points.items()}
        # no layer costs less than the call itself: an empty model read above the cheapest entry was disturbed
        lowest = min(min(p.values()) for p in points.values())
        return cls(space, batch, measurer.backend.name, measurer.backend.fingerprint(batch),
                   measurer.protocol.to_json(), width_step, entries,
                   overhead_ms=min(overhead.measurement.stats["median_ms"], lowest))

    # --- lookups --------------------------------------------------------------------------

    def layer_ms(self, spec: LayerSpec) -> float:
        """The part's share of a network's latency: its entry less one model's overhead (a
        noisy entry below the overhead counts 0, never negative)."""
        return self.less_overhead(self.raw_layer_ms(spec))

    def less_overhead(self, raw_ms: float) -> float:
        """A part measured as a model of its own, less the one model's overhead it carries."""
        return max(raw_ms - self.overhead_ms, 0.0)

    def raw_layer_ms(self, spec: LayerSpec) -> float:
        """The part measured as a model of its own, interpolated in its width class."""
        key = entry_key(spec)
        if key not in self.entries:
            raise HwnasError(f"the lookup table holds no {describe(spec)}; rebuild it with `hwnas lut build` for this space")
        aligned = spec.mid % self.align == 0
        mids, ms = self.curves.get((key, aligned), ((), ()))
        if len(mids) == 0 or not mids[0] <= spec.mid <= mids[-1]:
            what = "widths that are multiples of" if aligned else "widths that are not multiples of"
            held = f"{int(mids[0])}..{int(mids[-1])}" if len(mids) else "none"
            raise HwnasError(f"the lookup table holds {what} {self.align} in {held} only, not {describe(spec)}")
        return float(np.interp(spec.mid, mids, ms))

    def op_ms(self, i: int, j: int, op: str, mid: int) -> float:
        """Layer j of stage i running `op` at `mid`; skip is the identity: 0 ms exactly."""
        if op == SKIP:
            return 0.0
        return self.layer_ms(layer_spec(self.space, i, j, op, mid, self.batch))

    def layer_terms(self, arch: Arch | dict) -> list[list[float]]:
        """Per stage, the ms of each layer of `arch` (0 for skip)."""
        arch = self.space.validate(arch)
        return [[self.op_ms(i, j, c.op, c.mid) for j, c in enumerate(stage)] for i, stage in enumerate(arch.stages)]

    def predict(self, arch: Arch | dict) -> float:
        return self.base_ms + sum(sum(stage) for stage in self.layer_terms(arch))

    def soft(self, op_weights: OpWeights, depth_weights: DepthWeights, mids: Mids = None) -> torch.Tensor:
        return soft_latency(self.space, self.base_ms, self.op_ms, op_weights, depth_weights, mids)

    # --- files ----------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "space": self.space.config,
            "batch": self.batch,
            "backend": self.backend,
            "fingerprint": self.fingerprint,
            "protocol": self.protocol,
            "width_step": self.width_step,
            "align": self.align,
            "base_ms": self.base_ms,
            "overhead_ms": self.overhead_ms,
            "entries": [{"key": json.loads(k), "mids": [int(x) for x in m], "ms": [float(x) for x in v]}
                        for k, (m, v) in self.entries.items()],
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any], path: Any = "<table>") -> "LookupTable":
        try:
            space = space_from_config(doc["space"])
            entries = {canonical_json(e["key"]): (e["mids"], e["ms"]) for e in doc["entries"]}
            if len(entries) != len(doc["entries"]):
                raise HwnasError(f"lookup table {path} holds an entry twice")
            return cls(space, doc["batch"], doc["backend"], doc["fingerprint"], doc["protocol"], doc["width_step"], entries,
                       doc["align"], doc.get("overhead_ms", 0.0))  # tables older than the overhead: none
        except (KeyError, TypeError, ValueError) as e:
            raise HwnasError(f"lookup table {path} is corrupt: missing or malformed field {e}") from None

    def save(self, path: str | Path) -> None:
        try:
            write_json(path, self.to_json())
        except OSError as e:
            raise HwnasError(f"cannot write lookup table {path}: {e.strerror or e}") from None

    @classmethod
    def load(cls, path: str | Path, expect_space: Space | None = None, expect_backend: str | None = None,
             expect_batch: int | None = None, expect_fingerprint: dict[str, Any] | None = None) -> "LookupTable":
        doc = read_doc(path, "lookup table", (FORMAT,), FORMAT_VERSION)
        check_config(doc, "lookup table", path, expect_space, expect_backend, expect_batch, expect_fingerprint)
        return cls.from_json(doc, path)

