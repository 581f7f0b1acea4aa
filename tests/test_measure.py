from hwnas.measure import Measurer
from hwnas.backends import get_backend
from hwnas.store import Store


def test_measured_once_then_reused_and_force_remeasures(tiny_space, fast_protocol, tmp_path):
    store = Store(tmp_path / "m.sqlite")
    measurer = Measurer(get_backend("ort-cpu"), store, fast_protocol)
    arch = tiny_space.random_archs(1, seed=0)[0]
    first = measurer.arch(tiny_space, arch)
    again = measurer.arch(tiny_space, arch)
    assert not first.cached and again.cached
    assert again.measurement.samples_ms == first.measurement.samples_ms
    forced = Measurer(get_backend("ort-cpu"), store, fast_protocol, force=True).arch(tiny_space, arch)
    assert not forced.cached
    assert len(store) == 1  # re-measured in place


def test_layers_and_pairs_are_separate_entries(tiny_space, fast_protocol, tmp_path):
    store = Store(tmp_path / "m.sqlite")
    measurer = Measurer(get_backend("ort-cpu"), store, fast_protocol)
    specs = tiny_space.layers(tiny_space.default_arch())
    measurer.layer(specs[2])
    measurer.layer(specs[3])
    measurer.layers(specs[2:4])
    df = store.dataframe()
    assert sorted(df["kind"]) == ["layer", "layer", "layers"]
    assert (df["median_ms"] > 0).all()


def test_torch_cpu_baseline_measures_the_same_subnet(tiny_space, fast_protocol, tmp_path):
    store = Store(tmp_path / "m.sqlite")
    arch = tiny_space.default_arch()
    m = Measurer(get_backend("torch-cpu"), store, fast_protocol).arch(tiny_space, arch).measurement
    assert m.fingerprint["backend"] == "torch-cpu" and m.median_ms > 0
    o = Measurer(get_backend("ort-cpu"), store, fast_protocol).arch(tiny_space, arch).measurement
    assert o.fingerprint["backend"] == "ort-cpu" and len(store) == 2


# --- multi-process, interleaved, reference-checked measurement (issue: trustworthy measurement) ---

import os  # noqa: E402
import sqlite3  # noqa: E402
from dataclasses import replace  # noqa: E402

import pytest  # noqa: E402

from hwnas.errors import HwnasError  # noqa: E402


def recording(measurer):
    """Record the order in which the real worker is asked to measure each model."""
    calls = []
    real = measurer.worker.measure

    def measure(path, protocol, batch=1):
        calls.append(str(path))
        return real(path, protocol, batch)

    measurer.worker.measure = measure
    return calls


def test_many_models_are_measured_interleaved_each_in_k_processes(tiny_space, fast_protocol, tmp_path):
    store = Store(tmp_path / "m.sqlite")
    measurer = Measurer(get_backend("ort-cpu"), store, replace(fast_protocol, processes=2), cache_dir=tmp_path / "c")
    measurer.baseline_ms()
    calls = recording(measurer)
    archs = tiny_space.random_archs(3, seed=5)
    done = measurer.many([measurer.arch_item(tiny_space, a) for a in archs], show_progress=False)
    models = [c for c in calls if "reference" not in c]
    models = [c for i, c in enumerate(models) if i == 0 or c != models[i - 1]]  # a drift retry repeats at once
    assert models[:3] == models[3:] and len(set(models)) == 3  # A B C, A B C
    for m in done:
        ms = m.measurement
        assert len(ms.processes) == 2 and ms.ci95_ms[0] <= ms.stats["median_ms"] <= ms.ci95_ms[1]
        assert all(p["latency_ms"] > 0 and p["reference_ratio"] > 0 for p in ms.processes)
    stored = store.dataframe(kind="arch")
    assert (stored["processes"] == 2).all() and store.engine.connect().exec_driver_sql("SELECT COUNT(*) FROM replicates").scalar() == 0
    measurer.close()


def test_an_interrupted_measurement_resumes_from_its_stored_processes(tiny_space, fast_protocol, tmp_path):
    store = Store(tmp_path / "m.sqlite")
    measurer = Measurer(get_backend("ort-cpu"), store, replace(fast_protocol, processes=3), cache_dir=tmp_path / "c")
    item = measurer.arch_item(tiny_space, tiny_space.default_arch())
    item.key = measurer._key(item.kind, item.spec, item.batch)
    first, _ = measurer._process(item.load(), 1, fresh=True)
    store.put_replicate(item.key, 0, first)  # one process finished before the interruption
    calls = recording(measurer)
    m = measurer.measure(item).measurement
    assert len(set(c for c in calls if "reference" not in c)) == 1 and len(m.processes) == 3
    assert m.processes[0]["raw_median_ms"] == first.stats["raw_median_ms"]
    measurer.close()


def test_the_reference_baseline_is_measured_once_and_stored(tiny_space, fast_protocol, tmp_path):
    store = Store(tmp_path / "m.sqlite")
    measurer = Measurer(get_backend("ort-cpu"), store, fast_protocol, cache_dir=tmp_path / "c")
    assert store.reference_baseline(measurer.target_hash()) is None
    b = measurer.baseline_ms()
    row = store.reference_baseline(measurer.target_hash())
    assert b > 0 and row["baseline_ms"] == b and len(row["process_medians_ms"]) == 3
    again = Measurer(get_backend("ort-cpu"), store, fast_protocol, cache_dir=tmp_path / "c")
    calls = recording(again)
    assert again.baseline_ms() == b and calls == []
    m = again.arch(tiny_space, tiny_space.default_arch()).measurement
    assert m.stats["baseline_ms"] == b and m.reference_ratio > 0
    measurer.close()
    again.close()


def test_pin_refuses_cores_the_machine_lacks_and_a_single_core():
    from hwnas.measure import isolation_cores, parse_cpus

    with pytest.raises(HwnasError, match="does not let hwnas use"):
        parse_cpus("4096")
    with pytest.raises(HwnasError, match="core numbers"):
        parse_cpus("one")
    before = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {min(before)})
        with pytest.raises(HwnasError, match="--isolation pin needs"):
            isolation_cores("pin", None, get_backend("ort-cpu"))
        assert isolation_cores("auto", None, get_backend("ort-cpu")) == ("pause", None, None)
    finally:
        os.sched_setaffinity(0, before)


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="pinning needs 2 cores")
def test_pin_keeps_this_process_off_the_worker_core_until_close(tiny_space, fast_protocol, tmp_path):
    from hwnas.measure import isolation_cores

    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, range(os.cpu_count()))  # an earlier in-process CLI call may have pinned this process
    mode, worker, own = isolation_cores("auto", None, get_backend("ort-cpu"))
    assert mode == "pin" and set(worker).isdisjoint(own)
    measurer = Measurer(get_backend("ort-cpu"), Store(tmp_path / "m.sqlite"), fast_protocol, cpus=worker, own_cpus=own,
                        isolation=mode)
    assert os.sched_getaffinity(0) == set(own)
    m = measurer.arch(tiny_space, tiny_space.default_arch()).measurement
    assert m.isolation == "pin"
    measurer.close()
    assert os.sched_getaffinity(0) == set(range(os.cpu_count()))
    os.sched_setaffinity(0, before)


V1_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE measurements (key TEXT PRIMARY KEY, kind TEXT NOT NULL, spec_hash TEXT NOT NULL, spec TEXT NOT NULL,
  backend TEXT NOT NULL, fingerprint TEXT NOT NULL, protocol TEXT NOT NULL, median_ms REAL NOT NULL, mean_ms REAL NOT NULL,
  std_ms REAL NOT NULL, iqr_ms REAL NOT NULL, p90_ms REAL NOT NULL, p99_ms REAL NOT NULL, min_ms REAL NOT NULL,
  max_ms REAL NOT NULL, cov REAL NOT NULL, n INTEGER NOT NULL, noisy INTEGER NOT NULL, session_ms REAL NOT NULL,
  first_run_ms REAL NOT NULL, samples TEXT NOT NULL, created_at TEXT NOT NULL);
INSERT INTO meta VALUES ('schema_version', '1');
INSERT INTO measurements VALUES ('k1', 'arch', 'h', '{}', 'ort-cpu', '{"backend":"ort-cpu"}', '{"min_runs":3}',
  2.0, 2.0, 0.1, 0.1, 2.1, 2.2, 1.9, 2.2, 0.05, 3, 0, 10.0, 4.0, '[1.9,2.0,2.2]', '2026-01-01T00:00:00+00:00');
"""


def test_a_store_of_the_old_protocol_is_read_and_marked_single_process(tmp_path):
    path = tmp_path / "v1.sqlite"
    with sqlite3.connect(path) as conn:
        conn.executescript(V1_SCHEMA)
    with Store(path) as store:
        m = store.get("k1")
        assert m.stats["median_ms"] == 2.0 and m.samples_ms == [1.9, 2.0, 2.2] and m.flags == ["single-process"]
        df = store.dataframe()
        assert len(df) == 1 and df.loc[0, "processes"] == 1 and df.loc[0, "raw_median_ms"] == 2.0


def test_onnx_batch_is_honoured_or_refused(tmp_path, fast_protocol):
    import torch

    from hwnas.exporters.onnx import export_module

    dynamic, fixed = tmp_path / "dyn.onnx", tmp_path / "fixed.onnx"
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 32, 3), torch.nn.ReLU(), torch.nn.Conv2d(32, 32, 3))
    export_module(net, (1, 3, 64, 64), fixed)
    torch.onnx.export(net.eval(), torch.randn(1, 3, 64, 64), str(dynamic), input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "n"}, "y": {0: "n"}}, dynamo=False)
    protocol = replace(fast_protocol, reference=False, min_runs=20)
    measurer = Measurer(get_backend("ort-cpu"), Store(tmp_path / "m.sqlite"), protocol, cache_dir=tmp_path / "c")
    one, four = measurer.onnx(dynamic, 1), measurer.onnx(dynamic, 4)
    assert four.measurement.fingerprint["batch"] == 4 and four.measurement.median_ms > 2 * one.measurement.median_ms
    with pytest.raises(HwnasError, match="fixed batch of 1"):
        measurer.onnx(fixed, 2)
    measurer.close()
