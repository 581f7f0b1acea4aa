"""The `hwnas` command. User errors print one line and exit 2; a traceback is a bug."""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path

import click
import numpy as np

from hwnas import __version__
from hwnas.backends.protocol import MeasureProtocol
from hwnas.backends.reference import reference_path
from hwnas.backends.system import check
from hwnas.cli.options import (
    OUTPUT_FORMATS,
    backend_options,
    check_out,
    fail,
    load_arch,
    load_new_arch,
    network_rows,
    make_measurer,
    make_space,
    result_row,
    space_options,
    write_table,
)
from hwnas.errors import HwnasError, one_line
from hwnas.jsonutil import write_json
from hwnas.spaces.mbconv import distinct_layers
from hwnas.validate import SEED, Int

# --- commands -----------------------------------------------------------------------------------


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hwnas")
def cli():
    """Hardware-in-the-loop benchmarking and search for latency-constrained NAS."""


@cli.command()
@space_options
@backend_options
@click.option("--arch", "arch_path", type=click.Path(path_type=Path), help="Measure this architecture (JSON).")
@click.option("--random", "random", is_flag=True, help="Measure --n random architectures of the space.")
@click.option("--n", "n", type=Int(1, 100_000), default=1, show_default=True, help="How many random architectures (with --random).")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed for --random.")
@click.option("--layers", "all_layers", is_flag=True, help="Measure every distinct layer spec of the space.")
@click.option("--onnx", "onnx_path", type=click.Path(path_type=Path), help="Measure an ONNX file.")
@click.option("--force", is_flag=True, help="Re-measure what the store already holds.")
@click.option("--out", type=click.Path(path_type=Path), help="Write the table (.csv, .parquet or .json).")
def measure(space_name, resolution, width_mult, num_classes, backend_name, batch, threads, precision, warmup,
            min_runs, min_time, db, arch_path, random, n, seed, all_layers, onnx_path, force, out):
    """Measure architectures, layers or an ONNX file on a backend."""
    import pandas as pd

    n_random = n if random else None
    chosen = [o for o, v in (("--arch", arch_path), ("--random", random), ("--layers", all_layers), ("--onnx", onnx_path)) if v]
    if len(chosen) != 1:
        fail("give exactly one of --arch, --random, --layers or --onnx" + (f" (got {' '.join(chosen)})" if chosen else ""))
    check_out(out, OUTPUT_FORMATS)
    if onnx_path is None:
        space = make_space(space_name, resolution, width_mult, num_classes, new_spaces=True, arch_path=arch_path)
        if all_layers and hasattr(space, "references"):
            fail(f"--layers measures the layers of the MBConv spaces; for {space_name} build a cell table")
    measurer = make_measurer(backend_name, batch, threads, precision, warmup, min_runs, min_time, db, force)
    rows = []
    try:
        if onnx_path is None and hasattr(space, "references"):  # a new-shape space (darts)
            archs = [load_new_arch(space, arch_path)] if arch_path else space.random_archs(n_random, seed)
            rows = network_rows(space, measurer, archs, batch)
        elif onnx_path is not None:
            rows.append(result_row(onnx_path.name, measurer.onnx(onnx_path, batch), batch=batch))
        elif all_layers:
            specs = distinct_layers(space, batch)
            done = measurer.many([measurer.layers_item([s]) for s in specs], "layers")
            for spec, measured in zip(specs, done):
                rows.append(result_row(spec.position, measured, batch=batch, kind=spec.kind, c_in=spec.c_in, mid=spec.mid,
                                       se=spec.se, c_out=spec.c_out, k=spec.kernel, s=spec.stride, hw=spec.h))
        else:
            archs = [load_arch(space, arch_path)] if arch_path else space.random_archs(n_random, seed)
            done = measurer.many([measurer.arch_item(space, a, batch) for a in archs], "subnets")
            for arch, measured in zip(archs, done):
                rows.append(result_row(arch.hash, measured, batch=batch, macs_m=space.macs(arch) / 1e6))
    finally:
        measurer.close()
    write_table(pd.DataFrame(rows), out)


def _new_space_info(space, arch_path, as_json: bool) -> None:
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


@cli.command()
@space_options
@click.option("--arch", "arch_path", type=click.Path(path_type=Path), help="Architecture JSON (default: the space's default).")
@click.option("--batch", type=Int(1, 4096), default=1, show_default=True,
              help="Batch size of the per-layer specs (their activation shapes).")
@click.option("--json", "as_json", is_flag=True, help="darts: print the architectures and their counts as JSON.")
def info(space_name, resolution, width_mult, num_classes, arch_path, batch, as_json):
    """Parameters, multiply-accumulates and per-layer specs of an architecture."""
    import pandas as pd

    space = make_space(space_name, resolution, width_mult, num_classes, new_spaces=True, arch_path=arch_path)
    if hasattr(space, "references"):  # darts: per network, or its references DARTS-V1/V2
        return _new_space_info(space, arch_path, as_json)
    if as_json:
        fail("--json is for the darts space")
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
@click.option("--random", "random", is_flag=True, help="A random architecture (from --seed) instead of the default.")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed for --random.")
@click.option("--out", type=click.Path(path_type=Path), help="Write the JSON here instead of printing it.")
def arch(space_name, resolution, width_mult, num_classes, random, seed, out):
    """Print an architecture of the space as JSON: its default, or a random one."""


    check_out(out, (".json",))
    space = make_space(space_name, resolution, width_mult, num_classes, new_spaces=True)
    sample = getattr(space, "sample", None) or space.random_arch
    a = sample(np.random.default_rng(seed)) if random else space.default_arch()
    if out:
        write_json(out, a.to_json())
    else:
        click.echo(json.dumps(a.to_json(), indent=2))


@cli.group()
def system():
    """The measuring machine: its settings and load, and the reference model's baseline."""


@system.command("check")
@backend_options
def system_check(backend_name, batch, threads, precision, warmup, min_runs, min_time, db):
    """CPU, governor, turbo, load, busy processes, isolated CPUs and the worker's affinity, each
    with one line of advice; then the reference model now against its stored baseline."""
    import pandas as pd



    allowed = sorted(os.sched_getaffinity(0))  # before make_measurer pins this process
    measurer = make_measurer(backend_name, batch, threads, precision, warmup, min_runs, min_time, db)
    try:
        rows = check(measurer.worker.cpus if measurer.worker is not None else None, allowed)
        if measurer.uses_reference:
            found = measurer.store.reference_baseline(measurer.target_hash())
            baseline = measurer.baseline_ms()

            now = measurer.worker.measure(reference_path(), MeasureProtocol(reference=False, min_time_s=0.5), 1)
            ratio = now.stats["median_ms"] / baseline
            rows.append({"fact": "reference model", "value": f"{now.stats['median_ms']:.4g} ms now, baseline "
                         f"{baseline:.4g} ms ({'stored ' + found['created_at'] if found else 'measured now'}): x{ratio:.3f}",
                         "advice": "ok" if ratio <= measurer.protocol.drift_limit else
                         f"the machine runs {ratio:.2f}x slower than its baseline: measurements now will be retried or flagged"})
    finally:
        measurer.close()
    with pd.option_context("display.max_colwidth", 120, "display.width", 250):
        click.echo(pd.DataFrame(rows).to_string(index=False))


def _register_commands() -> None:
    """Commands of the other areas live beside their code; each module exposes `commands`."""

    for module in COMMAND_MODULES:
        for command in importlib.import_module(module).commands:
            cli.add_command(command)


COMMAND_MODULES = ["hwnas.cli.search", "hwnas.cli.surrogates", "hwnas.cli.report", "hwnas.cli.demo", "hwnas.cli.slots",
                   "hwnas.cli.fleet"]


def main(argv: list[str] | None = None) -> int:
    try:
        _register_commands()
        cli.main(args=argv, prog_name="hwnas", standalone_mode=False)
    except HwnasError as e:
        click.echo(f"hwnas: error: {one_line(str(e))}", err=True)
        return 2
    except click.exceptions.Abort:
        click.echo("hwnas: aborted", err=True)
        return 130
    except click.ClickException as e:
        click.echo(f"hwnas: error: {one_line(e.format_message())}", err=True)
        return e.exit_code if e.exit_code else 2
    except MemoryError:
        click.echo("hwnas: error: out of memory; try a smaller --batch, --resolution or model", err=True)
        return 2
    except KeyboardInterrupt:
        click.echo("hwnas: interrupted; every completed measurement is saved", err=True)
        return 130
    return 0


