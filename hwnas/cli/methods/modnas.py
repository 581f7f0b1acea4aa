"""`hwnas search --method modnas`: a discrete or Pareto search over the slots of any PyTorch model,
on latency measured on the target (hwnas.search.modnas). One YAML file (--config) describes the
search; a flag given on the command line overrides the file, the file overrides the defaults."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from hwnas.cli.options import given_on_command_line
from hwnas.errors import HwnasError
from hwnas.search import slot_config
from hwnas.cli.methods.common import echo
from hwnas.search.modnas import check_plan, search
from hwnas.cli.methods.registry import register_method
from hwnas.validate import Float, Int

OPTIONS = [
    click.option("--config", "config_path", type=click.Path(path_type=Path), default=None,
                 help="YAML file describing the whole search (model, slots, optimizer, estimator, objectives, "
                      "constraints, backend, data); docs/modnas.md lists its keys."),
    click.option("--model", default=None,
                 help="torchvision:NAME or package.module:factory (default torchvision:mobilenet_v2)."),
    click.option("--width-mult", type=Float(0.05, 4), default=None, help="Passed to the model's factory as width_mult."),
    click.option("--resolution", type=Int(8, 2048), default=None, help="Input resolution (training and latency; default 32)."),
    click.option("--optimizer", default=None, help="random, evolution, smbo, nsga2 or tpe (default nsga2)."),
    click.option("--trials", type=Int(1, 100_000), default=None, help="Finished trials to reach (default 40)."),
    click.option("--estimator", default=None, help="spos (one-shot supernet) or scratch (short training; default spos)."),
    click.option("--epochs", type=Int(1, 10_000), default=None, help="Estimator epochs (supernet or each trial)."),
    click.option("--objectives", default=None,
                 help="Comma-separated metrics: accuracy, latency, lut_latency, params, macs, memory "
                      "(default accuracy,latency)."),
    click.option("--constraint", "constraints", multiple=True,
                 help="METRIC=BOUND, an upper bound (repeatable), e.g. latency=0.5; --target T is latency=T."),
]

# Shared options and the configuration keys they set (when given on the command line).
SHARED = {"data": "data.name", "limit": "data.limit", "seed": "seed", "train_threads": "train_threads",
          "backend_name": "backend.name", "batch": "backend.batch", "threads": "backend.threads",
          "precision": "backend.precision", "warmup": "backend.warmup", "min_runs": "backend.min_runs",
          "min_time": "backend.min_time"}
OWN = {"model": "model", "width_mult": "width_mult", "resolution": "resolution", "optimizer": "optimizer.name",
       "trials": "optimizer.trials", "estimator": "estimator.name", "epochs": "estimator.epochs"}


def build_config(opts: dict[str, Any]) -> dict[str, Any]:
    cfg = slot_config.load(opts["config_path"]) if opts.get("config_path") else slot_config.check({})
    for name, key in {**SHARED, **OWN}.items():
        if opts.get(name) is not None and given_on_command_line(name):
            slot_config.set_path(cfg, key, opts[name], f"--{name.replace('_', '-')}")
    if opts.get("db") is not None:
        slot_config.set_path(cfg, "backend.db", str(opts["db"]), "--db")
    ctx = click.get_current_context(silent=True)
    measure = ctx.meta.get("hwnas.measure", {}) if ctx is not None else {}
    for name, key in (("processes", "backend.processes"), ("isolation", "backend.isolation")):
        if measure.get(name) is not None and given_on_command_line(name):
            slot_config.set_path(cfg, key, measure[name], f"--{name}")
    if measure.get("no_reference") and given_on_command_line("no_reference"):
        cfg["backend"]["reference"] = False
    if opts.get("objectives"):
        slot_config.set_path(cfg, "objectives", [o.strip() for o in opts["objectives"].split(",") if o.strip()],
                             "--objectives")
    bounds = dict(cfg["constraints"])
    for text in opts.get("constraints") or ():
        metric, eq, value = str(text).partition("=")
        try:
            bounds[metric.strip()] = float(value)
        except ValueError:
            raise HwnasError(f"--constraint must be METRIC=BOUND, e.g. latency=0.5, got {text!r}") from None
        if not eq or bounds[metric.strip()] != bounds[metric.strip()]:
            raise HwnasError(f"--constraint must be METRIC=BOUND, e.g. latency=0.5, got {text!r}")
    if opts.get("target") is not None:
        bounds["latency"] = float(opts["target"])
    slot_config.set_path(cfg, "constraints", bounds, "--constraint")
    if opts.get("model_path") is not None:
        raise HwnasError("--lut: --method modnas builds its slot table in the run directory (slot_lut.json)")
    return cfg


@register_method("modnas", "Discrete and Pareto searches over the slots of any PyTorch model, on measured latency "
                           "(random, evolution, SMBO, NSGA-II, TPE; SPOS or train-from-scratch).", OPTIONS)
def run(opts: dict[str, Any]) -> dict[str, Any]:
    if opts.get("stop_after_epoch") is not None:
        raise HwnasError("--stop-after-epoch: --method modnas runs trials, not epochs; a stopped study resumes "
                         "with every finished trial kept")
    cfg = build_config(opts)
    check_plan(cfg)
    summary = search(cfg, opts["out"], echo=echo)
    if summary.get("measured_ms") is not None:
        echo(f"{summary['front_size']} architectures on the accuracy / measured-latency front of "
             f"{summary['trials_complete']} trials (hypervolume {summary['hypervolume']:.4g}); the most accurate "
             f"feasible: accuracy {summary['accuracy']:.4f}, measured {summary['measured_ms']:.4g} ms; "
             f"{Path(opts['out']) / 'pareto.csv'}")
    return summary
