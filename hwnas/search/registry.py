"""Search methods by name. A method is one module under `hwnas.search.methods` that registers
its command-line glue with `register_method`: its own options (with their own defaults and help)
and a `run(opts) -> summary` function. `hwnas search --method M` offers the shared options
plus M's, and nothing of the other methods."""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass
from typing import Any, Callable

from hwnas.errors import HwnasError


@dataclass(frozen=True)
class Method:
    name: str
    help: str
    options: tuple  # click.option(...) decorators, in the order --help lists them
    run: Callable[[dict[str, Any]], dict[str, Any]]


METHODS: dict[str, Method] = {}
# Where each method lives, imported when it is first asked for: listing methods needs no torch.
_MODULES = {
    "tfnas": "hwnas.search.methods.tfnas",
    "unas": "hwnas.search.methods.unas",
    "snas": "hwnas.search.methods.snas",
    "entrannas": "hwnas.search.methods.entrannas",
    "modnas": "hwnas.search.methods.modnas",
}


def register_method(name: str, help: str, options=()):
    def decorate(run):
        METHODS[name] = Method(name, help, tuple(options), run)
        return run

    return decorate


def method_names() -> list[str]:
    return list(dict.fromkeys([*_MODULES, *METHODS]))


def get_method(name: str) -> Method:
    if name in _MODULES:
        importlib.import_module(_MODULES[name])
    if name not in METHODS:
        match = difflib.get_close_matches(str(name), method_names(), n=1)
        hint = f" (did you mean {match[0]!r}?)" if match else ""
        raise HwnasError(f"unknown search method {name!r}{hint}; known: {', '.join(method_names())}")
    return METHODS[name]
