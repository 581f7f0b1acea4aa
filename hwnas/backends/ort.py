"""ONNX Runtime backends: CPU (single thread by default), CUDA and TensorRT execution providers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from hwnas.errors import HwnasError
from hwnas.jsonutil import cache_root
from hwnas.backends import register_backend
from hwnas.backends.base import Backend, onnx_path
from hwnas.backends.protocol import Clock

_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}


def _ort():
    try:
        import onnxruntime
    except ImportError:
        raise HwnasError("onnxruntime is not installed: pip install onnxruntime") from None
    return onnxruntime


def random_inputs(session, batch: int | None = None) -> dict[str, np.ndarray]:
    """A random tensor for every graph input; a symbolic first dimension takes `batch`, and a
    fixed one that differs from a batch over 1 is refused (it would silently time another batch;
    at batch 1, the default, fixed shapes are taken as they are)."""
    rng = np.random.default_rng(0)
    feeds = {}
    for inp in session.get_inputs():
        shape = []
        for i, d in enumerate(inp.shape):
            if isinstance(d, int) and d > 0:
                if i == 0 and batch not in (None, 1) and d != batch:
                    raise HwnasError(f"input {inp.name!r} has a fixed batch of {d}, so batch {batch} cannot be measured; "
                                     "export the model with a dynamic batch axis")
                shape.append(d)
            elif i == 0:
                shape.append(batch or 1)
            else:
                raise HwnasError(f"input {inp.name!r} has a symbolic dimension {d!r} at axis {i}; export it with a fixed shape")
        dtype = _DTYPES.get(inp.type)
        if dtype is None:
            raise HwnasError(f"input {inp.name!r} has type {inp.type}, which hwnas cannot make random data for")
        feeds[inp.name] = (rng.standard_normal(shape) if np.issubdtype(dtype, np.floating) else np.zeros(shape)).astype(dtype)
    return feeds


def check_batch(path: Path, batch: int) -> None:
    """Refuse, before anything is timed, a batch over 1 that a fixed first axis cannot take."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # onnx raises DecodeError and friends for a file that is not ONNX
        raise HwnasError(f"{path} is not a valid ONNX file: {type(e).__name__}") from None
    inputs = {i.name for i in model.graph.initializer}
    for inp in model.graph.input:
        if inp.name in inputs:
            continue
        dims = inp.type.tensor_type.shape.dim
        if batch != 1 and dims and dims[0].HasField("dim_value") and dims[0].dim_value not in (0, batch):
            raise HwnasError(f"{path.name}: input {inp.name!r} has a fixed batch of {dims[0].dim_value}, so --batch {batch} "
                             "cannot be measured; export it with a dynamic batch axis")


class OrtRunner:
    def __init__(self, session, feeds: dict[str, np.ndarray], binding=None):
        self.session = session
        self.feeds = feeds
        self.binding = binding

    def time_once(self, clock: Clock) -> float:
        t0 = clock()
        if self.binding is None:
            self.session.run(None, self.feeds)
        else:
            # Inputs and outputs stay on the device; run_with_iobinding returns when outputs are ready.
            self.session.run_with_iobinding(self.binding)
        return clock() - t0

    def close(self) -> None:
        self.session = None


@register_backend
class OrtBackend(Backend):
    """ONNX Runtime with one execution provider. Threads default to 1 with sequential
    execution and spinning off, so a CPU measurement is repeatable on a shared machine."""

    name = "ort-cpu"
    ep = "CPUExecutionProvider"
    package = "onnxruntime"

    def check(self) -> None:
        ort = _ort()
        if self.ep not in ort.get_available_providers():
            raise HwnasError(
                f"backend {self.name} needs {self.ep}, which this onnxruntime lacks "
                f"(has {', '.join(ort.get_available_providers())}); pip install {self.package}"
            )
        if self.name == "ort-cpu" and self.precision != "fp32":
            raise HwnasError("backend ort-cpu measures fp32 models only; export an fp16 model and use a GPU backend")
        if self.needs_gpu:
            self.require_gpu()

    def version(self) -> str:
        return _ort().__version__

    def provider(self) -> str:
        return self.ep

    def session_options(self):
        ort = _ort()
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.log_severity_level = 4  # fatal only: a failure reaches the user as hwnas's one line, not ORT's log too
        return opts

    def provider_options(self) -> dict[str, Any]:
        return {}

    def create_session(self, path: Path):
        ort = _ort()
        try:
            return ort.InferenceSession(
                str(path), self.session_options(), providers=[self.ep], provider_options=[self.provider_options()]
            )
        except Exception as e:  # onnxruntime raises its own exception types for invalid models
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise HwnasError(f"onnxruntime cannot load {path}: {first}") from None

    def load(self, model: Any, batch: int | None = None) -> OrtRunner:
        session = self.create_session(onnx_path(model))
        feeds = random_inputs(session, batch)
        return OrtRunner(session, feeds, self.bind(session, feeds))

    def bind(self, session, feeds):
        return None


@register_backend
class OrtCudaBackend(OrtBackend):
    name = "ort-cuda"
    ep = "CUDAExecutionProvider"
    package = "'hwnas[ort-gpu]' (onnxruntime-gpu)"
    needs_gpu = True

    def bind(self, session, feeds):
        """IO binding: inputs copied to the GPU once, outputs left there, so no host copies are timed."""
        ort = _ort()
        binding = session.io_binding()
        for name, value in feeds.items():
            binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(value, "cuda", 0))
        for out in session.get_outputs():
            binding.bind_output(out.name, "cuda", 0)
        return binding


@register_backend
class OrtTensorrtBackend(OrtCudaBackend):
    name = "ort-trt"
    ep = "TensorrtExecutionProvider"

    def provider_options(self) -> dict[str, Any]:
        cache = cache_root() / "ort-trt"
        cache.mkdir(parents=True, exist_ok=True)
        return {
            "trt_fp16_enable": self.precision == "fp16",
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(cache),
            "trt_timing_cache_enable": True,
            "trt_timing_cache_path": str(cache),
        }
