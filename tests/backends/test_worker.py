import sys
import time

import pytest

from hwnas.errors import HwnasError
from hwnas.exporters.onnx import export_arch
from hwnas.measure import Measurer
from hwnas.backends import get_backend
from hwnas.backends.worker import MeasurementWorker
from hwnas.store import Store


@pytest.fixture
def model(tiny_space, tmp_path):
    return export_arch(tiny_space, tiny_space.default_arch(), cache_dir=tmp_path).path


def test_worker_process_measures_for_real(model, fast_protocol):
    with MeasurementWorker("ort-cpu") as worker:
        m = worker.measure(model, fast_protocol)
        again = worker.submit(model, fast_protocol).result()
    assert m.stats["n"] >= 5 and m.median_ms > 0 and m.fingerprint["backend"] == "ort-cpu"
    assert again.median_ms > 0 and worker.failures == 0


def test_restart_measures_the_next_model_in_a_new_process(model, fast_protocol):
    with MeasurementWorker("ort-cpu") as worker:
        worker.measure(model, fast_protocol)
        first = worker._proc.pid
        worker.measure(model, fast_protocol)
        assert worker._proc.pid == first  # one process serves request after request
        worker.restart()
        assert worker.measure(model, fast_protocol).median_ms > 0
        assert worker._proc.pid != first and worker.failures == 0


def test_a_bad_model_is_an_error_reply_and_the_worker_goes_on(model, fast_protocol, tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"junk")
    with MeasurementWorker("ort-cpu") as worker:
        with pytest.raises(HwnasError, match="onnxruntime cannot load"):
            worker.measure(bad, fast_protocol)
        assert worker.measure(model, fast_protocol).median_ms > 0
        assert worker.failures == 0


def test_a_crash_costs_one_measurement(model, fast_protocol):
    crash = [sys.executable, "-c", "import sys; sys.stdin.readline(); sys.stderr.write('segfault-ish\\n'); sys.exit(3)"]
    with MeasurementWorker("ort-cpu", command=crash) as worker:
        with pytest.raises(HwnasError, match=r"died \(exit 3\).*segfault-ish"):
            worker.measure(model, fast_protocol)
        worker.command = [sys.executable, "-m", "hwnas.backends.worker"]  # the next one is healthy
        assert worker.measure(model, fast_protocol).median_ms > 0
        assert worker.failures == 1


def test_a_hang_times_out_and_the_worker_restarts(model, fast_protocol):
    hang = [sys.executable, "-c", "import time; time.sleep(60)"]
    with MeasurementWorker("ort-cpu", timeout_s=1.0, command=hang) as worker:
        t0 = time.perf_counter()
        with pytest.raises(HwnasError, match="timed out after 1 s"):
            worker.measure(model, fast_protocol)
        assert time.perf_counter() - t0 < 10
        assert worker.failures == 1


def test_measurer_overlaps_through_the_worker_and_stores(tiny_space, fast_protocol, tmp_path):
    store = Store(tmp_path / "m.sqlite")
    with MeasurementWorker("ort-cpu") as worker:
        measurer = Measurer(get_backend("ort-cpu"), store, fast_protocol, worker=worker)
        archs = tiny_space.random_archs(3, seed=9)
        pending = [measurer.submit_arch(tiny_space, a) for a in archs]
        results = [p.result() for p in pending]
        assert all(not r.cached and r.measurement.median_ms > 0 for r in results)
        assert len(store) == 3
        assert measurer.submit_arch(tiny_space, archs[0]).result().cached
        assert measurer.arch(tiny_space, archs[1]).cached
