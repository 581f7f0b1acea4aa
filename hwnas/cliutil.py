"""Option groups and helpers shared by the CLI's command modules."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from hwnas.errors import HwnasError
from hwnas.validate import Float, Int

OUTPUT_FORMATS = (".csv", ".parquet", ".json")


def fail(message: str) -> None:
    raise HwnasError(message)


# --- reusable option groups -----------------------------------------------------------------


def space_options(f):
    f = click.option("--classes", "num_classes", type=Int(2, 100_000), default=1000, show_default=True, help="Classifier outputs.")(f)
    f = click.option("--width-mult", type=Float(0.1, 4), default=1.0, show_default=True, help="Channel width multiplier.")(f)
    f = click.option("--resolution", type=Int(16, 2048), default=224, show_default=True, help="Input height and width.")(f)
    f = click.option("--space", "space_name", default="tfnas", show_default=True, help="Search space: tfnas or proxyless.")(f)
    return f


def backend_options(f):
    f = click.option("--db", type=click.Path(path_type=Path), default=None,
                     help="Measurement store (SQLite). Default: $HWNAS_DB or the user cache directory.")(f)
    f = click.option("--min-time", type=Float(0, 3600), default=0.3, show_default=True, help="Minimum timed seconds per measurement.")(f)
    f = click.option("--min-runs", type=Int(1, 1_000_000), default=20, show_default=True, help="Minimum timed runs per measurement.")(f)
    f = click.option("--warmup", type=Int(0, 100_000), default=5, show_default=True, help="Untimed warm-up runs.")(f)
    f = click.option("--precision", default="fp32", show_default=True, help="fp32 or fp16 (GPU backends).")(f)
    f = click.option("--threads", type=Int(1, 1024), default=1, show_default=True, help="CPU threads (intra-op).")(f)
    f = click.option("--batch", type=Int(1, 4096), default=1, show_default=True, help="Batch size.")(f)
    f = click.option("--backend", "backend_name", default="ort-cpu", show_default=True,
                     help="ort-cpu, ort-cuda, ort-trt, tensorrt, tensorrt-graph, torch-cpu, torch-cuda or torch-cuda-graph.")(f)
    return f


def make_space(space_name: str, resolution: int, width_mult: float, num_classes: int):
    from hwnas.space import Space

    return Space(space_name, resolution=resolution, width_mult=width_mult, num_classes=num_classes)


def make_measurer(backend_name, batch, threads, precision, warmup, min_runs, min_time, db, force=False):
    from hwnas.measure import Measurer
    from hwnas.profilers import MeasureProtocol, get_backend
    from hwnas.store import Store

    if isinstance(batch, bool) or not 1 <= batch <= 4096:
        fail(f"batch must be an integer in [1, 4096], got {batch}")
    backend = get_backend(backend_name, threads=threads, precision=precision)
    protocol = MeasureProtocol(warmup_runs=warmup, min_runs=min_runs, min_time_s=min_time)
    return Measurer(backend, Store(db), protocol, force=force)


def load_arch(space, path: Path):
    from hwnas.jsonutil import read_json

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
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit="model", file=sys.stderr, disable=len(items) < 2, dynamic_ncols=True)


def result_row(name: str, measured, **extra) -> dict:
    m = measured.measurement
    s = m.stats
    return {
        "name": name, **extra,
        "median_ms": s["median_ms"], "p90_ms": s["p90_ms"], "iqr_ms": s["iqr_ms"], "cov": s["cov"], "n": s["n"],
        "noisy": m.noisy, "session_ms": m.session_ms, "first_run_ms": m.first_run_ms, "cached": measured.cached,
    }
