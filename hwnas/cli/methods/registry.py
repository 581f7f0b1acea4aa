"""Search methods by name (`hwnas.search.METHOD_NAMES`). A method is one module under
`hwnas.cli.methods`, named as the method, that registers its command-line glue with `register_method`: its own options (with their own defaults and help)
and a `run(opts) -> summary` function. `hwnas search --method M` offers the shared options
plus M's, and nothing of the other methods."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from hwnas.registry import Registry
from hwnas.search import METHOD_NAMES


@dataclass(frozen=True)
class Method:
    name: str
    help: str
    options: tuple  # click.option(...) decorators, in the order --help lists them
    run: Callable[[dict[str, Any]], dict[str, Any] | None]  # None: stopped by --stop-after-epoch
    # Its own options for a tiny run in seconds in which nothing measured decides a step, so a resumed
    # run must equal an uninterrupted one: what the search conformance suite runs for every method.
    # Empty where a method has no epochs to stop after (its resume is tested on its own).
    small_args: tuple[str, ...] = ()


# Where each method lives, imported when it is first asked for: listing methods needs no torch.
METHODS: Registry[Method] = Registry("search method", {name: f"hwnas.cli.methods.{name}" for name in METHOD_NAMES})


def register_method(name: str, help: str, options=(), small_args=()):
    def decorate(run):
        METHODS.add(name, Method(name, help, tuple(options), run, tuple(small_args)))
        return run

    return decorate


def method_names() -> list[str]:
    return METHODS.names()


def get_method(name: str) -> Method:
    return METHODS.get(name)
