"""PyTorch eager baselines (`torch-cpu`, `torch-cuda`, `torch-cuda-graph`): backends that time a
torch module in this process. They live outside `hwnas.backends`, whose measurement side runs on a
target with only numpy and onnxruntime or TensorRT; the registry loads this module by name only
when one of them is asked for."""

from __future__ import annotations

from typing import Any

import torch

from hwnas.errors import HwnasError
from hwnas.backends import register_backend
from hwnas.backends.base import Backend
from hwnas.backends.protocol import Clock


class TorchCpuRunner:
    def __init__(self, module: torch.nn.Module, x: torch.Tensor):
        self.module, self.x = module, x

    def time_once(self, clock: Clock) -> float:
        with torch.inference_mode():
            t0 = clock()
            self.module(self.x)
            return clock() - t0

    def close(self) -> None:
        pass


@register_backend
class TorchCpuBackend(Backend):
    """PyTorch eager on the CPU with torch.set_num_threads: a baseline beside ONNX Runtime."""

    name = "torch-cpu"
    input = "torch"

    def check(self) -> None:
        if self.precision != "fp32":
            raise HwnasError("backend torch-cpu measures fp32 only")

    def version(self) -> str:
        return torch.__version__

    def provider(self) -> str:
        return "eager"

    def load(self, model: Any, batch: int = 1) -> TorchCpuRunner:
        module, input_shape = model
        torch.set_num_threads(self.threads)
        return TorchCpuRunner(module.eval(), torch.randn(*input_shape))


class TorchCudaRunner:
    """Timed with CUDA events on a non-default stream: GPU time, not launch-queue time.
    With `graph`, the forward is captured once as a CUDA graph and replayed."""

    def __init__(self, module: torch.nn.Module, x: torch.Tensor, graph: bool):
        self.module, self.x = module, x
        self.stream = torch.cuda.Stream()
        self.start = torch.cuda.Event(enable_timing=True)
        self.end = torch.cuda.Event(enable_timing=True)
        self.graph = None
        if graph:
            with torch.inference_mode(), torch.cuda.stream(self.stream):
                for _ in range(3):  # warm up kernels and the allocator before capture
                    module(x)
            self.stream.synchronize()
            self.graph = torch.cuda.CUDAGraph()
            with torch.inference_mode(), torch.cuda.graph(self.graph, stream=self.stream):
                module(x)

    def time_once(self, clock: Clock) -> float:
        with torch.inference_mode(), torch.cuda.stream(self.stream):
            self.start.record(self.stream)
            if self.graph is not None:
                self.graph.replay()
            else:
                self.module(self.x)
            self.end.record(self.stream)
        self.end.synchronize()
        return self.start.elapsed_time(self.end) / 1e3

    def close(self) -> None:
        self.graph = None
        torch.cuda.empty_cache()


@register_backend
class TorchCudaBackend(Backend):
    name = "torch-cuda"
    input = "torch"
    needs_gpu = True
    cuda_graph = False

    def check(self) -> None:
        if not torch.cuda.is_available():
            raise HwnasError(
                f"backend {self.name} needs a CUDA GPU and a CUDA build of torch; "
                f"this torch {torch.__version__} sees no GPU"
            )

    def version(self) -> str:
        return f"{torch.__version__} cuda {torch.version.cuda}"

    def provider(self) -> str:
        return "cuda-graph" if self.cuda_graph else "eager"

    def fingerprint(self, batch: int) -> dict[str, Any]:
        fp = super().fingerprint(batch)
        fp["gpu"] = torch.cuda.get_device_name(0)  # torch's own view, where nvidia-smi is absent
        return fp

    def load(self, model: Any, batch: int = 1) -> TorchCudaRunner:
        module, input_shape = model
        dtype = torch.float16 if self.precision == "fp16" else torch.float32
        module = module.eval().to("cuda", dtype)
        return TorchCudaRunner(module, torch.randn(*input_shape, device="cuda", dtype=dtype), self.cuda_graph)


@register_backend
class TorchCudaGraphBackend(TorchCudaBackend):
    name = "torch-cuda-graph"
    cuda_graph = True
