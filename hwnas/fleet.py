"""A measurement fleet on Ray: devices on other machines measure, one store keeps the results.

A fleet is a Ray cluster. `hwnas worker --device NAME` makes its machine a Ray node that
advertises one unit of the custom resource `hwnas-device:NAME`; every measurement asks for one
unit, so a device times one model at a time and no two timings share it. A job (`--cluster
ADDRESS --device NAME` on measure, lut build, sample, search, ...) connects as a Ray driver and
hands its `Measurer` a `FleetWorker`, which stands where the local `MeasurementWorker` stands:
each measurement is a Ray task that runs the same measurement worker (a fresh process, the same
protocol) on a device of that name, and the job stores the result as it arrives.

- Target: the job asks a device for its fingerprint once; every task carries it and a worker
  whose own fingerprint differs refuses, saying which fields differ. Measurements are keyed by
  the device's fingerprint, not the job machine's.
- Files: a model travels by content hash. The task gets the hash and a reference to the bytes
  in Ray's object store; a worker that already has the file never fetches the bytes.
- Faults: a worker that dies mid-measurement has its task retried by Ray on another node of the
  same device (`TASK_RETRIES`); the job stores only what comes back, once. Ctrl-C on a job ends
  its driver, and Ray stops the tasks it owned; what was stored stays, and a rerun resumes.

Ray is imported only here (and only when a command is given `--cluster`), so hwnas without the
`fleet` extra runs as before. Requests and results cross as JSON text and bytes; Ray's own
transport between trusted nodes of one cluster is Ray's (keep a cluster on a private network).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from hwnas.backends import get_backend
from hwnas.backends.protocol import Measurement, MeasureProtocol
from hwnas.backends.worker import MeasurementWorker
from hwnas.errors import HwnasError, first_line
from hwnas.jsonutil import cache_root, canonical_json

RESOURCE = "hwnas-device:"
DEVICE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
CONNECT_TIMEOUT_S = 10.0  # a cluster address that does not answer is refused after this
TASK_RETRIES = 3  # a task whose node or worker process died runs again elsewhere
# Fields of a fingerprint that may differ between two machines measuring as one device.
LOCAL_FIELDS = ("batch",)


def check_device_name(name: str) -> str:
    if not isinstance(name, str) or not DEVICE_NAME.match(name):
        raise HwnasError(f"--device must be a name of letters, digits, '.', '_' or '-' (at most 64), got {name!r}")
    return name


def parse_address(address: str) -> tuple[str, int]:
    host, sep, port = str(address).rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise HwnasError(f"--cluster must be HOST:PORT of a Ray head node (ray start --head prints it), got {address!r}")
    return host, int(port)


def check_reachable(address: str, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """Refuse, in one line and within `timeout_s`, an address where nothing listens (ray.init
    itself would retry for a long while)."""
    host, port = parse_address(address)
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as s:
            # A Ray head answers gRPC: HTTP/2 answers its preface with a SETTINGS frame (type 4).
            s.settimeout(timeout_s)
            s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            head = s.recv(9)
    except OSError as e:
        raise HwnasError(f"cannot reach the Ray cluster at {address}: {e.strerror or e} (is `hwnas worker` or "
                         "`ray start --head` running there?)") from None
    if len(head) < 4 or head[3] != 4:
        raise HwnasError(f"{address} answers, but not as a Ray head node (no gRPC there): check the port "
                         "(`ray start --head` prints the address)")


def import_ray():
    try:
        import ray
    except ImportError:
        raise HwnasError("--cluster needs Ray: pip install 'hwnas[fleet]'") from None
    return ray


def connect(address: str):
    """Join the cluster at `address` as a driver, within a bounded time; one line where it fails."""
    check_reachable(address)
    ray = import_ray()
    if ray.is_initialized():
        return ray
    result: dict[str, Any] = {}

    def init():
        try:
            ray.init(address=address, logging_level="ERROR", log_to_driver=False, configure_logging=True)
            result["ok"] = True
        except Exception as e:  # ray raises ConnectionError, RuntimeError, ...
            result["error"] = e

    # ray.init against something that is not a Ray head may wait a long time; it runs in a thread.
    thread = threading.Thread(target=init, daemon=True)
    thread.start()
    thread.join(CONNECT_TIMEOUT_S * 2)
    _quiet_cluster_messages(ray)
    if "ok" not in result:
        reason = first_line(result["error"]) if "error" in result else f"no answer in {CONNECT_TIMEOUT_S * 2:g} s"
        raise HwnasError(f"cannot join the Ray cluster at {address}: {reason}")
    return ray


def _quiet_cluster_messages(ray) -> None:
    """Ray prints the cluster's error messages (a node marked dead, a task retried) to the job's
    stdout, over its table; they go to stderr instead, one line each."""
    import ray._private.worker as ray_worker

    if getattr(ray_worker.print_to_stdstream, "hwnas", False):
        return
    original = ray_worker.print_to_stdstream

    def to_stderr(data, ignore_prefix=False):
        if data.get("pid") == "raylet":
            lines = [line for line in "\n".join(data.get("lines", [])).splitlines() if line.strip()]
            data = {**data, "is_err": True, "lines": lines[:1]}
        return original(data, ignore_prefix=ignore_prefix)

    to_stderr.hwnas = True
    ray_worker.print_to_stdstream = to_stderr


def devices(ray) -> dict[str, int]:
    """Device name -> the number of workers the cluster has for it."""
    return {k[len(RESOURCE):]: int(v) for k, v in ray.cluster_resources().items() if k.startswith(RESOURCE)}


def fingerprint_diff(expected: dict[str, Any], found: dict[str, Any]) -> list[str]:
    keys = sorted((set(expected) | set(found)) - set(LOCAL_FIELDS))
    return [f"{k} {canonical_json(found.get(k))} (job's target: {canonical_json(expected.get(k))})"
            for k in keys if canonical_json(expected.get(k)) != canonical_json(found.get(k))]


# --- what runs on a device's node -------------------------------------------------------------------


def files_dir() -> Path:
    return cache_root() / "fleet"


def _have_file(sha256: str, data_ref: list) -> tuple[Path, bool]:
    """The model with this content hash on this node: from the node's cache, else fetched once."""
    path = files_dir() / f"{sha256}.onnx"
    if path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == sha256:
        return path, False
    import ray

    data = ray.get(data_ref[0])
    if hashlib.sha256(data).hexdigest() != sha256:
        raise HwnasError(f"model {sha256[:12]} arrived damaged (its content hash differs)")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return path, True


def run_request(request: str, data_ref: list) -> str:
    """One task on a device: check the target, get the model, measure it in a fresh measurement
    worker process, and answer JSON. `data_ref` holds the model's bytes as an object reference
    in a list, so Ray does not fetch them unless this node lacks the file."""

    req = json.loads(request)
    node = {"host": socket.gethostname(), "pid": os.getpid()}
    try:
        import ray

        node["node_id"] = ray.get_runtime_context().get_node_id()
        backend = get_backend(req["backend"], threads=req["threads"], precision=req["precision"])
        here = backend.fingerprint(1)
        if req.get("target") is not None:
            diff = fingerprint_diff(req["target"], here)
            if diff:
                return json.dumps({"ok": False, "refused": True, "node": node, "error": (
                    f"a worker of device {req['device']} on {node['host']} refuses the job: its target differs: "
                    + "; ".join(diff) + ". Start it under another --device name")})
        if req.get("probe"):
            return json.dumps({"ok": True, "fingerprint": here, "node": node})
        path, fetched = _have_file(req["sha256"], data_ref)
        with MeasurementWorker(req["backend"], req["threads"], req["precision"]) as worker:
            m = worker.measure(path, MeasureProtocol(**req["protocol"]), req["batch"])
        return json.dumps({"ok": True, "measurement": m.to_json(), "node": node, "fetched": fetched})
    except HwnasError as e:
        return json.dumps({"ok": False, "error": str(e), "node": node})


# --- the job's side ---------------------------------------------------------------------------------


class FleetWorker:
    """Measures on the fleet's devices of one name; the interface of `MeasurementWorker` that
    `Measurer` uses (measure, submit, restart, close), plus `slots`: how many measurements can
    run at once (the device's workers), and `fingerprint(batch)`: the device's target."""

    cpus = None  # no core of this machine times anything

    def __init__(self, address: str, device: str, backend: str, threads: int = 1, precision: str = "fp32"):
        self.address, self.device = address, check_device_name(device)
        self.backend, self.threads, self.precision = backend, threads, precision
        self.ray = connect(address)
        found = devices(self.ray)
        if device not in found:
            known = ", ".join(sorted(found)) or "none"
            raise HwnasError(f"unknown device {device!r}: the cluster at {address} has workers for: {known} "
                             f"(start one with hwnas worker --device {device} --cluster {address})")
        self.slots = found[device]
        self._task = self.ray.remote(run_request).options(
            resources={RESOURCE + device: 1}, num_cpus=0, max_retries=TASK_RETRIES, retry_exceptions=False)
        self._files: dict[str, tuple[str, Any]] = {}  # path -> (sha256, object reference of its bytes)
        self._lock = threading.Lock()
        self._running: set = set()  # tasks under way, cancelled by close()
        self._closing = False
        self._pool = ThreadPoolExecutor(max_workers=max(self.slots, 1), thread_name_prefix="hwnas-fleet")
        self.fetched = 0  # models a device had to fetch (the rest it had by content hash)
        self.nodes: list[str] = []  # the node id of each measurement, in order of arrival
        self.target = None
        self.target = self._call({"probe": True}, None)["fingerprint"]  # every later task carries it

    def fingerprint(self, batch: int) -> dict[str, Any]:
        return {**self.target, "batch": batch}

    def _file(self, path: Path) -> tuple[str, Any]:
        with self._lock:
            if str(path) not in self._files:
                data = Path(path).read_bytes()
                self._files[str(path)] = (hashlib.sha256(data).hexdigest(), self.ray.put(data))
            return self._files[str(path)]

    def _call(self, fields: dict[str, Any], path: Path | None) -> dict[str, Any]:
        sha, ref = self._file(path) if path is not None else ("", None)
        request = {"device": self.device, "backend": self.backend, "threads": self.threads,
                   "precision": self.precision, "target": self.target, "sha256": sha, **fields}
        task = self._task.remote(json.dumps(request), [ref])
        with self._lock:
            self._running.add(task)
        try:
            while not self.ray.wait([task], timeout=0.5)[0]:
                if self._closing:
                    raise HwnasError(f"measurement on device {self.device} cancelled: the job is stopping")
            reply = json.loads(self.ray.get(task))
        except HwnasError:
            raise
        except Exception as e:  # a task that failed on every retry: its nodes died, or Ray did
            raise HwnasError(f"measurement on device {self.device} failed after {TASK_RETRIES} retries: "
                             f"{type(e).__name__}: {first_line(e)}") from None
        finally:
            with self._lock:
                self._running.discard(task)
        if not reply["ok"]:
            raise HwnasError(reply["error"])
        with self._lock:
            self.nodes.append(reply["node"].get("node_id", ""))
            self.fetched += bool(reply.get("fetched"))
        return reply

    def measure(self, onnx_path: str | Path, protocol: MeasureProtocol, batch: int = 1) -> Measurement:
        reply = self._call({"protocol": protocol.to_json(), "batch": batch}, Path(onnx_path))
        return Measurement.from_json(reply["measurement"])

    def submit(self, onnx_path: str | Path, protocol: MeasureProtocol, batch: int = 1) -> Future:
        return self._pool.submit(self.measure, onnx_path, protocol, batch)

    def restart(self) -> None:
        """Every task measures in a fresh process on its device already."""

    def close(self) -> None:
        """Stop: tasks still running are cancelled (Ray ends their processes on the devices)."""
        self._closing = True
        with self._lock:
            running = list(self._running)
        for task in running:
            try:
                self.ray.cancel(task, force=True)
            except Exception:  # already finished, or the cluster is gone: nothing left to stop
                pass
        self._pool.shutdown(wait=True)
        self._files.clear()


class FleetBackend:
    """The job's view of a device's backend: its name and settings from here, its fingerprint
    from the device (so the store keys measurements by the target that ran them)."""

    def __init__(self, backend, fleet: FleetWorker):
        self._backend, self._fleet = backend, fleet

    def __getattr__(self, name):
        return getattr(self._backend, name)

    def fingerprint(self, batch: int) -> dict[str, Any]:
        return self._fleet.fingerprint(batch)


# --- `hwnas worker`: make this machine a node of the fleet ------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def ray_start_command(device: str, cluster: str | None, port: int, node_ip: str | None, num_cpus: int) -> list[str]:
    """`ray start` for a node with one unit of the device's resource. Every port is chosen free
    here, so two workers on one machine (a core each, say) do not collide."""
    ray_bin = Path(os.sys.executable).with_name("ray")
    cmd = [str(ray_bin) if ray_bin.exists() else "ray", "start", "--block", "--disable-usage-stats",
           f"--num-cpus={num_cpus}", f"--resources={json.dumps({RESOURCE + device: 1})}"]
    for option in ("node-manager-port", "object-manager-port", "metrics-export-port", "runtime-env-agent-port",
                   "dashboard-agent-grpc-port", "dashboard-agent-listen-port"):
        cmd.append(f"--{option}={free_port()}")
    if node_ip:
        cmd.append(f"--node-ip-address={node_ip}")
    if cluster:
        cmd.append(f"--address={cluster}")
    else:
        cmd += ["--head", f"--port={port}", "--include-dashboard=false"]
    return cmd
