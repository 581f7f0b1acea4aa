"""`hwnas search` (latency-constrained architecture search) and `hwnas train` (an architecture from scratch)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import click

from hwnas.cliutil import backend_options, check_out, fail, make_measurer
from hwnas.errors import HwnasError
from hwnas.spaces.cli import size_options
from hwnas.validate import POSITIVE_MS, SEED, Float, Int, check_latency


def _given(opts: dict[str, Any], *names: str) -> dict[str, Any]:
    """The options the user gave; the others keep the method's own defaults."""
    return {n: opts[n] for n in names if opts[n] is not None}


def _run_tfnas(opts: dict[str, Any]) -> dict[str, Any]:
    from hwnas.search.tfnas import TFNASConfig, search

    config = TFNASConfig(
        target_ms=opts["target"], epochs=opts["epochs"], warmup_epochs=opts["warmup_epochs"],
        batch_size=opts["batch_size"], train_resolution=opts["train_resolution"], lr=opts["lr"],
        weight_decay=opts["weight_decay"], arch_weight_decay=opts["arch_weight_decay"],
        lam=opts["lam"], cost=opts["cost"], seed=opts["seed"], **_given(opts, "arch_lr", "tau", "tau_decay"),
        measure_every=opts["measure_every"], final_sessions=opts["final_sessions"], train_threads=opts["train_threads"],
        share_ops=opts["share_ops"], elastic_depth=opts["elastic_depth"], width_align=opts["width_align"],
    )
    data = _load_data(opts["data"], opts["seed"], opts["limit"])
    measurer = _search_measurer(opts)
    try:
        model, model_info = _latency_model(opts, data.num_classes, measurer)
        return search(config, data, model, opts["out"], measurer=measurer, measure_batch=opts["batch"],
                      run_info={"limit": opts["limit"], **model_info}, echo=lambda s: click.echo(s, err=True),
                      repair=opts["repair"])
    finally:
        _close(measurer)


def _run_unas(opts: dict[str, Any]) -> dict[str, Any]:
    from hwnas.search.unas import UNASConfig, search
    from hwnas.surrogates.lut import LookupTable

    config = UNASConfig(
        target_ms=opts["target"], true_latency=opts["true_latency"], epochs=opts["epochs"],
        warmup_epochs=opts["warmup_epochs"], batch_size=opts["batch_size"], train_resolution=opts["train_resolution"],
        lr=opts["lr"], weight_decay=opts["weight_decay"], **_given(opts, "arch_lr", "tau"), lam=opts["lam"], penalty=opts["penalty"],
        ce_estimator=opts["ce_estimator"], generalization_loss=opts["generalization_loss"],
        calibrate_widths=opts["calibrate_widths"], measure_every=opts["measure_every"], seed=opts["seed"],
        train_threads=opts["train_threads"], width_align=opts["width_align"],
    )
    data = _load_data(opts["data"], opts["seed"], opts["limit"])
    measurer = _search_measurer(opts)
    try:
        model, model_info = _latency_model(opts, data.num_classes, measurer)
        lut = model if isinstance(model, LookupTable) else getattr(model, "lut", None)
        return search(config, data, model, opts["out"], measurer=measurer, lut=lut, measure_batch=opts["batch"],
                      run_info={"limit": opts["limit"], "backend": opts["backend_name"], **model_info},
                      echo=lambda s: click.echo(s, err=True), repair=opts["repair"])
    finally:
        _close(measurer)


def _run_snas(opts: dict[str, Any]) -> dict[str, Any]:
    """SNAS on the darts space; the search's own defaults where the shared options were not given."""
    from hwnas.search.snas import SNASConfig, search
    from hwnas.spaces.cli import _given as given_on_command_line, make_new_space

    if opts["space_name"] not in ("tfnas", "darts") or (opts["space_name"] == "tfnas" and given_on_command_line("space_name")):
        fail(f"--method snas searches the darts space, not {opts['space_name']}")
    own = {"lam": "lam", "cost": "penalty", "epochs": "epochs", "batch_size": "batch_size", "lr": "lr",
           "weight_decay": "weight_decay", "arch_weight_decay": "arch_weight_decay", "seed": "seed",
           "measure_every": "measure_every", "final_sessions": "final_sessions", "train_threads": "train_threads",
           "arch_lr": "arch_lr", "tau": "tau"}
    chosen = {field: opts[name] for name, field in own.items()
              if opts.get(name) is not None and given_on_command_line(name)}
    for name in ("seed", "measure_every", "final_sessions", "train_threads"):
        chosen.setdefault(own[name], opts[name])
    config = SNASConfig(resource=opts["resource"], target=opts["target"], gradient=opts["gradient"],
                        log_penalty=opts["log_penalty"], derive=opts["derive"], bilevel=opts["bilevel"],
                        **{"epochs": SNAS_DEFAULTS["epochs"], **chosen})
    data = _load_data(opts["data"], opts["seed"], opts["limit"])
    space = make_new_space("darts", opts["resolution"], data.num_classes, own={"resolution": SNAS_DEFAULTS["resolution"]},
                           channels=SNAS_DEFAULTS["channels"], cells=SNAS_DEFAULTS["cells"])
    measurer = _search_measurer(opts)
    try:
        table, info = _cell_table(opts, space, measurer)
        return search(config, space, data, opts["out"], table=table, measurer=measurer, measure_batch=opts["batch"],
                      run_info={"limit": opts["limit"], "backend": opts["backend_name"], **info},
                      echo=lambda s: click.echo(s, err=True))
    finally:
        _close(measurer)


# A default SNAS search runs in minutes on one CPU core at this size (docs/darts.md).
SNAS_DEFAULTS = {"channels": 8, "cells": 5, "resolution": 16, "epochs": 10}


def _cell_table(opts: dict[str, Any], space, measurer):
    """The given cell table (--lut), else one built on the backend, kept in the run directory."""
    from hwnas.latency.cells import CellLatencyTable

    if opts["model_path"] is not None:
        return CellLatencyTable.load(opts["model_path"], expect_space=space), {
            "latency_model_file": str(Path(opts["model_path"]).resolve())}
    path = Path(opts["out"]) / "cell_lut.json"
    if path.exists():
        table = CellLatencyTable.load(path, expect_space=space)
    else:
        click.echo(f"building a cell latency table for {space} on {opts['backend_name']} (cached in the measurement store)", err=True)
        table = CellLatencyTable.build(space, measurer, batch=opts["batch"])
        table.save(path)
    return table, {"latency_model_file": str(path.resolve())}


def _search_measurer(opts: dict[str, Any]):
    """A measurer whose ONNX measurements run in worker processes, out of the training process,
    where ONNX Runtime read up to 6% slow (TF-NAS's final architecture: 2.85 ms there, 2.67 ms
    in a fresh process), and isolated from the training by --isolation."""
    return make_measurer(opts["backend_name"], opts["batch"], opts["threads"], opts["precision"], opts["warmup"],
                         opts["min_runs"], opts["min_time"], opts["db"])


def _close(measurer) -> None:
    measurer.close()


# Search methods by name; each takes the parsed options and returns the run's summary.
METHODS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {"tfnas": _run_tfnas, "unas": _run_unas, "snas": _run_snas}


def _load_data(spec: str, seed: int, limit: int | None):
    from hwnas.data import load_dataset

    return load_dataset(spec, seed=seed, limit=limit)


def _latency_model(opts: dict[str, Any], num_classes: int, measurer):
    """The given model file (a lookup table or a differentiable fitted model), else a lookup
    table built on the backend at the deployment resolution and kept in the run directory."""
    from hwnas.space import Space

    deploy = Space(opts["space_name"], opts["resolution"], opts["width_mult"], num_classes)
    if opts["model_path"] is not None:
        from hwnas.surrogates.models import load_model

        model = load_model(opts["model_path"], expect_space=deploy, expect_backend=opts["backend_name"],
                           expect_batch=opts["batch"], expect_fingerprint=measurer.backend.fingerprint(opts["batch"]))
        return model, {"latency_model_file": str(Path(opts["model_path"]).resolve())}
    from hwnas.surrogates.lut import LookupTable

    path = Path(opts["out"]) / "lut.json"
    if path.exists():  # resuming: the table this run was built with
        model = LookupTable.load(path, expect_space=deploy, expect_backend=opts["backend_name"], expect_batch=opts["batch"],
                                 expect_fingerprint=measurer.backend.fingerprint(opts["batch"]))
    else:
        click.echo(f"building a lookup table for {deploy} on {opts['backend_name']} (cached in the measurement store)", err=True)
        model = LookupTable.build(deploy, measurer, batch=opts["batch"], width_step=opts["width_step"])
        path.parent.mkdir(parents=True, exist_ok=True)
        model.save(path)
    return model, {"latency_model_file": str(path.resolve()), "width_step": opts["width_step"]}


@click.command()
@click.option("--method", default="tfnas", show_default=True, help=f"Search method: {', '.join(METHODS)}.")
@click.option("--target", type=POSITIVE_MS, required=True,
              help="Target latency in ms (at the deployment resolution); snas: in the --resource's units (ms, or millions).")
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Run directory; a run there with a checkpoint is resumed.")
@click.option("--repair", is_flag=True,
              help="Resume a run whose log is damaged: keep its valid records (the checkpoint's epoch must have one), "
                   "drop the rest, and warn what was lost.")
@click.option("--data", default="digits", show_default=True, help="digits, digits-translated, cifar10:DIR or folder:DIR.")
@click.option("--limit", type=Int(2, 100_000_000), default=None, help="Use at most this many training images (search-train + search-val).")
@click.option("--space", "space_name", default="tfnas", show_default=True, help="Search space.")
@click.option("--width-mult", type=Float(0.1, 4), default=0.5, show_default=True, help="Channel width multiplier.")
@click.option("--resolution", type=Int(16, 2048), default=224, show_default=True, help="Deployment resolution: latency is looked up and measured here.")
@click.option("--train-resolution", type=Int(16, 2048), default=32, show_default=True, help="Resolution of the images the supernet trains on.")
@backend_options
@click.option("--lut", "--latency-model", "model_path", type=click.Path(path_type=Path), default=None,
              help="Lookup table or differentiable latency model file (default: build a table on --backend).")
@size_options
@click.option("--width-step", type=Int(1, 4096), default=32, show_default=True,
              help="Mid-width grid of a table built here (interpolated between; 32 keeps the build to minutes).")
@click.option("--cost", type=click.Choice(["hinge", "abs"]), default="hinge", show_default=True,
              help="Latency cost: max(LAT/T-1, 0) or |LAT/T-1|.")
@click.option("--lambda", "lam", type=Float(0, 1e6), default=0.1, show_default=True, help="Weight of the latency cost.")
@click.option("--epochs", type=Int(1, 10_000), default=12, show_default=True)
@click.option("--warmup-epochs", type=Int(0, 10_000), default=4, show_default=True, help="Epochs training weights only.")
@click.option("--batch-size", type=Int(1, 65_536), default=64, show_default=True, help="Training batch size.")
@click.option("--lr", type=Float(0, 100, lo_open=True), default=0.05, show_default=True, help="SGD learning rate (weights, cosine).")
@click.option("--weight-decay", type=Float(0, 1), default=1e-5, show_default=True)
@click.option("--arch-lr", type=Float(0, 100, lo_open=True), default=None,
              help="Adam learning rate of the architecture parameters (tfnas: 0.1, the paper's 0.01 scaled to a minutes-long run; unas: 0.01).")
@click.option("--arch-weight-decay", type=Float(0, 1), default=5e-4, show_default=True)
@click.option("--tau", type=Float(0, 1000, lo_open=True), default=None, help="Gumbel-softmax temperature (tfnas: 5.0 initially; unas: 0.4, fixed).")
@click.option("--tau-decay", type=Float(0, 10, lo_open=True), default=None,
              help="tfnas: temperature factor per epoch after warm-up (0.7: the paper's 5.0 x 0.96 per epoch over 80 epochs, compressed to 8).")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of the data splits, weights and sampling.")
@click.option("--measure-every", type=Int(0, 10_000), default=4, show_default=True,
              help="Measure the derived architecture every K epochs (0: only the final one).")
@click.option("--final-sessions", type=Int(1, 100), default=3, show_default=True,
              help="tfnas: the final architecture's measured latency is the median over this many fresh sessions.")
@click.option("--train-threads", type=Int(1, 1024), default=1, show_default=True,
              help="Torch threads for training (results are reproducible for a given count).")
@click.option("--width-align", type=Int(1, 64), default=4, show_default=True,
              help="Widths set by elasticity-scaling (tfnas) or calibration (unas) are multiples of this: "
                   "kernels are several times slower off it (ONNX Runtime CPU: 4), so latency only grows with width on multiples.")
@click.option("--elastic-depth/--no-elastic-depth", default=True, show_default=True,
              help="tfnas: elasticity-scaling adds or removes layers where the width bound stops it from reaching the target; "
                   "--no-elastic-depth: widths only, as the paper.")
@click.option("--share-ops/--no-share-ops", default=True, show_default=True,
              help="tfnas: one weight set per layer shared by its ops (trains in minutes); --no-share-ops: TF-NAS's per-op weights.")
@click.option("--true-latency", is_flag=True, help="unas: the latency term uses latency measured on --backend.")
@click.option("--ce-estimator", type=click.Choice(["gumbel", "rebar"]), default="gumbel", show_default=True,
              help="unas: gradient of the cross-entropy term.")
@click.option("--generalization-loss", is_flag=True, help="unas: L_train + 0.5 |L_val - L_train| as the architecture's loss.")
@click.option("--penalty", type=click.Choice(["hinge", "relative", "abs"]), default="hinge", show_default=True,
              help="unas: lambda * relu(L - T) in ms, lambda * relu(L/T - 1), or lambda * |L/T - 1|.")
@click.option("--calibrate-widths/--no-calibrate-widths", default=True, show_default=True,
              help="unas: end by elasticity-scaling the widths on the measured latency.")
@click.option("--resource", default="latency", show_default=True,
              help="snas: the constrained cost: params, flops, mac (memory access), latency or mixed (the SNAS authors').")
@click.option("--gradient", type=click.Choice(["score", "reparam", "discrete"]), default="reparam", show_default=True,
              help="snas: gradient of the cost: score function (the paper's), reparameterised, or softmax(alpha).")
@click.option("--log-penalty", is_flag=True, help="snas: log(1 + c / mean c) per op cost (without a target only).")
@click.option("--derive", type=click.Choice(["argmax", "top2"]), default="argmax", show_default=True,
              help="snas: every edge keeps its argmax op, none dropping it (SNAS), or DARTS's top-2 per node.")
@click.option("--bilevel", is_flag=True, help="snas: update alpha on search-val batches (default: one-level, as SNAS).")
def search(**opts):
    """Search a latency-constrained architecture on real data."""
    from hwnas.space import closest

    check_out(opts["out"], directory=True)
    method = opts["method"]
    if method not in METHODS:
        fail(f"unknown search method {method!r}{closest(method, METHODS)}; known: {', '.join(METHODS)}")
    if opts["target"] <= 0:
        fail(f"--target must be a positive number of ms, got {opts['target']}")
    if opts["true_latency"] and method != "unas":
        fail(f"--true-latency is an option of --method unas; {method} searches on its latency model")
    if method != "snas":
        from hwnas.spaces.cli import check_no_size_options

        check_no_size_options(opts["space_name"])
    summary = METHODS[method](opts)
    # Never a silent NaN or negative latency on stdout: a model that gives one is refused here.
    for key in ("predicted_ms", "measured_ms"):
        if summary.get(key) is not None:
            try:
                check_latency(key, summary[key])
            except HwnasError as e:
                fail(f"the search's latency model gives no latency for its final architecture ({e}); "
                     f"check the latency model file")
    click.echo(json.dumps(summary, indent=2))
    if summary.get("target_ms") is None:  # snas with a non-latency cost: its value is in the summary
        click.echo(f"{summary['resource']} {summary['resource_value']}; architecture in {Path(opts['out']) / 'final_arch.json'}", err=True)
        return
    target, m, lookup_err = summary["target_ms"], summary.get("measured_ms"), summary.get("lookup_error_pct")
    line = f"target {target:.4g} ms: predicted {summary['predicted_ms']:.4g} ms ({100 * (summary['predicted_ms'] / target - 1):+.2f}%)"
    if m is not None:
        line += f", measured {m:.4g} ms ({100 * (m / target - 1):+.2f}%)"
    if lookup_err is not None:
        line += f", lookup error {lookup_err:+.2f}%"
    click.echo(line + f"; architecture in {Path(opts['out']) / 'final_arch.json'}", err=True)

def _check_target_here(model, path) -> None:
    """A table or model measured on another target (CPU, runtime version, threads) would scale
    widths to the wrong latency here; refuse it as `surrogate eval` and `search` do."""
    from hwnas.profilers import get_backend
    from hwnas.surrogates.lut import check_config

    target = getattr(model, "target", None) or {"fingerprint": getattr(model, "fingerprint", None)}
    fp = target.get("fingerprint")
    if not isinstance(fp, dict):
        return  # fitted on a CSV: the target is the user's word
    if not isinstance(fp.get("backend"), str) or isinstance(fp.get("threads"), bool) or not isinstance(fp.get("threads"), int):
        fail(f"latency model {path} records no usable target (backend and threads)")
    backend = get_backend(fp["backend"], threads=fp["threads"], precision=fp.get("precision") or "fp32")
    check_config({"fingerprint": fp}, "latency model", path, None, None, None, backend.fingerprint(fp.get("batch") or 1))


@click.command()
@click.option("--arch", "arch_path", type=click.Path(path_type=Path), required=True,
              help="Architecture JSON (darts: or darts-v1 / darts-v2).")
@click.option("--data", default="digits", show_default=True, help="digits, digits-translated, cifar10:DIR or folder:DIR.")
@click.option("--limit", type=Int(2, 100_000_000), default=None, help="Use at most this many training images.")
@click.option("--space", "space_name", default="tfnas", show_default=True, help="Search space.")
@click.option("--width-mult", type=Float(0.1, 4), default=None, help="Width multiplier (default: the architecture's).")
@click.option("--resolution", type=Int(16, 2048), default=32, show_default=True, help="Training and test resolution.")
@click.option("--epochs", type=Int(1, 10_000), default=10, show_default=True)
@click.option("--batch-size", type=Int(1, 65_536), default=64, show_default=True)
@click.option("--lr", type=Float(0, 100, lo_open=True), default=0.05, show_default=True, help="SGD learning rate (cosine).")
@click.option("--weight-decay", type=Float(0, 1), default=4e-5, show_default=True)
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of the data splits and the weights.")
@click.option("--threads", type=Int(1, 1024), default=1, show_default=True, help="Torch threads for training.")
@size_options
@click.option("--target", type=POSITIVE_MS, default=None,
              help="First elasticity-scale the widths to this latency (ms) under --lut: same-latency comparisons.")
@click.option("--lut", "--latency-model", "model_path", type=click.Path(path_type=Path), default=None,
              help="Lookup table or differentiable latency model for --target.")
@click.option("--width-align", type=Int(1, 64), default=4, show_default=True, help="With --target: scaled widths are multiples of this.")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Write the result JSON here.")
def train(arch_path, data, limit, space_name, width_mult, resolution, epochs, batch_size, lr, weight_decay, seed,
          threads, target, model_path, width_align, out):
    """Train an architecture from scratch and report its test accuracy."""
    from hwnas.jsonutil import read_json
    from hwnas.search.train import train_arch
    from hwnas.space import Space

    from hwnas.spaces.cli import is_new_space as _is_new

    check_out(out, (".json",))
    doc = {} if _is_new(space_name) else read_json(arch_path, "architecture file")
    if width_mult is None:
        width_mult = doc.get("width_mult", 1.0) if isinstance(doc, dict) else 1.0
    if (target is None) != (model_path is None):
        fail("give --target and --lut together")
    if target is not None and not target > 0:
        fail(f"--target must be a positive number of ms, got {target}")
    dataset = _load_data(data, seed, limit)
    from hwnas.spaces.cli import is_new_space, load_new_arch, make_new_space

    if is_new_space(space_name):  # darts: --channels/--cells; --arch may name a reference (darts-v2)
        if target is not None:
            fail("--target scales widths of the MBConv spaces; it does not apply to darts")
        space = make_new_space(space_name, resolution, dataset.num_classes, own={"resolution": resolution})
        arch = load_new_arch(space, arch_path)
        result = train_arch(space, arch, dataset, epochs=epochs, batch_size=batch_size, lr=lr,
                            weight_decay=weight_decay, seed=seed, threads=threads)
        return _report_training(result, arch_path, {}, out, dataset)
    space = Space(space_name, resolution, width_mult, dataset.num_classes)
    arch = space.validate(doc)
    scaled = {}
    if target is not None:
        from hwnas.search.tfnas import elasticity_scale
        from hwnas.surrogates.models import load_model

        model = load_model(model_path)
        _check_target_here(model, model_path)
        m = model.space
        if (m.name, m.width_mult, m.num_classes) != (space.name, space.width_mult, space.num_classes):
            fail(f"latency model {model_path} is for {m}, not space {space.name} at width {space.width_mult} "
                 f"with {space.num_classes} classes")
        r = elasticity_scale(model, arch.to_json(), target, align=width_align)
        check_latency(f"latency model {model_path}: predicted latency", r.latency_ms)
        arch = space.validate(r.arch.to_json())
        scaled = {"target_ms": target, "predicted_ms": r.latency_ms, "seed_predicted_ms": r.seed_latency_ms,
                  "width_bound_note": r.message, "latency_model_file": str(model_path)}
    result = train_arch(space, arch, dataset, epochs=epochs, batch_size=batch_size, lr=lr,
                        weight_decay=weight_decay, seed=seed, threads=threads)
    _report_training(result, arch_path, scaled, out, dataset)


def _report_training(result, arch_path, scaled, out, dataset) -> None:
    from hwnas.jsonutil import write_json

    result["arch_file"] = str(arch_path)
    result.update(scaled)
    if out is not None:
        try:
            write_json(out, result)
        except OSError as e:
            fail(f"cannot write {out}: {e.strerror or e}")
    keys = ("arch_hash", "data", "epochs", "params_m", "val_acc", "test_acc", "predicted_ms")
    click.echo(json.dumps({k: result[k] for k in keys if k in result}))
    click.echo(f"test accuracy {result['test_acc']:.4f} ({dataset.size('test')} images)", err=True)


commands = [search, train]
