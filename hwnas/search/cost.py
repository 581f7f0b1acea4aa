"""The latency cost a search adds to its loss, with one set of names for every method's `--cost`:
hinge max(L/T - 1, 0) (TF-NAS's paper) or abs |L/T - 1| (TF-NAS's code: it also pulls a net that
is too fast up to the target). UNAS adds hinge-ms, its own per-ms hinge (`hwnas.search.unas`)."""

from __future__ import annotations

import torch

COSTS = ("hinge", "abs")


def relative_cost(ratio, kind: str = "hinge") -> torch.Tensor:
    """The cost of a latency at `ratio` = L/T of the target."""
    r = torch.as_tensor(ratio) - 1.0
    if kind == "hinge":
        return torch.relu(r)
    if kind == "abs":
        return r.abs()
    raise ValueError(f"unknown latency cost {kind!r}; known: {', '.join(COSTS)}")


def relative_cost_slope(ratio: float, kind: str = "hinge") -> float:
    """d cost / d ratio at `ratio`."""
    if ratio > 1.0:
        return 1.0
    return 0.0 if kind == "hinge" else -1.0
