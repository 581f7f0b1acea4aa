"""Measuring networks: `Measurer` (`measurer.py`) looks each item up in the store and measures
what is missing on a backend, in worker processes, with the protocol; `networks.py` turns an
architecture of any registered space, or a part of one, into such an item. Nothing here imports
torch: an item's export runs in `hwnas.exporters`, called only when the item is loaded."""

from __future__ import annotations

from hwnas.measure.measurer import Item, Measured, Measurer, isolation_cores, open_measurer, parse_cpus

__all__ = ["Item", "Measured", "Measurer", "isolation_cores", "open_measurer", "parse_cpus"]
