"""The measurement fleet on a real Ray cluster on the loopback: a head node and a second worker,
both `hwnas worker --device cpu` processes, shared by every test of this module (a cluster takes
tens of seconds to start here). The test that kills a worker runs last."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="the fleet needs Ray: pip install 'hwnas[fleet]'")

from hwnas.backends import MeasureProtocol, get_backend  # noqa: E402
from hwnas.errors import HwnasError  # noqa: E402
from hwnas.fleet import FleetBackend, FleetWorker  # noqa: E402
from hwnas.measure import Measurer  # noqa: E402
from hwnas.store import Store  # noqa: E402

TINY = ["--space", "tfnas", "--resolution", "32", "--width-mult", "0.25", "--classes", "10"]
FAST = ["--min-runs", "5", "--min-time", "0.02", "--warmup", "1", "--no-reference"]
# A dead node is noticed in about a second, not Ray's default of tens of seconds.
RAY_ENV = {"RAY_health_check_period_ms": "500", "RAY_health_check_timeout_ms": "1000",
           "RAY_health_check_failure_threshold": "3"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_worker(tmp: Path, name: str, cluster: str | None, port: int | None = None) -> subprocess.Popen:
    """`hwnas worker --device cpu` with a cache of its own (as on another machine); without a
    cluster, the head node alone (no device: every worker can then be killed)."""
    if cluster:
        cmd = [sys.executable, "-m", "hwnas.cli", "worker", "--device", "cpu", "--node-ip", "127.0.0.1", "--cluster", cluster]
    else:
        cmd = [str(Path(sys.executable).with_name("ray")), "start", "--head", "--block", f"--port={port}", "--num-cpus=0",
               "--include-dashboard=false", "--disable-usage-stats", "--node-ip-address=127.0.0.1"]
    env = {**os.environ, **RAY_ENV, "HWNAS_CACHE": str(tmp / f"cache-{name}")}
    return subprocess.Popen(cmd, stdout=open(tmp / f"{name}.log", "w"), stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)


def stop(proc: subprocess.Popen) -> None:
    """The worker's whole process group: its `ray start`, raylet and the processes they run."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def wait_for(condition, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fleet")
    port = free_port()
    address = f"127.0.0.1:{port}"
    head = start_worker(tmp, "head", None, port)
    procs = [head]
    try:
        def reachable():
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return True
            except OSError:
                return False

        wait_for(reachable, 90, "the head node")
        ray.init(address=address, logging_level="ERROR", log_to_driver=False)
        for n, name in enumerate(("first", "second"), 1):  # one after the other: each picks its free ports
            procs.append(start_worker(tmp, name, address))
            wait_for(lambda: ray.cluster_resources().get("hwnas-device:cpu") == n, 90, f"{n} cpu workers")
        yield {"address": address, "head": head, "workers": procs[1:], "tmp": tmp}
    finally:
        ray.shutdown()
        for p in reversed(procs):
            stop(p)


def hwnas(*args, db: Path, cwd: Path, timeout: float = 240, **popen) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hwnas.cli", *args, "--db", str(db)], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd, env={**os.environ, "HWNAS_CACHE": str(cwd / "job-cache")}, **popen)


def test_a_job_measures_on_the_devices_and_files_travel_once(fleet, tiny_space, tmp_path):
    fw = FleetWorker(fleet["address"], "cpu", "ort-cpu")
    assert fw.slots == 2 and fw.target["backend"] == "ort-cpu"
    protocol = MeasureProtocol(warmup_runs=1, warmup_s=0, min_runs=5, min_time_s=0.02, processes=2, reference=False)
    measurer = Measurer(FleetBackend(get_backend("ort-cpu"), fw), Store(tmp_path / "m.sqlite"), protocol, worker=fw,
                        isolation="fleet", cache_dir=tmp_path / "c")
    archs = tiny_space.random_archs(2, seed=1)
    done = measurer.many([measurer.arch_item(tiny_space, a) for a in archs], show_progress=False)
    assert all(len(d.measurement.processes) == 2 and d.measurement.median_ms > 0 for d in done)
    assert all(d.measurement.fingerprint == fw.fingerprint(1) for d in done)  # keyed by the device's target
    # measured on the fleet's workers; on both only where two tasks overlapped in time, which Ray does
    # not promise for measurements this short (a CI run saw all four on one node)
    assert 1 <= len(set(fw.nodes)) <= 2
    # Two models, four measurements on two nodes: each model fetched by a node at most once.
    assert 2 <= fw.fetched <= 4 and len(fw.nodes) == 5  # 4 + the probe
    before = fw.fetched
    for _ in range(3):
        fw.measure(Path(measurer.arch_item(tiny_space, archs[0]).load()), protocol, 1)
    assert fw.fetched - before <= 1  # only a node that lacks it is sent it, once
    again = measurer.many([measurer.arch_item(tiny_space, a) for a in archs], show_progress=False)
    assert all(a.cached for a in again)
    with Store(tmp_path / "m.sqlite") as store:
        assert len(store) == 2 and set(store.dataframe()["isolation"]) == {"fleet"}
    measurer.close()


def test_a_worker_whose_target_differs_refuses_with_its_reason(fleet):
    fw = FleetWorker(fleet["address"], "cpu", "ort-cpu")
    fw.target = {**fw.target, "cpu": "Some Other CPU 9000", "backend_version": "0.0"}
    from hwnas.backends.reference import reference_path

    with pytest.raises(HwnasError, match="a worker of device cpu on .* refuses the job: its target differs: "
                                         "backend_version .*0.0.*; cpu .*Some Other CPU 9000"):
        fw.measure(reference_path(), MeasureProtocol(min_runs=2, min_time_s=0, reference=False))
    fw.close()


def bad_cluster_inputs(address: str) -> list[tuple[list[str], str]]:
    closed = f"127.0.0.1:{free_port()}"
    return [
        (["--cluster", closed, "--device", "cpu"], f"cannot reach the Ray cluster at {closed}"),
        (["--cluster", not_ray(), "--device", "cpu"], "not as a Ray head node"),
        (["--cluster", address, "--device", "tpu-v9"], "unknown device 'tpu-v9'"),
        (["--cluster", "localhost", "--device", "cpu"], "--cluster must be HOST:PORT"),
        (["--cluster", address], "--cluster and --device go together"),
        (["--cluster", address, "--device", "a b"], "--device must be a name"),
        (["--cluster", address, "--device", "cpu", "--backend", "torch-cpu"], "a fleet measures ONNX backends"),
    ]


def not_ray() -> str:
    """An address that answers, but not as Ray (an HTTP/1 server, say)."""
    import threading

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()

    def serve():
        while True:
            conn, _ = server.accept()
            conn.recv(100)
            conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    return f"127.0.0.1:{server.getsockname()[1]}"


def test_bad_fleet_input_is_one_line_and_exit_2_in_bounded_time(fleet, tmp_path, capsys):
    """In this process (the CLI's own main, as `hwnas` runs it), to spare a Python start per case."""
    from hwnas.cli.main import main

    for args, expected in bad_cluster_inputs(fleet["address"]):
        started = time.monotonic()
        code = main(["measure", *TINY, *FAST, "--random", "--n", "1", *args, "--db", str(tmp_path / "m.sqlite")])
        lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert code == 2 and len(lines) == 1 and lines[0].startswith("hwnas: error: "), (args, lines)
        assert expected in lines[0] and time.monotonic() - started < 30, (args, lines[0])
    assert main(["worker", "--device", "cpu", "--cluster", f"127.0.0.1:{free_port()}"]) == 2
    assert "cannot reach the Ray cluster" in capsys.readouterr().err


def test_ctrl_c_stops_the_job_keeps_what_finished_and_it_resumes(fleet, tmp_path):
    db = tmp_path / "m.sqlite"
    args = ["measure", *TINY, *FAST, "--random", "--n", "3", "-k", "1", "--min-time", "0.5", "--cluster", fleet["address"],
            "--device", "cpu"]
    job = subprocess.Popen([sys.executable, "-m", "hwnas.cli", *args, "--db", str(db)], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, env={**os.environ, "HWNAS_CACHE": str(tmp_path / "job")})

    def stored():
        if not db.exists():
            return 0
        with Store(db) as store:
            return len(store)

    wait_for(lambda: stored() >= 1 or job.poll() is not None, 180, "a first finished measurement")
    job.send_signal(signal.SIGINT)
    _, err = job.communicate(timeout=60)
    assert job.returncode == 130 and "Traceback" not in err, err  # click's "aborted" or hwnas's "interrupted"
    kept = stored()
    assert 1 <= kept < 3
    # The devices are free again: Ray stopped the job's tasks with its driver.
    wait_for(lambda: ray.available_resources().get("hwnas-device:cpu") == 2, 60, "the devices to be free")
    r = hwnas(*args, db=db, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    cached = [line.split()[-1] for line in r.stdout.splitlines() if re.match(r"^[0-9a-f]{16} ", line)]
    assert len(cached) == 3 and cached.count("True") == kept  # what finished before is not measured again
    with Store(db) as store:
        assert len(store) == 3 and (store.dataframe()["processes"] == 1).all()
        assert store.engine.connect().exec_driver_sql("SELECT COUNT(*) FROM replicates").scalar() == 0


def descends_from(pid: int, ancestor: int) -> bool:
    while pid > 1:
        if pid == ancestor:
            return True
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            return False
    return False


def measuring_under(root: int) -> bool:
    """A measurement worker process runs under this worker node now."""
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                cmd = (p / "cmdline").read_bytes()
            except OSError:
                continue
            if b"hwnas.backends.worker" in cmd and descends_from(int(p.name), root):
                return True
    return False


def test_a_worker_killed_mid_measurement_is_retried_on_another(fleet, tmp_path):
    """Last in this module: it kills a worker."""
    db = tmp_path / "m.sqlite"
    args = ["measure", *TINY, *FAST, "--random", "--n", "3", "-k", "1", "--min-time", "1.5", "--cluster", fleet["address"],
            "--device", "cpu"]
    job = subprocess.Popen([sys.executable, "-m", "hwnas.cli", *args, "--db", str(db)], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, env={**os.environ, "HWNAS_CACHE": str(tmp_path / "job")})
    busy = wait_for(lambda: job.poll() is not None or [w for w in fleet["workers"] if measuring_under(w.pid)], 180,
                    "a worker to measure")
    assert job.poll() is None, job.communicate()
    stop(busy[0])
    out, err = job.communicate(timeout=240)
    assert job.returncode == 0, err
    rows = [line for line in out.splitlines() if re.match(r"^[0-9a-f]{16} ", line)]
    assert len(rows) == 3
    with Store(db) as store:
        df = store.dataframe()
        assert len(df) == 3 and df["key"].is_unique and (df["processes"] == 1).all()
        assert store.engine.connect().exec_driver_sql("SELECT COUNT(*) FROM replicates").scalar() == 0
    wait_for(lambda: ray.cluster_resources().get("hwnas-device:cpu") == 1, 30, "the cluster to drop the dead worker")
