"""Search spaces by name: each new-shape space registers itself here (`register_space`) and is
made with `get_space(name, **options)`. The MBConv spaces of `hwnas.space` predate this shape."""

from __future__ import annotations

import difflib
import importlib
from typing import Any, Callable

from hwnas.errors import HwnasError
from hwnas.spaces.base import SearchSpace

SPACES: dict[str, Callable[..., SearchSpace]] = {}
_MODULES = ("hwnas.spaces.darts",)  # imported on first use, so `import hwnas.spaces` stays light


def register_space(name: str):
    def decorate(cls):
        SPACES[name] = cls
        return cls

    return decorate


def _load() -> None:
    for module in _MODULES:
        importlib.import_module(module)


def space_names() -> list[str]:
    _load()
    return sorted(SPACES)


def get_space(name: str, **options: Any) -> SearchSpace:
    _load()
    if name not in SPACES:
        match = difflib.get_close_matches(str(name), list(SPACES), n=1)
        hint = f" (did you mean {match[0]!r}?)" if match else ""
        raise HwnasError(f"unknown search space {name!r}{hint}; known: {', '.join(sorted(SPACES))}")
    return SPACES[name](**options)


__all__ = ["SPACES", "SearchSpace", "get_space", "register_space", "space_names"]
