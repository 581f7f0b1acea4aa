import subprocess
import sys

import pytest

from hwnas.errors import HwnasError
from hwnas.exporters.onnx import export_arch
from hwnas.profilers import MeasureProtocol, get_backend


def test_real_ort_cpu_measurement_of_a_small_subnet(tiny_space, tmp_path):
    path = export_arch(tiny_space, tiny_space.default_arch(), cache_dir=tmp_path).path
    backend = get_backend("ort-cpu")
    m = backend.measure(path, MeasureProtocol(warmup_runs=3, warmup_s=0, min_runs=30, min_time_s=0.05, reference=False))
    s = m.stats
    assert s["n"] == len(m.samples_ms) >= 30
    assert 0 < s["min_ms"] <= s["median_ms"] <= s["p90_ms"] <= s["p99_ms"] <= s["max_ms"] < 1000
    assert s["iqr_ms"] >= 0 and s["cov"] >= 0 and m.session_ms > 0 and m.first_run_ms > 0
    fp = m.fingerprint
    assert fp["backend"] == "ort-cpu" and fp["threads"] == 1 and fp["provider"] == "CPUExecutionProvider"
    assert fp["cpu"] and fp["os"] and fp["backend_version"]


def test_more_work_takes_longer(tmp_path):
    from hwnas.space import Space

    small = Space("tfnas", resolution=32, width_mult=0.25, num_classes=10)
    big = Space("tfnas", resolution=128, width_mult=0.5, num_classes=10)
    p = MeasureProtocol(warmup_runs=2, warmup_s=0, min_runs=15, min_time_s=0, reference=False)
    backend = get_backend("ort-cpu")
    t_small = backend.measure(export_arch(small, small.default_arch(), cache_dir=tmp_path).path, p).median_ms
    t_big = backend.measure(export_arch(big, big.default_arch(), cache_dir=tmp_path).path, p).median_ms
    assert t_big > 3 * t_small  # ~64x the MACs


def test_profilers_do_not_import_torch():
    code = (
        "import sys, hwnas.profilers, hwnas.profilers.ort, hwnas.profilers.tensorrt; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_invalid_onnx_is_one_clear_error(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"definitely not a protobuf")
    with pytest.raises(HwnasError, match="onnxruntime cannot load"):
        get_backend("ort-cpu").measure(bad, MeasureProtocol())
    with pytest.raises(HwnasError, match="does not exist"):
        get_backend("ort-cpu").measure(tmp_path / "missing.onnx", MeasureProtocol())


@pytest.mark.parametrize("name", ["ort-cuda", "ort-trt", "tensorrt", "torch-cuda", "torch-cuda-graph"])
def test_gpu_backends_say_what_is_missing(name):
    import onnxruntime

    if name.startswith("ort") and "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("onnxruntime-gpu is installed here")
    try:
        get_backend(name)
    except HwnasError as e:
        msg = str(e)
        assert "\n" not in msg and name in msg
        assert any(w in msg for w in ("install", "GPU", "no GPU"))
    else:
        pytest.skip(f"{name} can run on this machine")


def test_unknown_backend_and_bad_settings():
    with pytest.raises(HwnasError, match="did you mean 'ort-cpu'"):
        get_backend("ort-cpuu")
    with pytest.raises(HwnasError, match="threads"):
        get_backend("ort-cpu", threads=0)
    with pytest.raises(HwnasError, match="precision"):
        get_backend("ort-cpu", precision="int3")
    with pytest.raises(HwnasError, match="fp32 models only"):
        get_backend("ort-cpu", precision="fp16")
