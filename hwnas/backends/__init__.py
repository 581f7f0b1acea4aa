"""Measurement backends. Nothing in this package imports torch: a measurement worker runs
on a target that has only numpy and onnxruntime or TensorRT. The torch baselines live in
`hwnas.torch_backends`, outside this package, and are loaded by name only when asked for."""

from __future__ import annotations

from hwnas.backends.base import Backend
from hwnas.backends.protocol import MeasureProtocol, Measurement, run_protocol, summarize
from hwnas.registry import Registry

# name -> the module whose import registers it (`@register_backend`), imported on demand so a
# missing GPU library breaks only its own backend
BACKENDS: Registry[type[Backend]] = Registry("backend", {
    "ort-cpu": "hwnas.backends.ort", "ort-cuda": "hwnas.backends.ort", "ort-trt": "hwnas.backends.ort",
    "tensorrt": "hwnas.backends.tensorrt.runner", "tensorrt-graph": "hwnas.backends.tensorrt.runner",
    "torch-cpu": "hwnas.torch_backends", "torch-cuda": "hwnas.torch_backends",
    "torch-cuda-graph": "hwnas.torch_backends",
})


def register_backend(cls: type[Backend]) -> type[Backend]:
    """Class decorator: the backend is known by its `name`."""
    BACKENDS.add(cls.name, cls)
    return cls


def backend_names() -> list[str]:
    return BACKENDS.names()


def get_backend(name: str, threads: int = 1, precision: str = "fp32", check: bool = True) -> Backend:
    """The backend called `name`; with `check`, fail in one line where it cannot run here."""
    backend = BACKENDS.get(name)(threads=threads, precision=precision)
    if check:
        backend.check()
    return backend


__all__ = ["BACKENDS", "Backend", "MeasureProtocol", "Measurement", "backend_names", "get_backend", "register_backend",
           "run_protocol", "summarize"]
