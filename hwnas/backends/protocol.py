"""One measurement protocol for every backend: warm up, time until enough, keep every sample.

A backend only knows how to load a model and run it once (a `Runner`); the protocol does
the timing. The clock is injectable so the stopping logic can be tested deterministically.

On a shared machine most of a latency's spread is the machine's state, not the model: a host
that turns slow for a second slows every model by nearly the same factor (measured here: block
medians of one subnet varied with CoV 14-24%, their ratio to a reference timed in alternation
1.6-2.9%). So the timed runs come in short blocks that alternate with a few runs of a fixed
reference model (`hwnas.backends.reference`) in the same process. A measurement is then
    latency = median over k processes of (median over blocks of block median / reference) x
              the reference's baseline on this target,
with the raw medians kept beside it, and `reference_ratio` (the reference now against its
baseline) saying how slow the machine was while it ran.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
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
    noisy_iqr: float = 0.10  # flag, not hide, a single process whose IQR/median exceeds this
    processes: int = 3  # fresh worker processes per measurement, each with warm-up and timed runs
    reference: bool = True  # time blocks of runs alternating with the reference model
    block_s: float = 0.03  # timed seconds per block between two reference blocks
    ref_runs: int = 3  # reference runs per reference block
    noisy_ci: float = 0.02  # flag a measurement whose 95% CI half-width exceeds this share of it
    drift_limit: float = 1.15  # flag (and retry) a process whose reference read this much over baseline
    retries: int = 2  # re-measurements of a process the drift check flagged
    # Sessions per process, each timed for a share of the time: each session's buffers land
    # somewhere else in memory, and where they land moves a small network's latency by up to
    # 1.5x (docs/measurement.md), so a process's latency is the mean over its sessions' layouts.
    sessions: int = 1

    def __post_init__(self):
        if isinstance(self.processes, bool) or not isinstance(self.processes, int) or self.processes < 1:
            raise HwnasError(f"protocol processes (k) must be an integer >= 1, got {self.processes!r}")
        if isinstance(self.sessions, bool) or not isinstance(self.sessions, int) or not 1 <= self.sessions <= 1000:
            raise HwnasError(f"protocol sessions must be an integer in [1, 1000], got {self.sessions!r}")
        for name in ("warmup_runs", "min_runs", "max_runs", "ref_runs", "retries"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise HwnasError(f"protocol {name} must be a non-negative integer, got {v!r}")
        if self.min_runs < 1 or self.max_runs < self.min_runs:
            raise HwnasError(f"protocol needs 1 <= min_runs <= max_runs, got {self.min_runs} and {self.max_runs}")
        for name in ("warmup_s", "min_time_s", "max_time_s", "noisy_iqr", "block_s", "noisy_ci"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < float("inf"):
                raise HwnasError(f"protocol {name} must be a finite non-negative number, got {v!r}")
        if isinstance(self.drift_limit, bool) or not isinstance(self.drift_limit, (int, float)) or not 1 < self.drift_limit < 100:
            raise HwnasError(f"protocol drift_limit must be a number in (1, 100), got {self.drift_limit!r}")
        if self.reference and self.ref_runs < 1:
            raise HwnasError("protocol ref_runs must be >= 1 when the reference is timed")

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        if self.sessions == 1:  # the protocol before sessions existed: stored measurements keep their keys
            del doc["sessions"]
        return doc

    def per_session(self) -> "MeasureProtocol":
        """What each of `sessions` sessions runs: its share of the runs and the time."""
        if self.sessions == 1:
            return self
        return replace(self, min_runs=max(1, -(-self.min_runs // self.sessions)), min_time_s=self.min_time_s / self.sessions,
                       max_runs=max(1, self.max_runs // self.sessions), max_time_s=self.max_time_s / self.sessions,
                       sessions=1)


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
    """One process's timing (from a worker), or k processes combined (`combine`).

    stats["median_ms"] is the latency every consumer uses: with the reference, the
    reference-normalised latency; stats["raw_median_ms"] is the plain median of the timed runs."""

    samples_ms: list[float]
    stats: dict[str, float]
    noisy: bool
    session_ms: float  # model load / session creation / engine deserialisation
    first_run_ms: float  # the very first run, often far slower (allocation, autotuning)
    fingerprint: dict[str, Any] = field(default_factory=dict)
    protocol: dict[str, Any] = field(default_factory=dict)
    blocks: list[list[float]] = field(default_factory=list)  # [block median, reference median] per block
    processes: list[dict[str, Any]] = field(default_factory=list)  # per process: raw and normalised medians, ratio
    ci95_ms: list[float] = field(default_factory=list)  # [low, high] of the latency, from the processes
    reference_ratio: float | None = None  # the reference against its baseline: > 1 is a slow machine
    flags: list[str] = field(default_factory=list)  # noisy, disturbed, retried, single-process
    isolation: str = ""  # how training was kept off the measured core: pause, pin, none, or "" (no training)

    @property
    def median_ms(self) -> float:
        return self.stats["median_ms"]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Measurement":
        return cls(**d)


# The stated rule for everything downstream (fits, calibration, lookup-error statistics, reports):
# a measurement flagged with any of these is left out, and counted where it was left out.
EXCLUDED_FLAGS = ("noisy", "disturbed")


def usable(flags) -> bool:
    """Whether a measurement with these flags may feed a fit, a calibration or a statistic."""
    return not any(f in EXCLUDED_FLAGS for f in (flags or []))


MIN_BLOCKS = 3  # with the reference: at least this many blocks, so one slow block cannot decide
# ...and at least this many runs a block: the first run after the reference finds the caches cold,
# and the block's median must not be that run.
MIN_BLOCK_RUNS = 3


def run_protocol(
    runner: Runner,
    protocol: MeasureProtocol,
    *,
    session_ms: float = 0.0,
    fingerprint: dict[str, Any] | None = None,
    clock: Clock = time.perf_counter,
    reference: Runner | None = None,
    process_warm: bool = False,
) -> Measurement:
    """Warm up (count and time), then time runs until both the minimum count and time are
    reached, or a maximum is hit. Every timed sample is kept. With a `reference` runner the
    timed runs come in blocks of `block_s` seconds, each between two blocks of `ref_runs`
    reference runs; a block's reference reading is the median of the reference runs on both
    of its sides. process_warm: this process has already timed a model, so the warm-up time
    (there for the CPU and the process to reach a steady state) is spent once per process, and
    a later model warms up by `warmup_runs` alone (its own caches and allocations)."""
    first_run_ms = runner.time_once(clock) * 1e3
    start = clock()
    warm = 1
    warmup_s = 0.0 if process_warm else protocol.warmup_s
    while warm < protocol.warmup_runs or clock() - start < warmup_s:
        runner.time_once(clock)
        if reference is not None and warm < protocol.warmup_runs:
            reference.time_once(clock)
        warm += 1

    def ref_block() -> list[float]:
        return [reference.time_once(clock) * 1e3 for _ in range(protocol.ref_runs)]

    # A block is block_s long, but never longer than a third of the minimum time: a protocol
    # asking for little time (a test's 0 s) gets one-run blocks, not seconds of them.
    block_s = min(protocol.block_s, protocol.min_time_s / MIN_BLOCKS)
    samples: list[float] = []
    blocks: list[list[float]] = []
    timed = 0.0
    start = clock()
    before = ref_block() if reference is not None else []
    block: list[float] = []
    block_t = 0.0
    while True:
        dt = runner.time_once(clock)
        samples.append(dt * 1e3)
        block.append(dt * 1e3)
        timed += dt
        block_t += dt
        elapsed = clock() - start
        enough = len(samples) >= protocol.min_runs and timed >= protocol.min_time_s
        done = enough or len(samples) >= protocol.max_runs or elapsed >= protocol.max_time_s
        if reference is not None:
            enough = enough and len(blocks) + 1 >= MIN_BLOCKS
            done = enough or len(samples) >= protocol.max_runs or elapsed >= protocol.max_time_s
            if (block_t >= block_s and len(block) >= MIN_BLOCK_RUNS) or done:
                after = ref_block()
                blocks.append([float(np.median(block)), float(np.median(before + after))])
                before, block, block_t = after, [], 0.0
        if done:
            break
    stats = summarize(samples)
    stats["raw_median_ms"] = stats["median_ms"]
    noisy = stats["median_ms"] > 0 and stats["iqr_ms"] / stats["median_ms"] > protocol.noisy_iqr
    if blocks:
        ratios = [m / r for m, r in blocks]
        stats["ref_median_ms"] = float(np.median([r for _, r in blocks]))
        stats["ratio"] = float(np.median(ratios))  # latency in units of the reference
        q25, q75 = np.percentile(ratios, [25, 75])
        stats["ratio_iqr"] = float(q75 - q25)
        noisy = len(ratios) >= MIN_BLOCKS and stats["ratio_iqr"] / stats["ratio"] > protocol.noisy_iqr
    return Measurement(
        samples_ms=samples,
        stats=stats,
        noisy=bool(noisy),
        session_ms=session_ms,
        first_run_ms=first_run_ms,
        fingerprint=dict(fingerprint or {}),
        protocol=protocol.to_json(),
        blocks=blocks,
    )


def merge_sessions(sessions: list[Measurement]) -> Measurement:
    """One process's sessions as one measurement: the mean of the sessions' medians (and of their
    reference ratios), since each session is one draw of the memory layout and a deployment
    meets them all; every sample and block kept; `session_cov`: how far the layouts spread."""
    if len(sessions) == 1:
        return sessions[0]
    raw = np.array([s.stats["raw_median_ms"] for s in sessions])
    stats = summarize([x for s in sessions for x in s.samples_ms])
    stats.update(raw_median_ms=float(raw.mean()), median_ms=float(raw.mean()), sessions=len(sessions),
                 session_cov=float(raw.std(ddof=1) / raw.mean()))
    if all("ratio" in s.stats for s in sessions):
        stats.update(ratio=float(np.mean([s.stats["ratio"] for s in sessions])),
                     ref_median_ms=float(np.median([s.stats["ref_median_ms"] for s in sessions])),
                     ratio_iqr=float(np.mean([s.stats["ratio_iqr"] for s in sessions])))
    first = sessions[0]
    return Measurement(
        samples_ms=[x for s in sessions for x in s.samples_ms], stats=stats, noisy=any(s.noisy for s in sessions),
        session_ms=float(sum(s.session_ms for s in sessions)), first_run_ms=first.first_run_ms,
        fingerprint=first.fingerprint, protocol=first.protocol, blocks=[b for s in sessions for b in s.blocks],
    )


def t_interval(values: list[float] | np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Student-t confidence interval of the mean of `values`; one value gives (v, v)."""
    a = np.asarray(values, dtype=float)
    if a.size < 2:
        return float(a.mean()), float(a.mean())
    from scipy import stats as sps

    half = float(sps.t.ppf(0.5 + level / 2, a.size - 1) * a.std(ddof=1) / np.sqrt(a.size))
    return float(a.mean() - half), float(a.mean() + half)


def process_latency(m: Measurement, baseline_ms: float | None) -> float:
    """One process's latency: its reference ratio times the baseline, or its raw median."""
    if baseline_ms is not None and "ratio" in m.stats:
        return m.stats["ratio"] * baseline_ms
    return m.stats["raw_median_ms"] if "raw_median_ms" in m.stats else m.stats["median_ms"]


def combine(replicates: list[Measurement], protocol: MeasureProtocol, baseline_ms: float | None = None,
            retried: int = 0) -> Measurement:
    """k processes' measurements as one: the median of per-process latencies, a 95% CI from their
    spread, every sample kept; flagged noisy when the CI is wider than `noisy_ci` of the latency,
    disturbed when any process's reference read over `drift_limit` of its baseline. The noisy flag
    rests on the spread between processes, where most of the spread is; one process has none to
    show, so it is flagged single-process instead (its own IQR verdict stays in `processes`)."""
    if not replicates:
        raise ValueError("no replicates")
    per = [process_latency(m, baseline_ms) for m in replicates]
    raw = [m.stats.get("raw_median_ms", m.stats["median_ms"]) for m in replicates]
    ratios = [m.stats["ref_median_ms"] / baseline_ms for m in replicates
              if baseline_ms is not None and "ref_median_ms" in m.stats]
    samples = [s for m in replicates for s in m.samples_ms]
    stats = summarize(samples)
    latency = float(np.median(per))
    lo, hi = t_interval(per)
    stats.update(median_ms=latency, raw_median_ms=float(np.median(raw)),
                 process_cov=float(np.std(per, ddof=1) / np.mean(per)) if len(per) > 1 else 0.0)
    flags = []
    noisy = len(per) > 1 and max(hi - latency, latency - lo) > protocol.noisy_ci * latency
    if noisy:
        flags.append("noisy")
    ratio = float(np.median(ratios)) if ratios else None
    if ratios and max(ratios) > protocol.drift_limit:
        flags.append("disturbed")
    if retried:
        flags.append("retried")
    if len(per) == 1:
        flags.append("single-process")
    return Measurement(
        samples_ms=samples, stats=stats, noisy=bool(noisy),
        session_ms=float(np.median([m.session_ms for m in replicates])),
        first_run_ms=float(np.median([m.first_run_ms for m in replicates])),
        fingerprint=replicates[0].fingerprint, protocol=protocol.to_json(),
        blocks=[b for m in replicates for b in m.blocks],
        processes=[{"latency_ms": p, "raw_median_ms": r, "reference_ratio": (m.stats["ref_median_ms"] / baseline_ms)
                    if baseline_ms and "ref_median_ms" in m.stats else None, "noisy": m.noisy,
                    **({"session_cov": m.stats["session_cov"]} if "session_cov" in m.stats else {})}
                   for p, r, m in zip(per, raw, replicates)],
        ci95_ms=[lo, hi], reference_ratio=ratio, flags=flags,
    )
