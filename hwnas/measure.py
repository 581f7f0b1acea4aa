"""Measure layers, subnets and ONNX files on a backend, through the store: each thing is
measured once per target and protocol, and committed as soon as it is measured."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from hwnas.errors import HwnasError
from hwnas.profilers import Backend, MeasureProtocol, Measurement
from hwnas.space import Arch, LayerSpec, Space
from hwnas.store import Store, measurement_key


@dataclass
class Measured:
    measurement: Measurement
    cached: bool  # True where the store already held it


class Measurer:
    def __init__(
        self,
        backend: Backend,
        store: Store,
        protocol: MeasureProtocol | None = None,
        cache_dir: Path | None = None,
        force: bool = False,
    ):
        self.backend = backend
        self.store = store
        self.protocol = protocol or MeasureProtocol()
        self.cache_dir = cache_dir
        self.force = force

    def _measure(self, kind: str, spec: dict[str, Any], batch: int, load: Callable[[], Any]) -> Measured:
        fingerprint = self.backend.fingerprint(batch)
        key = measurement_key(kind, spec, fingerprint, self.protocol.to_json())
        if not self.force:
            found = self.store.get(key)
            if found is not None:
                return Measured(found, cached=True)
        m = self.backend.measure(load(), self.protocol, batch=batch)
        self.store.put(key, kind, spec, m)
        return Measured(m, cached=False)

    def _model(self, specs: list[LayerSpec]) -> Callable[[], Any]:
        """What the backend loads for these consecutive layers: an ONNX file, or a torch module."""
        if self.backend.input == "torch":
            from torch import nn

            from hwnas.modules import build_layer

            return lambda: (nn.Sequential(*(build_layer(s) for s in specs)), specs[0].input_shape)
        from hwnas.exporters.onnx import export_layers

        return lambda: export_layers(specs, self.cache_dir).path

    def layers(self, specs: list[LayerSpec]) -> Measured:
        """Consecutive layers as one model: one layer, an adjacent pair, or a whole subnet."""
        kind = "layer" if len(specs) == 1 else "layers"
        spec = {"layer": specs[0].key()} if len(specs) == 1 else {"layers": [s.key() for s in specs]}
        return self._measure(kind, spec, specs[0].batch, self._model(specs))

    def layer(self, spec: LayerSpec) -> Measured:
        return self.layers([spec])

    def arch(self, space: Space, arch: Arch | dict, batch: int = 1) -> Measured:
        arch = space.validate(arch)
        spec = {"arch": arch.to_json(), "space": space.config, "batch": batch}
        return self._measure("arch", spec, batch, self._model(space.layers(arch, batch)))

    def onnx(self, path: str | Path) -> Measured:
        """Any ONNX file a user brings, keyed by its content."""
        if self.backend.input != "onnx":
            raise HwnasError(f"backend {self.backend.name} measures PyTorch modules, not ONNX files")
        path = Path(path)
        try:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
        except OSError as e:
            raise HwnasError(f"cannot read ONNX file {path}: {e.strerror or e}") from None
        return self._measure("onnx", {"onnx_sha256": digest}, 0, lambda: path)
