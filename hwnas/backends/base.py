"""What every backend provides: a check that it can run here, a fingerprint, and a loader."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from hwnas.backends.fingerprint import nvidia_gpu, target_fingerprint
from hwnas.backends.protocol import Clock, Measurement, MeasureProtocol, Runner, merge_sessions, run_protocol
from hwnas.backends.reference import reference_path
from hwnas.errors import HwnasError

PRECISIONS = ("fp32", "fp16")


class Backend:
    """A measurement target. Subclasses set `name`, implement `check`, `version`, `provider`
    and `load`. `input` says what a backend loads: an ONNX file, or a torch module."""

    name = ""
    input = "onnx"
    needs_gpu = False

    def __init__(self, threads: int = 1, precision: str = "fp32"):
        if isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= 256:
            raise HwnasError(f"threads must be an integer in [1, 256], got {threads!r}")
        if precision not in PRECISIONS:
            raise HwnasError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        self.threads = threads
        self.precision = precision

    def check(self) -> None:
        """Raise HwnasError, in one line saying what to install, where this backend cannot run."""

    def require_gpu(self) -> None:
        if nvidia_gpu() is None:
            raise HwnasError(f"backend {self.name} needs an NVIDIA GPU, and none is present (nvidia-smi finds none)")

    def version(self) -> str:
        raise NotImplementedError

    def provider(self) -> str:
        return self.name

    def fingerprint(self, batch: int) -> dict[str, Any]:
        return target_fingerprint(
            self.name, self.version(), self.provider(), self.threads, batch, self.precision, gpu=self.needs_gpu
        )

    def load(self, model: Any, batch: int = 1) -> Runner:
        raise NotImplementedError

    def measure(self, model: Any, protocol: MeasureProtocol, batch: int = 1, clock: Clock = time.perf_counter,
                reference: Any = None, process_warm: bool = False) -> Measurement:
        """Load `model` (an ONNX path, or a torch module for torch backends), then run the protocol;
        ONNX backends time the reference model (`reference`, its ONNX path, made here if not
        given) beside it when the protocol asks."""
        ref_runner = None
        share = protocol.per_session()
        sessions = []
        try:
            if protocol.reference and self.input == "onnx":
                ref_runner = self.load(reference or reference_path(), 1)
            for k in range(protocol.sessions):  # each session a new layout in memory (MeasureProtocol.sessions)
                t0 = time.perf_counter()
                runner = self.load(model, batch)
                session_ms = (time.perf_counter() - t0) * 1e3
                try:
                    sessions.append(run_protocol(runner, share, session_ms=session_ms, fingerprint=self.fingerprint(batch),
                                                 clock=clock, reference=ref_runner, process_warm=process_warm or k > 0))
                finally:
                    runner.close()
        finally:
            if ref_runner is not None:
                ref_runner.close()
        m = merge_sessions(sessions)
        m.protocol = protocol.to_json()
        return m


def onnx_path(model: Any) -> Path:
    path = Path(model)
    if not path.is_file():
        raise HwnasError(f"ONNX model {path} does not exist")
    return path
