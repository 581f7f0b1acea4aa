"""A latency lookup table for slot spaces, keyed by each slot's own spec (kind, candidate, input
and output shape; an original module also by its structure).

Every distinct (slot spec, candidate) is measured alone as its own model, through the store. The
network's parts outside the slots (stem, head, anything the rules left alone) are one `base`
term: the measured default architecture less its slots' entries, so the table is exact there and
predicts another architecture as base + the sum of its slots' entries.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from tqdm import tqdm

from hwnas.backends.protocol import usable
from hwnas.errors import HwnasError
from hwnas.jsonutil import canonical_json, read_json, write_json
from hwnas.measure.networks import measure_arch, measure_module
from hwnas.spaces.slots import SlotSpace

FORMAT = "hwnas-slot-lut"
FORMAT_VERSION = 1


def entry_key(spec: dict[str, Any], batch: int) -> str:
    return canonical_json({**spec, "batch": batch})


class SlotLatencyTable:
    name = "slot-lut"

    def __init__(self, space_config: dict[str, Any], batch: int, entries: dict[str, float], base_ms: float,
                 target: dict[str, Any] | None = None, flagged: list[str] | None = None):
        self.space_config, self.batch, self.entries, self.base_ms = space_config, batch, dict(entries), base_ms
        self.target = target or {}
        self.flagged = list(flagged or [])  # entries whose measurement was flagged (noisy, disturbed, ...)

    def predict(self, space: SlotSpace, arch) -> float:
        keys = [entry_key(s, self.batch) for s in space.slot_specs(arch)]
        missing = [k for k in keys if k not in self.entries]
        if missing:
            raise HwnasError(f"slot table lacks {len(missing)} entries, e.g. {missing[0]}")
        return self.base_ms + sum(self.entries[k] for k in keys)

    @classmethod
    def build(cls, space: SlotSpace, measurer, batch: int = 1, show_progress: bool = True) -> "SlotLatencyTable":
        parts: dict[str, tuple[Any, str, dict[str, Any]]] = {}
        for slot in space.slots:
            for choice in slot.candidates:
                parts.setdefault(entry_key(slot.spec(choice), batch), (slot, choice, slot.spec(choice)))
        entries, flagged = {}, []
        for key, (slot, choice, spec) in tqdm(parts.items(), desc="slot table", unit="part", file=sys.stderr,
                                              disable=not show_progress, dynamic_ncols=True):
            m = measure_module(measurer, "slot_part", {"slot_part": spec}, lambda s=slot, c=choice: space.make_candidate(s, c),
                               (batch, *slot.in_shape)).measurement
            entries[key] = m.stats["median_ms"]
            if not usable(m.flags):
                flagged.append(key)
        whole = measure_arch(measurer, space, space.default_arch(), batch).measurement
        if not usable(whole.flags):
            flagged.append("base")
        base = whole.stats["median_ms"] - sum(entries[entry_key(s, batch)] for s in space.slot_specs(space.default_arch()))
        return cls(space.config, batch, entries, base, {"fingerprint": measurer.backend.fingerprint(batch)}, flagged)

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": FORMAT_VERSION, "space": self.space_config, "batch": self.batch,
                "target": self.target, "base_ms": self.base_ms, "entries": self.entries, "flagged": self.flagged}

    def save(self, path: str | Path) -> None:
        write_json(path, self.to_json())

    @classmethod
    def load(cls, path: str | Path, expect_space: SlotSpace | None = None,
             expect_fingerprint: dict[str, Any] | None = None) -> "SlotLatencyTable":
        doc = read_json(path, "slot latency table", max_bytes=20_000_000)
        if not isinstance(doc, dict) or doc.get("format") != FORMAT or doc.get("version") != FORMAT_VERSION:
            raise HwnasError(f"{path} is not a slot latency table ({FORMAT} v{FORMAT_VERSION})")
        if expect_space is not None and canonical_json(doc.get("space")) != canonical_json(expect_space.config):
            raise HwnasError(f"slot table {path} is for another space than {expect_space}")
        if expect_fingerprint is not None and canonical_json(doc.get("target", {}).get("fingerprint")) != canonical_json(expect_fingerprint):
            raise HwnasError(f"slot table {path} was measured on another target; rebuild it here")
        return cls(doc["space"], doc["batch"], doc["entries"], doc["base_ms"], doc.get("target"), doc.get("flagged"))
