"""The multi-process, reference-checked protocol: blocks against the reference, k processes
combined with a confidence interval, the drift flag."""

import numpy as np
import pytest
from scipy import stats as sps

from hwnas.errors import HwnasError
from hwnas.backends import MeasureProtocol, run_protocol, summarize
from hwnas.backends.protocol import Measurement, combine, usable



class FakeClock:
    """Advances only when a fake run happens: deterministic timing."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class ScaledRunner:
    """A run of `base` seconds, times the machine's slowness at that moment (shared by every
    runner on the same clock): what a slow host does to every model alike."""

    def __init__(self, clock, base, slowness):
        self.clock, self.base, self.slowness = clock, base, slowness

    def time_once(self, clock):
        t0 = clock()
        self.clock.now += self.base * self.slowness(self.clock.now)
        return clock() - t0

    def close(self):
        pass


def test_blocks_alternate_with_the_reference_and_the_ratio_cancels_a_slow_machine():
    clock = FakeClock()
    slow = lambda t: 2.0 if int(t / 0.05) % 2 else 1.0  # noqa: E731  the machine halves its speed every other 50 ms
    model, ref = ScaledRunner(clock, 0.002, slow), ScaledRunner(clock, 0.001, slow)
    p = MeasureProtocol(warmup_runs=1, warmup_s=0, min_runs=50, min_time_s=0.3, block_s=0.01, ref_runs=2)
    m = run_protocol(model, p, clock=clock, reference=ref)
    assert len(m.blocks) >= 3
    raw = np.array(m.samples_ms)
    assert raw.max() / raw.min() == pytest.approx(2.0)  # the raw samples see both speeds
    assert m.stats["ratio"] == pytest.approx(2.0, rel=0.05)  # the ratio to the reference sees neither
    assert m.stats["raw_median_ms"] == m.stats["median_ms"]  # one process: the raw median until combined


def test_without_a_reference_there_are_no_blocks():
    clock = FakeClock()
    m = run_protocol(ScaledRunner(clock, 0.001, lambda t: 1.0), MeasureProtocol(warmup_runs=1, warmup_s=0, min_runs=5,
                                                                                min_time_s=0), clock=clock)
    assert m.blocks == [] and "ratio" not in m.stats


def one_process(latency_ms, ref_ms=None, noisy=False) -> Measurement:
    stats = {**summarize([latency_ms] * 3), "raw_median_ms": latency_ms}
    if ref_ms is not None:
        stats.update(ref_median_ms=ref_ms, ratio=latency_ms / ref_ms)
    return Measurement([latency_ms] * 3, stats, noisy, 10.0, 5.0, {"backend": "ort-cpu"}, {})


def test_combine_takes_the_median_of_processes_and_a_t_interval():
    p = MeasureProtocol(noisy_ci=0.5)
    medians = [1.00, 1.04, 0.98]
    m = combine([one_process(v) for v in medians], p)
    assert m.stats["median_ms"] == pytest.approx(1.00)
    mean, sd = np.mean(medians), np.std(medians, ddof=1)
    half = sps.t.ppf(0.975, 2) * sd / np.sqrt(3)  # 4.303 x sd / sqrt(3)
    assert m.ci95_ms == pytest.approx([mean - half, mean + half])
    assert [q["latency_ms"] for q in m.processes] == medians and m.samples_ms == [1.0] * 3 + [1.04] * 3 + [0.98] * 3
    assert m.flags == [] and usable(m.flags)


def test_combine_flags_a_wide_interval_noisy_and_one_process_single():
    wide = combine([one_process(v) for v in (1.0, 1.3, 0.8)], MeasureProtocol(noisy_ci=0.02))
    assert wide.noisy and "noisy" in wide.flags and not usable(wide.flags)
    single = combine([one_process(1.0, noisy=True)], MeasureProtocol())
    assert single.ci95_ms == [1.0, 1.0] and single.flags == ["single-process"] and usable(single.flags)
    assert single.processes[0]["noisy"]  # its own IQR verdict, kept


def test_reference_normalises_each_process_and_flags_drift():
    p = MeasureProtocol(drift_limit=1.15, noisy_ci=0.5)
    # The second process ran while the machine was 1.5x slow: its raw median is 1.5x, its ratio is not.
    reps = [one_process(2.0, 1.0), one_process(3.0, 1.5), one_process(2.02, 1.0)]
    m = combine(reps, p, baseline_ms=1.0)
    assert [q["latency_ms"] for q in m.processes] == pytest.approx([2.0, 2.0, 2.02])
    assert m.stats["median_ms"] == pytest.approx(2.0) and m.stats["raw_median_ms"] == pytest.approx(2.02)
    assert "disturbed" in m.flags and not usable(m.flags)
    assert m.reference_ratio == pytest.approx(1.0)
    calm = combine([one_process(2.0, 1.0), one_process(2.02, 1.05)], p, baseline_ms=1.0)
    assert "disturbed" not in calm.flags


def test_the_drift_flag_comes_from_a_slow_clock_on_the_reference():
    """A clock that runs the machine 1.4x slow from some moment on: the reference reads it, the
    combined measurement is flagged disturbed, its normalised latency stays put."""
    p = MeasureProtocol(warmup_runs=1, warmup_s=0, min_runs=20, min_time_s=0.05, block_s=0.01, ref_runs=2,
                        drift_limit=1.15, noisy_ci=0.5)
    reps = []
    for slowness in (1.0, 1.4, 1.0):
        clock = FakeClock()
        reps.append(run_protocol(ScaledRunner(clock, 0.002, lambda t, s=slowness: s), p, clock=clock,
                                 reference=ScaledRunner(clock, 0.001, lambda t, s=slowness: s)))
    m = combine(reps, p, baseline_ms=1.0)
    assert "disturbed" in m.flags
    assert m.stats["median_ms"] == pytest.approx(2.0)
    assert [q["reference_ratio"] for q in m.processes] == pytest.approx([1.0, 1.4, 1.0])


@pytest.mark.parametrize("kwargs", [{"processes": 0}, {"processes": -1}, {"processes": 1.5}, {"drift_limit": 1.0},
                                    {"noisy_ci": float("nan")}, {"block_s": float("inf")}])
def test_protocol_refuses_bad_replicate_settings(kwargs):
    with pytest.raises(HwnasError):
        MeasureProtocol(**kwargs)
