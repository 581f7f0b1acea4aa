"""hwnas.backends.cuda: the pure pieces everywhere; the real runtime where cuda-python is
installed (its errors without a GPU, its primitives with one)."""

from __future__ import annotations

import enum
import sys

import numpy as np
import pytest

from hwnas.errors import HwnasError
from hwnas.backends import cuda
from hwnas.backends.fingerprint import nvidia_gpu


class FakeErr(enum.IntEnum):  # the shape of cuda-python's cudaError_t
    cudaSuccess = 0
    cudaErrorMemoryAllocation = 2
    cudaErrorNoDevice = 100


def test_check_unwraps_values_and_returns_none_for_bare_success():
    assert cuda.check("cudaMalloc", (FakeErr.cudaSuccess, 1234)) == 1234
    assert cuda.check("cudaFree", (FakeErr.cudaSuccess,)) is None
    assert cuda.check("cudaGraphInstantiate", (FakeErr.cudaSuccess, "exec", None)) == ("exec", None)


def test_check_raises_one_line_naming_the_call_the_error_and_a_hint():
    describe = lambda err: (err.name, "out of memory\nreally")  # noqa: E731
    with pytest.raises(HwnasError) as e:
        cuda.check("cudaMalloc", (FakeErr.cudaErrorMemoryAllocation, None), describe)
    msg = str(e.value)
    assert "\n" not in msg
    assert msg == "CUDA call cudaMalloc failed: cudaErrorMemoryAllocation (2): out of memory really (out of GPU memory)"
    with pytest.raises(HwnasError, match=r"cudaErrorNoDevice \(100\).*no CUDA GPU is visible"):
        cuda.check("cudaGetDeviceCount", (FakeErr.cudaErrorNoDevice, 0))


def test_format_without_text_or_hint():
    assert cuda.format_cuda_error("cudaEventRecord", 400, "cudaErrorInvalidResourceHandle") == (
        "CUDA call cudaEventRecord failed: cudaErrorInvalidResourceHandle (400)"
    )


@pytest.mark.parametrize(
    "name, dtype",
    [("FLOAT", np.float32), ("DataType.HALF", np.float16), ("BF16", np.uint16), ("INT8", np.int8),
     ("INT32", np.int32), ("INT64", np.int64), ("BOOL", np.bool_), ("UINT8", np.uint8), ("FP8", np.uint8)],
)
def test_storage_dtype_of_every_tensorrt_type(name, dtype):
    assert cuda.storage_dtype(name) == np.dtype(dtype)


def test_storage_dtype_takes_enum_members_and_rejects_sub_byte_types():
    class DataType(enum.Enum):  # shaped like tensorrt.DataType
        HALF = 1
        INT4 = 2

    assert cuda.storage_dtype(DataType.HALF) == np.float16
    with pytest.raises(HwnasError, match="INT4 are not supported"):
        cuda.storage_dtype(DataType.INT4)


def test_random_tensor_values_by_type():
    rng = np.random.default_rng(0)
    x = cuda.random_tensor((2, 3, 4), "FLOAT", rng)
    assert x.dtype == np.float32 and x.shape == (2, 3, 4) and np.isfinite(x).all() and x.std() > 0.3
    assert cuda.random_tensor((5,), "HALF", rng).dtype == np.float16
    assert not cuda.random_tensor((3, 7), "INT64", rng).any()  # safe indices
    bits = cuda.random_tensor((1000,), "BF16", rng)
    back = (bits.astype(np.uint32) << 16).view(np.float32)  # bf16 bits decode to normal values
    assert bits.dtype == np.uint16 and np.isfinite(back).all() and 0.8 < back.std() < 1.2


def test_no_cuda_package_is_one_line_saying_what_to_install(monkeypatch):
    for name in ("cuda", "cuda.bindings", "cuda.cudart", "pycuda", "pycuda.driver"):
        monkeypatch.setitem(sys.modules, name, None)  # makes the import fail
    cuda.api.cache_clear()
    try:
        with pytest.raises(HwnasError, match="neither is installed: pip install cuda-python"):
            cuda.api()
    finally:
        cuda.api.cache_clear()


# ----------------------------------------------------------------------------- real cuda-python

HAS_GPU = nvidia_gpu() is not None


@pytest.mark.skipif(HAS_GPU, reason="checks the errors of a machine without a GPU")
def test_cuda_python_without_a_gpu_fails_in_one_line():
    pytest.importorskip("cuda.bindings", reason="cuda-python is not installed")
    cuda.api.cache_clear()
    with pytest.raises(HwnasError) as e:
        cuda.DeviceBuffer(16)
    msg = str(e.value)
    assert msg.startswith("CUDA call cudaMalloc failed: cudaError") and "\n" not in msg


gpu = pytest.mark.skipif(not HAS_GPU, reason="needs an NVIDIA GPU")


@gpu
def test_round_trip_events_and_graph_replay_on_the_gpu():
    pytest.importorskip("cuda.bindings", reason="cuda-python is not installed")
    cuda.api.cache_clear()
    api = cuda.api()
    assert api.device_count() >= 1 and api.device_name(0)
    stream = cuda.Stream()
    src = cuda.HostBuffer((1 << 20,), np.float32)
    dst = cuda.HostBuffer((1 << 20,), np.float32)
    a, b = cuda.DeviceBuffer(src.nbytes), cuda.DeviceBuffer(src.nbytes)
    timer = cuda.EventTimer(stream)
    try:
        src.array[...] = np.random.default_rng(0).standard_normal(src.array.shape)
        timer.start()
        cuda.copy_htod(a, src, stream)
        seconds = timer.stop()
        assert 0 < seconds < 1  # 4 MiB over PCIe/NVLink

        def d2d():
            api.memcpy_async(b.ptr, a.ptr, a.nbytes, "dtod", stream.native)

        graph = cuda.CudaGraph(stream, d2d)  # captured, not run
        graph.launch()
        cuda.copy_dtoh(dst, b, stream)
        stream.synchronize()
        assert np.array_equal(src.array, dst.array)
        graph.close()
    finally:
        for obj in (timer, a, b, src, dst, stream):
            obj.close()
