"""TensorRT backends: measure a serialized engine built from ONNX by hwnas.backends.tensorrt.builder.

`tensorrt` times one `execute_async_v3` on a non-default stream between two CUDA events:
GPU time, with inputs copied to the device once before timing. `tensorrt-graph` captures
that enqueue once as a CUDA graph and times one graph launch. With `h2d=True` the input
copies (from pinned host memory) are inside the timed region too.

`layer_report` gives per-layer times (a TensorRT IProfiler on the context) and, from the
engine inspector's JSON, which ONNX nodes TensorRT fused into each of its layers.

Imports no torch; TensorRT and the CUDA runtime load only when a backend is used.
"""

from __future__ import annotations

import importlib.util
import json
import re
import time
from pathlib import Path
from typing import Any

import numpy as np

from hwnas.backends import cuda, register_backend
from hwnas.backends.base import Backend, onnx_path
from hwnas.backends.fingerprint import nvidia_gpu
from hwnas.backends.protocol import Clock, Measurement, MeasureProtocol
from hwnas.backends.tensorrt.builder import (
    DEFAULT_TIMEOUT_S,
    DEFAULT_WORKSPACE,
    BuildConfig,
    Engine,
    build_engine,
    has_fp16_flag,
    import_tensorrt,
)
from hwnas.errors import HwnasError

ONNX_NODE = re.compile(r"\[ONNX Layer: ([^\]]*)\]")


def _logger(trt):
    return trt.Logger(trt.Logger.ERROR)


# ----------------------------------------------------------------------------- the runner


class TensorrtRunner:
    """A deserialized engine with every IO tensor in device memory, ready to run."""

    def __init__(self, plan: bytes, *, cuda_graph: bool = False, h2d: bool = False, batch: int = 1, seed: int = 0):
        trt = import_tensorrt()
        self.cuda = cuda.api()
        self.h2d = h2d
        self.buffers: dict[str, cuda.DeviceBuffer] = {}
        self.hosts: dict[str, cuda.HostBuffer] = {}
        self.graph: cuda.CudaGraph | None = None
        self.runtime = self.context = self.engine = self.stream = self.timer = None
        try:
            self.stream = cuda.Stream(self.cuda)
            self.timer = cuda.EventTimer(self.stream)
            self._setup(trt, plan, batch, seed)
            self.run_sync()  # flushes TensorRT's deferred set-up before any capture or timing
            if cuda_graph:
                self.graph = cuda.CudaGraph(self.stream, self._enqueue)
        except BaseException:
            self.close()
            raise

    def _setup(self, trt, plan: bytes, batch: int, seed: int) -> None:
        self.runtime = trt.Runtime(_logger(trt))
        self.engine = self.runtime.deserialize_cuda_engine(plan)
        if self.engine is None:
            raise HwnasError("TensorRT cannot deserialize the engine (built by another TensorRT version or for another GPU?)")
        self.context = self.engine.create_execution_context()
        if self.context is None:
            raise HwnasError("TensorRT cannot create an execution context (out of GPU memory?)")
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        location = getattr(trt, "TensorLocation", None)
        for name in inputs:
            if location is not None and self.engine.get_tensor_location(name) == location.HOST:
                raise HwnasError(f"engine input {name!r} is a shape tensor in host memory; hwnas measures device tensors only")
            shape = [int(d) for d in self.engine.get_tensor_shape(name)]
            if shape and shape[0] < 0:
                shape[0] = batch
            if any(d < 0 for d in shape):
                raise HwnasError(f"engine input {name!r} has dynamic dimensions {shape}; export the model with a fixed shape")
            if not self.context.set_input_shape(name, shape):
                raise HwnasError(f"TensorRT rejects shape {shape} for input {name!r} (outside the engine's profile)")
        rng = np.random.default_rng(seed)
        for name in names:
            shape = tuple(int(d) for d in self.context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise HwnasError(f"engine tensor {name!r} has a data-dependent shape {shape}; hwnas cannot measure it")
            dtype = self.engine.get_tensor_dtype(name)
            store = cuda.storage_dtype(dtype)
            buf = self.buffers[name] = cuda.DeviceBuffer(cuda.volume(shape) * store.itemsize, self.cuda)
            if not self.context.set_tensor_address(name, buf.ptr):
                raise HwnasError(f"TensorRT rejects the device address of tensor {name!r}")
            if name in inputs:
                host = self.hosts[name] = cuda.HostBuffer(shape, store, self.cuda)
                host.array[...] = cuda.random_tensor(shape, dtype, rng)
                cuda.copy_htod(buf, host, self.stream)
        self.stream.synchronize()

    def _enqueue(self) -> None:
        if not self.context.execute_async_v3(self.stream.handle):
            raise HwnasError("TensorRT execute_async_v3 failed (see TensorRT's error above)")

    def run_sync(self) -> None:
        """One untimed run, waited for."""
        self._enqueue()
        self.stream.synchronize()

    def time_once(self, clock: Clock) -> float:
        """GPU time of one run between two events on the runner's stream (`clock` unused:
        the GPU's own timer is the clock)."""
        self.timer.start()
        if self.h2d:
            for name, host in self.hosts.items():
                cuda.copy_htod(self.buffers[name], host, self.stream)
        if self.graph is not None:
            self.graph.launch()
        else:
            self._enqueue()
        return self.timer.stop()

    def engine_information(self) -> str:
        trt = import_tensorrt()
        inspector = self.engine.create_engine_inspector()
        # With the context set, the inspector shows the concrete shapes and formats.
        if hasattr(inspector, "execution_context"):
            inspector.execution_context = self.context
        elif hasattr(inspector, "context"):
            inspector.context = self.context
        return inspector.get_engine_information(trt.LayerInformationFormat.JSON)

    def close(self) -> None:
        if self.stream is None:
            return
        try:
            self.stream.synchronize()
        except HwnasError:
            pass  # the device is in an error state; free what can be freed
        for obj in [self.graph, self.timer, *self.hosts.values(), *self.buffers.values()]:
            if obj is not None:
                try:
                    obj.close()
                except HwnasError:
                    pass
        self.graph = None
        self.hosts, self.buffers = {}, {}
        self.context = self.engine = None  # context before engine, then the runtime
        self.runtime = None
        self.stream.close()
        self.stream = None


# ----------------------------------------------------------------------------- layer report


def parse_engine_layers(info: str | dict) -> list[dict[str, Any]]:
    """The engine inspector's layers: name, type, tactic and the ONNX nodes fused into each.
    With DETAILED profiling verbosity a layer's Metadata lists them as `[ONNX Layer: x]`
    joined by \\x1f; with names only, a fused layer's name joins its parts with ' + '."""
    data = json.loads(info) if isinstance(info, str) else info
    layers = []
    for layer in data.get("Layers", []):
        if isinstance(layer, str):  # LAYER_NAMES_ONLY
            layer = {"Name": layer}
        name = str(layer.get("Name", ""))
        kind = layer.get("LayerType")
        if "Metadata" in layer:
            nodes = ONNX_NODE.findall(str(layer.get("Metadata") or ""))
        elif kind == "Reformat" or name.startswith(("Reformatting", "__myl")):
            nodes = []
        else:
            nodes = [n.strip() for n in name.split(" + ") if n.strip()]
        entry = {"name": name, "type": kind, "onnx_nodes": nodes}
        if layer.get("TacticName"):
            entry["tactic"] = layer["TacticName"]
        layers.append(entry)
    return layers


def join_layer_times(layers: list[dict[str, Any]], times: dict[str, list[float]]) -> list[dict[str, Any]]:
    """Per-layer median and mean over the profiled runs, in the engine's layer order;
    layers the profiler timed but the inspector did not list come last."""
    out = []
    for layer in layers:
        out.append({**layer, **_stats(times.get(layer["name"], []))})
    known = {layer["name"] for layer in layers}
    for name, samples in times.items():
        if name not in known:
            out.append({"name": name, "type": None, "onnx_nodes": [], **_stats(samples)})
    return out


def _stats(samples: list[float]) -> dict[str, Any]:
    if not samples:
        return {"median_ms": None, "mean_ms": None, "n": 0}
    a = np.asarray(samples, dtype=float)
    return {"median_ms": float(np.median(a)), "mean_ms": float(a.mean()), "n": int(a.size)}


def _profiler(trt):
    class LayerTimes(trt.IProfiler):
        """Collects TensorRT's per-layer times, one call per layer per execution."""

        def __init__(self):
            trt.IProfiler.__init__(self)
            self.times: dict[str, list[float]] = {}

        def report_layer_time(self, layer_name, ms):
            self.times.setdefault(layer_name, []).append(float(ms))

    return LayerTimes()


# ----------------------------------------------------------------------------- the backends


@register_backend
class TensorrtBackend(Backend):
    name = "tensorrt"
    needs_gpu = True
    cuda_graph = False

    def __init__(
        self,
        threads: int = 1,
        precision: str = "fp32",
        *,
        h2d: bool = False,
        workspace: int = DEFAULT_WORKSPACE,
        optimization_level: int | None = None,
        build_timeout_s: float = DEFAULT_TIMEOUT_S,
        cache_dir: str | Path | None = None,
    ):
        super().__init__(threads=threads, precision=precision)
        self.h2d = bool(h2d)
        self.workspace = workspace
        self.optimization_level = optimization_level
        self.build_timeout_s = build_timeout_s
        self.cache_dir = cache_dir
        self.batch = 1
        self.build_config()  # validate now, not at the first build

    def build_config(self) -> BuildConfig:
        return BuildConfig(self.precision, self.workspace, self.batch, self.optimization_level)

    def check(self) -> None:
        """Everything missing, in one line: TensorRT, a CUDA Python binding, a GPU."""
        missing = []
        try:
            trt = import_tensorrt()
        except HwnasError as e:
            trt = None
            missing.append(str(e))
        if cuda.available() is None:
            missing.append(f"neither cuda-python nor pycuda is installed ({cuda.INSTALL})")
        if not _gpu_present():
            missing.append("no NVIDIA GPU is present (nvidia-smi finds none)")
        if trt is not None and self.precision == "fp16" and not has_fp16_flag(trt) and not _fp16_converter():
            missing.append("fp16 on TensorRT 11 needs onnxconverter-common (pip install onnx onnxconverter-common)")
        if missing:
            raise HwnasError(f"backend {self.name} cannot run here: " + "; ".join(missing))

    def version(self) -> str:
        return import_tensorrt().__version__

    def provider(self) -> str:
        return "tensorrt"

    def fingerprint(self, batch: int) -> dict[str, Any]:
        fp = super().fingerprint(batch)
        if fp.get("gpu") in (None, "unknown"):  # no nvidia-smi: ask the CUDA runtime
            try:
                fp["gpu"] = cuda.api().device_name(0)
            except HwnasError:
                pass
        fp["timed_h2d"] = self.h2d
        fp["trt_workspace"] = self.workspace
        if self.optimization_level is not None:
            fp["trt_optimization_level"] = self.optimization_level
        return fp

    def engine(self, model: Any) -> Engine:
        """The cached engine for this ONNX file, built in a worker process where missing."""
        return build_engine(
            onnx_path(model), self.build_config(), cache_dir=self.cache_dir, timeout_s=self.build_timeout_s
        )

    def measure(self, model: Any, protocol: MeasureProtocol, batch: int = 1, clock: Clock = time.perf_counter,
                reference: Any = None, process_warm: bool = False) -> Measurement:
        # Build (or find) the engine first, so session_ms is deserialisation, not a build.
        self.batch = max(int(batch or 1), 1)
        self.engine(model)
        return super().measure(model, protocol, batch=batch, clock=clock, reference=reference, process_warm=process_warm)

    def load(self, model: Any, batch: int | None = None) -> TensorrtRunner:
        plan = self.engine(model).path.read_bytes()
        return TensorrtRunner(plan, cuda_graph=self.cuda_graph, h2d=self.h2d, batch=batch or self.batch)

    def layer_report(self, model: Any, runs: int = 50, warmup: int = 5) -> dict[str, Any]:
        """Per-layer GPU times over `runs` profiled executions, and the ONNX nodes fused into
        each TensorRT layer. Profiling adds a little time per layer: compare layers with each
        other, and use `measure` for the end-to-end latency."""
        if runs < 1:
            raise HwnasError(f"layer_report needs at least one run, got {runs}")
        trt = import_tensorrt()
        engine = self.engine(model)
        runner = TensorrtRunner(engine.path.read_bytes(), batch=self.batch)
        try:
            profiler = _profiler(trt)
            runner.context.profiler = profiler
            for _ in range(warmup):
                runner.run_sync()
            profiler.times.clear()
            for _ in range(runs):
                runner.run_sync()
            layers = join_layer_times(parse_engine_layers(runner.engine_information()), profiler.times)
        finally:
            runner.close()
        timed = [layer["median_ms"] for layer in layers if layer["median_ms"] is not None]
        return {
            "onnx": str(onnx_path(model)),
            "engine": str(engine.path),
            "tensorrt": trt.__version__,
            "precision": self.precision,
            "runs": runs,
            "total_median_ms": float(sum(timed)),
            "layers": layers,
        }


@register_backend
class TensorrtGraphBackend(TensorrtBackend):
    """The same engine, its enqueue captured once as a CUDA graph and replayed."""

    name = "tensorrt-graph"
    cuda_graph = True


def layer_report(onnx: str | Path, precision: str = "fp32", runs: int = 50, **options) -> dict[str, Any]:
    """Per-layer times and fused ONNX nodes of the TensorRT engine for one ONNX file."""
    backend = TensorrtBackend(precision=precision, **options)
    backend.check()
    return backend.layer_report(onnx, runs=runs)


def _gpu_present() -> bool:
    if nvidia_gpu() is not None:
        return True
    if cuda.available() is None:
        return False
    try:
        return cuda.api().device_count() > 0
    except HwnasError:
        return False


def _fp16_converter() -> bool:
    try:
        return importlib.util.find_spec("onnxconverter_common") is not None
    except (ImportError, ValueError):
        return False
