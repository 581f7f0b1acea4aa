"""Option groups and helpers shared by the CLI's command modules."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource
from tqdm import tqdm

from hwnas.backends import MeasureProtocol, get_backend
from hwnas.errors import HwnasError
from hwnas.fleet import FleetBackend, FleetWorker, check_device_name, parse_address
from hwnas.jsonutil import read_json
from hwnas.spaces import get_space, space_names
from hwnas.spaces.mbconv import Space, closest, is_mbconv
from hwnas.validate import Float, Int

OUTPUT_FORMATS = (".csv", ".parquet", ".json")


def fail(message: str) -> None:
    raise HwnasError(message)


def given_on_command_line(name: str) -> bool:
    """Did the user give option `name`? (True outside a command, or where the command has no
    such option: the caller's value stands.)"""

    ctx = click.get_current_context(silent=True)
    if ctx is None:
        return True
    source = ctx.get_parameter_source(name)
    return source is None or source != ParameterSource.DEFAULT


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
    return name in space_names() and not is_mbconv(name)


def make_new_space(name: str, resolution: int, num_classes: int, own: dict[str, Any] | None = None, **defaults: Any):
    """The registered space, with --channels/--cells from the command line (else `defaults`), and
    the space's own default resolution and classes (or `own`'s) where the user gave none."""
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
    refs = getattr(space, "references", {})
    if str(path) in refs and not Path(path).exists():
        return space.validate(refs[str(path)])
    return space.validate(read_json(path, "architecture file"))


# --- reusable option groups -----------------------------------------------------------------


def space_options(f):
    f = click.option("--classes", "num_classes", type=Int(2, 100_000), default=1000, show_default=True, help="Classifier outputs.")(f)
    f = click.option("--width-mult", type=Float(0.1, 4), default=0.5, show_default=True, help="Channel width multiplier.")(f)
    f = click.option("--resolution", type=Int(16, 2048), default=224, show_default=True, help="Input height and width.")(f)
    f = click.option("--space", "space_name", default="tfnas", show_default=True, help="Search space: tfnas, proxyless or darts.")(f)

    return size_options(f)  # --channels, --cells (darts)


ISOLATIONS = ("auto", "pin", "pause", "none")


def _measurement_option(name: str):
    """Measurement settings every backend command shares, kept in the click context for
    `make_measurer` (so the commands' own signatures need not carry them)."""
    def store(ctx, param, value):
        ctx.meta.setdefault("hwnas.measure", {})[name] = value
        return value
    return store


class StoreParam(click.ParamType):
    """--db: a database URL stays text (checked when the store opens); anything else is a file path."""

    name = "PATH|URL"

    def convert(self, value, param, ctx):
        from hwnas.store import is_url

        return value if isinstance(value, Path) or is_url(value) else Path(value)


STORE = StoreParam()


def backend_options(f):
    f = click.option("--device", default=None, expose_value=False, callback=_measurement_option("device"),
                     help="With --cluster: the device to measure on (a name given to `hwnas worker --device`).")(f)
    f = click.option("--cluster", default=None, expose_value=False, callback=_measurement_option("cluster"),
                     help="HOST:PORT of a measurement fleet's Ray head node: measure on its workers for --device "
                          "instead of on this machine (see docs/fleet.md).")(f)
    f = click.option("--measure-cpus", default=None, expose_value=False, callback=_measurement_option("cpus"),
                     help="Cores the measurement worker runs on, e.g. 1 or 2,3 (with --isolation pin; "
                          "default: the last core this process may use).")(f)
    f = click.option("--isolation", type=click.Choice(ISOLATIONS), default="auto", show_default=True, expose_value=False,
                     callback=_measurement_option("isolation"),
                     help="Keep hwnas's own work off the timed core: pin = the worker on its own core(s), export "
                          "and training on the others (refused with fewer than 2 cores); pause = nothing else "
                          "of hwnas runs while a model is timed; none = no care (recorded in each measurement); "
                          "auto = pin where there are 2 or more cores, else pause.")(f)
    f = click.option("--sessions", type=Int(1, 1000), default=1, show_default=True, expose_value=False,
                     callback=_measurement_option("sessions"),
                     help="Sessions per process, each timed for a share of the time: each draws another memory "
                          "layout, which moves a small network's latency by up to 1.5x (docs/measurement.md).")(f)
    f = click.option("--processes", "-k", type=Int(1, 100), default=3, show_default=True, expose_value=False,
                     callback=_measurement_option("processes"),
                     help="Fresh worker processes per measurement; the latency is the median of theirs, with a 95% CI.")(f)
    f = click.option("--no-reference", is_flag=True, expose_value=False, callback=_measurement_option("no_reference"),
                     help="Do not time the reference model beside each measurement (no drift check or normalisation).")(f)
    f = click.option("--db", type=STORE, default=None,
                     help="Measurement store: an SQLite file, or postgresql://user:password@host:port/database for a "
                          "fleet. Default: $HWNAS_DB or the user cache directory.")(f)
    f = click.option("--min-time", type=Float(0, 3600), default=0.3, show_default=True, help="Minimum timed seconds per measurement.")(f)
    f = click.option("--min-runs", type=Int(1, 1_000_000), default=20, show_default=True, help="Minimum timed runs per measurement.")(f)
    f = click.option("--warmup", type=Int(0, 100_000), default=5, show_default=True, help="Untimed warm-up runs.")(f)
    f = click.option("--precision", default="fp32", show_default=True, help="fp32 or fp16 (GPU backends).")(f)
    f = click.option("--threads", type=Int(1, 1024), default=1, show_default=True, help="Measurement threads (intra-op); training has --train-threads.")(f)
    f = click.option("--batch", type=Int(1, 4096), default=1, show_default=True, help="Batch size.")(f)
    f = click.option("--backend", "backend_name", default="ort-cpu", show_default=True,
                     help="ort-cpu, ort-cuda, ort-trt, tensorrt, tensorrt-graph, torch-cpu, torch-cuda or torch-cuda-graph.")(f)
    return f


def arch_file_space(space_name: str, width_mult: float, arch_path: Path | None) -> tuple[str, float]:
    """An MBConv architecture file's space and width multiplier, where the user gave no --space or
    --width-mult; given ones that contradict the file are refused, never silently overridden."""

    if arch_path is None or not Path(arch_path).is_file():
        return space_name, width_mult
    doc = read_json(arch_path, "architecture file")
    if not isinstance(doc, dict) or "stages" not in doc:
        return space_name, width_mult  # another space's form (darts), checked by that space
    for option, name, value, cast in (("--space", "space_name", space_name, str), ("--width-mult", "width_mult", width_mult, float)):
        key = "space" if name == "space_name" else "width_mult"
        if key not in doc:
            continue
        try:
            theirs = cast(doc[key])
        except (TypeError, ValueError):
            continue  # validation names the bad field
        if given_on_command_line(name) and theirs != value:
            fail(f"{arch_path} is an architecture of {key} {theirs!r}, but {option} {value} was given")
        if name == "space_name":
            space_name = theirs
        else:
            width_mult = theirs
    return space_name, width_mult


def make_space(space_name: str, resolution: int, width_mult: float, num_classes: int, new_spaces: bool = False,
               arch_path: Path | None = None):
    """new_spaces: the command also works with the spaces of hwnas.spaces (darts). arch_path: the
    space and width multiplier come from this architecture file unless given."""

    space_name, width_mult = arch_file_space(space_name, width_mult, arch_path)

    if is_new_space(space_name):
        if not new_spaces:
            fail(f"space {space_name} works with info, arch, measure, sample, surrogate, train, additivity and search "
                 "(snas, entrannas), not this command")
        return make_new_space(space_name, resolution, num_classes)

    if not is_mbconv(space_name):
        known = space_names()
        fail(f"unknown space {space_name!r}{closest(space_name, known)}; known: {', '.join(known)}")
    check_no_size_options(space_name)
    return Space(space_name, resolution=resolution, width_mult=width_mult, num_classes=num_classes)


def measurement_settings() -> dict:
    """--processes, --isolation, --measure-cpus, --no-reference, --cluster, --device of the running
    command (defaults elsewhere)."""
    ctx = click.get_current_context(silent=True)
    given = dict(ctx.meta.get("hwnas.measure", {})) if ctx is not None else {}
    return {"processes": 3, "sessions": 1, "isolation": "auto", "cpus": None, "no_reference": False, "cluster": None, "device": None,
            **{k: v for k, v in given.items() if v is not None}}


def make_measurer(backend_name, batch, threads, precision, warmup, min_runs, min_time, db, force=False):
    """The command's measurer: its backend options plus --processes, --isolation, --measure-cpus, --no-reference."""
    from hwnas.measure import open_measurer

    if isinstance(batch, bool) or not 1 <= batch <= 4096:
        fail(f"batch must be an integer in [1, 4096], got {batch}")
    settings = measurement_settings()
    if settings["cluster"] or settings["device"]:
        if not 1 <= settings["processes"] <= 100:
            fail(f"--processes must be in [1, 100], got {settings['processes']}")
        protocol = MeasureProtocol(warmup_runs=warmup, min_runs=min_runs, min_time_s=min_time,
                                   processes=settings["processes"], reference=not settings["no_reference"],
                                   sessions=settings["sessions"])
        return _fleet_measurer(settings["cluster"], settings["device"], backend_name, threads, precision, protocol, db, force)
    return open_measurer(backend_name, threads=threads, precision=precision, warmup=warmup, min_runs=min_runs,
                         min_time=min_time, db=db, force=force, processes=settings["processes"],
                         reference=not settings["no_reference"], isolation=settings["isolation"], cpus=settings["cpus"],
                         sessions=settings["sessions"])


def _fleet_measurer(cluster, device, backend_name, threads, precision, protocol, db, force):
    """A Measurer whose worker is the fleet's devices of one name (hwnas.fleet); this machine
    only exports and stores, so it needs neither the backend's hardware nor core isolation."""
    from hwnas.measure import Measurer
    from hwnas.store import Store

    if not (cluster and device):
        fail("--cluster and --device go together: the fleet's head node and the device to measure on")
    parse_address(cluster)
    check_device_name(device)
    backend = get_backend(backend_name, threads=threads, precision=precision, check=False)
    if backend.input != "onnx":
        fail(f"backend {backend_name} measures PyTorch modules in this process; a fleet measures ONNX backends")
    store = Store(db)  # a bad store is refused before the cluster is joined
    try:
        fleet = FleetWorker(cluster, device, backend.name, threads, precision)
    except BaseException:
        store.close()
        raise
    return Measurer(FleetBackend(backend, fleet), store, protocol, force=force, worker=fleet, isolation="fleet")


def load_arch(space, path: Path):
    if hasattr(space, "references"):  # a new-shape space: a file or a reference name (darts-v2)
        return load_new_arch(space, path)
    return space.validate(read_json(path, "architecture file"))


def check_out(path: Path | None, suffixes: tuple[str, ...] | None = None, directory: bool = False,
              option: str = "--out") -> None:
    """Refuse an output that cannot be written before any long work starts: a wrong extension, a
    directory where a file goes (or the reverse), or a parent that is no writable directory."""
    if path is None:
        return
    if suffixes and path.suffix.lower() not in suffixes:
        fail(f"{option} must end in {', '.join(suffixes)}, got {path.name!r}")
    if directory and path.exists() and not path.is_dir():
        fail(f"{option} {path} is a file, not a directory")
    if not directory and path.is_dir():
        fail(f"{option} {path} is a directory; give a file path")
    nearest = path if directory else path.parent
    while not nearest.exists() and nearest != nearest.parent:
        nearest = nearest.parent
    if not nearest.is_dir() or not os.access(nearest, os.W_OK | os.X_OK):
        fail(f"cannot write {option} {path}: {nearest} is not a writable directory")


def write_table(df, out: Path | None) -> None:
    """Print the table and, with --out, write it as CSV, parquet or JSON by extension."""
    import pandas as pd

    with pd.option_context("display.max_rows", 500, "display.width", 200, "display.max_columns", 20):
        click.echo(df.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    if out is None:
        return
    suffix = out.suffix.lower()
    if suffix not in OUTPUT_FORMATS:
        fail(f"--out must end in {', '.join(OUTPUT_FORMATS)}, got {out.name!r}")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        if suffix == ".csv":
            df.to_csv(out, index=False)
        elif suffix == ".parquet":
            df.to_parquet(out, index=False)
        else:
            df.to_json(out, orient="records", indent=2)
    except OSError as e:
        fail(f"cannot write {out}: {e.strerror or e}")
    click.echo(f"wrote {out}", err=True)


def progress(items, desc: str):
    return tqdm(items, desc=desc, unit="model", file=sys.stderr, disable=len(items) < 2, dynamic_ncols=True)


def network_rows(space, measurer, archs, batch: int) -> list[dict[str, Any]]:
    """Whole networks of a new-shape space (darts) measured into the store, one result row each."""
    from hwnas.measure.networks import arch_item  # torch, kept out of `hwnas --help`

    done = measurer.many([arch_item(measurer, space, a, batch) for a in archs], "networks")
    return [result_row(a.hash, m, batch=batch, params_m=space.params(a) / 1e6, macs_m=space.macs(a) / 1e6)
            for a, m in zip(archs, done)]


def result_row(name: str, measured, **extra) -> dict:
    m = measured.measurement
    s = m.stats
    ci = m.ci95_ms or [float("nan"), float("nan")]
    return {
        "name": name, **extra,
        "median_ms": s["median_ms"], "ci_low_ms": ci[0], "ci_high_ms": ci[1], "raw_ms": s.get("raw_median_ms", s["median_ms"]),
        "k": max(len(m.processes), 1), "ref_ratio": m.reference_ratio if m.reference_ratio is not None else float("nan"),
        "p90_ms": s["p90_ms"], "iqr_ms": s["iqr_ms"], "n": s["n"], "flags": ",".join(m.flags) or "-",
        "session_ms": m.session_ms, "cached": measured.cached,
    }
