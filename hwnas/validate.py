"""The one check of numbers given to hwnas: finite, of the right kind, inside a named range.

Every command's numeric options use these click types, so NaN, infinities, negative seeds and
unbounded counts are refused in one line before any work starts."""

from __future__ import annotations

import math
import numbers
from typing import Any

import click

from hwnas.errors import HwnasError

SEED_MAX = 2**32 - 1  # numpy's and most tools' seed range
MAX_LATENCY_MS = 1e6  # 1000 s for one inference: anything larger is a broken file, not a measurement


def _interval(lo: float | None, hi: float | None, lo_open: bool, hi_open: bool) -> str:
    left = "(" if lo_open else "["
    right = ")" if hi_open else "]"
    def show(v, none):
        return none if v is None else str(v) if isinstance(v, int) else f"{v:g}"

    return f"{left}{show(lo, '-inf')}, {show(hi, 'inf')}{right}"


def require(ok: bool, message: str) -> None:
    """Raise HwnasError(message) unless ok: the one-line check of a configuration's fields."""
    if not ok:
        raise HwnasError(message)


def is_finite_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def number_problem(value: Any, lo: float | None = None, hi: float | None = None, integer: bool = False,
                   lo_open: bool = False, hi_open: bool = False) -> str | None:
    """Why `value` is not a finite number (an integer if asked) in the range, or None when it is."""
    kind = "an integer" if integer else "a finite number"
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
        return f"must be {kind} in {_interval(lo, hi, lo_open, hi_open)}, got {value!r}"
    if not math.isfinite(value):
        return f"must be {kind} in {_interval(lo, hi, lo_open, hi_open)}, got {value!r}"
    below = lo is not None and (value <= lo if lo_open else value < lo)
    above = hi is not None and (value >= hi if hi_open else value > hi)
    if below or above:
        return f"must be in {_interval(lo, hi, lo_open, hi_open)}, got {value!r}"
    return None


def check_number(name: str, value: Any, lo: float | None = None, hi: float | None = None, integer: bool = False,
                 lo_open: bool = False, hi_open: bool = False) -> Any:
    """`value` if it is a finite number in the range; else HwnasError naming `name` and the bound."""
    problem = number_problem(value, lo, hi, integer, lo_open, hi_open)
    if problem:
        raise HwnasError(f"{name} {problem}")
    return value


def check_latency(name: str, value: Any) -> float:
    """A latency in ms: finite, positive and below MAX_LATENCY_MS, or a HwnasError (never a silent NaN,
    zero or negative)."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        value = float(value)  # numpy scalars too
    return check_number(name, value, 0, MAX_LATENCY_MS, lo_open=True)


class Number(click.ParamType):
    """A click option value: a finite int or float inside [lo, hi] (either end optionally open)."""

    def __init__(self, lo: float | None, hi: float | None, integer: bool = False, lo_open: bool = False,
                 hi_open: bool = False):
        self.lo, self.hi, self.integer, self.lo_open, self.hi_open = lo, hi, integer, lo_open, hi_open
        self.name = "integer" if integer else "float"

    def convert(self, value, param, ctx):
        if isinstance(value, str):
            try:
                value = int(value.strip(), 10) if self.integer else float(value)
            except ValueError:  # also an integer past Python's 4300-digit conversion limit
                shown = value if len(value) <= 40 else value[:37] + "..."
                self.fail(f"{shown!r} is not a valid {'integer' if self.integer else 'number'}", param, ctx)
        problem = number_problem(value, self.lo, self.hi, self.integer, self.lo_open, self.hi_open)
        if problem:
            self.fail(problem, param, ctx)
        return value


def Int(lo: int | None, hi: int | None) -> Number:
    return Number(lo, hi, integer=True)


def Float(lo: float | None, hi: float | None, lo_open: bool = False, hi_open: bool = False) -> Number:
    return Number(lo, hi, lo_open=lo_open, hi_open=hi_open)


SEED = Int(0, SEED_MAX)
POSITIVE_MS = Float(0, MAX_LATENCY_MS, lo_open=True)  # a latency target: above 0, below 1000 s
COUNT = Int(1, 1_000_000)  # subnets, pairs, runs: at least one, never unbounded
