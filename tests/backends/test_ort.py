import pytest

from hwnas.backends import MeasureProtocol, get_backend
from hwnas.errors import HwnasError
from hwnas.exporters.onnx import export_arch


def test_ort_cpu_fingerprint_names_the_provider_and_host(tiny_space, tmp_path):
    path = export_arch(tiny_space, tiny_space.default_arch(), cache_dir=tmp_path).path
    fp = get_backend("ort-cpu").measure(path, MeasureProtocol(warmup_runs=1, warmup_s=0, min_runs=5, min_time_s=0,
                                                              reference=False)).fingerprint
    assert fp["provider"] == "CPUExecutionProvider" and fp["cpu"] and fp["os"]


def test_more_work_takes_longer(tmp_path):
    from hwnas.spaces.mbconv import Space

    small = Space("tfnas", resolution=32, width_mult=0.25, num_classes=10)
    big = Space("tfnas", resolution=128, width_mult=0.5, num_classes=10)
    p = MeasureProtocol(warmup_runs=2, warmup_s=0, min_runs=15, min_time_s=0, reference=False)
    backend = get_backend("ort-cpu")
    t_small = backend.measure(export_arch(small, small.default_arch(), cache_dir=tmp_path).path, p).median_ms
    t_big = backend.measure(export_arch(big, big.default_arch(), cache_dir=tmp_path).path, p).median_ms
    assert t_big > 3 * t_small  # ~64x the MACs


def test_invalid_onnx_is_one_clear_error(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"definitely not a protobuf")
    with pytest.raises(HwnasError, match="onnxruntime cannot load"):
        get_backend("ort-cpu").measure(bad, MeasureProtocol())
    with pytest.raises(HwnasError, match="does not exist"):
        get_backend("ort-cpu").measure(tmp_path / "missing.onnx", MeasureProtocol())


def test_ort_cpu_measures_fp32_only():
    with pytest.raises(HwnasError, match="fp32 models only"):
        get_backend("ort-cpu", precision="fp16")


def test_sessions_are_measured_one_after_another_and_merged(tiny_space, tmp_path):
    path = export_arch(tiny_space, tiny_space.default_arch(), cache_dir=tmp_path).path
    p = MeasureProtocol(warmup_runs=1, warmup_s=0, min_runs=12, min_time_s=0.03, sessions=3)
    m = get_backend("ort-cpu").measure(path, p)
    assert m.stats["sessions"] == 3 and m.stats["session_cov"] >= 0
    assert m.protocol == p.to_json() and m.protocol["sessions"] == 3
    assert len(m.samples_ms) >= 12 and len(m.blocks) >= 3 * 3  # each session ran its own reference blocks
    assert m.stats["ratio"] > 0 and m.stats["median_ms"] > 0
