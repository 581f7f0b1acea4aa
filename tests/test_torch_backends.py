"""PyTorch baselines beyond the conformance suite (test_conformance.py): torch-cpu's fingerprint
and fp32 only; on a GPU, torch-cuda and torch-cuda-graph measure and agree."""

from __future__ import annotations


import pytest
import torch
from torch import nn

from hwnas.errors import HwnasError
from hwnas.backends import MeasureProtocol, get_backend

FAST = MeasureProtocol(warmup_runs=2, warmup_s=0.0, min_runs=15, min_time_s=0.0, max_time_s=20)
CUDA = torch.cuda.is_available()


def small_net(channels: int = 8) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, channels, 3, padding=1), nn.ReLU(), nn.Conv2d(channels, channels, 3, padding=1))


def test_torch_cpu_fingerprint_names_eager_torch():
    m = get_backend("torch-cpu", threads=1).measure((small_net(), (1, 3, 32, 32)), FAST)
    assert (m.fingerprint["provider"], m.fingerprint["backend_version"]) == ("eager", torch.__version__)


def test_torch_cpu_bigger_model_takes_longer():
    backend = get_backend("torch-cpu", threads=1)
    small = backend.measure((small_net(4), (1, 3, 16, 16)), FAST).median_ms
    big = backend.measure((small_net(32), (1, 3, 64, 64)), FAST).median_ms
    assert big > small


def test_torch_cpu_rejects_fp16():
    with pytest.raises(HwnasError, match="torch-cpu measures fp32 only"):
        get_backend("torch-cpu", precision="fp16")


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
