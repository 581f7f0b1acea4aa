"""Measure layers, subnets and ONNX files on a backend, through the store: each thing is
measured once per target and protocol, and committed as soon as it is measured."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from hwnas.errors import HwnasError
from hwnas.profilers import Backend, MeasureProtocol, Measurement
from hwnas.profilers.worker import MeasurementWorker
from hwnas.space import Arch, LayerSpec, Space
from hwnas.store import Store, measurement_key


@dataclass
class Measured:
    measurement: Measurement
    cached: bool  # True where the store already held it


class Pending:
    """A measurement under way in a worker process; `result()` waits for it and stores it."""

    def __init__(self, measurer: "Measurer", key: str, kind: str, spec: dict[str, Any], future=None, done: Measured | None = None):
        self.measurer, self.key, self.kind, self.spec = measurer, key, kind, spec
        self.future, self._done = future, done

    def result(self) -> Measured:
        if self._done is None:
            m = self.future.result()
            self.measurer.store.put(self.key, self.kind, self.spec, m)
            self._done = Measured(m, cached=False)
        return self._done


def arch_spec(space: Space, arch: Arch, batch: int) -> dict[str, Any]:
    """What a measured subnet is stored as: the architecture, the space it is built in, the batch."""
    return {"arch": arch.to_json(), "space": space.config, "batch": batch}


class Measurer:
    def __init__(
        self,
        backend: Backend,
        store: Store,
        protocol: MeasureProtocol | None = None,
        cache_dir: Path | None = None,
        force: bool = False,
        worker: MeasurementWorker | None = None,
    ):
        self.backend = backend
        self.store = store
        self.protocol = protocol or MeasureProtocol()
        self.cache_dir = cache_dir
        self.force = force
        if worker is not None and backend.input != "onnx":
            raise HwnasError(f"backend {backend.name} measures in-process PyTorch modules; it cannot use a worker")
        self.worker = worker  # measure in a separate process: a crash or hang costs one measurement

    def _key(self, kind: str, spec: dict[str, Any], batch: int) -> str:
        return measurement_key(kind, spec, self.backend.fingerprint(batch), self.protocol.to_json())

    def _cached(self, key: str, force: bool = False) -> Measured | None:
        found = None if self.force or force else self.store.get(key)
        return Measured(found, cached=True) if found is not None else None

    def _measure(self, kind: str, spec: dict[str, Any], batch: int, load: Callable[[], Any],
                 force: bool = False) -> Measured:
        key = self._key(kind, spec, batch)
        found = self._cached(key, force)
        if found is not None:
            return found
        if self.worker is not None:
            m = self.worker.measure(load(), self.protocol, batch)
        else:
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

    def arch(self, space: Space, arch: Arch | dict, batch: int = 1, force: bool = False) -> Measured:
        """`arch` end to end; force: a fresh session even when the store has it (it replaces the stored one)."""
        arch = space.validate(arch)
        return self._measure("arch", arch_spec(space, arch, batch), batch, self._model(space.layers(arch, batch)), force)

    def submit_arch(self, space: Space, arch: Arch | dict, batch: int = 1) -> Pending:
        """Start measuring `arch` in the worker and return at once (export happens here, in
        the caller's process); `.result()` gives the Measured. Without a worker (torch
        backends measure in-process) it measures now."""
        if self.worker is None:
            return Pending(self, "", "arch", {}, done=self.arch(space, arch, batch))
        arch = space.validate(arch)
        spec = arch_spec(space, arch, batch)
        key = self._key("arch", spec, batch)
        found = self._cached(key)
        if found is not None:
            return Pending(self, key, "arch", spec, done=found)
        path = self._model(space.layers(arch, batch))()
        return Pending(self, key, "arch", spec, future=self.worker.submit(path, self.protocol, batch))

    def onnx(self, path: str | Path) -> Measured:
        """Any ONNX file a user brings, keyed by its content."""
        if self.backend.input != "onnx":
            raise HwnasError(f"backend {self.backend.name} measures PyTorch modules, not ONNX files")
        path = Path(path)
        try:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
        except OSError as e:
            raise HwnasError(f"cannot read ONNX file {path}: {e.strerror or e}") from None
        try:
            return self._measure("onnx", {"onnx_sha256": digest}, 0, lambda: path)
        except HwnasError:
            raise
        except Exception as e:  # a user's model that loads but cannot run (ONNX Runtime raises its own types)
            raise HwnasError(f"ONNX file {path} fails when run: {str(e).splitlines()[0][:300] if str(e) else type(e).__name__}") from None
