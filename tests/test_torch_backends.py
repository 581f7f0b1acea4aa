"""PyTorch baselines: torch-cpu measures for real here; torch-cuda and torch-cuda-graph say
in one line why they cannot run without a GPU, and on a GPU measure and agree."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from hwnas.errors import HwnasError
from hwnas.profilers import MeasureProtocol, get_backend

FAST = MeasureProtocol(warmup_runs=2, warmup_s=0.0, min_runs=15, min_time_s=0.0, max_time_s=20)
CUDA = torch.cuda.is_available()


def small_net(channels: int = 8) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, channels, 3, padding=1), nn.ReLU(), nn.Conv2d(channels, channels, 3, padding=1))


def test_torch_cpu_measures_with_sane_statistics():
    backend = get_backend("torch-cpu", threads=1)
    m = backend.measure((small_net(), (1, 3, 32, 32)), FAST)
    s = m.stats
    assert s["n"] == len(m.samples_ms) >= 15
    assert all(x > 0 for x in m.samples_ms)
    assert 0 < s["min_ms"] <= s["median_ms"] <= s["p90_ms"] <= s["p99_ms"] <= s["max_ms"] < 1000
    assert s["iqr_ms"] >= 0 and math.isfinite(s["cov"]) and s["std_ms"] >= 0
    assert m.first_run_ms > 0 and m.session_ms >= 0
    fp = m.fingerprint
    assert (fp["backend"], fp["provider"], fp["threads"], fp["precision"]) == ("torch-cpu", "eager", 1, "fp32")
    assert fp["backend_version"] == torch.__version__


def test_torch_cpu_bigger_model_takes_longer():
    backend = get_backend("torch-cpu", threads=1)
    small = backend.measure((small_net(4), (1, 3, 16, 16)), FAST).median_ms
    big = backend.measure((small_net(32), (1, 3, 64, 64)), FAST).median_ms
    assert big > small


def test_torch_cpu_rejects_fp16():
    with pytest.raises(HwnasError, match="torch-cpu measures fp32 only"):
        get_backend("torch-cpu", precision="fp16")


@pytest.mark.skipif(CUDA, reason="checks the error on a machine where torch sees no GPU")
@pytest.mark.parametrize("name", ["torch-cuda", "torch-cuda-graph"])
def test_torch_cuda_without_gpu_is_one_line(name):
    with pytest.raises(HwnasError) as e:
        get_backend(name)
    msg = str(e.value)
    assert msg.startswith(f"backend {name} needs a CUDA GPU") and "sees no GPU" in msg and "\n" not in msg


gpu = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU and a CUDA build of torch (torch.cuda.is_available() is False)")


def gpu_net() -> tuple[nn.Module, tuple[int, ...]]:
    """GPU-bound (tens of microseconds per kernel at least), so eager launch gaps do not dominate."""
    layers = []
    for _ in range(4):
        layers += [nn.Conv2d(64, 64, 3, padding=1), nn.ReLU()]
    return nn.Sequential(*layers), (8, 64, 128, 128)


@gpu
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_torch_cuda_eager_and_graph_measure_and_agree(precision):
    eager = get_backend("torch-cuda", precision=precision).measure(gpu_net(), FAST)
    graph = get_backend("torch-cuda-graph", precision=precision).measure(gpu_net(), FAST)
    for m, provider in ((eager, "eager"), (graph, "cuda-graph")):
        assert m.stats["n"] >= 15 and 0 < m.stats["min_ms"] <= m.median_ms <= m.stats["max_ms"]
        assert m.fingerprint["provider"] == provider and m.fingerprint["gpu"]
        assert m.fingerprint["precision"] == precision
    ratio = eager.median_ms / graph.median_ms
    assert 1 / 3 < ratio < 3, f"eager {eager.median_ms:.3f} ms vs graph {graph.median_ms:.3f} ms"
