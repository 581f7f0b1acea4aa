"""The `hwnas` command. User errors print one line and exit 2; a traceback is a bug."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from hwnas import __version__
from hwnas.errors import HwnasError

OUTPUT_FORMATS = (".csv", ".parquet", ".json")


def fail(message: str) -> None:
    raise HwnasError(message)


# --- reusable option groups -----------------------------------------------------------------


def space_options(f):
    f = click.option("--classes", "num_classes", type=int, default=1000, show_default=True, help="Classifier outputs.")(f)
    f = click.option("--width-mult", type=float, default=1.0, show_default=True, help="Channel width multiplier.")(f)
    f = click.option("--resolution", type=int, default=224, show_default=True, help="Input height and width.")(f)
    f = click.option("--space", "space_name", default="tfnas", show_default=True, help="Search space: tfnas or proxyless.")(f)
    return f


def backend_options(f):
    f = click.option("--db", type=click.Path(path_type=Path), default=None,
                     help="Measurement store (SQLite). Default: $HWNAS_DB or the user cache directory.")(f)
    f = click.option("--min-time", type=float, default=0.3, show_default=True, help="Minimum timed seconds per measurement.")(f)
    f = click.option("--min-runs", type=int, default=20, show_default=True, help="Minimum timed runs per measurement.")(f)
    f = click.option("--warmup", type=int, default=5, show_default=True, help="Untimed warm-up runs.")(f)
    f = click.option("--precision", default="fp32", show_default=True, help="fp32 or fp16 (GPU backends).")(f)
    f = click.option("--threads", type=int, default=1, show_default=True, help="CPU threads (intra-op).")(f)
    f = click.option("--batch", type=int, default=1, show_default=True, help="Batch size.")(f)
    f = click.option("--backend", "backend_name", default="ort-cpu", show_default=True,
                     help="ort-cpu, ort-cuda, ort-trt, tensorrt, torch-cpu, torch-cuda or torch-cuda-graph.")(f)
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


# --- commands -----------------------------------------------------------------------------------


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hwnas")
def cli():
    """Hardware-in-the-loop benchmarking and search for latency-constrained NAS."""


@cli.command()
@space_options
@backend_options
@click.option("--arch", "arch_path", type=click.Path(path_type=Path), help="Measure this architecture (JSON).")
@click.option("--random", "n_random", type=int, help="Measure N random architectures of the space.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for --random.")
@click.option("--layers", "all_layers", is_flag=True, help="Measure every distinct layer spec of the space.")
@click.option("--onnx", "onnx_path", type=click.Path(path_type=Path), help="Measure an ONNX file.")
@click.option("--force", is_flag=True, help="Re-measure what the store already holds.")
@click.option("--out", type=click.Path(path_type=Path), help="Write the table (.csv, .parquet or .json).")
def measure(space_name, resolution, width_mult, num_classes, backend_name, batch, threads, precision, warmup,
            min_runs, min_time, db, arch_path, n_random, seed, all_layers, onnx_path, force, out):
    """Measure architectures, layers or an ONNX file on a backend."""
    import pandas as pd

    chosen = [o for o, v in (("--arch", arch_path), ("--random", n_random), ("--layers", all_layers), ("--onnx", onnx_path)) if v]
    if len(chosen) != 1:
        fail("give exactly one of --arch, --random, --layers or --onnx" + (f" (got {' '.join(chosen)})" if chosen else ""))
    if n_random is not None and not 1 <= n_random <= 100_000:
        fail(f"--random must be in [1, 100000], got {n_random}")
    if onnx_path is None:
        space = make_space(space_name, resolution, width_mult, num_classes)
    measurer = make_measurer(backend_name, batch, threads, precision, warmup, min_runs, min_time, db, force)
    rows = []
    if onnx_path is not None:
        rows.append(result_row(onnx_path.name, measurer.onnx(onnx_path)))
    elif all_layers:
        from hwnas.space import distinct_layers

        specs = distinct_layers(space, batch)
        for spec in progress(specs, "layers"):
            rows.append(result_row(spec.position, measurer.layer(spec), kind=spec.kind, c_in=spec.c_in, mid=spec.mid,
                                   se=spec.se, c_out=spec.c_out, k=spec.kernel, s=spec.stride, hw=spec.h))
    else:
        archs = [load_arch(space, arch_path)] if arch_path else space.random_archs(n_random, seed)
        for arch in progress(archs, "subnets"):
            rows.append(result_row(arch.hash, measurer.arch(space, arch, batch), macs_m=space.macs(arch) / 1e6))
    measurer.store.close()
    write_table(pd.DataFrame(rows), out)


@cli.command()
@space_options
@click.option("--arch", "arch_path", type=click.Path(path_type=Path), help="Architecture JSON (default: the space's default).")
@click.option("--batch", type=int, default=1, show_default=True)
def info(space_name, resolution, width_mult, num_classes, arch_path, batch):
    """Parameters, multiply-accumulates and per-layer specs of an architecture."""
    import pandas as pd

    space = make_space(space_name, resolution, width_mult, num_classes)
    arch = load_arch(space, arch_path) if arch_path else space.default_arch()
    specs = space.layers(arch, batch)
    rows = [{"position": s.position, "kind": s.kind, "hw": s.h, "c_in": s.c_in, "mid": s.mid, "se": s.se,
             "c_out": s.c_out, "k": s.kernel, "s": s.stride, "act": s.act, "params": s.params, "macs_m": s.macs / 1e6}
            for s in specs]
    write_table(pd.DataFrame(rows), None)
    click.echo(f"architecture {arch.hash}: depths {list(arch.depths)}, "
               f"{sum(s.params for s in specs) / 1e6:.3f} M parameters, {sum(s.macs for s in specs) / 1e6:.1f} M MACs")


@cli.command()
@space_options
@click.option("--random", "random_seed", type=int, default=None, help="A random architecture from this seed.")
@click.option("--out", type=click.Path(path_type=Path), help="Write the JSON here instead of printing it.")
def arch(space_name, resolution, width_mult, num_classes, random_seed, out):
    """Print an architecture of the space as JSON: its default, or a random one."""
    import numpy as np

    from hwnas.jsonutil import write_json

    space = make_space(space_name, resolution, width_mult, num_classes)
    a = space.default_arch() if random_seed is None else space.random_arch(np.random.default_rng(random_seed))
    if out:
        write_json(out, a.to_json())
    else:
        click.echo(json.dumps(a.to_json(), indent=2))


def main(argv: list[str] | None = None) -> int:
    try:
        cli.main(args=argv, prog_name="hwnas", standalone_mode=False)
    except HwnasError as e:
        click.echo(f"hwnas: error: {e}", err=True)
        return 2
    except click.exceptions.Abort:
        click.echo("hwnas: aborted", err=True)
        return 130
    except click.ClickException as e:
        click.echo(f"hwnas: error: {e.format_message()}", err=True)
        return e.exit_code if e.exit_code else 2
    except KeyboardInterrupt:
        click.echo("hwnas: interrupted; every completed measurement is saved", err=True)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
