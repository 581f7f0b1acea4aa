"""A measurement worker in its own process, behind the narrow interface a remote device will use.

Request and response are one JSON object per line (no pickle crosses the boundary):
    in:  {"id": 1, "onnx": "/path/model.onnx", "backend": "ort-cpu", "threads": 1,
          "precision": "fp32", "batch": 1, "protocol": {...MeasureProtocol fields...}}
    out: {"id": 1, "ok": true, "measurement": {...Measurement...}}  or  {"id": 1, "ok": false, "error": "..."}

Run as `python -m hwnas.backends.worker`. `MeasurementWorker` is the client: it starts the
process, sends one request at a time, and turns a crash or a timeout into an HwnasError for that
one measurement, starting a fresh process for the next. Its `submit` returns a Future, so a
search can train while the next architecture is being measured.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

from hwnas.backends import get_backend
from hwnas.backends.protocol import Measurement, MeasureProtocol
from hwnas.backends.reference import reference_path
from hwnas.errors import HwnasError, first_line


def serve(stdin: IO[str], stdout: IO[str]) -> None:
    """The worker's loop: answer each request line; a bad request is an error reply, not a crash."""

    backends: dict[tuple, Any] = {}
    warm = False  # the warm-up time is spent once per process (see run_protocol)
    for line in stdin:
        if not line.strip():
            continue
        req: dict[str, Any] = {}
        try:
            req = json.loads(line)
            key = (req["backend"], req.get("threads", 1), req.get("precision", "fp32"))
            if key not in backends:
                backends[key] = get_backend(*key)
            protocol = MeasureProtocol(**req.get("protocol", {}))
            m = backends[key].measure(req["onnx"], protocol, batch=req.get("batch", 1), reference=req.get("reference"),
                                      process_warm=warm)
            warm = True
            reply = {"id": req.get("id"), "ok": True, "measurement": m.to_json()}
        except HwnasError as e:
            reply = {"id": req.get("id"), "ok": False, "error": str(e)}
        except Exception as e:  # keep serving: one bad model must not end the worker
            # One line: the user sees it as hwnas's one-line error (a model that fails when run, say).
            reply = {"id": req.get("id"), "ok": False, "error": f"{req.get('onnx', 'the model')} fails when run: "
                                                                 f"{type(e).__name__}: {first_line(e)}"}
        stdout.write(json.dumps(reply) + "\n")
        stdout.flush()


class MeasurementWorker:
    def __init__(
        self,
        backend: str = "ort-cpu",
        threads: int = 1,
        precision: str = "fp32",
        timeout_s: float | None = None,
        command: list[str] | None = None,
        cpus: list[int] | None = None,
    ):
        self.backend, self.threads, self.precision = backend, threads, precision
        self.cpus = sorted(set(cpus)) if cpus is not None else None  # the worker's processes run only here
        # A TensorRT measurement may include the engine build (up to 600 s in its own worker).
        self.timeout_s = timeout_s or (900.0 if backend.startswith("tensorrt") else 300.0)
        self.command = command or [sys.executable, "-m", "hwnas.backends.worker"]
        self._proc: subprocess.Popen | None = None
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._log: IO[str] | None = None
        self._next_id = 0
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hwnas-measure")
        self.failures = 0  # measurements lost to a crash or a timeout

    def __enter__(self) -> "MeasurementWorker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def submit(self, onnx_path: str | Path, protocol: MeasureProtocol, batch: int = 1) -> Future:
        """Measure in the background; the Future gives a Measurement or raises HwnasError."""
        return self._pool.submit(self._request, str(onnx_path), protocol, batch)

    def measure(self, onnx_path: str | Path, protocol: MeasureProtocol, batch: int = 1) -> Measurement:
        return self.submit(onnx_path, protocol, batch).result()

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._stop()

    def restart(self) -> None:
        """Between measurements: the next one runs in a new process, so repeated measurements of
        one model sample process state too (one process to the next moved a latency by up to 2%)."""
        self._stop()

    def _start(self) -> subprocess.Popen:
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        self._stop()
        self._log = tempfile.TemporaryFile(mode="w+", encoding="utf-8")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        cpus = self.cpus
        self._proc = subprocess.Popen(
            self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, text=True, env=env,
            preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus is not None else None,
        )
        self._lines = queue.Queue()
        threading.Thread(target=self._read, args=(self._proc.stdout, self._lines), daemon=True).start()
        return self._proc

    @staticmethod
    def _read(stream: IO[str], lines: queue.Queue) -> None:
        for line in stream:
            lines.put(line)
        lines.put(None)  # end of stream: the worker died

    def _stop(self) -> None:
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.kill()
            self._proc.wait()
            self._proc = None

    def _log_tail(self) -> str:
        if self._log is None:
            return ""
        self._log.seek(0)
        lines = [line.strip() for line in self._log.read().splitlines() if line.strip()]
        return lines[-1] if lines else ""

    def _request(self, onnx_path: str, protocol: MeasureProtocol, batch: int) -> Measurement:
        self._next_id += 1
        req = {
            "id": self._next_id, "onnx": onnx_path, "backend": self.backend, "threads": self.threads,
            "precision": self.precision, "batch": batch, "protocol": protocol.to_json(),
        }
        if protocol.reference:
            req["reference"] = str(reference_path())
        proc = self._start()
        try:
            proc.stdin.write(json.dumps(req) + "\n")
            proc.stdin.flush()
            line = self._lines.get(timeout=self.timeout_s)
        except queue.Empty:
            self._stop()
            self.failures += 1
            raise HwnasError(f"measurement of {Path(onnx_path).name} timed out after {self.timeout_s:g} s; worker restarted") from None
        except (BrokenPipeError, OSError):
            line = None
        if line is None:
            code = proc.wait()
            self._proc = None
            self.failures += 1
            tail = self._log_tail()
            raise HwnasError(f"measurement worker died (exit {code}) measuring {Path(onnx_path).name}" + (f": {tail}" if tail else ""))
        try:
            reply = json.loads(line)
        except json.JSONDecodeError:
            self._stop()
            self.failures += 1
            raise HwnasError(f"measurement worker replied with something that is not JSON: {line[:80]!r}") from None
        if not reply.get("ok"):
            raise HwnasError(reply.get("error", "measurement failed"))
        return Measurement.from_json(reply["measurement"])


if __name__ == "__main__":
    serve(sys.stdin, sys.stdout)
