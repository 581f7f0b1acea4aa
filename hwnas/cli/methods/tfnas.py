"""`hwnas search --method tfnas`: TF-NAS on a lookup table or a differentiable fitted model."""

from __future__ import annotations

from typing import Any

import click

from hwnas.cli.methods.common import SMALL_ARGS, echo, mbconv_space_options, run_mbconv_search, training_options
from hwnas.cli.methods.registry import register_method
from hwnas.search.cost import COSTS
from hwnas.search.tfnas import TFNASConfig, search
from hwnas.validate import Float

OPTIONS = [
    *mbconv_space_options(),
    *training_options(TFNASConfig, epochs=12),
    click.option("--tau-decay", type=Float(0, 1, lo_open=True), default=TFNASConfig.tau_decay, show_default=True,
                 help="Temperature factor per epoch after the warm-up."),
    click.option("--arch-weight-decay", type=Float(0, 1), default=TFNASConfig.arch_weight_decay, show_default=True,
                 help="Architecture parameters' weight decay."),
    click.option("--cost", type=click.Choice(COSTS), default=TFNASConfig.cost, show_default=True,
                 help="Latency cost: hinge max(LAT/T - 1, 0) (paper) or abs |LAT/T - 1| (authors' code)."),
    click.option("--lambda", "lam", type=Float(0, 1e6), default=TFNASConfig.lam, show_default=True, help="Weight of the latency cost."),
    click.option("--elastic-depth/--no-elastic-depth", default=True, show_default=True,
                 help="Elasticity-scaling may change depth where the width bound stops it."),
    click.option("--share-ops/--no-share-ops", default=True, show_default=True,
                 help="A layer's ops share conv weights (Once-for-All style) instead of one set per op."),
]


@register_method("tfnas", "TF-NAS: differentiable search under a lookup table or fitted latency model.", OPTIONS,
                 small_args=SMALL_ARGS)
def run(opts: dict[str, Any]) -> dict[str, Any]:
    config = TFNASConfig(
        target_ms=opts["target"], epochs=opts["epochs"], warmup_epochs=opts["warmup_epochs"],
        batch_size=opts["batch_size"], train_resolution=opts["train_resolution"], lr=opts["lr"],
        weight_decay=opts["weight_decay"], arch_lr=opts["arch_lr"], arch_weight_decay=opts["arch_weight_decay"],
        tau=opts["tau"], tau_decay=opts["tau_decay"], lam=opts["lam"], cost=opts["cost"], seed=opts["seed"],
        measure_every=opts["measure_every"], final_sessions=opts["final_sessions"], train_threads=opts["train_threads"],
        share_ops=opts["share_ops"], elastic_depth=opts["elastic_depth"], width_align=opts["width_align"],
    )
    return run_mbconv_search(opts, lambda data, measurer, model, model_info: search(
        config, data, model, opts["out"], measurer=measurer, measure_batch=opts["batch"],
        run_info={"limit": opts["limit"], **model_info}, echo=echo, repair=opts["repair"],
        stop_after_epoch=opts["stop_after_epoch"]))
