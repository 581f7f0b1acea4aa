"""Search spaces by name: each new-shape space registers itself here (`register_space`) and is
made with `get_space(name, **options)`."""

from __future__ import annotations

import difflib
import importlib
from typing import Any, Callable

from hwnas.errors import HwnasError
from hwnas.spaces.base import SearchSpace

SPACES: dict[str, Callable[..., SearchSpace]] = {}
# Where each space lives, imported when the space is first made: naming spaces needs no torch.
_MODULES = {"tfnas": "hwnas.spaces.mbconv", "proxyless": "hwnas.spaces.mbconv", "darts": "hwnas.spaces.darts",
            "slots": "hwnas.spaces.slots"}


def register_space(name: str):
    def decorate(cls):
        SPACES[name] = cls
        return cls

    return decorate


def space_names() -> list[str]:
    return sorted(set(SPACES) | set(_MODULES))


def get_space(name: str, **options: Any) -> SearchSpace:
    if name in _MODULES:
        importlib.import_module(_MODULES[name])
    if name not in SPACES:
        match = difflib.get_close_matches(str(name), space_names(), n=1)
        hint = f" (did you mean {match[0]!r}?)" if match else ""
        raise HwnasError(f"unknown search space {name!r}{hint}; known: {', '.join(space_names())}")
    return SPACES[name](**options)


__all__ = ["SPACES", "SearchSpace", "get_space", "register_space", "space_names"]
