"""`hwnas search --method snas`: SNAS on the darts cell space, with a hardware cost."""

from __future__ import annotations

from typing import Any

import click

from hwnas.cli.options import size_options
from hwnas.cli.methods.common import SMALL_CELL_ARGS, deploy_options, land_options, run_cell_search, training_options
from hwnas.cli.methods.registry import register_method
from hwnas.search.cost import COSTS
from hwnas.search.snas import COST_ON, DERIVATIONS, GRADIENTS, RESOURCES, SNASConfig, search
from hwnas.validate import Float, Int

# A default SNAS search runs in minutes on one CPU core at this size (docs/darts.md).
SIZE = {"channels": 8, "cells": 5, "resolution": 16}

OPTIONS = [
    size_options,  # --channels, --cells
    click.option("--resolution", type=Int(8, 2048), default=SIZE["resolution"], show_default=True,
                 help="Input resolution of the supernet's training (and of latency unless --deploy-resolution)."),
    *deploy_options(),
    *training_options(SNASConfig, epochs=SNASConfig.epochs, warmup=False),
    click.option("--arch-weight-decay", type=Float(0, 1), default=SNASConfig.arch_weight_decay, show_default=True,
                 help="Architecture parameters' weight decay."),
    click.option("--resource", type=click.Choice(RESOURCES), default=SNASConfig.resource, show_default=True,
                 help="The cost: latency (cell table), params, flops, mac (memory access) or mixed."),
    click.option("--cost", type=click.Choice(COSTS), default=SNASConfig.penalty, show_default=True,
                 help="Penalty against --target: hinge or abs."),
    click.option("--lambda", "lam", type=Float(0, 1e6), default=SNASConfig.lam, show_default=True, help="Weight of the cost."),
    click.option("--gradient", type=click.Choice(GRADIENTS), default=SNASConfig.gradient, show_default=True,
                 help="Gradient of the cost: score function, reparameterised, or discrete."),
    click.option("--cost-on", type=click.Choice(COST_ON), default=SNASConfig.cost_on, show_default=True,
                 help="Penalise the relaxed sample's cost (SNAS) or the derived child's (straight-through)."),
    click.option("--log-penalty", is_flag=True, help="log(1 + c / mean c) per op cost (without a target only)."),
    click.option("--derive", type=click.Choice(DERIVATIONS), default=SNASConfig.derive, show_default=True,
                 help="Child graph: argmax per edge (SNAS) or the top two inputs per node (DARTS)."),
    click.option("--bilevel", is_flag=True, help="Update alpha on search-val batches (default: one-level, as SNAS)."),
    *land_options(SNASConfig),
]


@register_method("snas", "SNAS on the darts cell space, with a latency or resource cost.", OPTIONS,
                 small_args=SMALL_CELL_ARGS)
def run(opts: dict[str, Any]) -> dict[str, Any]:
    config = SNASConfig(
        resource=opts["resource"], target=opts["target"], penalty=opts["cost"], gradient=opts["gradient"],
        cost_on=opts["cost_on"], land=opts["land"], land_rounds=opts["land_rounds"],
        log_penalty=opts["log_penalty"], derive=opts["derive"], bilevel=opts["bilevel"], lam=opts["lam"],
        epochs=opts["epochs"], batch_size=opts["batch_size"], lr=opts["lr"], weight_decay=opts["weight_decay"],
        arch_lr=opts["arch_lr"], arch_weight_decay=opts["arch_weight_decay"], tau=opts["tau"], seed=opts["seed"],
        measure_every=opts["measure_every"], final_sessions=opts["final_sessions"], train_threads=opts["train_threads"],
    )
    return run_cell_search(opts, search, config, SIZE)
