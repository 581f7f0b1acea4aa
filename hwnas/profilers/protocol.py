"""One measurement protocol for every backend: warm up, time until enough, keep every sample.

A backend only knows how to load a model and run it once (a `Runner`); the protocol does
the timing. The clock is injectable so the stopping logic can be tested deterministically.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Protocol as TypingProtocol

import numpy as np

from hwnas.errors import HwnasError

Clock = Callable[[], float]


class Runner(TypingProtocol):
    """A loaded model, ready to run. `time_once` returns the seconds one run took: wall
    clock for CPU backends, CUDA events for GPU backends (device time, not launch time)."""

    def time_once(self, clock: Clock) -> float: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class MeasureProtocol:
    warmup_runs: int = 5
    warmup_s: float = 0.1
    min_runs: int = 20
    min_time_s: float = 0.3
    max_runs: int = 100_000
    max_time_s: float = 60.0
    noisy_iqr: float = 0.10  # flag, not hide, a measurement whose IQR/median exceeds this

    def __post_init__(self):
        for name in ("warmup_runs", "min_runs", "max_runs"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise HwnasError(f"protocol {name} must be a non-negative integer, got {v!r}")
        if self.min_runs < 1 or self.max_runs < self.min_runs:
            raise HwnasError(f"protocol needs 1 <= min_runs <= max_runs, got {self.min_runs} and {self.max_runs}")
        for name in ("warmup_s", "min_time_s", "max_time_s", "noisy_iqr"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or v < 0:
                raise HwnasError(f"protocol {name} must be a non-negative number, got {v!r}")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def summarize(samples_ms: list[float] | np.ndarray) -> dict[str, float]:
    """Robust statistics of the timed samples, in milliseconds."""
    a = np.asarray(samples_ms, dtype=float)
    if a.size == 0:
        raise ValueError("no samples")
    q25, median, q75, p90, p99 = np.percentile(a, [25, 50, 75, 90, 99])
    mean = float(a.mean())
    std = float(a.std(ddof=1)) if a.size > 1 else 0.0
    return {
        "median_ms": float(median),
        "mean_ms": mean,
        "std_ms": std,
        "iqr_ms": float(q75 - q25),
        "p90_ms": float(p90),
        "p99_ms": float(p99),
        "min_ms": float(a.min()),
        "max_ms": float(a.max()),
        "cov": std / mean if mean > 0 else 0.0,
        "n": int(a.size),
    }


@dataclass
class Measurement:
    samples_ms: list[float]
    stats: dict[str, float]
    noisy: bool
    session_ms: float  # model load / session creation / engine deserialisation
    first_run_ms: float  # the very first run, often far slower (allocation, autotuning)
    fingerprint: dict[str, Any] = field(default_factory=dict)
    protocol: dict[str, Any] = field(default_factory=dict)

    @property
    def median_ms(self) -> float:
        return self.stats["median_ms"]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Measurement":
        return cls(**d)


def run_protocol(
    runner: Runner,
    protocol: MeasureProtocol,
    *,
    session_ms: float = 0.0,
    fingerprint: dict[str, Any] | None = None,
    clock: Clock = time.perf_counter,
) -> Measurement:
    """Warm up (count and time), then time runs until both the minimum count and time are
    reached, or a maximum is hit. Every timed sample is kept."""
    first_run_ms = runner.time_once(clock) * 1e3
    start = clock()
    warm = 1
    while warm < protocol.warmup_runs or clock() - start < protocol.warmup_s:
        runner.time_once(clock)
        warm += 1
    samples: list[float] = []
    timed = 0.0
    start = clock()
    while True:
        dt = runner.time_once(clock)
        samples.append(dt * 1e3)
        timed += dt
        elapsed = clock() - start
        enough = len(samples) >= protocol.min_runs and timed >= protocol.min_time_s
        if enough or len(samples) >= protocol.max_runs or elapsed >= protocol.max_time_s:
            break
    stats = summarize(samples)
    noisy = stats["median_ms"] > 0 and stats["iqr_ms"] / stats["median_ms"] > protocol.noisy_iqr
    return Measurement(
        samples_ms=samples,
        stats=stats,
        noisy=bool(noisy),
        session_ms=session_ms,
        first_run_ms=first_run_ms,
        fingerprint=dict(fingerprint or {}),
        protocol=protocol.to_json(),
    )
