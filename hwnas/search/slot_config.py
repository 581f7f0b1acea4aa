"""One YAML file describes a whole slot search (model, slots, candidates, optimizer, estimator,
objectives, constraints, backend, data), as ModularNAS's configuration does; flags override it.

    model: torchvision:mobilenet_v2      # or package.module:factory
    width_mult: 0.25
    resolution: 32
    slots: {kinds: [mbconv], candidates: {mbconv: [original, MB3E3, MB5E6, skip]}}
    optimizer: {name: nsga2, trials: 40, population: 10}
    estimator: {name: spos, epochs: 10}
    objectives: [accuracy, latency]
    constraints: {latency: 0.5}          # metric: upper bound
    backend: {name: ort-cpu, processes: 3}
    data: {name: digits-translated}

Every key is checked before any work: an unknown key or a wrong type is one line naming it.
"""

from __future__ import annotations

import copy
import difflib
from pathlib import Path
from typing import Any

from hwnas.errors import HwnasError
from hwnas.jsonutil import read_text

# (type, default) per key; a nested dict is a section. Types: str, int, float, bool, list (of str),
# map (any mapping), bounds (metric -> number), kindlists (kind -> list of str); "?" allows null.
SCHEMA: dict[str, Any] = {
    "model": ("str", "torchvision:mobilenet_v2"),
    "model_kwargs": ("map", {}),
    "width_mult": ("float?", None),
    "resolution": ("int", 32),
    "slots": {"kinds": ("list?", None), "candidates": ("kindlists", {})},
    "optimizer": {"name": ("str", "nsga2"), "trials": ("int", 40), "population": ("int", 10),
                  "tournament": ("int", 5), "init": ("int", 10), "batch": ("int", 4)},
    "estimator": {"name": ("str", "spos"), "epochs": ("int", 10), "batch_size": ("int", 64),
                  "lr": ("float", 0.1), "weight_decay": ("float", 4e-5)},
    "objectives": ("list", ["accuracy", "latency"]),
    "constraints": ("bounds", {}),
    "lookup_table": ("bool", True),
    "backend": {"name": ("str", "ort-cpu"), "batch": ("int", 1), "threads": ("int", 1), "precision": ("str", "fp32"),
                "processes": ("int", 3), "warmup": ("int", 5), "min_runs": ("int", 20), "min_time": ("float", 0.3),
                "isolation": ("str", "auto"), "reference": ("bool", True), "db": ("str?", None)},
    "data": {"name": ("str", "digits-translated"), "limit": ("int?", None)},
    "seed": ("int", 0),
    "train_threads": ("int", 1),
    "storage": ("str?", None),
    "hypervolume_reference_ms": ("float?", None),
}

RANGES = {"resolution": (8, 2048), "optimizer.trials": (1, 100_000), "optimizer.population": (2, 10_000),
          "optimizer.tournament": (1, 10_000), "optimizer.init": (1, 100_000), "optimizer.batch": (1, 1000),
          "estimator.epochs": (1, 10_000), "estimator.batch_size": (2, 65_536), "estimator.lr": (1e-9, 100),
          "estimator.weight_decay": (0, 1), "backend.batch": (1, 4096), "backend.threads": (1, 1024),
          "backend.processes": (1, 100), "backend.warmup": (0, 100_000), "backend.min_runs": (1, 1_000_000),
          "backend.min_time": (0, 3600), "data.limit": (2, 100_000_000), "seed": (0, 2**32 - 1),
          "train_threads": (1, 1024), "width_mult": (0.05, 4), "hypervolume_reference_ms": (1e-9, 1e6)}


def defaults() -> dict[str, Any]:
    def walk(schema):
        return {k: walk(v) if isinstance(v, dict) else copy.deepcopy(v[1]) for k, v in schema.items()}

    return walk(SCHEMA)


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v):
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and v == v and abs(v) != float("inf")


def _type_problem(kind: str, v: Any) -> str | None:
    if kind.endswith("?"):
        if v is None:
            return None
        kind = kind[:-1]
    ok = {"str": lambda: isinstance(v, str) and v != "",
          "int": lambda: _is_int(v),
          "float": lambda: _is_num(v),
          "bool": lambda: isinstance(v, bool),
          "list": lambda: isinstance(v, list) and bool(v) and all(isinstance(x, str) for x in v),
          "map": lambda: isinstance(v, dict) and all(isinstance(k, str) for k in v),
          "bounds": lambda: isinstance(v, dict) and all(isinstance(k, str) and _is_num(x) for k, x in v.items()),
          "kindlists": lambda: isinstance(v, dict) and all(
              isinstance(k, str) and isinstance(x, list) and x and all(isinstance(s, str) for s in x) for k, x in v.items()),
          }[kind]()
    if ok:
        return None
    return {"str": "a non-empty string", "int": "an integer", "float": "a number", "bool": "true or false",
            "list": "a non-empty list of names", "map": "a mapping", "bounds": "a mapping of metric: number",
            "kindlists": "a mapping of slot kind: list of candidate names"}[kind]


def _yaml_number(kind: str, value: Any) -> Any:
    """PyYAML reads 2.0e6 (no sign in the exponent) as a string: such a number is taken as one."""
    def number(v):
        if isinstance(v, str):
            try:
                return float(v)
            except ValueError:
                return v
        return v

    if kind.startswith("float"):
        return number(value)
    if kind == "bounds" and isinstance(value, dict):
        return {k: number(v) for k, v in value.items()}
    return value


def check(doc: Any, where: str = "search config") -> dict[str, Any]:
    """The configuration with defaults filled in; HwnasError naming the first bad key."""
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise HwnasError(f"{where}: expected a mapping of settings, got {type(doc).__name__}")
    out = defaults()

    def walk(schema, given, into, prefix):
        for key, value in given.items():
            path = f"{prefix}{key}"
            if key not in schema:
                match = difflib.get_close_matches(str(key), list(schema), n=1)
                raise HwnasError(f"{where}: unknown key {path!r}" + (f" (did you mean {prefix}{match[0]!r}?)" if match else "")
                                 + f"; known: {', '.join(schema)}")
            spec = schema[key]
            if isinstance(spec, dict):
                if not isinstance(value, dict):
                    raise HwnasError(f"{where}: {path} must be a mapping, got {value!r}")
                walk(spec, value, into[key], path + ".")
                continue
            value = _yaml_number(spec[0], value)
            problem = _type_problem(spec[0], value)
            if problem:
                raise HwnasError(f"{where}: {path} must be {problem}, got {value!r}")
            if path in RANGES and value is not None:
                lo, hi = RANGES[path]
                if not lo <= value <= hi:
                    raise HwnasError(f"{where}: {path} = {value!r} is out of range [{lo}, {hi}]")
            into[key] = value

    walk(SCHEMA, doc, out, "")
    return out


def load(path: str | Path) -> dict[str, Any]:
    import yaml


    text = read_text(path, "search config")
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise HwnasError(f"{path}: not valid YAML{at}: {getattr(e, 'problem', None) or e}") from None
    return check(doc, str(path))


def set_path(cfg: dict[str, Any], path: str, value: Any, where: str = "flag") -> None:
    """Override one key (a flag), checked like the file's."""
    head, _, rest = path.partition(".")
    check({head: {rest: value}} if rest else {head: value}, where)
    if rest:
        cfg[head][rest] = value
    else:
        cfg[head] = value
