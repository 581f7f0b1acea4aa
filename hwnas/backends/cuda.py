"""Torch-free CUDA helpers for the GPU backends: device and pinned host buffers, a
non-default stream, timing events, async copies and CUDA-graph capture.

cuda-python (`cuda.bindings.runtime`, or the older `cuda.cudart`) first, pycuda as a
fallback. Every cuda-python call returns `(err, *values)`; `check` turns a failure into
one HwnasError line. Nothing here runs at import: the CUDA modules load on first use, so
`import hwnas.backends.cuda` works on a machine with no GPU and no CUDA packages.

The pure pieces (error formatting, TensorRT dtype names to numpy storage dtypes, random
input data) are unit-tested without a GPU.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.util
from typing import Any, Callable

import numpy as np

from hwnas.errors import HwnasError

INSTALL = "pip install cuda-python"

# Error names for which the cause is the machine, not the call: say so.
_HINTS = {
    "cudaErrorNoDevice": "no CUDA GPU is visible to this process",
    "cudaErrorInsufficientDriver": "no NVIDIA driver, or one too old for this CUDA runtime",
    "cudaErrorMemoryAllocation": "out of GPU memory",
    "cudaErrorStreamCaptureUnsupported": "this operation cannot be captured in a CUDA graph",
    "cudaErrorStreamCaptureInvalidated": "the CUDA graph capture was invalidated",
}


# ----------------------------------------------------------------------------- pure pieces


def format_cuda_error(call: str, code: int, name: str, text: str = "") -> str:
    """One line: which call failed, the error's name and code, what CUDA says, and a hint."""
    msg = f"CUDA call {call} failed: {name} ({code})"
    if text:
        msg += f": {text}"
    if name in _HINTS:
        msg += f" ({_HINTS[name]})"
    return " ".join(msg.split())


def check(call: str, result: Any, describe: Callable[[Any], tuple[str, str]] | None = None) -> Any:
    """Unwrap a cuda-python result `(err, *values)`: the single value, a tuple of several,
    or None; raise one HwnasError line when `err` is not success (0)."""
    if not isinstance(result, tuple):
        result = (result,)
    err, values = result[0], result[1:]
    code = int(err)
    if code != 0:
        name, text = describe(err) if describe else (getattr(err, "name", "error"), "")
        raise HwnasError(format_cuda_error(call, code, name, text))
    if not values:
        return None
    return values[0] if len(values) == 1 else values


# TensorRT DataType member name -> numpy dtype used to store it. bf16 and fp8 have no numpy
# type; they are stored as raw uint16 / uint8 of the right width.
TRT_STORAGE = {
    "FLOAT": np.dtype(np.float32),
    "HALF": np.dtype(np.float16),
    "BF16": np.dtype(np.uint16),
    "FP8": np.dtype(np.uint8),
    "INT8": np.dtype(np.int8),
    "UINT8": np.dtype(np.uint8),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "BOOL": np.dtype(np.bool_),
}


def trt_dtype_name(dtype: Any) -> str:
    """'DataType.HALF' or a DataType member -> 'HALF'."""
    return str(getattr(dtype, "name", dtype)).rsplit(".", 1)[-1].upper()


def storage_dtype(dtype: Any) -> np.dtype:
    """The numpy dtype that holds one element of a TensorRT tensor of this DataType."""
    name = trt_dtype_name(dtype)
    if name not in TRT_STORAGE:
        raise HwnasError(f"TensorRT tensors of type {name} are not supported by hwnas (sub-byte or unknown type)")
    return TRT_STORAGE[name]


def random_tensor(shape: tuple[int, ...], dtype: Any, rng: np.random.Generator) -> np.ndarray:
    """Input data for a TensorRT tensor: standard normal for float types (bf16 as its raw
    bits), zeros for integer, bool and fp8 types (a safe value for indices and masks)."""
    name = trt_dtype_name(dtype)
    store = storage_dtype(name)
    if name in ("FLOAT", "HALF"):
        return rng.standard_normal(shape).astype(store)
    if name == "BF16":  # truncate float32 to its upper 16 bits
        return (rng.standard_normal(shape).astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)
    return np.zeros(shape, dtype=store)


def volume(shape) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


# ----------------------------------------------------------------------------- the runtimes


def available() -> str | None:
    """Which CUDA Python package is importable ('cuda-python', 'pycuda'), without importing it."""
    for module, label in (("cuda.bindings", "cuda-python"), ("cuda.cudart", "cuda-python"), ("pycuda", "pycuda")):
        try:
            if importlib.util.find_spec(module) is not None:
                return label
        except (ImportError, ValueError):  # a missing parent package
            continue
    return None


class _CudaPython:
    """cuda-python's runtime API. Handles are cuda-python objects; `handle()` gives the int."""

    name = "cuda-python"

    def __init__(self, rt):
        self.rt = rt

    def _describe(self, err) -> tuple[str, str]:
        name = getattr(err, "name", str(int(err)))
        try:
            text = self.rt.cudaGetErrorString(err)[1]
            text = text.decode() if isinstance(text, bytes) else str(text)
        except Exception:  # describing an error must not raise another
            text = ""
        return name, text

    def call(self, fn: str, *args):
        return check(fn, getattr(self.rt, fn)(*args), self._describe)

    def device_count(self) -> int:
        return int(self.call("cudaGetDeviceCount"))

    def device_name(self, device: int = 0) -> str:
        name = self.call("cudaGetDeviceProperties", device).name
        return (name.decode(errors="replace") if isinstance(name, bytes) else str(name)).split("\x00")[0].strip()

    def runtime_version(self) -> str:
        v = int(self.call("cudaRuntimeGetVersion"))
        return f"{v // 1000}.{(v % 1000) // 10}"

    def malloc(self, nbytes: int):
        return int(self.call("cudaMalloc", nbytes))

    def free(self, ptr) -> None:
        self.call("cudaFree", ptr)

    def malloc_host(self, nbytes: int) -> tuple[Any, int]:
        ptr = int(self.call("cudaMallocHost", nbytes))
        return ptr, ptr

    def free_host(self, token) -> None:
        self.call("cudaFreeHost", token)

    def stream_create(self):
        return self.call("cudaStreamCreateWithFlags", self.rt.cudaStreamNonBlocking)

    def stream_destroy(self, stream) -> None:
        self.call("cudaStreamDestroy", stream)

    def stream_synchronize(self, stream) -> None:
        self.call("cudaStreamSynchronize", stream)

    def handle(self, stream) -> int:
        return int(stream)

    def event_create(self):
        return self.call("cudaEventCreate")

    def event_destroy(self, event) -> None:
        self.call("cudaEventDestroy", event)

    def event_record(self, event, stream) -> None:
        self.call("cudaEventRecord", event, stream)

    def event_synchronize(self, event) -> None:
        self.call("cudaEventSynchronize", event)

    def event_elapsed_ms(self, start, end) -> float:
        return float(self.call("cudaEventElapsedTime", start, end))

    def memcpy_async(self, dst: int, src: int, nbytes: int, kind: str, stream) -> None:
        kinds = {"htod": "cudaMemcpyHostToDevice", "dtoh": "cudaMemcpyDeviceToHost", "dtod": "cudaMemcpyDeviceToDevice"}
        self.call("cudaMemcpyAsync", dst, src, nbytes, getattr(self.rt.cudaMemcpyKind, kinds[kind]), stream)

    def begin_capture(self, stream) -> None:
        # Thread-local: only this thread's unsafe calls (a cudaMalloc, a sync) break the capture.
        mode = self.rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        self.call("cudaStreamBeginCapture", stream, mode)

    def end_capture(self, stream):
        return self.call("cudaStreamEndCapture", stream)

    def graph_instantiate(self, graph):
        # (graph, flags) since CUDA 12; older bindings take (graph, bufferSize) and return
        # more values: the executable graph comes first either way.
        out = self.call("cudaGraphInstantiate", graph, 0)
        return out[0] if isinstance(out, tuple) else out

    def graph_launch(self, graph_exec, stream) -> None:
        self.call("cudaGraphLaunch", graph_exec, stream)

    def graph_destroy(self, graph, graph_exec) -> None:
        if graph_exec is not None:
            self.call("cudaGraphExecDestroy", graph_exec)
        if graph is not None:
            self.call("cudaGraphDestroy", graph)


class _PyCuda:
    """pycuda's driver API on the device's primary context (the one the CUDA runtime and
    TensorRT use). pycuda raises its own exceptions; each becomes one HwnasError line."""

    name = "pycuda"

    def __init__(self, drv):
        self.drv = drv

    def call(self, what: str, fn, *args):
        try:
            return fn(*args)
        except Exception as e:  # pycuda._driver.Error and its subclasses
            raise HwnasError(" ".join(f"pycuda {what} failed: {e}".split())) from None

    def device_count(self) -> int:
        return int(self.call("Device.count", self.drv.Device.count))

    def device_name(self, device: int = 0) -> str:
        return str(self.call("Device.name", lambda: self.drv.Device(device).name()))

    def runtime_version(self) -> str:
        return ".".join(str(v) for v in self.call("get_version", self.drv.get_version)[:2])

    def malloc(self, nbytes: int):
        return self.call("mem_alloc", self.drv.mem_alloc, nbytes)  # int(alloc) is the pointer

    def free(self, alloc) -> None:
        self.call("free", alloc.free)

    def malloc_host(self, nbytes: int) -> tuple[Any, int]:
        arr = self.call("pagelocked_empty", self.drv.pagelocked_empty, (nbytes,), np.uint8)
        return arr, int(arr.ctypes.data)

    def free_host(self, arr) -> None:
        base = getattr(arr, "base", None)
        if base is not None and hasattr(base, "free"):
            self.call("HostAllocation.free", base.free)

    def stream_create(self):
        return self.call("Stream", self.drv.Stream)

    def stream_destroy(self, stream) -> None:
        pass  # freed with the object

    def stream_synchronize(self, stream) -> None:
        self.call("Stream.synchronize", stream.synchronize)

    def handle(self, stream) -> int:
        return int(stream.handle)

    def event_create(self):
        return self.call("Event", self.drv.Event)

    def event_destroy(self, event) -> None:
        pass

    def event_record(self, event, stream) -> None:
        self.call("Event.record", event.record, stream)

    def event_synchronize(self, event) -> None:
        self.call("Event.synchronize", event.synchronize)

    def event_elapsed_ms(self, start, end) -> float:
        return float(self.call("Event.time_since", end.time_since, start))

    def memcpy_async(self, dst, src, nbytes: int, kind: str, stream) -> None:
        fns = {"htod": self.drv.memcpy_htod_async, "dtoh": self.drv.memcpy_dtoh_async, "dtod": self.drv.memcpy_dtod_async}
        if kind == "dtod":
            self.call("memcpy_dtod_async", fns[kind], dst, src, nbytes, stream)
        else:  # pycuda copies whole host arrays: src/dst are numpy views of the right size here
            self.call(f"memcpy_{kind}_async", fns[kind], dst, src, stream)

    def _no_graphs(self, *args):
        raise HwnasError(f"CUDA graph capture needs cuda-python, not pycuda: {INSTALL}")

    begin_capture = end_capture = graph_instantiate = graph_launch = _no_graphs

    def graph_destroy(self, graph, graph_exec) -> None:
        pass


@functools.cache
def api():
    """The CUDA runtime wrapper: cuda-python if importable, else pycuda; HwnasError if neither."""
    try:
        from cuda.bindings import runtime as rt
    except ImportError:
        try:
            from cuda import cudart as rt  # cuda-python before the cuda.bindings layout
        except ImportError:
            rt = None
    if rt is not None:
        return _CudaPython(rt)
    try:
        import pycuda.driver as drv
    except ImportError:
        raise HwnasError(f"the GPU backends need cuda-python (or pycuda), and neither is installed: {INSTALL}") from None
    try:
        import pycuda.autoprimaryctx  # noqa: F401  (the primary context, shared with TensorRT)
    except Exception as e:
        raise HwnasError(" ".join(f"pycuda cannot open a CUDA context: {e}".split())) from None
    return _PyCuda(drv)


# ----------------------------------------------------------------------------- objects


class DeviceBuffer:
    def __init__(self, nbytes: int, cuda=None):
        self.cuda = cuda or api()
        self.nbytes = max(int(nbytes), 1)  # a zero-size tensor still needs a valid address
        self._mem = self.cuda.malloc(self.nbytes)
        self.ptr = int(self._mem)

    def close(self) -> None:
        if self._mem is not None:
            self.cuda.free(self._mem)
            self._mem = None


class HostBuffer:
    """Pinned (page-locked) host memory viewed as a numpy array: async copies from it are
    real DMA transfers, which is what an H2D copy inside a timed region should measure."""

    def __init__(self, shape: tuple[int, ...], dtype, cuda=None):
        self.cuda = cuda or api()
        dtype = np.dtype(dtype)
        self.nbytes = max(volume(shape) * dtype.itemsize, 1)
        self._token, self.ptr = self.cuda.malloc_host(self.nbytes)
        raw = np.ctypeslib.as_array((ctypes.c_uint8 * self.nbytes).from_address(self.ptr))
        self.array = raw[: volume(shape) * dtype.itemsize].view(dtype).reshape(shape)

    def close(self) -> None:
        if self._token is not None:
            self.array = None
            self.cuda.free_host(self._token)
            self._token = None


class Stream:
    """A non-blocking stream: no implicit synchronisation with the legacy default stream."""

    def __init__(self, cuda=None):
        self.cuda = cuda or api()
        self.native = self.cuda.stream_create()
        self.handle = self.cuda.handle(self.native)

    def synchronize(self) -> None:
        self.cuda.stream_synchronize(self.native)

    def close(self) -> None:
        if self.native is not None:
            self.cuda.stream_destroy(self.native)
            self.native = None


class Event:
    def __init__(self, cuda=None):
        self.cuda = cuda or api()
        self.native = self.cuda.event_create()

    def record(self, stream: Stream | int) -> None:
        """Record on a Stream, or on a raw stream handle (another library's stream)."""
        self.cuda.event_record(self.native, stream.native if isinstance(stream, Stream) else stream)

    def synchronize(self) -> None:
        self.cuda.event_synchronize(self.native)

    def ms_since(self, start: "Event") -> float:
        return self.cuda.event_elapsed_ms(start.native, self.native)

    def close(self) -> None:
        if self.native is not None:
            self.cuda.event_destroy(self.native)
            self.native = None


def copy_htod(dst: DeviceBuffer, src: HostBuffer, stream: Stream) -> None:
    cuda = dst.cuda
    if isinstance(cuda, _PyCuda):
        cuda.memcpy_async(dst.ptr, src.array, src.nbytes, "htod", stream.native)
    else:
        cuda.memcpy_async(dst.ptr, src.ptr, min(dst.nbytes, src.nbytes), "htod", stream.native)


def copy_dtoh(dst: HostBuffer, src: DeviceBuffer, stream: Stream) -> None:
    cuda = src.cuda
    if isinstance(cuda, _PyCuda):
        cuda.memcpy_async(dst.array, src.ptr, dst.nbytes, "dtoh", stream.native)
    else:
        cuda.memcpy_async(dst.ptr, src.ptr, min(dst.nbytes, src.nbytes), "dtoh", stream.native)


class CudaGraph:
    """The work `enqueue` puts on `stream`, captured once and replayed with one launch."""

    def __init__(self, stream: Stream, enqueue: Callable[[], None]):
        self.cuda, self.stream = stream.cuda, stream
        self.graph = self.exec = None
        self.cuda.begin_capture(stream.native)
        try:
            enqueue()
        except BaseException:
            try:  # leave the stream usable: end the broken capture, drop its graph
                self.cuda.graph_destroy(self.cuda.end_capture(stream.native), None)
            except HwnasError:
                pass
            raise
        self.graph = self.cuda.end_capture(stream.native)
        if self.graph is None:
            raise HwnasError("CUDA graph capture produced no graph (the capture was invalidated)")
        self.exec = self.cuda.graph_instantiate(self.graph)

    def launch(self) -> None:
        self.cuda.graph_launch(self.exec, self.stream.native)

    def close(self) -> None:
        if self.graph is not None or self.exec is not None:
            self.cuda.graph_destroy(self.graph, self.exec)
            self.graph = self.exec = None


class EventTimer:
    """GPU time of the work enqueued between `start()` and `stop()` on one stream."""

    def __init__(self, stream: Stream):
        self.stream = stream
        self.begin, self.end = Event(stream.cuda), Event(stream.cuda)

    def start(self) -> None:
        self.begin.record(self.stream)

    def stop(self) -> float:
        """Seconds between the two events; waits for the end event."""
        self.end.record(self.stream)
        self.end.synchronize()
        return self.end.ms_since(self.begin) / 1e3

    def close(self) -> None:
        self.begin.close()
        self.end.close()
