"""The shape every new search space has: validate JSON into an architecture, sample, build."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np


class SearchSpace(ABC):
    """An architecture object returned by `validate` has `.to_json()` and `.hash`."""

    name: str = ""
    # The smallest useful instance (options of the constructor): the conformance tests build,
    # export and measure every registered space at this size.
    small_options: dict[str, Any] = {}

    @property
    @abstractmethod
    def config(self) -> dict[str, Any]:
        """Everything that fixes the networks built here (stored with measurements)."""

    @abstractmethod
    def validate(self, doc: Any):
        """JSON (or an architecture of this space) -> architecture; HwnasError on bad input."""

    @abstractmethod
    def default_arch(self): ...

    @abstractmethod
    def sample(self, rng: np.random.Generator): ...

    @abstractmethod
    def build(self, arch):
        """The network as an eval-ready torch.nn.Module."""

    @abstractmethod
    def input_shape(self, batch: int = 1) -> tuple[int, ...]: ...

    @abstractmethod
    def params(self, arch) -> int: ...

    @abstractmethod
    def macs(self, arch) -> int: ...

    def random_archs(self, n: int, seed: int = 0) -> list:
        rng = np.random.default_rng(seed)
        return [self.sample(rng) for _ in range(n)]

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v}" for k, v in self.config.items() if k != "space")
        return f"{self.name}({opts})"
