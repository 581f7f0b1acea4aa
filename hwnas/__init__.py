"""hwnas: hardware-in-the-loop benchmarking and search for latency-constrained NAS.

The public API, imported on first use (so `import hwnas` costs no torch):

- spaces: `Space` (tfnas, proxyless), `get_space` (darts and other registered spaces)
- measuring: `open_measurer`, `Measurer`, `Store`
- latency models: `LookupTable`, `load_model`
- searches: `get_method` (the registered search methods), `TFNASConfig`, `UNASConfig`, `SNASConfig`
- data: `load_dataset`
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_PUBLIC = {
    "Space": "hwnas.spaces.mbconv",
    "get_space": "hwnas.spaces",
    "open_measurer": "hwnas.measure",
    "Measurer": "hwnas.measure",
    "Store": "hwnas.store",
    "LookupTable": "hwnas.surrogates.lut",
    "load_model": "hwnas.surrogates.models",
    "get_method": "hwnas.cli.methods.registry",
    "TFNASConfig": "hwnas.search.tfnas",
    "UNASConfig": "hwnas.search.unas",
    "SNASConfig": "hwnas.search.snas",
    "load_dataset": "hwnas.data",
}
__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str):
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'hwnas' has no attribute {name!r}")
