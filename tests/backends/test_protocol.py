import numpy as np
import pytest

from hwnas.errors import HwnasError
from hwnas.backends import MeasureProtocol, run_protocol, summarize


class FakeClock:
    """Advances only when a fake run happens, by the durations given: deterministic timing."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class FakeRunner:
    def __init__(self, clock, durations):
        self.clock, self.durations, self.calls = clock, list(durations), 0

    def time_once(self, clock):
        d = self.durations[min(self.calls, len(self.durations) - 1)]
        self.calls += 1
        t0 = clock()
        self.clock.now += d
        return clock() - t0

    def close(self):
        pass


def test_stops_when_both_minimum_count_and_time_are_reached():
    clock = FakeClock()
    runner = FakeRunner(clock, [0.5] + [0.01] * 1000)  # a slow first run, then 10 ms runs
    p = MeasureProtocol(warmup_runs=3, warmup_s=0.0, min_runs=10, min_time_s=0.2)
    m = run_protocol(runner, p, clock=clock)
    assert m.first_run_ms == pytest.approx(500)
    assert m.stats["n"] == 20  # 0.2 s of 10 ms runs outlasts 10 runs
    assert runner.calls == 3 + 20  # the first run counts as the first warm-up run
    assert m.stats["median_ms"] == pytest.approx(10)


def test_minimum_count_dominates_for_slow_models():
    clock = FakeClock()
    m = run_protocol(FakeRunner(clock, [0.1]), MeasureProtocol(warmup_runs=1, warmup_s=0, min_runs=7, min_time_s=0.01), clock=clock)
    assert m.stats["n"] == 7


def test_warmup_time_is_respected():
    clock = FakeClock()
    runner = FakeRunner(clock, [1 / 64])  # binary-exact durations: no rounding at the boundary
    run_protocol(runner, MeasureProtocol(warmup_runs=1, warmup_s=1 / 8, min_runs=1, min_time_s=0), clock=clock)
    assert runner.calls == 1 + 8 + 1  # first run, 1/8 s of warm-up after it, one timed run


def test_max_runs_caps_the_loop():
    clock = FakeClock()
    p = MeasureProtocol(warmup_runs=0, warmup_s=0, min_runs=5, min_time_s=100, max_runs=8)
    assert run_protocol(FakeRunner(clock, [0.001]), p, clock=clock).stats["n"] == 8


def test_noisy_measurements_are_flagged_not_hidden():
    clock = FakeClock()
    durations = [0.01, 0.01] + [0.01, 0.02] * 50
    m = run_protocol(FakeRunner(clock, durations), MeasureProtocol(warmup_runs=2, warmup_s=0, min_runs=50, min_time_s=0), clock=clock)
    assert m.noisy and len(m.samples_ms) == 50


def test_summary_statistics():
    s = summarize([1.0, 2.0, 3.0, 4.0, 100.0])
    assert s["median_ms"] == 3.0 and s["min_ms"] == 1.0 and s["max_ms"] == 100.0 and s["n"] == 5
    assert s["iqr_ms"] == 2.0 and s["mean_ms"] == 22.0
    assert s["cov"] == pytest.approx(np.std([1, 2, 3, 4, 100], ddof=1) / 22.0)


@pytest.mark.parametrize("kwargs", [{"min_runs": 0}, {"min_runs": 5, "max_runs": 4}, {"warmup_s": -1}, {"min_runs": 2.5}])
def test_bad_protocols(kwargs):
    with pytest.raises(HwnasError):
        MeasureProtocol(**kwargs)


@pytest.mark.parametrize("sessions", [0, -1, 1.5, True, 1001])
def test_bad_session_counts(sessions):
    with pytest.raises(HwnasError, match="sessions"):
        MeasureProtocol(sessions=sessions)


def test_one_session_keeps_the_protocol_as_stored_before_sessions_existed():
    assert "sessions" not in MeasureProtocol().to_json()  # the stores' keys do not move
    assert MeasureProtocol(sessions=4).to_json()["sessions"] == 4
    assert MeasureProtocol().per_session() == MeasureProtocol()


def test_each_session_runs_its_share():
    p = MeasureProtocol(min_runs=20, min_time_s=0.3, max_runs=1000, max_time_s=60.0, sessions=4).per_session()
    assert (p.min_runs, p.min_time_s, p.max_runs, p.max_time_s, p.sessions) == (5, 0.075, 250, 15.0, 1)
    assert MeasureProtocol(min_runs=5, sessions=4).per_session().min_runs == 2  # rounded up: never fewer in all


def test_sessions_merge_into_the_mean_of_their_layouts():
    from hwnas.backends.protocol import merge_sessions

    clock = FakeClock()
    p = MeasureProtocol(warmup_runs=1, warmup_s=0.0, min_runs=5, min_time_s=0.0)
    fast, slow = (run_protocol(FakeRunner(clock, [d]), p, clock=clock, session_ms=2.0) for d in (0.001, 0.0015))
    m = merge_sessions([fast, slow, fast])
    assert m.stats["median_ms"] == m.stats["raw_median_ms"] == pytest.approx((1.0 + 1.5 + 1.0) / 3)
    assert m.stats["sessions"] == 3
    assert m.stats["session_cov"] == pytest.approx(np.std([1.0, 1.5, 1.0], ddof=1) / np.mean([1.0, 1.5, 1.0]))
    assert len(m.samples_ms) == 3 * len(fast.samples_ms) and m.session_ms == 6.0
    assert merge_sessions([fast]) is fast
