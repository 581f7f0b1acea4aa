"""Search spaces by name: each new-shape space registers itself here (`register_space`) and is
made with `get_space(name, **options)`."""

from __future__ import annotations

from typing import Any, Callable

from hwnas.registry import Registry
from hwnas.spaces.base import SearchSpace

# Where each space lives, imported when the space is first made: naming spaces needs no torch.
SPACES: Registry[Callable[..., SearchSpace]] = Registry("search space", {
    "tfnas": "hwnas.spaces.mbconv", "proxyless": "hwnas.spaces.mbconv",
    "proxyless-elastic": "hwnas.spaces.proxyless_elastic", "darts": "hwnas.spaces.darts", "slots": "hwnas.spaces.slots"})


def register_space(name: str):
    return lambda cls: SPACES.add(name, cls)


def space_names() -> list[str]:
    return sorted(SPACES.names())


def get_space(name: str, **options: Any) -> SearchSpace:
    return SPACES.get(name)(**options)


__all__ = ["SPACES", "SearchSpace", "get_space", "register_space", "space_names"]
