"""`hwnas search --method entrannas [--dst]`: EnTranNAS and EnTranNAS-DST on the darts cell space,
with a latency cost under the cell table."""

from __future__ import annotations

from typing import Any

import click

from hwnas.cli.options import size_options
from hwnas.search.entrannas import DERIVATIONS, EnTranNASConfig, search
from hwnas.cli.methods.common import SMALL_CELL_ARGS, deploy_options, land_options, run_cell_search, training_options
from hwnas.cli.methods.registry import register_method
from hwnas.search.cost import COSTS
from hwnas.validate import Float, Int

# The reduced size of SNAS's default search (docs/darts.md): minutes on a CPU core.
SIZE = {"channels": 8, "cells": 5, "resolution": 16}


def _positions(ctx, param, value):
    """--engine-cells 0,2 -> (0, 2); range checks need the space and come later."""
    if value is None:
        return None
    try:
        return tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"expected comma-separated cell positions such as 0,2, got {value!r}") from None


OPTIONS = [
    size_options,  # --channels, --cells
    click.option("--resolution", type=Int(8, 2048), default=SIZE["resolution"], show_default=True,
                 help="Input resolution of the supernet's training (and of latency unless --deploy-resolution)."),
    *deploy_options(),
    *training_options(EnTranNASConfig, epochs=EnTranNASConfig.epochs, warmup=False),
    click.option("--tau-min", type=Float(0, 1000, lo_open=True), default=EnTranNASConfig.tau_min, show_default=True,
                 help="Temperature of softmax(alpha / tau) at the last epoch (annealed exponentially from --tau)."),
    click.option("--arch-weight-decay", type=Float(0, 1), default=EnTranNASConfig.arch_weight_decay, show_default=True,
                 help="Architecture parameters' weight decay."),
    click.option("--dst", is_flag=True,
                 help="EnTranNAS-DST: thresholds per node prune connections (any number of inputs per node, one at least)."),
    click.option("--dst-lambda", type=float, default=EnTranNASConfig.dst_lambda, show_default=True,
                 help="--dst: weight of the sparsity term mean(-log t_j) (Eq. 11); larger gives fewer inputs."),
    click.option("--derive", type=click.Choice(DERIVATIONS), default=None,
                 help="Derivation rule: top2 (DARTS's; the default without --dst) or dst (Eq. 10; implied by --dst)."),
    click.option("--engine-cells", callback=_positions, default=None,
                 help="Positions of the Engine-cells, e.g. 0,2 (default: the first normal and the first reduction cell)."),
    click.option("--bottleneck", type=int, default=EnTranNASConfig.bottleneck, show_default=True,
                 help="Channel reduction ratio before the candidate ops, restored after each node (the paper: 4; 1: none)."),
    click.option("--cost", type=click.Choice(COSTS), default=EnTranNASConfig.penalty, show_default=True,
                 help="Latency penalty against --target: hinge or abs."),
    click.option("--lambda", "lam", type=float, default=EnTranNASConfig.lam, show_default=True,
                 help="Weight of the latency cost (0: the target is only recorded)."),
    click.option("--calibrate/--no-calibrate", default=EnTranNASConfig.calibrate, show_default=True,
                 help="At each measurement (--measure-every), aim the table at target x table / measured of the "
                      "derived network, so the table's error at that size is taken out."),
    *land_options(EnTranNASConfig),
]


def config_from(opts: dict[str, Any]) -> EnTranNASConfig:
    """The search's configuration from the options; HwnasError names a bad one."""
    return EnTranNASConfig(
        dst=opts["dst"], dst_lambda=opts["dst_lambda"], derive=opts["derive"], engine_cells=opts["engine_cells"],
        bottleneck=opts["bottleneck"], target=opts["target"], lam=opts["lam"], penalty=opts["cost"],
        calibrate=opts["calibrate"], land=opts["land"], land_rounds=opts["land_rounds"],
        epochs=opts["epochs"], batch_size=opts["batch_size"], lr=opts["lr"], weight_decay=opts["weight_decay"],
        arch_lr=opts["arch_lr"], arch_weight_decay=opts["arch_weight_decay"], tau=opts["tau"], tau_min=opts["tau_min"],
        seed=opts["seed"], measure_every=opts["measure_every"], final_sessions=opts["final_sessions"],
        train_threads=opts["train_threads"],
    )


@register_method("entrannas", "EnTranNAS (--dst: EnTranNAS-DST) on the darts cell space, with a latency cost.",
                 OPTIONS, small_args=(*SMALL_CELL_ARGS, "--no-calibrate"))
def run(opts: dict[str, Any]) -> dict[str, Any]:
    return run_cell_search(opts, search, config_from(opts), SIZE)

