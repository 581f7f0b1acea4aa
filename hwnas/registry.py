"""A registry by name, whose members live in modules imported on first use (so listing the names
needs no torch), with one error for an unknown name that suggests the closest."""

from __future__ import annotations

import difflib
import importlib
from typing import Generic, TypeVar

from hwnas.errors import HwnasError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, what: str, modules: dict[str, str]):
        self.what = what
        self.modules = modules  # name -> the module whose import registers it
        self.members: dict[str, T] = {}

    def add(self, name: str, member: T) -> T:
        self.members[name] = member
        return member

    def names(self) -> list[str]:
        return list(dict.fromkeys([*self.modules, *self.members]))

    def get(self, name: str) -> T:
        if name in self.modules:
            importlib.import_module(self.modules[name])
        if name not in self.members:
            match = difflib.get_close_matches(str(name), self.names(), n=1)
            hint = f" (did you mean {match[0]!r}?)" if match else ""
            raise HwnasError(f"unknown {self.what} {name!r}{hint}; known: {', '.join(self.names())}")
        return self.members[name]
