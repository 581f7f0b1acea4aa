"""The backend registry's conformance suite: every registered backend either says in one line why
it cannot run here, or measures a small network for real with sane statistics and a fingerprint
that names it, refuses bad input in one line, and (an ONNX backend) keeps torch out of its import.
A new backend is a module with `@register_backend` and a line in `BACKENDS`; it runs here too."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

from hwnas.backends import BACKENDS, MeasureProtocol, backend_names, get_backend
from hwnas.errors import HwnasError
from hwnas.exporters.onnx import export_module

FAST = MeasureProtocol(warmup_runs=2, warmup_s=0.0, min_runs=15, min_time_s=0.0, max_time_s=20, reference=False)
SHAPE = (1, 3, 32, 32)


def small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1)).eval()


def runnable(name: str):
    """The backend, or a skip with the one line it gives where it cannot run here."""
    try:
        return get_backend(name)
    except HwnasError as e:
        msg = str(e)
        assert "\n" not in msg and name in msg, msg
        pytest.skip(f"{name} cannot run here: {msg}")


def model_for(backend, tmp_path):
    if backend.input == "torch":
        return small_net(), SHAPE
    path = tmp_path / "small.onnx"
    export_module(small_net(), SHAPE, path)
    return path


def test_the_registry_lists_every_backend_once_by_its_own_name():
    names = backend_names()
    assert len(names) == len(set(names)) >= 8 and set(BACKENDS.modules) == set(names)
    for name in names:
        cls = BACKENDS.get(name)
        assert cls.name == name and cls.input in ("onnx", "torch")


@pytest.mark.parametrize("name", backend_names())
def test_runs_here_or_says_why_in_one_line(name):
    backend = get_backend(name, check=False)
    assert backend.name == name
    try:
        backend.check()
    except HwnasError as e:
        assert "\n" not in str(e) and name in str(e)
        assert any(w in str(e) for w in ("install", "GPU")), str(e)


@pytest.mark.parametrize("name", backend_names())
def test_measures_a_small_network_with_sane_statistics(name, tmp_path):
    backend = runnable(name)
    m = backend.measure(model_for(backend, tmp_path), FAST)
    s = m.stats
    assert s["n"] == len(m.samples_ms) >= FAST.min_runs and all(x > 0 for x in m.samples_ms)
    assert 0 < s["min_ms"] <= s["median_ms"] <= s["p90_ms"] <= s["p99_ms"] <= s["max_ms"] < 1000
    assert s["iqr_ms"] >= 0 and s["cov"] >= 0 and m.first_run_ms > 0 and m.session_ms >= 0
    fp = m.fingerprint
    assert (fp["backend"], fp["threads"], fp["batch"], fp["precision"]) == (name, 1, 1, "fp32")
    assert fp["backend_version"] == backend.version() and fp["provider"] == backend.provider()


@pytest.mark.parametrize("name", backend_names())
def test_bad_settings_and_a_missing_model_are_one_line(name, tmp_path):
    with pytest.raises(HwnasError, match="threads"):
        get_backend(name, threads=0, check=False)
    with pytest.raises(HwnasError, match="precision"):
        get_backend(name, precision="int3", check=False)
    backend = runnable(name)
    if backend.input == "onnx":
        with pytest.raises(HwnasError, match="does not exist"):
            backend.measure(tmp_path / "missing.onnx", FAST)


@pytest.mark.parametrize("name", [n for n in backend_names() if BACKENDS.modules[n] != "hwnas.torch_backends"])
def test_an_onnx_backend_imports_no_torch(name):
    """A measurement worker runs on a target with only numpy and onnxruntime or TensorRT."""
    code = (f"import sys; from hwnas.backends import get_backend; get_backend({name!r}, check=False); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_an_unknown_backend_names_the_closest():
    with pytest.raises(HwnasError, match="unknown backend 'ort-cpuu' \\(did you mean 'ort-cpu'\\?\\)"):
        get_backend("ort-cpuu")
