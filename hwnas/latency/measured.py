"""The true latency as a latency model."""

from __future__ import annotations

from hwnas.backends.protocol import usable
from hwnas.spaces.mbconv import Space


class MeasuredLatency:
    """The true latency as a model: predict(arch) measures it (the store makes repeats free)."""

    name = "measured"

    def __init__(self, space: Space, measurer, batch: int = 1):
        self.space, self.measurer, self.batch = space, measurer, batch
        self.flags: list[str] = []
        self.ci95_ms: list[float] | None = None

    def predict(self, arch) -> float:
        """The measured latency; a measurement flagged noisy or disturbed (`protocol.usable`) is
        measured once more, fresh, and the flags and 95% interval of what was used are kept in
        `flags` and `ci95_ms`."""
        m = self.measurer.arch(self.space, arch, self.batch).measurement
        if not usable(m.flags):
            m = self.measurer.arch(self.space, arch, self.batch, force=True).measurement
        self.flags, self.ci95_ms = m.flags, m.ci95_ms
        return float(m.stats["median_ms"])
