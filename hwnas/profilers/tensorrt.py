"""TensorRT backend: measures a serialized engine built from ONNX by hwnas.exporters.tensorrt."""

from __future__ import annotations

from hwnas.errors import HwnasError
from hwnas.profilers.base import Backend

INSTALL = "pip install 'hwnas[tensorrt]' (tensorrt and pycuda, from NVIDIA's package index)"


def import_tensorrt():
    try:
        import tensorrt
    except ImportError:
        raise HwnasError(f"backend tensorrt needs TensorRT, which is not installed: {INSTALL}") from None
    return tensorrt


class TensorrtBackend(Backend):
    name = "tensorrt"
    needs_gpu = True

    def check(self) -> None:
        import_tensorrt()
        self.require_gpu()

    def version(self) -> str:
        return import_tensorrt().__version__
