"""Measurement backends. Nothing in this package imports torch: a measurement worker runs
on a target that has only numpy and onnxruntime or TensorRT. The torch baselines live in
`hwnas.torch_backends` and are loaded by name only when asked for."""

from __future__ import annotations

import importlib

from hwnas.errors import HwnasError
from hwnas.profilers.base import Backend
from hwnas.profilers.protocol import MeasureProtocol, Measurement, run_protocol, summarize

# name -> "module:class", imported on demand so a missing GPU library breaks only its backend
BACKENDS = {
    "ort-cpu": "hwnas.profilers.ort:OrtBackend",
    "ort-cuda": "hwnas.profilers.ort:OrtCudaBackend",
    "ort-trt": "hwnas.profilers.ort:OrtTensorrtBackend",
    "tensorrt": "hwnas.profilers.tensorrt:TensorrtBackend",
    "tensorrt-graph": "hwnas.profilers.tensorrt:TensorrtGraphBackend",
    "torch-cpu": "hwnas.torch_backends:TorchCpuBackend",
    "torch-cuda": "hwnas.torch_backends:TorchCudaBackend",
    "torch-cuda-graph": "hwnas.torch_backends:TorchCudaGraphBackend",
}


def get_backend(name: str, threads: int = 1, precision: str = "fp32", check: bool = True) -> Backend:
    """The backend called `name`; with `check`, fail in one line where it cannot run here."""
    from hwnas.space import closest

    if name not in BACKENDS:
        raise HwnasError(f"unknown backend {name!r}{closest(name, BACKENDS)}; known: {', '.join(BACKENDS)}")
    module, cls = BACKENDS[name].split(":")
    backend = getattr(importlib.import_module(module), cls)(threads=threads, precision=precision)
    if check:
        backend.check()
    return backend


__all__ = ["BACKENDS", "Backend", "MeasureProtocol", "Measurement", "get_backend", "run_protocol", "summarize"]
