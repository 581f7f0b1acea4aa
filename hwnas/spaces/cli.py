"""CLI hooks for the new-shape spaces: their size options, and what `info`, `arch` and
`measure` do with them. The commands in hwnas.cli call in here when the space is one of these."""

from __future__ import annotations

import json
from typing import Any

import click

from hwnas.cliutil import given_on_command_line
from hwnas.errors import HwnasError

# Defaults where the MBConv spaces' CLI defaults (224 px, 1000 classes) do not fit: DARTS's CIFAR size.
NEW_SPACE_DEFAULTS = {"darts": {"resolution": 32, "num_classes": 10}}
SIZE_OPTIONS = ("channels", "cells")


def _store(ctx: click.Context, param: click.Parameter, value):
    ctx.meta.setdefault("hwnas_space_options", {})[param.name] = value
    return value


def size_options(f):
    """--channels and --cells (darts); not passed to the command, read back by `make_new_space`."""
    f = click.option("--cells", type=int, default=None, expose_value=False, callback=_store,
                     help="darts: number of cells (default 8; reductions at 1/3 and 2/3).")(f)
    f = click.option("--channels", type=int, default=None, expose_value=False, callback=_store,
                     help="darts: initial channels C (default 16).")(f)
    return f


def is_new_space(name: str) -> bool:
    """A registered space other than the MBConv ones, whose commands take their own code paths."""
    from hwnas.space import SPACE_DEFS
    from hwnas.spaces import space_names

    return name in space_names() and name not in SPACE_DEFS


def make_new_space(name: str, resolution: int, num_classes: int, own: dict[str, Any] | None = None, **defaults: Any):
    """The registered space, with --channels/--cells from the command line (else `defaults`), and
    the space's own default resolution and classes (or `own`'s) where the user gave none."""
    from hwnas.spaces import get_space

    ctx = click.get_current_context(silent=True)
    sizes = dict(ctx.meta.get("hwnas_space_options", {})) if ctx is not None else {}
    options = {**defaults, **{k: v for k, v in sizes.items() if v is not None}}
    own = {**NEW_SPACE_DEFAULTS.get(name, {}), **(own or {})}
    options["resolution"] = resolution if given_on_command_line("resolution") else own.get("resolution", resolution)
    options["num_classes"] = num_classes if given_on_command_line("num_classes") else own.get("num_classes", num_classes)
    return get_space(name, **options)


def check_no_size_options(space_name: str) -> None:
    ctx = click.get_current_context(silent=True)
    given = [k for k, v in (ctx.meta.get("hwnas_space_options", {}) if ctx else {}).items() if v is not None]
    if given:
        raise HwnasError(f"--{given[0]} is an option of the darts space, not {space_name}")


def load_new_arch(space, path):
    """A file, or a reference name of the space (darts-v1, darts-v2)."""
    from pathlib import Path

    from hwnas.jsonutil import read_json

    refs = getattr(space, "references", {})
    if str(path) in refs and not Path(path).exists():
        return space.validate(refs[str(path)])
    return space.validate(read_json(path, "architecture file"))


def info(space, arch_path, as_json: bool) -> None:
    """Parameters (without the auxiliary head, as DARTS counts), MACs and memory access cost:
    of the given architecture, else of the space's reference architectures."""
    if arch_path:
        named = [(str(arch_path), load_new_arch(space, arch_path))]
    else:
        named = [(name, space.validate(doc)) for name, doc in getattr(space, "references", {}).items()]
    rows = []
    for name, arch in named:
        c = space.costs(arch) if hasattr(space, "costs") else {"params": space.params(arch), "macs": space.macs(arch)}
        rows.append({"name": name, "arch_hash": arch.hash, "params": int(c["params"]), "params_m": c["params"] / 1e6,
                     "macs_m": c["macs"] / 1e6, **({"mac_m": c["mac"] / 1e6} if "mac" in c else {}),
                     "arch": arch.to_json(), **({"genotype": arch.genotype()} if hasattr(arch, "genotype") else {})})
    if as_json:
        click.echo(json.dumps({"space": space.config, "architectures": rows}, indent=2))
        return
    click.echo(f"{space}")
    for r in rows:
        click.echo(f"{r['name']} ({r['arch_hash']}): {r['params_m']:.3f} M parameters, {r['macs_m']:.1f} M MACs"
                   + (f", memory access {r['mac_m']:.1f} M" if "mac_m" in r else ""))


def measure_rows(space, measurer, arch_path, n_random, seed, batch, result_row) -> list[dict[str, Any]]:
    from hwnas.spaces.pipeline import arch_item

    archs = [load_new_arch(space, arch_path)] if arch_path else space.random_archs(n_random, seed)
    done = measurer.many([arch_item(measurer, space, a, batch) for a in archs], "networks")
    return [result_row(a.hash, m, batch=batch, params_m=space.params(a) / 1e6, macs_m=space.macs(a) / 1e6)
            for a, m in zip(archs, done)]
